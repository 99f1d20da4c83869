//! JPEG decode (sensor_msgs/CompressedImage and MJPEG cameras, `zune-jpeg`)
//! and encode (`jpeg-encoder`, for the simulator's compressed stream and tests).
//!
//! MJPEG frames from USB (UVC) cameras often omit the Huffman tables (DHT):
//! the format fixes them to the standard tables of JPEG Annex K.3.
//! [`decode_mjpeg_rgb`] marks such frames as AVI1 MJPEG (an APP0 segment) so
//! the decoder fills in those standard tables.

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Largest side accepted from the network (pixels).
pub const MAX_JPEG_SIDE: usize = 8192;

/// Decodes a JPEG into tightly packed RGB8; returns (pixels, width, height).
/// Never panics on malformed bytes.
pub fn decode_jpeg_rgb(bytes: &[u8]) -> Result<(Vec<u8>, usize, usize), String> {
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_JPEG_SIDE)
        .set_max_height(MAX_JPEG_SIDE);
    let mut d = JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    d.decode_headers()
        .map_err(|e| format!("jpeg header: {e:?}"))?;
    let info = d.info().ok_or("jpeg: no image info")?;
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    let px = d.decode().map_err(|e| format!("jpeg: {e:?}"))?;
    if px.len() != w * h * 3 {
        return Err(format!(
            "jpeg: decoded {} bytes for {w}x{h} RGB (expected {})",
            px.len(),
            w * h * 3
        ));
    }
    Ok((px, w, h))
}

/// Decodes one MJPEG frame (a JPEG that may lack its Huffman tables) into
/// tightly packed RGB8. Never panics on malformed bytes.
pub fn decode_mjpeg_rgb(bytes: &[u8]) -> Result<(Vec<u8>, usize, usize), String> {
    if has_huffman_tables(bytes) || bytes.len() < 2 {
        return decode_jpeg_rgb(bytes);
    }
    // SOI, then APP0 "AVI1\0" (length 7), then the rest of the frame.
    let mut patched = Vec::with_capacity(bytes.len() + AVI1_APP0.len());
    patched.extend_from_slice(&bytes[..2]);
    patched.extend_from_slice(&AVI1_APP0);
    patched.extend_from_slice(&bytes[2..]);
    decode_jpeg_rgb(&patched)
}

/// APP0 segment "AVI1\0": tells the decoder this is MJPEG (standard tables).
const AVI1_APP0: [u8; 9] = [0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0];

/// Whether a DHT segment comes before the first scan (SOS). Walks the marker
/// segments only; anything malformed answers true (the decoder reports it).
pub fn has_huffman_tables(bytes: &[u8]) -> bool {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return true;
    }
    let mut i = 2;
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            return true;
        }
        let m = bytes[i + 1];
        match m {
            0xFF => i += 1, // fill byte
            0xC4 => return true,
            0xDA => return false,
            0x01 | 0xD0..=0xD7 => i += 2, // no length
            _ => {
                if i + 3 >= bytes.len() {
                    return true;
                }
                let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
                i += 2 + len;
            }
        }
    }
    true
}

/// Encodes tightly packed RGB8 as JPEG at `quality` (1..=100).
pub fn encode_jpeg_rgb(
    rgb: &[u8],
    width: usize,
    height: usize,
    quality: u8,
) -> Result<Vec<u8>, String> {
    if rgb.len() != width * height * 3 || width > u16::MAX as usize || height > u16::MAX as usize {
        return Err(format!(
            "jpeg encode: {} bytes for {width}x{height} RGB",
            rgb.len()
        ));
    }
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    enc.encode(
        rgb,
        width as u16,
        height as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .map_err(|e| format!("jpeg encode: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_round_trip_is_close() {
        let (w, h) = (32, 24);
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i / 3) % 200) as u8 / 2 + 40)
            .collect();
        let j = encode_jpeg_rgb(&rgb, w, h, 95).unwrap();
        assert_eq!(&j[..2], &[0xFF, 0xD8]);
        let (px, w2, h2) = decode_jpeg_rgb(&j).unwrap();
        assert_eq!((w2, h2), (w, h));
        let mean_err: f64 = px
            .iter()
            .zip(&rgb)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / px.len() as f64;
        assert!(mean_err < 4.0, "mean abs error {mean_err}");
    }

    #[test]
    fn garbage_and_truncated_jpeg_are_errors() {
        assert!(decode_jpeg_rgb(&[]).is_err());
        assert!(decode_jpeg_rgb(b"not a jpeg at all").is_err());
        let rgb = vec![128u8; 16 * 16 * 3];
        let j = encode_jpeg_rgb(&rgb, 16, 16, 80).unwrap();
        for cut in [2, 10, j.len() / 2] {
            // must not panic; truncated data is either an error or a partial decode
            let _ = decode_jpeg_rgb(&j[..cut]);
        }
        assert!(decode_jpeg_rgb(&j[..10]).is_err());
        assert!(encode_jpeg_rgb(&rgb, 16, 15, 80).is_err());
    }

    /// The frame without its DHT segments, as many UVC cameras send it.
    pub(crate) fn strip_huffman_tables(j: &[u8]) -> Vec<u8> {
        let mut out = j[..2].to_vec();
        let mut i = 2;
        while i + 3 < j.len() && j[i + 1] != 0xDA {
            let len = usize::from(u16::from_be_bytes([j[i + 2], j[i + 3]]));
            if j[i + 1] != 0xC4 {
                out.extend_from_slice(&j[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        out.extend_from_slice(&j[i..]);
        out
    }

    #[test]
    fn mjpeg_without_huffman_tables_decodes_with_the_standard_ones() {
        let (w, h) = (48, 32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7) % 251) as u8).collect();
        let j = encode_jpeg_rgb(&rgb, w, h, 90).unwrap();
        assert!(has_huffman_tables(&j));
        let bare = strip_huffman_tables(&j);
        assert!(bare.len() < j.len() && !has_huffman_tables(&bare));
        let want = decode_jpeg_rgb(&j).unwrap();
        assert_eq!(decode_mjpeg_rgb(&bare).unwrap(), want);
        assert_eq!(decode_mjpeg_rgb(&j).unwrap(), want);
        // never panics on cut or garbage frames
        for cut in [0, 1, 2, 3, 5, 20, bare.len() / 2] {
            let _ = decode_mjpeg_rgb(&bare[..cut]);
        }
        assert!(decode_mjpeg_rgb(&[0xFF, 0xD8, 0xFF, 0xC0, 0xFF]).is_err());
    }
}
