//! Pretraining data: a dataset's pressure images as normalised frames and the
//! four-frame clips that start in each episode.

use std::path::Path;

use anyhow::{bail, Context, Result};
use maniflow_runtime::dataset::{LeRobotDataset, OpenOptions};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::config::PretrainConfig;
use super::model::FRAMES;

/// What the run saw of its dataset (`RUN/data.json`): the normalisation a
/// consumer of the encoder must apply, and the clip count a resume checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TactileDataInfo {
    pub dataset: String,
    pub key: String,
    /// (H, W) of one frame.
    pub image: (i64, i64),
    /// Pressure mean and standard deviation over every cell of every frame:
    /// the MAE sees `(p - mean) / std`.
    pub mean: f64,
    pub std: f64,
    pub frames: usize,
    pub episodes: usize,
    /// Clips used (with contact, see `pretrain.min_contact_pressure`) of all
    /// the clips that fit in the episodes.
    pub clips: usize,
    pub clips_all: usize,
}

/// Every frame (normalised, `(N, 1, H, W)` on the device) and the clips' first frames.
pub struct TactileClips {
    pub info: TactileDataInfo,
    frames: Tensor,
    starts: Vec<i64>,
    stride: i64,
}

impl TactileClips {
    pub fn load(dataset: &Path, cfg: &PretrainConfig, device: Device) -> Result<TactileClips> {
        let key = &cfg.pretrain.key;
        let opts = OpenOptions { image_keys: Some(vec![]), ..Default::default() };
        let ds = LeRobotDataset::open(dataset, &opts).with_context(|| format!("opening dataset {}", dataset.display()))?;
        let Some(f) = ds.info.features.get(key) else {
            let have: Vec<&str> = ds.info.features.iter().filter(|(_, f)| f.is_pressure_image()).map(|(k, _)| k).collect();
            bail!("dataset {}: no feature {key} (pressure images: {have:?}); record with a pressure_image stream, or set pretrain.key", dataset.display());
        };
        let Some((h, w, _)) = f.pressure_image_shape() else {
            bail!("dataset {}: feature {key} is not a pressure image (dtype {}, shape {:?})", dataset.display(), f.dtype, f.shape);
        };
        let (h, w) = (h as i64, w as i64);
        if (h, w) != cfg.tactile_mae.image || cfg.tactile_mae.channels != 1 {
            bail!(
                "dataset {}: {key} is {h} x {w} x 1, the config's tactile_mae.image is {:?} x {} channels: set tactile_mae.image = [{h}, {w}], channels = 1",
                dataset.display(),
                cfg.tactile_mae.image,
                cfg.tactile_mae.channels
            );
        }
        let n = ds.num_frames();
        let cells = (h * w) as usize;
        let mut all = Vec::with_capacity(n * cells);
        for i in 0..n {
            all.extend_from_slice(ds.vector(key, i));
        }
        let (mean, std) = mean_std(&all);
        let stride = cfg.pretrain.frame_stride as i64;
        let span = (FRAMES - 1) * stride;
        let contact: Vec<bool> = all.chunks_exact(cells).map(|f| f.iter().any(|&p| f64::from(p) >= cfg.pretrain.min_contact_pressure)).collect();
        let (mut starts, mut clips_all) = (Vec::new(), 0usize);
        for e in 0..ds.num_episodes() {
            let r = ds.episode_range(e);
            for s in (r.start as i64..r.end as i64).filter(|s| s + span < r.end as i64) {
                clips_all += 1;
                if (0..FRAMES).any(|f| contact[(s + f * stride) as usize]) {
                    starts.push(s);
                }
            }
        }
        if starts.len() < cfg.pretrain.batch_size {
            bail!(
                "dataset {}: {} clips of {FRAMES} frames {stride} apart with contact (of {clips_all}), fewer than pretrain.batch_size = {}",
                dataset.display(),
                starts.len(),
                cfg.pretrain.batch_size
            );
        }
        let frames = Tensor::from_slice(&all).view([n as i64, 1, h, w]);
        let frames = ((frames - mean) / std).to_kind(Kind::Float).to_device(device);
        let info = TactileDataInfo {
            dataset: dataset.display().to_string(),
            key: key.clone(),
            image: (h, w),
            mean,
            std,
            frames: n,
            episodes: ds.num_episodes(),
            clips: starts.len(),
            clips_all,
        };
        Ok(TactileClips { info, frames, starts, stride })
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Clips `idx` as `(B, 4, 1, H, W)`.
    pub fn batch(&self, idx: &[usize]) -> Tensor {
        let frame_idx: Vec<i64> = idx
            .iter()
            .flat_map(|&i| (0..FRAMES).map(move |f| (i, f)))
            .map(|(i, f)| self.starts[i] + f * self.stride)
            .collect();
        let sel = Tensor::from_slice(&frame_idx).to_device(self.frames.device());
        let (h, w) = self.info.image;
        self.frames.index_select(0, &sel).view([idx.len() as i64, FRAMES, 1, h, w])
    }
}

/// Mean and standard deviation (population) of `v`; std is at least 1e-6.
fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt().max(1e-6))
}
