//! The ManiFlow policy runtime: loads policy packages (`models/README.md`), runs
//! them with ONNX Runtime (ManiFlow's encoder once + N velocity steps, or ACT in
//! one call), and turns action chunks into safe per-tick commands.
//!
//! Layers, bottom to top; each imports only those below it (and `error`,
//! `stats`):
//! - [`policy`]: package, manifest, ONNX Runtime, engine, preprocessing,
//!   normalisation (frames, state, tactile -> normalised tensors -> chunk);
//! - [`control`]: executor (queue, temporal ensembling, async overlap,
//!   interpolation), safety filter, the controller of one tick;
//! - [`dataset`]: LeRobot v3.0 datasets (read, write, statistics, video);
//! - [`node`]: the robot node (transports, threads) and the recorder;
//! - [`cli`]: the `maniflow` subcommands.

pub mod cli;
pub mod control;
pub mod dataset;
pub mod error;
pub mod node;
pub mod policy;
pub mod stats;

pub use error::{EngineError, OrtLoadError, PackageError};
pub use policy::engine::Engine;
pub use policy::manifest::{Manifest, PolicyKind};
pub use policy::options::EngineOptions;
pub use policy::package::PolicyPackage;
