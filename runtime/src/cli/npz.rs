//! `.npz` observations in, action chunks out (`maniflow infer`).
//!
//! Input arrays are named by the manifest's feature keys, in raw sensor units:
//! cameras (and tactile images) uint8 `(To, H, W, 3)` or `(H, W, 3)` RGB at any
//! size (resized per the manifest); state float32 `(To, Ds)` or `(Ds,)`; taxels
//! float32 `(To, N)` or `(N,)`. A single step is repeated over the To history.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{NpzReader, NpzWriter};

use crate::error::EngineError;
use crate::policy::engine::{Engine, ObservationStep, TactileReading};
use crate::policy::manifest::{ColorOrder, Manifest, TactileInput};
use crate::policy::preprocess::Frame;

/// One image stream: `(steps, h, w, 3)` uint8.
pub struct ImageArray {
    pub key: String,
    pub steps: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

/// A vector stream: `(steps, n)` f32.
pub struct VectorArray {
    pub key: String,
    pub steps: usize,
    pub n: usize,
    pub data: Vec<f32>,
}

/// Observation history loaded from an `.npz`.
pub struct ObservationFile {
    pub images: Vec<ImageArray>,
    pub state: Option<VectorArray>,
    pub taxels: Option<VectorArray>,
    pub tactile_image: Option<ImageArray>,
}

fn bad(path: &Path, key: &str, message: impl std::fmt::Display) -> EngineError {
    EngineError::input(
        format!("{}: array `{key}`", path.display()),
        message.to_string(),
    )
}

fn read_images(
    npz: &mut NpzReader<std::fs::File>,
    path: &Path,
    key: &str,
) -> Result<ImageArray, EngineError> {
    let a: ArrayD<u8> = npz
        .by_name(key)
        .map_err(|e| bad(path, key, format!("cannot read as uint8: {e}")))?;
    let shape = a.shape().to_vec();
    let (steps, h, w, c) = match shape.as_slice() {
        [h, w, c] => (1, *h, *w, *c),
        [s, h, w, c] => (*s, *h, *w, *c),
        _ => {
            return Err(bad(
                path,
                key,
                format!("has shape {shape:?}, expected (H, W, 3) or (To, H, W, 3)"),
            ))
        }
    };
    if c != 3 {
        return Err(bad(
            path,
            key,
            format!("has {c} channels, expected 3 (RGB)"),
        ));
    }
    let data: Vec<u8> = a.iter().copied().collect();
    Ok(ImageArray {
        key: key.to_string(),
        steps,
        height: h,
        width: w,
        data,
    })
}

fn read_vector(
    npz: &mut NpzReader<std::fs::File>,
    path: &Path,
    key: &str,
) -> Result<VectorArray, EngineError> {
    let a: ArrayD<f32> = npz
        .by_name(key)
        .map_err(|e| bad(path, key, format!("cannot read as float32: {e}")))?;
    let shape = a.shape().to_vec();
    let (steps, n) = match shape.as_slice() {
        [n] => (1, *n),
        [s, n] => (*s, *n),
        _ => {
            return Err(bad(
                path,
                key,
                format!("has shape {shape:?}, expected (N,) or (To, N)"),
            ))
        }
    };
    Ok(VectorArray {
        key: key.to_string(),
        steps,
        n,
        data: a.iter().copied().collect(),
    })
}

impl ObservationFile {
    pub fn load(path: &Path, m: &Manifest) -> Result<ObservationFile, EngineError> {
        let file = std::fs::File::open(path).map_err(|e| {
            EngineError::input(path.display().to_string(), format!("cannot open: {e}"))
        })?;
        let mut npz = NpzReader::new(file).map_err(|e| {
            EngineError::input(path.display().to_string(), format!("not an .npz file: {e}"))
        })?;
        let mut images = Vec::new();
        for cam in &m.inputs.cameras {
            images.push(read_images(&mut npz, path, &cam.key)?);
        }
        let state = match &m.inputs.state {
            Some(s) => Some(read_vector(&mut npz, path, &s.key)?),
            None => None,
        };
        let (taxels, tactile_image) = match &m.inputs.tactile {
            Some(TactileInput::Taxels { key, .. }) => {
                (Some(read_vector(&mut npz, path, key)?), None)
            }
            Some(TactileInput::Image { key, .. }) => {
                (None, Some(read_images(&mut npz, path, key)?))
            }
            None => (None, None),
        };
        let to = m.n_obs_steps;
        let check = |key: &str, steps: usize| {
            if steps == 1 || steps == to {
                Ok(())
            } else {
                Err(bad(
                    path,
                    key,
                    format!("has {steps} steps, the policy takes n_obs_steps = {to} (or give 1)"),
                ))
            }
        };
        for i in images.iter().chain(tactile_image.iter()) {
            check(&i.key, i.steps)?;
        }
        for v in state.iter().chain(taxels.iter()) {
            check(&v.key, v.steps)?;
        }
        Ok(ObservationFile {
            images,
            state,
            taxels,
            tactile_image,
        })
    }

    /// Feed every observation step into the engine.
    pub fn apply(&self, engine: &mut Engine) -> Result<(), EngineError> {
        let to = engine.n_obs_steps();
        for step in 0..to {
            let frames: Vec<Frame<'_>> = self.images.iter().map(|a| frame_at(a, step)).collect();
            let tactile = match (&self.taxels, &self.tactile_image) {
                (Some(v), _) => Some(TactileReading::Taxels(vec_at(v, step))),
                (None, Some(a)) => Some(TactileReading::Image(frame_at(a, step))),
                (None, None) => None,
            };
            let obs = ObservationStep {
                cameras: &frames,
                state: self.state.as_ref().map(|v| vec_at(v, step)),
                tactile,
            };
            engine.set_observation(step, &obs)?;
        }
        Ok(())
    }
}

fn frame_at(a: &ImageArray, step: usize) -> Frame<'_> {
    let s = if a.steps == 1 { 0 } else { step };
    let n = a.height * a.width * 3;
    Frame {
        data: &a.data[s * n..(s + 1) * n],
        width: a.width,
        height: a.height,
        order: ColorOrder::Rgb,
    }
}

fn vec_at(v: &VectorArray, step: usize) -> &[f32] {
    let s = if v.steps == 1 { 0 } else { step };
    &v.data[s * v.n..(s + 1) * v.n]
}

/// Write named f32 arrays to an `.npz` (written to a temporary file and renamed).
pub fn write_arrays(path: &Path, arrays: &[(&str, Vec<usize>, &[f32])]) -> Result<(), EngineError> {
    let err = |m: String| EngineError::input(path.display().to_string(), m);
    let tmp = path.with_extension("npz.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| err(format!("cannot create: {e}")))?;
    let mut w = NpzWriter::new(file);
    for (name, shape, data) in arrays {
        let a = ArrayD::from_shape_vec(IxDyn(shape), data.to_vec())
            .map_err(|e| err(format!("{name}: {e}")))?;
        w.add_array(*name, &a)
            .map_err(|e| err(format!("{name}: {e}")))?;
    }
    w.finish().map_err(|e| err(format!("cannot finish: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| err(format!("cannot rename into place: {e}")))?;
    Ok(())
}
