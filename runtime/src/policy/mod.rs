//! The policy layer: everything needed to turn one observation into one action
//! chunk. It owns the policy package (`policy.toml` manifest, checksums, graph
//! interface checks), ONNX Runtime (finding the library, building sessions),
//! the engine (preallocated tensors, ManiFlow's few-step sampler, ACT's single
//! call), preprocessing (resize, colour order, normalise into CHW f32) and
//! normalisation. It imports nothing above it: no control, node, dataset or
//! CLI code, only `error`, `stats` and outside crates.

pub mod engine;
pub mod gpu;
pub mod manifest;
pub mod normalize;
pub mod onnx_info;
pub mod options;
pub mod ortlib;
pub mod package;
pub mod preprocess;
