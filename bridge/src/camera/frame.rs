//! Raw camera frames to RGB: MJPEG (JPEG per frame, possibly without Huffman
//! tables) and YUYV 4:2:2, and the `sensor_msgs/Image` a camera stream
//! carries. Every decoder takes outside bytes: errors, never panics.

use super::jpeg::decode_mjpeg_rgb;
use super::source::{PixelFormat, MAX_SIDE};
use crate::msg::{Header, Image, Time};

/// YUYV 4:2:2 (`Y0 U Y1 V` per pixel pair) to RGB8, BT.601 limited range
/// (what V4L2 cameras send by default and ffmpeg assumes for `yuyv422`),
/// chroma shared by both pixels of a pair. `stride` is the source row length
/// in bytes (V4L2 `bytesperline`, >= width * 2). `dst` is resized to
/// width * height * 3.
pub fn yuyv_to_rgb(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    dst: &mut Vec<u8>,
) -> Result<(), String> {
    if width == 0 || height == 0 || width % 2 != 0 {
        return Err(format!(
            "yuyv: {width}x{height} (the width must be even and > 0)"
        ));
    }
    let row = width * 2;
    if stride < row {
        return Err(format!("yuyv: stride {stride} < width * 2 = {row}"));
    }
    let need = stride * (height - 1) + row;
    if src.len() < need {
        return Err(format!(
            "yuyv: {} bytes, {width}x{height} with stride {stride} needs {need}",
            src.len()
        ));
    }
    dst.resize(width * height * 3, 0);
    for (y, out) in dst.chunks_exact_mut(width * 3).enumerate() {
        let line = &src[y * stride..y * stride + row];
        for (px, rgb) in line.chunks_exact(4).zip(out.chunks_exact_mut(6)) {
            // (4,) -> (2, 3): two pixels sharing U and V
            let (d, e) = (i32::from(px[1]) - 128, i32::from(px[3]) - 128);
            let (rv, guv, bu) = (409 * e + 128, -100 * d - 208 * e + 128, 516 * d + 128);
            for (k, yy) in [px[0], px[2]].into_iter().enumerate() {
                let c = 298 * (i32::from(yy) - 16);
                rgb[3 * k] = clamp8((c + rv) >> 8);
                rgb[3 * k + 1] = clamp8((c + guv) >> 8);
                rgb[3 * k + 2] = clamp8((c + bu) >> 8);
            }
        }
    }
    Ok(())
}

fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Decodes one device frame of `format` to RGB8 (width * height * 3 bytes).
/// MJPEG must decode to the size the device was set to.
pub fn decode_frame(
    format: PixelFormat,
    bytes: &[u8],
    width: usize,
    height: usize,
    stride: usize,
) -> Result<Vec<u8>, String> {
    match format {
        PixelFormat::Yuyv => {
            let mut out = Vec::new();
            yuyv_to_rgb(bytes, width, height, stride, &mut out)?;
            Ok(out)
        }
        PixelFormat::Mjpeg => {
            let (px, w, h) = decode_mjpeg_rgb(bytes).map_err(|e| format!("mjpeg: {e}"))?;
            if (w, h) != (width, height) {
                return Err(format!(
                    "mjpeg: the frame is {w}x{h}, the device was set to {width}x{height}"
                ));
            }
            Ok(px)
        }
    }
}

/// A `sensor_msgs/Image` (rgb8, tightly packed) stamped `stamp_ns` (wall clock).
pub fn rgb_image(
    data: Vec<u8>,
    width: usize,
    height: usize,
    stamp_ns: i64,
    frame_id: &str,
) -> Result<Image, String> {
    if width == 0 || height == 0 || width > MAX_SIDE as usize || height > MAX_SIDE as usize {
        return Err(format!("frame size {width}x{height} out of range"));
    }
    if data.len() != width * height * 3 {
        return Err(format!(
            "{} bytes for a {width}x{height} rgb8 frame",
            data.len()
        ));
    }
    Ok(Image {
        header: Header {
            stamp: Time::from_nanos(stamp_ns),
            frame_id: frame_id.to_string(),
        },
        height: height as u32,
        width: width as u32,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: (width * 3) as u32,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_primaries_and_padding() {
        // black, white (limited range), then pure red's YUV (BT.601: Y 81, U 90, V 240)
        let src = [16, 128, 235, 128, 81, 90, 81, 240, 0, 0];
        let mut out = Vec::new();
        yuyv_to_rgb(&src, 4, 1, 10, &mut out).unwrap();
        assert_eq!(&out[..6], &[0, 0, 0, 255, 255, 255]);
        let red = &out[6..9];
        assert!(red[0] >= 253 && red[1] <= 2 && red[2] <= 2, "{red:?}");
        assert_eq!(&out[6..9], &out[9..12]);
        // a padded second row is skipped
        let two = [16, 128, 16, 128, 9, 9, 235, 128, 235, 128];
        yuyv_to_rgb(&two, 2, 2, 6, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255]);
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut out = Vec::new();
        assert!(yuyv_to_rgb(&[0; 8], 3, 1, 6, &mut out)
            .unwrap_err()
            .contains("even"));
        assert!(yuyv_to_rgb(&[0; 8], 4, 2, 8, &mut out)
            .unwrap_err()
            .contains("needs 16"));
        assert!(yuyv_to_rgb(&[0; 8], 4, 1, 4, &mut out)
            .unwrap_err()
            .contains("stride"));
        let e = decode_frame(PixelFormat::Mjpeg, b"\xFF\xD8garbage", 4, 4, 0).unwrap_err();
        assert!(e.starts_with("mjpeg"), "{e}");
        let j = super::super::jpeg::encode_jpeg_rgb(&[9; 8 * 8 * 3], 8, 8, 90).unwrap();
        let e = decode_frame(PixelFormat::Mjpeg, &j, 16, 8, 0).unwrap_err();
        assert!(e.contains("8x8") && e.contains("16x8"), "{e}");
        assert_eq!(
            decode_frame(PixelFormat::Mjpeg, &j, 8, 8, 0).unwrap().len(),
            192
        );
        assert!(rgb_image(vec![0; 5], 1, 2, 0, "x").is_err());
        let im = rgb_image(vec![0; 6], 1, 2, 1_500_000_000, "head").unwrap();
        assert_eq!(
            (im.step, im.header.stamp.sec, im.header.stamp.nanosec),
            (3, 1, 500_000_000)
        );
    }
}
