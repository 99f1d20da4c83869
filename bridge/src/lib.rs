//! Robot I/O for the ManiFlow runtime: the SO-101 arm's description (joint order,
//! limits, units). Transports and messages arrive with the robot I/O work; this
//! crate knows nothing of ML.

pub mod so101;
