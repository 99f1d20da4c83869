//! The control layer: one control tick from a stream of action chunks to a
//! safe command. It owns the executor (queue, temporal ensembling, async
//! overlap, real-time chunking, interpolation; LeRobot's semantics), the
//! safety filter (joint and velocity limits, whole-chunk checks) and the
//! controller that ties one engine, executor and safety filter into a step. It imports the policy layer
//! and nothing above it (no node, dataset or CLI code); nothing in it
//! allocates or blocks on the control path.

pub mod controller;
pub mod executor;
pub mod safety;

pub use controller::{so101_safety, Controller, StepReport};
