//! Camera and sensor preprocessing into preallocated buffers.
//!
//! A camera frame arrives as uint8 HWC (RGB or BGR, any size). Per the manifest
//! it is resized to (H, W) as uint8 (`bilinear` = OpenCV `INTER_LINEAR`: half-pixel
//! centres, no antialiasing, rounded to the nearest integer; `nearest`), scaled to
//! [0, 1], normalised per channel and written as CHW f32 with the colour order
//! the graph expects. The /255 and the per-channel normalisation are folded into
//! one 256-entry table per channel, so the hot loop is a table lookup per byte.
//!
//! Resizing uses a plan (source index pairs and weights per output row and
//! column) made once per source resolution, so nothing allocates after the first
//! frame of a given size. `fast_image_resize` was the first choice, but it
//! computes (and allocates) its filter coefficients on every call, which the
//! counting-allocator test caught; its `Interpolation(Bilinear)` output is the
//! reference our resize is tested against (within one grey level).

use crate::error::EngineError;
use crate::policy::manifest::{ColorOrder, ImageInput, ResizeRule};
use crate::policy::normalize::Normalizer;

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
    plan: Option<ResizePlan>,
    /// (H, W, 3) uint8, the resized frame.
    resized: Vec<u8>,
}

/// Source taps for one output coordinate: `out = a * (1 - w) + b * w`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tap {
    pub(crate) a: usize,
    pub(crate) b: usize,
    pub(crate) w: f32,
}

/// A resize from one source size to the manifest's size.
pub(crate) struct ResizePlan {
    src_w: usize,
    src_h: usize,
    /// Per output column: source byte offsets of the two pixels within a row.
    xs: Vec<Tap>,
    /// Per output row: source row indices.
    ys: Vec<Tap>,
}

impl ResizePlan {
    /// The taps of every output coordinate along one axis (the GPU path
    /// uploads the same plan).
    pub(crate) fn taps(src: usize, dst: usize, rule: ResizeRule) -> Vec<Tap> {
        let scale = src as f64 / dst as f64;
        (0..dst)
            .map(|i| match rule {
                ResizeRule::Nearest => {
                    let s = (((i as f64 + 0.5) * scale).floor() as usize).min(src - 1);
                    Tap { a: s, b: s, w: 0.0 }
                }
                _ => {
                    let f = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
                    let a = (f.floor() as usize).min(src - 1);
                    let b = (a + 1).min(src - 1);
                    Tap {
                        a,
                        b,
                        w: (f - a as f64) as f32,
                    }
                }
            })
            .collect()
    }

    fn new(src_w: usize, src_h: usize, dst_w: usize, dst_h: usize, rule: ResizeRule) -> ResizePlan {
        let xs = Self::taps(src_w, dst_w, rule)
            .into_iter()
            .map(|t| Tap {
                a: t.a * 3,
                b: t.b * 3,
                w: t.w,
            })
            .collect();
        ResizePlan {
            src_w,
            src_h,
            xs,
            ys: Self::taps(src_h, dst_h, rule),
        }
    }

    /// Resize `src` (src_h, src_w, 3) into `dst` (dst_h, dst_w, 3).
    fn run(&self, src: &[u8], dst: &mut [u8]) {
        let row_bytes = self.src_w * 3;
        let dst_row = self.xs.len() * 3;
        for (y, ty) in self.ys.iter().enumerate() {
            let ra = &src[ty.a * row_bytes..(ty.a + 1) * row_bytes];
            let rb = &src[ty.b * row_bytes..(ty.b + 1) * row_bytes];
            let out = &mut dst[y * dst_row..(y + 1) * dst_row];
            for (o, tx) in out.chunks_exact_mut(3).zip(&self.xs) {
                for c in 0..3 {
                    let top =
                        f32::from(ra[tx.a + c]) * (1.0 - tx.w) + f32::from(ra[tx.b + c]) * tx.w;
                    let bot =
                        f32::from(rb[tx.a + c]) * (1.0 - tx.w) + f32::from(rb[tx.b + c]) * tx.w;
                    let v = top * (1.0 - ty.w) + bot * ty.w;
                    o[c] = (v + 0.5) as u8;
                }
            }
        }
    }
}

impl ImagePreprocessor {
    pub fn new(spec: &ImageInput, norm: &Normalizer) -> ImagePreprocessor {
        ImagePreprocessor {
            spec: spec.clone(),
            lut: channel_lut(norm),
            plan: None,
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
            return Err(EngineError::input(
                key.as_str(),
                "internal: output buffer has the wrong size",
            ));
        }
        if frame.width == 0
            || frame.height == 0
            || frame.data.len() != frame.width * frame.height * 3
        {
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
            let stale = self
                .plan
                .as_ref()
                .is_none_or(|p| p.src_w != frame.width || p.src_h != frame.height);
            if stale {
                // A new source resolution: plan once (allocates), then reuse.
                self.plan = Some(ResizePlan::new(
                    frame.width,
                    frame.height,
                    w,
                    h,
                    self.spec.resize,
                ));
            }
            if let Some(plan) = &self.plan {
                plan.run(frame.data, &mut self.resized);
            }
            &self.resized
        };
        // Source channel feeding each graph channel.
        let map: [usize; 3] = if frame.order == self.spec.color_order {
            [0, 1, 2]
        } else {
            [2, 1, 0]
        };
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

/// `lut[c][p]`: the normalised value of byte `p` in graph channel `c` (/255,
/// then the channel's normalisation), shared by the CPU and GPU paths.
pub(crate) fn channel_lut(norm: &Normalizer) -> Box<[[f32; 256]; 3]> {
    let mut lut = Box::new([[0.0f32; 256]; 3]);
    for (c, table) in lut.iter_mut().enumerate() {
        for (p, v) in table.iter_mut().enumerate() {
            *v = norm.normalize_one(c, p as f32 / 255.0);
        }
    }
    lut
}

/// Normalise a sensor vector (state, taxels) into `out`, refusing NaN/Inf.
pub fn normalize_vector(
    key: &str,
    norm: &Normalizer,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), EngineError> {
    if x.len() != out.len() {
        return Err(EngineError::input(
            key,
            format!("has {} values, the policy expects {}", x.len(), out.len()),
        ));
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
    use crate::policy::manifest::Normalization;

    fn spec(h: usize, w: usize, order: ColorOrder, resize: ResizeRule) -> ImageInput {
        ImageInput {
            key: "cam".into(),
            height: h,
            width: w,
            channels: 3,
            color_order: order,
            resize,
        }
    }

    #[test]
    fn chw_layout_scaling_and_channel_swap() {
        let norm = Normalizer::new(&Normalization::Identity, 3);
        let mut p = ImagePreprocessor::new(&spec(1, 2, ColorOrder::Rgb, ResizeRule::None), &norm);
        // two pixels: (R,G,B) = (255,0,51) and (0,102,255), delivered as BGR
        let bgr = [51u8, 0, 255, 255, 102, 0];
        let mut out = [0.0f32; 6];
        p.process(
            &Frame {
                data: &bgr,
                width: 2,
                height: 1,
                order: ColorOrder::Bgr,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [1.0, 0.0, 0.0, 0.4, 0.2, 1.0]);
    }

    #[test]
    fn imagenet_normalisation_per_channel() {
        let norm = Normalizer::new(
            &Normalization::MeanStd {
                mean: vec![0.485, 0.456, 0.406],
                std: vec![0.229, 0.224, 0.225],
                eps: 1e-8,
            },
            3,
        );
        let mut p = ImagePreprocessor::new(&spec(1, 1, ColorOrder::Rgb, ResizeRule::None), &norm);
        let mut out = [0.0f32; 3];
        p.process(
            &Frame {
                data: &[255, 0, 128],
                width: 1,
                height: 1,
                order: ColorOrder::Rgb,
            },
            &mut out,
        )
        .unwrap();
        let want = [
            (1.0 - 0.485) / 0.229,
            (0.0 - 0.456) / 0.224,
            (128.0 / 255.0 - 0.406) / 0.225,
        ];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn resize_of_a_constant_image_stays_constant_and_none_refuses() {
        let norm = Normalizer::new(&Normalization::Identity, 3);
        let mut p =
            ImagePreprocessor::new(&spec(4, 6, ColorOrder::Rgb, ResizeRule::Bilinear), &norm);
        let src: Vec<u8> = [10u8, 200, 30].repeat(13 * 17);
        let mut out = vec![0.0f32; 3 * 4 * 6];
        p.process(
            &Frame {
                data: &src,
                width: 17,
                height: 13,
                order: ColorOrder::Rgb,
            },
            &mut out,
        )
        .unwrap();
        assert!(out[..24].iter().all(|v| (*v - 10.0 / 255.0).abs() < 1e-6));
        assert!(out[24..48]
            .iter()
            .all(|v| (*v - 200.0 / 255.0).abs() < 1e-6));
        let mut strict =
            ImagePreprocessor::new(&spec(4, 6, ColorOrder::Rgb, ResizeRule::None), &norm);
        let err = strict.process(
            &Frame {
                data: &src,
                width: 17,
                height: 13,
                order: ColorOrder::Rgb,
            },
            &mut out,
        );
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("cam") && msg.contains("resize"), "{msg}");
    }

    #[test]
    fn bilinear_downscale_by_two_averages_pairs() {
        // 2x1 -> 1x1 bilinear (OpenCV INTER_LINEAR) samples the centre: mean of the two pixels.
        let norm = Normalizer::new(&Normalization::Identity, 3);
        let mut p =
            ImagePreprocessor::new(&spec(1, 1, ColorOrder::Rgb, ResizeRule::Bilinear), &norm);
        let mut out = [0.0f32; 3];
        p.process(
            &Frame {
                data: &[0, 100, 200, 100, 200, 0],
                width: 2,
                height: 1,
                order: ColorOrder::Rgb,
            },
            &mut out,
        )
        .unwrap();
        assert!((out[0] * 255.0 - 50.0).abs() <= 1.0, "{out:?}");
        assert!((out[1] * 255.0 - 150.0).abs() <= 1.0, "{out:?}");
        assert!((out[2] * 255.0 - 100.0).abs() <= 1.0, "{out:?}");
    }

    /// Our bilinear resize against `fast_image_resize`'s OpenCV-style bilinear.
    #[test]
    fn bilinear_matches_fast_image_resize_within_one_level() {
        use fast_image_resize as fir;
        for (sw, sh, dw, dh) in [
            (640usize, 480usize, 96usize, 96usize),
            (50, 40, 96, 96),
            (97, 31, 64, 48),
        ] {
            let src: Vec<u8> = (0..sw * sh * 3)
                .map(|i| {
                    let (p, c) = (i / 3, i % 3);
                    let (x, y) = (p % sw, p / sw);
                    ((x * 7 + y * 13 + c * 50) % 256) as u8 ^ ((x * y) % 17) as u8
                })
                .collect();
            let norm = Normalizer::new(&Normalization::Identity, 3);
            let mut p =
                ImagePreprocessor::new(&spec(dh, dw, ColorOrder::Rgb, ResizeRule::Bilinear), &norm);
            let mut out = vec![0.0f32; 3 * dh * dw];
            p.process(
                &Frame {
                    data: &src,
                    width: sw,
                    height: sh,
                    order: ColorOrder::Rgb,
                },
                &mut out,
            )
            .unwrap();
            let src_img =
                fir::images::ImageRef::new(sw as u32, sh as u32, &src, fir::PixelType::U8x3)
                    .unwrap();
            let mut dst = fir::images::Image::new(dw as u32, dh as u32, fir::PixelType::U8x3);
            let opts = fir::ResizeOptions::new()
                .resize_alg(fir::ResizeAlg::Interpolation(fir::FilterType::Bilinear));
            fir::Resizer::new()
                .resize(&src_img, &mut dst, &opts)
                .unwrap();
            let want = dst.buffer();
            let mut worst = 0i32;
            for y in 0..dh {
                for x in 0..dw {
                    for c in 0..3 {
                        let ours = (out[c * dh * dw + y * dw + x] * 255.0).round() as i32;
                        worst = worst.max((ours - i32::from(want[(y * dw + x) * 3 + c])).abs());
                    }
                }
            }
            assert!(
                worst <= 1,
                "{sw}x{sh} -> {dw}x{dh}: worst difference {worst} grey levels"
            );
        }
    }

    #[test]
    fn wrong_buffer_and_nan_sensor_values_are_refused() {
        let norm = Normalizer::new(&Normalization::Identity, 3);
        let mut p = ImagePreprocessor::new(&spec(1, 1, ColorOrder::Rgb, ResizeRule::None), &norm);
        let mut out = [0.0f32; 3];
        assert!(p
            .process(
                &Frame {
                    data: &[1, 2],
                    width: 1,
                    height: 1,
                    order: ColorOrder::Rgb
                },
                &mut out
            )
            .is_err());
        let n2 = Normalizer::new(&Normalization::Identity, 2);
        let mut o = [0.0f32; 2];
        let e = normalize_vector("observation.state", &n2, &[1.0, f32::NAN], &mut o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("observation.state") && e.contains("NaN"), "{e}");
        assert!(normalize_vector("observation.state", &n2, &[1.0], &mut o).is_err());
    }
}
