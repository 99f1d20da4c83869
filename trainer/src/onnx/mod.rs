//! ONNX export of ManiFlow policies: a minimal protobuf writer ([`proto`]), a graph
//! builder ([`builder`]) and the `encoder.onnx` / `velocity.onnx` graphs of
//! docs/MODEL.md ([`maniflow`]). Opset 17, IR 8, f32, symbolic batch `B`.

pub mod builder;
pub mod experts;
pub mod fusion;
pub mod maniflow;
pub mod proto;
pub mod tactile_mae;

pub use maniflow::{build_encoder, build_velocity, context_dims, modality_map, ObsDims, Weights};
