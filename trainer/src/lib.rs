//! The onboard trainer: DiTX Gate-Attention ManiFlow in `tch` (libtorch),
//! consistency flow training, metrics and health, LeRobot v3 datasets,
//! checkpoints, and export to policy packages through our own ONNX writer.
//! See `trainer/README.md` and `trainer/docs/MODEL.md`.

pub mod act;
pub mod attn_reg;
pub mod augment;
pub mod bench;
pub mod checkpoint;
pub mod compare;
pub mod cli_train;
pub mod config;
pub mod cuda;
pub mod data;
pub mod export;
pub mod gpu_check;
pub mod health;
pub mod import;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod objective;
pub mod onnx;
pub mod presets;
pub mod rng;
pub mod stages;
pub mod tactile_mae;
pub mod train;

/// Unit tests that seed and draw from libtorch's global generator hold this, so
/// parallel tests do not interleave their draws.
#[cfg(test)]
pub(crate) fn tch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
