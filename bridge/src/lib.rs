//! Robot I/O for the ManiFlow runtime. Knows nothing of ML.
//!
//! - [`so101`]: the SO-101 arm's joint order, limits and units;
//!   [`kinematics`]: its joint chain, forward kinematics and damped-least-squares IK.
//! - [`msg`]: ROS 2 message types and their CDR encoding.
//! - [`transport`]: one transport trait over native zenoh, ROS 2 over DDS and
//!   ROS 2 over rmw_zenoh.
//! - [`type_hash`]: REP-2016 type hashes of those messages, from their field lists.
//! - [`camera`]: JPEG decode/encode for compressed image streams, and cameras
//!   read without ROS (V4L2 devices, ffmpeg inputs) with reconnects.
//! - [`sim`]: the simulated SO-101 pick task and its scripted expert.
//! - [`feetech`]: the Feetech STS3215 servo bus of a real SO-101.

pub mod camera;
pub mod feetech;
pub mod kinematics;
pub mod msg;
pub mod sim;
pub mod so101;
pub mod transport;
pub mod type_hash;
