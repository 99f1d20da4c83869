//! Tactile MAE pretraining (seed 001, `shared/design/METRICS.md` "Tactile MAE"): a masked
//! autoencoder on tactile images with a static objective (reconstruct one masked frame) and a
//! dynamic one (reconstruct three masked frames, predict the fourth), trained jointly (mode 2)
//! with weights alpha and beta.
//!
//! So far: the objective ([`objective`]: patches, 75 % random masking, the losses and every
//! seed-001 batch metric with its identities) and the ViT MAE ([`model`]). The training loop
//! with epoch/summary metrics, health rules and `maniflow-train pretrain-tactile` are not
//! written yet (issue 20).

pub mod model;
pub mod objective;
