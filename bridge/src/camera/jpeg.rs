//! Camera helpers: JPEG decode (sensor_msgs/CompressedImage, `zune-jpeg`) and
//! encode (`jpeg-encoder`, for the simulator's compressed stream and tests).

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
}
