//! A V4L2 capture device (a USB/UVC camera) read directly with ioctls:
//! `S_FMT` (MJPEG or YUYV at the configured size), `S_PARM` (frame rate),
//! memory-mapped streaming buffers, `poll` + `DQBUF`. Each frame is decoded
//! straight from the mapped buffer and the buffer queued again at once.
//! Frames are stamped with the kernel's buffer timestamp (CLOCK_MONOTONIC,
//! the clock of `Instant`), mapped to the wall clock for the message header.
//! A device that goes away (ENODEV, an unplugged camera) ends the capture;
//! the reader reopens the same path until it is back.
//!
//! Not run against a real device in this repository's tests (no /dev/video
//! there): the structures and ioctl numbers are checked against
//! `<linux/videodev2.h>` ([`sys`]), the decoders against ffmpeg on recorded
//! MJPEG/YUYV frames.

pub mod list;
pub mod sys;

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

use super::frame::{decode_frame, rgb_image};
use super::reader::{capture_time, monotonic_ns, CameraFrame, Next, Stop};
use super::source::V4l2Source;
use crate::transport::wall_ns;
use sys::*;

/// Streaming buffers requested of the driver.
const BUFFERS: u32 = 4;

struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

/// An open, streaming device.
pub(crate) struct Capture {
    file: File,
    maps: Vec<Mapping>,
    src: V4l2Source,
    name: String,
    width: usize,
    height: usize,
    stride: usize,
    last_frame: Instant,
    streaming: bool,
}

// SAFETY: the mappings belong to this capture alone and are only touched by
// the thread that owns it.
unsafe impl Send for Capture {}

impl Capture {
    pub(crate) fn open(src: &V4l2Source, name: &str) -> Result<Capture, String> {
        let dev = src.device.display().to_string();
        let err = |what: &str, e: std::io::Error| format!("camera {name} ({dev}): {what}: {e}");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&src.device)
            .map_err(|e| err("open", e))?;
        let fd = file.as_raw_fd();
        let mut cap: v4l2_capability = zeroed();
        // SAFETY: QUERYCAP takes a v4l2_capability.
        unsafe { ioctl(fd, VIDIOC_QUERYCAP, &mut cap) }
            .map_err(|e| err("not a V4L2 device (VIDIOC_QUERYCAP)", e))?;
        let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
            cap.device_caps
        } else {
            cap.capabilities
        };
        if caps & CAP_VIDEO_CAPTURE == 0 || caps & CAP_STREAMING == 0 {
            return Err(format!(
                "camera {name} ({dev}): {} is not a streaming capture device (a UVC camera's second node carries metadata: try the other /dev/video, see `maniflow cameras`)",
                c_str(&cap.card)
            ));
        }
        let mut c = Capture {
            file,
            maps: Vec::new(),
            src: src.clone(),
            name: name.to_string(),
            width: 0,
            height: 0,
            stride: 0,
            last_frame: Instant::now(),
            streaming: false,
        };
        c.set_format(fd)
            .map_err(|e| format!("camera {name} ({dev}): {e}"))?;
        c.start(fd)
            .map_err(|e| format!("camera {name} ({dev}): {e}"))?;
        Ok(c)
    }

    fn set_format(&mut self, fd: RawFd) -> Result<(), String> {
        let want = u32::from_le_bytes(self.src.format.fourcc());
        let mut f: v4l2_format = zeroed();
        f.type_ = BUF_TYPE_VIDEO_CAPTURE;
        f.pix.width = self.src.width;
        f.pix.height = self.src.height;
        f.pix.pixelformat = want;
        f.pix.field = FIELD_ANY;
        // SAFETY: S_FMT takes a v4l2_format.
        unsafe { ioctl(fd, VIDIOC_S_FMT, &mut f) }.map_err(|e| format!("VIDIOC_S_FMT: {e}"))?;
        let p = f.pix;
        if p.pixelformat != want || (p.width, p.height) != (self.src.width, self.src.height) {
            return Err(format!(
                "asked for {} {}x{}, the device offers {} {}x{} (`maniflow cameras` lists what it supports)",
                fourcc_str(want),
                self.src.width,
                self.src.height,
                fourcc_str(p.pixelformat),
                p.width,
                p.height
            ));
        }
        self.width = p.width as usize;
        self.height = p.height as usize;
        self.stride = (p.bytesperline as usize).max(self.width * 2);
        let mut parm: v4l2_streamparm = zeroed();
        parm.type_ = BUF_TYPE_VIDEO_CAPTURE;
        // SAFETY: G_PARM / S_PARM take a v4l2_streamparm.
        let can = unsafe { ioctl(fd, VIDIOC_G_PARM, &mut parm) }.is_ok()
            && parm.capability & CAP_TIMEPERFRAME != 0;
        if can {
            parm.timeperframe = v4l2_fract {
                numerator: 1,
                denominator: self.src.fps,
            };
            // SAFETY: as above.
            unsafe { ioctl(fd, VIDIOC_S_PARM, &mut parm) }
                .map_err(|e| format!("VIDIOC_S_PARM ({} fps): {e}", self.src.fps))?;
        }
        Ok(())
    }

    fn start(&mut self, fd: RawFd) -> Result<(), String> {
        let mut req = v4l2_requestbuffers {
            count: BUFFERS,
            type_: BUF_TYPE_VIDEO_CAPTURE,
            memory: MEMORY_MMAP,
            ..Default::default()
        };
        // SAFETY: REQBUFS takes a v4l2_requestbuffers.
        unsafe { ioctl(fd, VIDIOC_REQBUFS, &mut req) }
            .map_err(|e| format!("VIDIOC_REQBUFS: {e}"))?;
        if req.count < 2 {
            return Err(format!(
                "the driver gave {} buffers (2 or more needed)",
                req.count
            ));
        }
        for i in 0..req.count {
            let mut b = new_buffer(i);
            // SAFETY: QUERYBUF takes a v4l2_buffer.
            unsafe { ioctl(fd, VIDIOC_QUERYBUF, &mut b) }
                .map_err(|e| format!("VIDIOC_QUERYBUF {i}: {e}"))?;
            // SAFETY: maps the driver's buffer `i` at the offset it gave; unmapped on drop.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    b.length as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    b.m_offset as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(format!(
                    "mmap buffer {i}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            self.maps.push(Mapping {
                ptr,
                len: b.length as usize,
            });
            // SAFETY: QBUF takes a v4l2_buffer.
            unsafe { ioctl(fd, VIDIOC_QBUF, &mut b) }
                .map_err(|e| format!("VIDIOC_QBUF {i}: {e}"))?;
        }
        let mut t = BUF_TYPE_VIDEO_CAPTURE as i32;
        // SAFETY: STREAMON takes an int (the buffer type).
        unsafe { ioctl(fd, VIDIOC_STREAMON, &mut t) }
            .map_err(|e| format!("VIDIOC_STREAMON: {e}"))?;
        self.streaming = true;
        self.last_frame = Instant::now();
        Ok(())
    }

    fn lost(&self, what: String) -> String {
        format!(
            "camera {} ({}): {what}",
            self.name,
            self.src.device.display()
        )
    }
}

fn new_buffer(index: u32) -> v4l2_buffer {
    let mut b: v4l2_buffer = zeroed();
    b.index = index;
    b.type_ = BUF_TYPE_VIDEO_CAPTURE;
    b.memory = MEMORY_MMAP;
    b
}

impl super::reader::Capture for Capture {
    fn describe(&self) -> String {
        format!(
            "v4l2 {} {} {}x{} @ {} fps",
            self.src.device.display(),
            self.src.format.name(),
            self.width,
            self.height,
            self.src.fps
        )
    }

    fn next(&mut self, stop: &Stop) -> Result<Next, String> {
        let fd = self.file.as_raw_fd();
        loop {
            if stop.requested() {
                return Ok(Next::Stopped);
            }
            if self.last_frame.elapsed() > self.src.stall {
                let ms = self.src.stall.as_millis();
                return Err(self.lost(format!("no frame for {ms} ms (stall_ms)")));
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own, for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, 100) };
            if r <= 0 {
                continue;
            }
            if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
                && pfd.revents & libc::POLLIN == 0
            {
                return Err(self.lost("the device reports an error (unplugged?)".into()));
            }
            let mut b = new_buffer(0);
            // SAFETY: DQBUF takes a v4l2_buffer.
            if let Err(e) = unsafe { ioctl(fd, VIDIOC_DQBUF, &mut b) } {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    continue;
                }
                return Err(self.lost(format!("VIDIOC_DQBUF: {e}")));
            }
            let (now, now_mono, now_wall) = (Instant::now(), monotonic_ns(), wall_ns());
            let ts_mono =
                b.timestamp.tv_sec as i64 * 1_000_000_000 + b.timestamp.tv_usec as i64 * 1000;
            let (recv, wall) = if b.flags & BUF_FLAG_TIMESTAMP_MASK == BUF_FLAG_TIMESTAMP_MONOTONIC
            {
                capture_time(ts_mono, now_mono, now, now_wall)
            } else {
                (now, now_wall)
            };
            let decoded = match self.maps.get(b.index as usize) {
                None => Err(format!(
                    "the driver returned buffer {} of {}",
                    b.index,
                    self.maps.len()
                )),
                Some(_) if b.flags & BUF_FLAG_ERROR != 0 => {
                    Err("the driver flagged the frame as corrupt".to_string())
                }
                Some(m) => {
                    let used = (b.bytesused as usize).min(m.len);
                    // SAFETY: the driver filled `used` bytes of this mapping and
                    // does not touch it until the buffer is queued again below.
                    let bytes = unsafe { std::slice::from_raw_parts(m.ptr as *const u8, used) };
                    decode_frame(self.src.format, bytes, self.width, self.height, self.stride)
                }
            };
            // SAFETY: QBUF takes a v4l2_buffer (the one just dequeued).
            if let Err(e) = unsafe { ioctl(fd, VIDIOC_QBUF, &mut b) } {
                return Err(self.lost(format!("VIDIOC_QBUF: {e}")));
            }
            self.last_frame = now;
            return Ok(
                match decoded
                    .and_then(|px| rgb_image(px, self.width, self.height, wall, &self.name))
                {
                    Ok(image) => Next::Frame(CameraFrame {
                        image,
                        recv,
                        recv_wall_ns: wall,
                    }),
                    Err(e) => Next::Corrupt(format!("camera {}: {e}", self.name)),
                },
            );
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let fd = self.file.as_raw_fd();
        if self.streaming {
            let mut t = BUF_TYPE_VIDEO_CAPTURE as i32;
            // SAFETY: STREAMOFF takes an int; errors (device gone) are irrelevant here.
            let _ = unsafe { ioctl(fd, VIDIOC_STREAMOFF, &mut t) };
        }
        for m in self.maps.drain(..) {
            // SAFETY: a mapping made in `start`, unmapped once.
            unsafe { libc::munmap(m.ptr, m.len) };
        }
        // the file closes after this, which frees the driver's buffers
    }
}
