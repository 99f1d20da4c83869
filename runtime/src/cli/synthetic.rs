//! Synthetic observations for `maniflow bench` and `maniflow demo` until a robot
//! or the simulator is attached: smooth moving colour patterns for every image
//! input, a state vector that follows the last command, slowly varying taxels.
//! All buffers live here; `update` and `apply` do not allocate.

use crate::error::EngineError;
use crate::policy::engine::{Engine, ObservationStep, TactileReading};
use crate::policy::manifest::{ColorOrder, Manifest, TactileInput};
use crate::policy::preprocess::Frame;

pub struct SyntheticObservation {
    /// (h, w, frame bytes) per image input (cameras, then a tactile image).
    images: Vec<(usize, usize, Vec<u8>)>,
    n_cams: usize,
    pub state: Vec<f32>,
    taxels: Vec<f32>,
}

impl SyntheticObservation {
    /// `frame_size`: (width, height) of generated frames; default: each input's own size.
    pub fn new(m: &Manifest, frame_size: Option<(usize, usize)>) -> SyntheticObservation {
        let images = m
            .image_inputs()
            .iter()
            .map(|s| {
                let (w, h) = frame_size.unwrap_or((s.width, s.height));
                (h, w, vec![0u8; h * w * 3])
            })
            .collect();
        let state = vec![0.0; m.inputs.state.as_ref().map_or(0, |s| s.names.len())];
        let taxels = match &m.inputs.tactile {
            Some(TactileInput::Taxels { size, .. }) => vec![0.0; *size],
            _ => vec![],
        };
        SyntheticObservation {
            images,
            n_cams: m.inputs.cameras.len(),
            state,
            taxels,
        }
    }

    /// Advance the scene to control tick `k`.
    pub fn update(&mut self, k: u64) {
        let phase = k as f32 * 0.05;
        for (ci, (h, w, buf)) in self.images.iter_mut().enumerate() {
            let (h, w) = (*h, *w);
            let (hf, wf) = (h as f32, w as f32);
            // A bright square moving on a gradient background.
            let cx = (0.5 + 0.3 * (phase + ci as f32).sin()) * wf;
            let cy = (0.5 + 0.3 * (phase * 0.7 + ci as f32).cos()) * hf;
            let half = wf.min(hf) * 0.12;
            for y in 0..h {
                for x in 0..w {
                    let i = (y * w + x) * 3;
                    let inside = (x as f32 - cx).abs() < half && (y as f32 - cy).abs() < half;
                    if inside {
                        buf[i] = 230;
                        buf[i + 1] = 40;
                        buf[i + 2] = 40;
                    } else {
                        buf[i] = (x * 255 / w.max(1)) as u8 / 2 + 40;
                        buf[i + 1] = (y * 255 / h.max(1)) as u8 / 2 + 40;
                        buf[i + 2] = 90;
                    }
                }
            }
        }
        for (j, t) in self.taxels.iter_mut().enumerate() {
            *t = 0.5 + 0.5 * (phase + j as f32 * 0.3).sin().abs();
        }
    }

    /// Feed the current scene into every observation step of the engine.
    pub fn apply(&self, engine: &mut Engine) -> Result<(), EngineError> {
        let mut frames = [Frame {
            data: &[],
            width: 0,
            height: 0,
            order: ColorOrder::Rgb,
        }; 8];
        if self.n_cams > frames.len() {
            return Err(EngineError::input(
                "observation.images",
                "more than 8 cameras are not supported",
            ));
        }
        for (f, (h, w, buf)) in frames.iter_mut().zip(&self.images) {
            *f = Frame {
                data: buf,
                width: *w,
                height: *h,
                order: ColorOrder::Rgb,
            };
        }
        let tactile = if !self.taxels.is_empty() {
            Some(TactileReading::Taxels(&self.taxels))
        } else if self.images.len() > self.n_cams {
            let (h, w, buf) = &self.images[self.n_cams];
            Some(TactileReading::Image(Frame {
                data: buf,
                width: *w,
                height: *h,
                order: ColorOrder::Rgb,
            }))
        } else {
            None
        };
        let obs = ObservationStep {
            cameras: &frames[..self.n_cams],
            state: if self.state.is_empty() {
                None
            } else {
                Some(&self.state)
            },
            tactile,
        };
        for step in 0..engine.n_obs_steps() {
            engine.set_observation(step, &obs)?;
        }
        Ok(())
    }
}
