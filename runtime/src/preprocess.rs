//! Camera and sensor preprocessing into preallocated buffers.
//!
//! A camera frame arrives as uint8 HWC (RGB or BGR, any size). Per the manifest
//! it is resized to (H, W) with `fast_image_resize` (`bilinear` = OpenCV-style
//! `INTER_LINEAR`, `nearest`), scaled to [0, 1], normalised per channel and
//! written as CHW f32 with the colour order the graph expects. The /255 and the
//! per-channel normalisation are folded into one 256-entry table per channel, so
//! the hot loop is a table lookup per byte and nothing allocates after `new`.

use fast_image_resize as fir;

use crate::error::EngineError;
use crate::manifest::{ColorOrder, ImageInput, ResizeRule};
use crate::normalize::Normalizer;

/// One camera frame, borrowed: `data` is (height, width, 3) uint8, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub order: ColorOrder,
}

/// Preprocessor for one image input.
pub struct ImagePreprocessor {
    spec: ImageInput,
    /// `lut[c][p]`: normalised value of byte `p` in graph channel `c`.
    lut: Box<[[f32; 256]; 3]>,
    resizer: fir::Resizer,
    options: fir::ResizeOptions,
    /// (H, W, 3) uint8, the resized frame.
    resized: Vec<u8>,
}

impl ImagePreprocessor {
    pub fn new(spec: &ImageInput, norm: &Normalizer) -> ImagePreprocessor {
        let mut lut = Box::new([[0.0f32; 256]; 3]);
        for (c, table) in lut.iter_mut().enumerate() {
            for (p, v) in table.iter_mut().enumerate() {
                *v = norm.normalize_one(c, p as f32 / 255.0);
            }
        }
        let alg = match spec.resize {
            ResizeRule::Nearest => fir::ResizeAlg::Nearest,
            ResizeRule::Bilinear | ResizeRule::None => fir::ResizeAlg::Interpolation(fir::FilterType::Bilinear),
        };
        ImagePreprocessor {
            spec: spec.clone(),
            lut,
            resizer: fir::Resizer::new(),
            options: fir::ResizeOptions::new().resize_alg(alg),
            resized: vec![0u8; spec.height * spec.width * 3],
        }
    }

    pub fn spec(&self) -> &ImageInput {
        &self.spec
    }

    /// Elements written per frame: 3 * H * W.
    pub fn out_len(&self) -> usize {
        3 * self.spec.height * self.spec.width
    }

    /// Preprocess `frame` into `out`, (3, H, W) f32.
    pub fn process(&mut self, frame: &Frame<'_>, out: &mut [f32]) -> Result<(), EngineError> {
        let key = &self.spec.key;
        let (h, w) = (self.spec.height, self.spec.width);
        if out.len() != 3 * h * w {
            return Err(EngineError::input(key.as_str(), "internal: output buffer has the wrong size"));
        }
        if frame.width == 0 || frame.height == 0 || frame.data.len() != frame.width * frame.height * 3 {
            return Err(EngineError::input(
                key.as_str(),
                "frame buffer length is not width * height * 3 (uint8 HWC with 3 channels expected)",
            ));
        }
        let same_size = frame.width == w && frame.height == h;
        let pixels: &[u8] = if same_size {
            frame.data
        } else {
            if self.spec.resize == ResizeRule::None {
                return Err(EngineError::input(
                    key.as_str(),
                    "frame size differs from the manifest's height x width and resize = \"none\"",
                ));
            }
            let src = fir::images::ImageRef::new(frame.width as u32, frame.height as u32, frame.data, fir::PixelType::U8x3)
                .map_err(|e| EngineError::input(key.as_str(), format!("bad frame: {e}")))?;
            let mut dst = fir::images::Image::from_slice_u8(w as u32, h as u32, &mut self.resized, fir::PixelType::U8x3)
                .map_err(|e| EngineError::input(key.as_str(), format!("resize buffer: {e}")))?;
            self.resizer
                .resize(&src, &mut dst, &self.options)
                .map_err(|e| EngineError::input(key.as_str(), format!("resize failed: {e}")))?;
            &self.resized
        };
        // Source channel feeding each graph channel.
        let map: [usize; 3] = if frame.order == self.spec.color_order { [0, 1, 2] } else { [2, 1, 0] };
        let plane = h * w;
        let (o0, rest) = out.split_at_mut(plane);
        let (o1, o2) = rest.split_at_mut(plane);
        let (l0, l1, l2) = (&self.lut[0], &self.lut[1], &self.lut[2]);
        for (i, px) in pixels.chunks_exact(3).enumerate() {
            o0[i] = l0[px[map[0]] as usize];
            o1[i] = l1[px[map[1]] as usize];
            o2[i] = l2[px[map[2]] as usize];
        }
        Ok(())
    }
}

/// Normalise a sensor vector (state, taxels) into `out`, refusing NaN/Inf.
pub fn normalize_vector(key: &str, norm: &Normalizer, x: &[f32], out: &mut [f32]) -> Result<(), EngineError> {
    if x.len() != out.len() {
        return Err(EngineError::input(key, format!("has {} values, the policy expects {}", x.len(), out.len())));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(EngineError::input(key, "contains NaN or Inf"));
    }
    norm.normalize(x, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Normalization;

    fn spec(h: usize, w: usize, order: ColorOrder, resize: ResizeRule) -> ImageInput {
        ImageInput { key: "cam".into(), height: h, width: w, channels: 3, color_order: order, resize }
    }

    #[test]
    fn chw_layout_scaling_and_channel_swap() {
        let norm = Normalizer::new(&Normalization::Identity, 3);
        let mut p = ImagePreprocessor::new(&spec(1, 2, ColorOrder::Rgb, ResizeRule::None), &norm);
        // two pixels: (R,G,B) = (255,0,51) and (0,102,255), delivered as BGR
        let bgr = [51u8, 0, 255, 255, 102, 0];
        let mut out = [0.0f32; 6];
        p.process(&Frame { data: &bgr, width: 2, height: 1, order: ColorOrder::Bgr }, &mut out).unwrap();
        assert_eq!(out, [1.0, 0.0, 0.0, 0.4, 0.2, 1.0]);
    }

    #[test]
    fn imagenet_normalisation_per_channel() {
        let norm = Normalizer::new(
            &Normalization::MeanStd { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225], eps: 1e-8 },
            3,
        );
        let mut p = ImagePreprocessor::new(&spec(1, 1, ColorOrder::Rgb, ResizeRule::None), &norm);
        let mut out = [0.0f32; 3];
        p.process(&Frame { data: &[255, 0, 128], width: 1, height: 1, order: ColorOrder::Rgb }, &mut out).unwrap();
        let want = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128.0 / 255.0 - 0.406) / 0.225];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn resize_of_a_constant_image_stays_constant_and_none_refuses() {
        let norm = Normalizer::new(&Normalization::Identity, 3);
        let mut p = ImagePreprocessor::new(&spec(4, 6, ColorOrder::Rgb, ResizeRule::Bilinear), &norm);
        let src: Vec<u8> = [10u8, 200, 30].repeat(13 * 17);
        let mut out = vec![0.0f32; 3 * 4 * 6];
        p.process(&Frame { data: &src, width: 17, height: 13, order: ColorOrder::Rgb }, &mut out).unwrap();
        assert!(out[..24].iter().all(|v| (*v - 10.0 / 255.0).abs() < 1e-6));
        assert!(out[24..48].iter().all(|v| (*v - 200.0 / 255.0).abs() < 1e-6));
        let mut strict = ImagePreprocessor::new(&spec(4, 6, ColorOrder::Rgb, ResizeRule::None), &norm);
        let err = strict.process(&Frame { data: &src, width: 17, height: 13, order: ColorOrder::Rgb }, &mut out);
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("cam") && msg.contains("resize"), "{msg}");
    }

    #[test]
    fn bilinear_downscale_by_two_averages_pairs() {
        // 2x1 -> 1x1 bilinear (OpenCV INTER_LINEAR) samples the centre: mean of the two pixels.
        let norm = Normalizer::new(&Normalization::Identity, 3);
        let mut p = ImagePreprocessor::new(&spec(1, 1, ColorOrder::Rgb, ResizeRule::Bilinear), &norm);
        let mut out = [0.0f32; 3];
        p.process(&Frame { data: &[0, 100, 200, 100, 200, 0], width: 2, height: 1, order: ColorOrder::Rgb }, &mut out)
            .unwrap();
        assert!((out[0] * 255.0 - 50.0).abs() <= 1.0, "{out:?}");
        assert!((out[1] * 255.0 - 150.0).abs() <= 1.0, "{out:?}");
        assert!((out[2] * 255.0 - 100.0).abs() <= 1.0, "{out:?}");
    }

    #[test]
    fn wrong_buffer_and_nan_sensor_values_are_refused() {
        let norm = Normalizer::new(&Normalization::Identity, 3);
        let mut p = ImagePreprocessor::new(&spec(1, 1, ColorOrder::Rgb, ResizeRule::None), &norm);
        let mut out = [0.0f32; 3];
        assert!(p.process(&Frame { data: &[1, 2], width: 1, height: 1, order: ColorOrder::Rgb }, &mut out).is_err());
        let n2 = Normalizer::new(&Normalization::Identity, 2);
        let mut o = [0.0f32; 2];
        let e = normalize_vector("observation.state", &n2, &[1.0, f32::NAN], &mut o).unwrap_err().to_string();
        assert!(e.contains("observation.state") && e.contains("NaN"), "{e}");
        assert!(normalize_vector("observation.state", &n2, &[1.0], &mut o).is_err());
    }
}
