//! The ManiFlow policy runtime: loads policy packages (`models/README.md`), runs
//! them with ONNX Runtime (ManiFlow's encoder once + N velocity steps, or ACT in
//! one call), and turns action chunks into safe per-tick commands.
//!
//! Layers, from the sensors to the servo command:
//! `preprocess` (frames, state, tactile -> normalised tensors) ->
//! `engine` (ONNX sessions, sampler, unnormalise) -> `executor` (queue,
//! temporal ensembling, async overlap, interpolation) -> `safety`.

pub mod control;
pub mod dataset;
pub mod engine;
pub mod error;
pub mod executor;
pub mod manifest;
pub mod node;
pub mod normalize;
pub mod npz;
pub mod onnx_info;
pub mod ortlib;
pub mod package;
pub mod preprocess;
pub mod record;
pub mod safety;
pub mod stats;
pub mod synthetic;

pub use engine::{Engine, EngineOptions};
pub use error::{EngineError, OrtLoadError, PackageError};
pub use manifest::{Manifest, PolicyKind};
pub use package::PolicyPackage;
