//! LeRobot datasets, format v3.0 (`codebase_version: "v3.0"`), read and written
//! with the exact on-disk schema of LeRobot 0.6.1, so a dataset recorded here
//! loads in `lerobot.datasets.LeRobotDataset(repo_id, root=dir)` unchanged and a
//! dataset recorded with LeRobot loads here.
//!
//! ```text
//! meta/info.json                       Info: version, fps, totals, path templates, features
//! meta/stats.json                      Stats: per feature min/max/mean/std/count/q01..q99
//! meta/tasks.parquet                   task (pandas index) -> task_index
//! meta/episodes/chunk-000/file-000.parquet   one row per episode (EpisodeMeta + stats/...)
//! data/chunk-XXX/file-YYY.parquet      one row per frame, one row group per episode
//! videos/<key>/chunk-XXX/file-YYY.mp4  many episodes per file; frame time = from_timestamp + timestamp
//! ```
//!
//! - [`LeRobotDataset::open`] reads the metadata and every data file, checks them
//!   against each other (errors name the file and the field), and decodes image and
//!   video features to RGB u8 HWC at native resolution (video through the `ffmpeg`
//!   CLI, see [`video`]).
//! - [`DatasetWriter`] records episodes. Every `save_episode` commits atomically:
//!   data, video and metadata files are written to temporary names and renamed, and
//!   `meta/info.json` (the commit point) is renamed last.
//! - [`window`] cuts episodes into training windows (diffusion-policy sampler) and
//!   splits episodes into train / validation; [`synth`] writes a small learnable
//!   SO-101 dataset.
//!
//! Limitations: numeric features of rank > 1 (HF `Array2D`..) are not supported;
//! image bytes must be PNG; parquet files must use snappy or no compression
//! (pyarrow's and LeRobot's default); depth-map videos are not decoded; the keys
//! of a video feature's `info` block are written sorted (values as LeRobot's).

pub mod error;
pub mod meta;
mod parquet_io;
pub mod reader;
pub mod stats;
pub mod synth;
pub mod video;
pub mod window;
pub mod writer;

#[cfg(test)]
mod tests;

pub use error::DatasetError;
pub use meta::{EpisodeMeta, FeatureSpec, Features, Info, VideoRef, CODEBASE_VERSION};
pub use reader::{LeRobotDataset, OpenOptions};
pub use stats::{FeatureStats, Stats};
pub use video::VideoCodec;
pub use window::{split_episodes, Window, WindowSpec, Windows};
pub use writer::{DatasetWriter, EpisodeReport, Frame, WriterOptions};
