//! Tactile MAE pretraining (seed 001, `shared/design/METRICS.md` "Tactile MAE"): a masked
//! autoencoder on tactile images with a static objective (reconstruct one masked frame) and a
//! dynamic one (reconstruct three masked frames, predict the fourth), trained jointly (mode 2)
//! with weights alpha and beta.
//!
//! - [`objective`]: patches, 75 % random masking, the losses and every seed-001 batch metric
//!   with its identities;
//! - [`model`]: the ViT MAE;
//! - [`config`], [`data`], [`pretrain`]: `maniflow-train pretrain-tactile` (a dataset's
//!   pressure images, epochs of clips, batch/epoch/summary metrics, guards, checkpoints);
//!   its health rules are in [`crate::health::mae`];
//! - [`policy`]: a pretrained encoder inside a ManiFlow policy (`encoder.tactile = "mae"`).

pub mod config;
pub mod data;
pub mod model;
pub mod objective;
pub mod policy;
pub mod pretrain;
