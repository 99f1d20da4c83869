//! Video through the `ffmpeg` command-line tool (a subprocess, no linking).
//!
//! We ship the static ffmpeg of PyPI `imageio-ffmpeg` (libdav1d, libsvtav1,
//! libaom, libx264). [`find_ffmpeg`] looks for, in order: `$MANIFLOW_FFMPEG`,
//! `$FFMPEG_BINARY`, `$IMAGEIO_FFMPEG_EXE`, then
//! `<dir>/.venv/lib/python3*/site-packages/imageio_ffmpeg/binaries/ffmpeg-*` for
//! every ancestor `<dir>` of the given hints (dataset root), the working directory
//! and the executable, then `ffmpeg` on `PATH`.
//!
//! Encoding follows LeRobot 0.6.1 `VideoEncoderConfig` defaults: yuv420p, GOP 2,
//! CRF 30; AV1 with libsvtav1 preset 12 and `fast-decode=0`, H.264 with libx264.
//! Episodes are encoded to their own mp4 and appended to the key's current file
//! with the concat demuxer and stream copy (LeRobot's `concatenate_video_files`),
//! so frame `k` of the file is at `k / fps` seconds.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;

use serde_json::{json, Value};

use super::error::{DatasetError, Result};

/// Video codec of a recorded dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// AV1 with libsvtav1 (LeRobot's default).
    Av1,
    /// H.264 with libx264.
    H264,
}

impl VideoCodec {
    /// The ffmpeg encoder.
    pub fn encoder(self) -> &'static str {
        match self {
            VideoCodec::Av1 => "libsvtav1",
            VideoCodec::H264 => "libx264",
        }
    }

    /// The stream's codec name as LeRobot records it (`video.codec`).
    pub fn codec_name(self) -> &'static str {
        match self {
            VideoCodec::Av1 => "av1",
            VideoCodec::H264 => "h264",
        }
    }

    fn encoder_args(self) -> Vec<&'static str> {
        match self {
            VideoCodec::Av1 => vec![
                "-c:v",
                "libsvtav1",
                "-pix_fmt",
                "yuv420p",
                "-g",
                "2",
                "-crf",
                "30",
                "-preset",
                "12",
                "-svtav1-params",
                "fast-decode=0",
            ],
            VideoCodec::H264 => vec![
                "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "2", "-crf", "30",
            ],
        }
    }

    /// The `features[key].info` block LeRobot's `get_video_info` writes for our files.
    pub fn info_block(self, height: usize, width: usize, fps: u32) -> Value {
        let preset = match self {
            VideoCodec::Av1 => json!(12),
            VideoCodec::H264 => Value::Null,
        };
        json!({
            "video.height": height,
            "video.width": width,
            "video.codec": self.codec_name(),
            "video.pix_fmt": "yuv420p",
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": false,
            "video.g": 2,
            "video.crf": 30,
            "video.preset": preset,
            "video.fast_decode": 0,
            "video.video_backend": "pyav",
            "video.extra_options": {},
            "is_depth_map": false,
        })
    }
}

/// Finds an ffmpeg binary (see the module docs for the search order).
pub fn find_ffmpeg(hints: &[&Path]) -> Result<PathBuf> {
    let mut tried = Vec::new();
    for var in ["MANIFLOW_FFMPEG", "FFMPEG_BINARY", "IMAGEIO_FFMPEG_EXE"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(v);
            if p.is_file() {
                return Ok(p);
            }
            tried.push(format!("${var}={} (not a file)", p.display()));
        }
    }
    let mut starts: Vec<PathBuf> = hints.iter().map(|p| p.to_path_buf()).collect();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        starts.push(dir);
    }
    for start in &starts {
        let start = std::fs::canonicalize(start).unwrap_or_else(|_| start.clone());
        for dir in start.ancestors() {
            if let Some(p) = venv_ffmpeg(dir) {
                return Ok(p);
            }
        }
    }
    tried.push("<ancestors of dataset root, cwd, executable>/.venv/lib/python3*/site-packages/imageio_ffmpeg/binaries/ffmpeg-*".into());
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("ffmpeg");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    tried.push("ffmpeg on PATH".into());
    Err(DatasetError::FfmpegNotFound {
        tried: tried.join("; "),
    })
}

fn venv_ffmpeg(dir: &Path) -> Option<PathBuf> {
    let lib = dir.join(".venv").join("lib");
    let mut pys: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .collect();
    pys.sort();
    for py in pys {
        let bins = py
            .join("site-packages")
            .join("imageio_ffmpeg")
            .join("binaries");
        let Ok(rd) = std::fs::read_dir(&bins) else {
            continue;
        };
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("ffmpeg-") && !n.ends_with(".md") && !n.ends_with(".py")
            })
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Some(p);
        }
    }
    None
}

fn base_command(ffmpeg: &Path) -> Command {
    let mut c = Command::new(ffmpeg);
    c.arg("-nostdin").arg("-hide_banner").arg("-v").arg("error");
    // SVT-AV1 logs to stderr on its own: errors only.
    c.env("SVT_LOG", "1");
    c
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn stderr_text(buf: &[u8]) -> String {
    let s = String::from_utf8_lossy(buf);
    let s = s.trim();
    let tail: String = s
        .chars()
        .rev()
        .take(600)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if tail.is_empty() {
        "no message".into()
    } else {
        tail
    }
}

/// Streams one episode's RGB frames into an ffmpeg encoder writing `out`.
pub(crate) struct EpisodeEncoder {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    out: PathBuf,
    frame_bytes: usize,
    pub frames: usize,
}

impl EpisodeEncoder {
    pub fn start(
        ffmpeg: &Path,
        out: &Path,
        width: usize,
        height: usize,
        fps: u32,
        codec: VideoCodec,
    ) -> Result<Self> {
        let mut cmd = base_command(ffmpeg);
        cmd.args(["-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s"])
            .arg(format!("{width}x{height}"))
            .arg("-r")
            .arg(fps.to_string())
            .args(["-i", "-"])
            .args(codec.encoder_args())
            .args(["-f", "mp4"])
            .arg(out)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            DatasetError::video(out, format!("cannot start {}: {e}", ffmpeg.display()))
        })?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().map(drain);
        Ok(EpisodeEncoder {
            child: Some(child),
            stdin,
            stderr,
            out: out.to_path_buf(),
            frame_bytes: width * height * 3,
            frames: 0,
        })
    }

    pub fn push(&mut self, rgb: &[u8]) -> Result<()> {
        if rgb.len() != self.frame_bytes {
            return Err(DatasetError::Usage(format!(
                "video frame has {} bytes, expected {}",
                rgb.len(),
                self.frame_bytes
            )));
        }
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(DatasetError::video(&self.out, "encoder already closed"));
        };
        if let Err(e) = stdin.write_all(rgb) {
            let msg = self.collect_failure();
            return Err(DatasetError::video(
                &self.out,
                format!("ffmpeg encoder stopped ({e}): {msg}"),
            ));
        }
        self.frames += 1;
        Ok(())
    }

    fn collect_failure(&mut self) -> String {
        self.stdin.take();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .map(|b| stderr_text(&b))
            .unwrap_or_default()
    }

    /// Closes the input and waits for the encoder; the mp4 is complete on success.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.stdin.take();
        let status = match self.child.take() {
            Some(mut c) => c.wait().map_err(|e| DatasetError::io(&self.out, e))?,
            None => return Err(DatasetError::video(&self.out, "encoder already closed")),
        };
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            let _ = std::fs::remove_file(&self.out);
            return Err(DatasetError::video(
                &self.out,
                format!("ffmpeg encoding failed ({status}): {}", stderr_text(&err)),
            ));
        }
        Ok(std::mem::take(&mut self.out))
    }
}

impl Drop for EpisodeEncoder {
    /// An encoder dropped before `finish` (cleared episode, writer dropped
    /// mid-episode) is killed and its partial file removed.
    fn drop(&mut self) {
        if self.child.is_some() {
            self.collect_failure();
            let _ = std::fs::remove_file(&self.out);
        }
    }
}

/// Concatenates mp4 files with identical encoding into `out` (stream copy).
pub(crate) fn concat(ffmpeg: &Path, inputs: &[&Path], out: &Path) -> Result<()> {
    let list = out.with_file_name(format!(
        ".{}.ffconcat",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut text = String::from("ffconcat version 1.0\n");
    for p in inputs {
        let abs = std::fs::canonicalize(p).map_err(|e| DatasetError::io(*p, e))?;
        text.push_str(&format!(
            "file '{}'\n",
            abs.to_string_lossy().replace('\'', "'\\''")
        ));
    }
    std::fs::write(&list, text).map_err(|e| DatasetError::io(&list, e))?;
    let output = base_command(ffmpeg)
        .args(["-y", "-f", "concat", "-safe", "0", "-i"])
        .arg(&list)
        .args(["-c", "copy", "-movflags", "faststart", "-f", "mp4"])
        .arg(out)
        .stdin(Stdio::null())
        .output();
    let _ = std::fs::remove_file(&list);
    let output = output
        .map_err(|e| DatasetError::video(out, format!("cannot start {}: {e}", ffmpeg.display())))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(out);
        return Err(DatasetError::video(
            out,
            format!(
                "ffmpeg concat failed ({}): {}",
                output.status,
                stderr_text(&output.stderr)
            ),
        ));
    }
    Ok(())
}

/// `(width, height)` of the first video stream of `path`, from ffmpeg's stream listing.
pub fn probe_size(ffmpeg: &Path, path: &Path) -> Result<(usize, usize)> {
    let output = Command::new(ffmpeg)
        .args(["-nostdin", "-hide_banner", "-i"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            DatasetError::video(path, format!("cannot start {}: {e}", ffmpeg.display()))
        })?;
    let text = String::from_utf8_lossy(&output.stderr);
    for line in text.lines().filter(|l| l.contains("Video:")) {
        for tok in line.split([' ', ',']) {
            if let Some((w, h)) = tok.split_once('x') {
                if let (Ok(w), Ok(h)) = (w.parse::<usize>(), h.parse::<usize>()) {
                    if w > 0 && h > 0 {
                        return Ok((w, h));
                    }
                }
            }
        }
    }
    Err(DatasetError::video(
        path,
        format!("not a readable video: {}", stderr_text(&output.stderr)),
    ))
}

/// Decodes every frame of `path` to RGB24 at `width x height` (the stream's own
/// size, see [`probe_size`]) and hands each to `on_frame(frame_number, rgb)` in
/// order. Returns the number of frames decoded.
pub fn decode_frames(
    ffmpeg: &Path,
    path: &Path,
    width: usize,
    height: usize,
    mut on_frame: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<usize> {
    let mut child = base_command(ffmpeg)
        .arg("-i")
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            DatasetError::video(path, format!("cannot start {}: {e}", ffmpeg.display()))
        })?;
    let stderr = child.stderr.take().map(drain);
    let Some(mut stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(DatasetError::video(path, "ffmpeg gave no output pipe"));
    };
    let frame_bytes = width * height * 3;
    let mut buf = vec![0u8; frame_bytes];
    let mut n = 0usize;
    let mut callback_err = None;
    let mut partial = 0usize;
    loop {
        // Fill one frame, tolerating short reads.
        let mut filled = 0;
        while filled < frame_bytes {
            match stdout.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(DatasetError::io(path, e));
                }
            }
        }
        if filled < frame_bytes {
            partial = filled;
            break;
        }
        if let Err(e) = on_frame(n, &buf) {
            callback_err = Some(e);
            break;
        }
        n += 1;
    }
    if callback_err.is_some() {
        let _ = child.kill();
    }
    drop(stdout);
    let status = child.wait().map_err(|e| DatasetError::io(path, e))?;
    let err = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if let Some(e) = callback_err {
        return Err(e);
    }
    if !status.success() {
        return Err(DatasetError::video(
            path,
            format!(
                "ffmpeg decoding failed ({status}) after {n} frames: {}",
                stderr_text(&err)
            ),
        ));
    }
    if partial != 0 {
        return Err(DatasetError::video(
            path,
            format!("decoded stream ended inside frame {n} ({partial} of {frame_bytes} bytes)"),
        ));
    }
    Ok(n)
}
