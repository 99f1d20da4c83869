//! Where a camera's frames come from: the `source` table of a camera stream
//! in the node config, checked once into a [`CameraSource`].
//!
//! ```toml
//! source = { v4l2 = "/dev/video0", format = "mjpeg", width = 640, height = 480, fps = 30 }
//! source = { ffmpeg = "rtsp://192.168.1.20:8554/wrist", input_args = ["-rtsp_transport", "tcp"] }
//! ```
//!
//! Exactly one of `v4l2` (a device node) or `ffmpeg` (anything the ffmpeg
//! binary opens: a URL, a file, a `-f lavfi` test source, a device with `-f
//! v4l2`) names the camera. Unknown keys are refused by serde; [`SourceConfig::resolve`]
//! names the offending key (relative to the table, e.g. `source.format`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest accepted frame side (pixels).
pub const MAX_SIDE: u32 = 8192;
/// Default: no frame for this long and the camera counts as lost (reconnect).
pub const DEFAULT_STALL_MS: u64 = 5000;

/// Pixel format asked of a V4L2 device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Motion JPEG (V4L2 `MJPG`): one JPEG per frame, decoded with `zune-jpeg`.
    Mjpeg,
    /// YUYV 4:2:2 (V4L2 `YUYV`), converted to RGB (BT.601, limited range).
    Yuyv,
}

impl PixelFormat {
    /// The V4L2 fourcc.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Mjpeg => "mjpeg",
            PixelFormat::Yuyv => "yuyv",
        }
    }
}

/// The `source` table as written (every key optional; [`SourceConfig::resolve`] checks).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A V4L2 device node, e.g. `/dev/video0` or a stable
    /// `/dev/v4l/by-id/usb-...-video-index0`.
    pub v4l2: Option<PathBuf>,
    /// Any ffmpeg input: `rtsp://...`, a video file, a lavfi graph (with
    /// `input_args = ["-f", "lavfi"]`).
    pub ffmpeg: Option<String>,
    /// V4L2: mjpeg (default) or yuyv.
    pub format: Option<PixelFormat>,
    /// V4L2: the size asked of the device (default 640x480). ffmpeg: scale
    /// the input to this size (default: the input's size).
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// V4L2: the frame rate asked of the device (default 30). ffmpeg: convert
    /// to this rate (default: the input's rate).
    pub fps: Option<f64>,
    /// ffmpeg: options placed before `-i` (input format and its options),
    /// e.g. `["-f", "lavfi"]`, `["-re"]` for a file, `["-rtsp_transport", "tcp"]`.
    pub input_args: Option<Vec<String>>,
    /// No frame for this long: the camera is lost and reopened (default 5000).
    pub stall_ms: Option<u64>,
}

/// A checked source.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraSource {
    V4l2(V4l2Source),
    Ffmpeg(FfmpegSource),
}

#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Source {
    pub device: PathBuf,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub stall: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FfmpegSource {
    /// The ffmpeg binary (the caller finds it; default `ffmpeg` on PATH).
    pub ffmpeg: PathBuf,
    pub input: String,
    pub input_args: Vec<String>,
    pub size: Option<(u32, u32)>,
    pub fps: Option<f64>,
    pub stall: Duration,
}

impl CameraSource {
    /// One line for messages: `v4l2 /dev/video0 (mjpeg 640x480 @ 30 fps)`.
    pub fn describe(&self) -> String {
        match self {
            CameraSource::V4l2(v) => format!(
                "v4l2 {} ({} {}x{} @ {} fps)",
                v.device.display(),
                v.format.name(),
                v.width,
                v.height,
                v.fps
            ),
            CameraSource::Ffmpeg(f) => format!("ffmpeg {}", f.input),
        }
    }

    pub fn stall(&self) -> Duration {
        match self {
            CameraSource::V4l2(v) => v.stall,
            CameraSource::Ffmpeg(f) => f.stall,
        }
    }
}

fn side(key: &str, v: u32) -> Result<u32, String> {
    if v == 0 || v > MAX_SIDE {
        return Err(format!("source.{key} = {v} must be in 1..={MAX_SIDE}"));
    }
    Ok(v)
}

impl SourceConfig {
    /// Checks the table; errors name the key (`source.<key>`).
    pub fn resolve(&self) -> Result<CameraSource, String> {
        let stall_ms = self.stall_ms.unwrap_or(DEFAULT_STALL_MS);
        if stall_ms == 0 {
            return Err("source.stall_ms must be > 0".into());
        }
        let stall = Duration::from_millis(stall_ms);
        if let Some(f) = self.fps {
            if !(f.is_finite() && f > 0.0 && f <= 1000.0) {
                return Err(format!("source.fps = {f} must be in (0, 1000]"));
            }
        }
        match (&self.v4l2, &self.ffmpeg) {
            (Some(_), Some(_)) => Err(
                "source: v4l2 and ffmpeg both given: a camera is read one way (keep one)".into(),
            ),
            (None, None) => Err(
                "source: name the camera with v4l2 = \"/dev/videoN\" or ffmpeg = \"<input>\""
                    .into(),
            ),
            (Some(dev), None) => {
                if self.input_args.is_some() {
                    return Err("source.input_args applies to ffmpeg sources only".into());
                }
                if dev.as_os_str().is_empty() {
                    return Err(
                        "source.v4l2 is empty: give the device, e.g. \"/dev/video0\"".into(),
                    );
                }
                let fps = self.fps.unwrap_or(30.0);
                if fps.fract() != 0.0 {
                    return Err(format!(
                        "source.fps = {fps}: a V4L2 rate is a whole number of frames per second"
                    ));
                }
                Ok(CameraSource::V4l2(V4l2Source {
                    device: dev.clone(),
                    format: self.format.unwrap_or(PixelFormat::Mjpeg),
                    width: side("width", self.width.unwrap_or(640))?,
                    height: side("height", self.height.unwrap_or(480))?,
                    fps: fps as u32,
                    stall,
                }))
            }
            (None, Some(input)) => {
                if self.format.is_some() {
                    return Err(
                        "source.format applies to v4l2 sources (ffmpeg decodes its input itself)"
                            .into(),
                    );
                }
                if input.is_empty() {
                    return Err("source.ffmpeg is empty: give a URL, file or lavfi graph".into());
                }
                let size = match (self.width, self.height) {
                    (Some(w), Some(h)) => Some((side("width", w)?, side("height", h)?)),
                    (None, None) => None,
                    _ => return Err("source.width and source.height go together".into()),
                };
                Ok(CameraSource::Ffmpeg(FfmpegSource {
                    ffmpeg: PathBuf::from("ffmpeg"),
                    input: input.clone(),
                    input_args: self.input_args.clone().unwrap_or_default(),
                    size,
                    fps: self.fps,
                    stall,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as JSON (the runtime's config tests read it from TOML).
    fn parse(t: &str) -> Result<CameraSource, String> {
        let s: SourceConfig = serde_json::from_str(t).map_err(|e| e.to_string())?;
        s.resolve()
    }

    #[test]
    fn sources_parse_with_defaults() {
        let v = parse(r#"{ "v4l2": "/dev/video0" }"#).unwrap();
        assert_eq!(
            v,
            CameraSource::V4l2(V4l2Source {
                device: "/dev/video0".into(),
                format: PixelFormat::Mjpeg,
                width: 640,
                height: 480,
                fps: 30,
                stall: Duration::from_millis(DEFAULT_STALL_MS),
            })
        );
        assert_eq!(v.describe(), "v4l2 /dev/video0 (mjpeg 640x480 @ 30 fps)");
        let f = parse(
            r#"{ "ffmpeg": "testsrc2", "input_args": ["-f", "lavfi"], "width": 32, "height": 24, "fps": 7.5, "stall_ms": 100 }"#,
        )
        .unwrap();
        let CameraSource::Ffmpeg(f) = f else { panic!() };
        assert_eq!(f.size, Some((32, 24)));
        assert_eq!(f.fps, Some(7.5));
        assert_eq!(f.input_args, ["-f", "lavfi"]);
        assert_eq!(f.stall, Duration::from_millis(100));
    }

    #[test]
    fn errors_name_the_key() {
        for (t, want) in [
            (r#"{ "v4l2": "/dev/video0", "bogus": 1 }"#, "bogus"),
            (r#"{ "v4l2": "/dev/video0", "format": "h264" }"#, "h264"),
            (r#"{ "v4l2": "/dev/video0", "ffmpeg": "x" }"#, "both"),
            (r#"{ "width": 3 }"#, "v4l2 = "),
            (r#"{ "ffmpeg": "x", "format": "yuyv" }"#, "source.format"),
            (
                r#"{ "ffmpeg": "x", "width": 3 }"#,
                "source.width and source.height",
            ),
            (
                r#"{ "v4l2": "/dev/video0", "input_args": [] }"#,
                "source.input_args",
            ),
            (r#"{ "v4l2": "/dev/video0", "width": 0 }"#, "source.width"),
            (r#"{ "v4l2": "/dev/video0", "fps": 7.5 }"#, "source.fps"),
            (r#"{ "ffmpeg": "x", "fps": -1 }"#, "source.fps"),
            (r#"{ "ffmpeg": "x", "stall_ms": 0 }"#, "source.stall_ms"),
            (r#"{ "ffmpeg": "" }"#, "source.ffmpeg"),
        ] {
            let e = parse(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
