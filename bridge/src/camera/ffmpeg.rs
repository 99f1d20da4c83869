//! A camera read by the `ffmpeg` binary (a child process, nothing linked):
//! any input ffmpeg opens (RTSP, a video file, a lavfi test source, a device
//! through `-f v4l2`), decoded by ffmpeg and written to a pipe as a stream of
//! binary PPM images (`-c:v ppm -f image2pipe`): each frame carries its own
//! size, so the size need not be known in advance and a desync is detected.
//! Frames are stamped when their last byte arrives.
//!
//! The child dies with the capture (killed on drop); its exit, a broken
//! stream, or no frame for `stall_ms` ends the capture with the reason and the
//! last lines ffmpeg printed, and the reader starts a new one.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::frame::rgb_image;
use super::reader::{CameraFrame, Next, Shared, Stop};
use super::source::{FfmpegSource, MAX_SIDE};
use crate::transport::wall_ns;

/// The ffmpeg command line for `src` (without the binary).
pub fn ffmpeg_args(src: &FfmpegSource) -> Vec<String> {
    let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error"]
        .map(String::from)
        .to_vec();
    a.extend(src.input_args.iter().cloned());
    a.extend(["-i".into(), src.input.clone()]);
    a.extend(["-map", "0:v:0", "-an", "-sn", "-dn"].map(String::from));
    let mut filters = Vec::new();
    if let Some((w, h)) = src.size {
        filters.push(format!("scale={w}:{h}"));
    }
    if let Some(f) = src.fps {
        filters.push(format!("fps={f}"));
    }
    if !filters.is_empty() {
        a.extend(["-vf".into(), filters.join(",")]);
    }
    a.extend(
        [
            "-pix_fmt",
            "rgb24",
            "-c:v",
            "ppm",
            "-f",
            "image2pipe",
            "pipe:1",
        ]
        .map(String::from),
    );
    a
}

/// An incremental reader of concatenated binary PPM (`P6`, maxval 255) images.
#[derive(Default)]
pub struct PpmStream {
    header: Vec<u8>,
    body: Option<(usize, usize, Vec<u8>)>,
}

/// Longest accepted PPM header.
const MAX_HEADER: usize = 64;

impl PpmStream {
    /// Consumes `bytes`, handing each completed (rgb, width, height) to
    /// `frame`. An error means the stream is not PPM (or is out of sync).
    pub fn push(
        &mut self,
        bytes: &[u8],
        frame: &mut dyn FnMut(Vec<u8>, usize, usize),
    ) -> Result<(), String> {
        let mut carry: Vec<u8> = Vec::new();
        let mut bytes = bytes;
        loop {
            if !carry.is_empty() {
                // bytes read with a header, past the end of its (small) frame:
                // the next header, before the rest of `bytes`
                let c = std::mem::take(&mut carry);
                self.take_header_bytes(&c, &mut carry, frame)?;
                continue;
            }
            if bytes.is_empty() {
                return Ok(());
            }
            match &mut self.body {
                None => {
                    let take = bytes.len().min(MAX_HEADER - self.header.len());
                    let (head, rest) = bytes.split_at(take);
                    bytes = rest;
                    self.take_header_bytes(head, &mut carry, frame)?;
                }
                Some((w, h, data)) => {
                    let need = *w * *h * 3 - data.len();
                    let n = need.min(bytes.len());
                    data.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.finish_body(frame);
                }
            }
        }
    }

    /// Header bytes: once the header is complete, what followed it starts the
    /// body; bytes past the body's end go to `carry`.
    fn take_header_bytes(
        &mut self,
        head: &[u8],
        carry: &mut Vec<u8>,
        frame: &mut dyn FnMut(Vec<u8>, usize, usize),
    ) -> Result<(), String> {
        self.header.extend_from_slice(head);
        match parse_header(&self.header)? {
            None if self.header.len() >= MAX_HEADER => Err(format!(
                "no PPM header in {MAX_HEADER} bytes (starts {:?})",
                String::from_utf8_lossy(&self.header[..16])
            )),
            None => Ok(()),
            Some((len, w, h)) => {
                let spill = &self.header[len..];
                let n = spill.len().min(w * h * 3);
                let mut data = Vec::with_capacity(w * h * 3);
                data.extend_from_slice(&spill[..n]);
                carry.extend_from_slice(&spill[n..]);
                self.header.clear();
                self.body = Some((w, h, data));
                self.finish_body(frame);
                Ok(())
            }
        }
    }

    fn finish_body(&mut self, frame: &mut dyn FnMut(Vec<u8>, usize, usize)) {
        let complete = matches!(&self.body, Some((w, h, d)) if d.len() == w * h * 3);
        if complete {
            if let Some((w, h, data)) = self.body.take() {
                frame(data, w, h);
            }
        }
    }
}

/// `P6 <w> <h> 255` and one whitespace byte: Some((header length, w, h)),
/// None while incomplete.
fn parse_header(b: &[u8]) -> Result<Option<(usize, usize, usize)>, String> {
    if !b"P6".starts_with(&b[..b.len().min(2)]) {
        return Err(format!(
            "not a binary PPM image (starts {:?})",
            String::from_utf8_lossy(&b[..b.len().min(16)])
        ));
    }
    let mut fields = [0usize; 3];
    let mut i = 2;
    for f in fields.iter_mut() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i >= b.len() {
            return Ok(None); // the number (or what follows) has not arrived yet
        }
        if i == start || !b[i].is_ascii_whitespace() || i - start > 5 {
            return Err(format!(
                "bad PPM header {:?}",
                String::from_utf8_lossy(&b[..=i])
            ));
        }
        *f = std::str::from_utf8(&b[start..i])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad PPM header number")?;
    }
    let [w, h, maxval] = fields;
    if maxval != 255 {
        return Err(format!("PPM maxval {maxval} (255 expected: rgb24)"));
    }
    if w == 0 || h == 0 || w > MAX_SIDE as usize || h > MAX_SIDE as usize {
        return Err(format!("PPM size {w}x{h} out of range"));
    }
    Ok(Some((i + 1, w, h)))
}

/// A running ffmpeg child and its frame stream.
pub(crate) struct Capture {
    child: Child,
    stdout: ChildStdout,
    stderr: Option<JoinHandle<()>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    ppm: PpmStream,
    buf: Vec<u8>,
    src: FfmpegSource,
    name: String,
    last_frame: Instant,
    shared: Arc<Shared>,
}

impl Capture {
    pub(crate) fn open(
        src: &FfmpegSource,
        name: &str,
        shared: Arc<Shared>,
    ) -> Result<Capture, String> {
        let mut child = Command::new(&src.ffmpeg)
            .args(ffmpeg_args(src))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "camera {name}: cannot start {} for {}: {e}",
                    src.ffmpeg.display(),
                    src.input
                )
            })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("camera {name}: ffmpeg's pipes are missing"));
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let t2 = tail.clone();
        let stderr = std::thread::Builder::new()
            .name(format!("cam-{name}-log"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut t) = t2.lock() {
                        if t.len() == 4 {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            })
            .ok();
        shared.child_pid.store(child.id() as i32, Ordering::Relaxed);
        Ok(Capture {
            child,
            stdout,
            stderr,
            tail,
            ppm: PpmStream::default(),
            buf: vec![0; 1 << 18],
            src: src.clone(),
            name: name.to_string(),
            last_frame: Instant::now(),
            shared,
        })
    }

    /// "camera NAME (ffmpeg INPUT): WHAT[: ffmpeg's last lines]"
    fn fail(&mut self, what: String) -> String {
        // ffmpeg has exited or is killed here: its stderr ends, the log thread finishes.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
        let tail = self
            .tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default();
        format!(
            "camera {} (ffmpeg {}): {what}{}",
            self.name,
            self.src.input,
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        )
    }
}

impl super::reader::Capture for Capture {
    fn describe(&self) -> String {
        format!("ffmpeg {} (pid {})", self.src.input, self.child.id())
    }

    fn next(&mut self, stop: &Stop) -> Result<Next, String> {
        let fd = self.stdout.as_raw_fd();
        loop {
            if stop.requested() {
                return Ok(Next::Stopped);
            }
            if self.last_frame.elapsed() > self.src.stall {
                let ms = self.src.stall.as_millis();
                return Err(self.fail(format!("no frame for {ms} ms (stall_ms)")));
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own, for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, 100) };
            if r <= 0 {
                continue; // timeout or EINTR: check stop and stall again
            }
            let n = match self.stdout.read(&mut self.buf) {
                Ok(0) => {
                    let st = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(self.fail(format!("ffmpeg ended ({st})")));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail(format!("reading ffmpeg's output: {e}"))),
            };
            // several (small) frames in one read: the newest is kept
            let mut done: Option<(Vec<u8>, usize, usize)> = None;
            let r = self
                .ppm
                .push(&self.buf[..n], &mut |d, w, h| done = Some((d, w, h)));
            if let Err(e) = r {
                return Err(self.fail(format!("ffmpeg's output is out of sync: {e}")));
            }
            if let Some((data, w, h)) = done {
                let (recv, wall) = (Instant::now(), wall_ns());
                self.last_frame = recv;
                return match rgb_image(data, w, h, wall, &self.name) {
                    Ok(image) => Ok(Next::Frame(CameraFrame {
                        image,
                        recv,
                        recv_wall_ns: wall,
                    })),
                    Err(e) => Ok(Next::Corrupt(e)),
                };
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shared.child_pid.store(0, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppm(w: usize, h: usize, v: u8) -> Vec<u8> {
        let mut b = format!("P6\n{w} {h}\n255\n").into_bytes();
        b.extend(std::iter::repeat(v).take(w * h * 3));
        b
    }

    #[test]
    fn ppm_frames_split_anywhere() {
        let mut all = ppm(2, 1, 7);
        all.extend(ppm(3, 2, 9));
        all.extend(ppm(1, 1, 4));
        for chunk in [1, 2, 5, 13, 64, 1000] {
            let mut s = PpmStream::default();
            let mut got = Vec::new();
            for c in all.chunks(chunk) {
                s.push(c, &mut |d, w, h| got.push((d, w, h))).unwrap();
            }
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert_eq!(got[0], (vec![7; 6], 2, 1));
            assert_eq!(got[1], (vec![9; 18], 3, 2));
            assert_eq!(got[2], (vec![4; 3], 1, 1));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"P5\n2 2\n255\n"[..],
            b"P6\n2 2\n65535\n",
            b"P6\n0 2\n255\n",
            b"P6\n99999 2\n255\n",
            b"P6\nx",
            b"JFIF....",
        ] {
            let mut s = PpmStream::default();
            assert!(s.push(bad, &mut |_, _, _| {}).is_err(), "{bad:?}");
        }
        let mut s = PpmStream::default();
        assert!(s.push(&[b' '; 70], &mut |_, _, _| {}).is_err());
        // a partial header is not an error yet
        let mut s = PpmStream::default();
        s.push(b"P6\n64", &mut |_, _, _| panic!()).unwrap();
    }

    #[test]
    fn command_line_places_input_args_before_the_input() {
        let src = FfmpegSource {
            ffmpeg: "ffmpeg".into(),
            input: "testsrc2".into(),
            input_args: vec!["-f".into(), "lavfi".into()],
            size: Some((32, 24)),
            fps: Some(10.0),
            stall: std::time::Duration::from_secs(1),
        };
        let a = ffmpeg_args(&src).join(" ");
        assert!(a.contains("-f lavfi -i testsrc2 "), "{a}");
        assert!(a.contains("-vf scale=32:24,fps=10 "), "{a}");
        assert!(
            a.ends_with("-pix_fmt rgb24 -c:v ppm -f image2pipe pipe:1"),
            "{a}"
        );
    }
}
