//! Cameras: JPEG decode/encode for compressed image streams ([`jpeg`]), and
//! cameras read directly, without ROS: a V4L2 device ([`v4l2`], MJPEG or
//! YUYV, kernel timestamps) or any input the `ffmpeg` binary reads
//! ([`ffmpeg`]: RTSP cameras, video files, test sources). A [`reader`] thread
//! per camera turns either into `sensor_msgs/Image` (rgb8) frames stamped with
//! their capture (V4L2) or arrival (ffmpeg) time, and reconnects with backoff
//! when the camera disappears. [`source`] is the config table
//! (`source = { v4l2 = "/dev/video0", ... }`), [`frame`] the pixel decoders.

pub mod jpeg;

pub use jpeg::{decode_jpeg_rgb, encode_jpeg_rgb, MAX_JPEG_SIDE};
pub mod ffmpeg;
pub mod frame;
pub mod reader;
pub mod source;
pub mod v4l2;

pub use reader::{CameraEvent, CameraFrame, CameraReader, CameraSink, CameraStats};
pub use source::{CameraSource, PixelFormat, SourceConfig};
