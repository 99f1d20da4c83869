//! The few V4L2 structures and ioctls a capture needs, from
//! `<linux/videodev2.h>`, for 64-bit Linux (x86_64, aarch64: the layouts and
//! ioctl numbers below were checked against the header with a C compiler, and
//! the test pins them). Pure Rust: no bindgen, no libv4l.

#![allow(non_camel_case_types)]

use std::io;
use std::os::fd::RawFd;

pub const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
pub const MEMORY_MMAP: u32 = 1;
pub const FIELD_ANY: u32 = 0;
pub const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub const CAP_STREAMING: u32 = 0x0400_0000;
pub const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
pub const CAP_TIMEPERFRAME: u32 = 0x1000;
pub const FMT_FLAG_COMPRESSED: u32 = 0x0001;
pub const FRMSIZE_TYPE_DISCRETE: u32 = 1;
pub const FRMIVAL_TYPE_DISCRETE: u32 = 1;
pub const BUF_FLAG_ERROR: u32 = 0x0040;
pub const BUF_FLAG_TIMESTAMP_MASK: u32 = 0xe000;
pub const BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x2000;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_capability {
    pub driver: [u8; 16],
    pub card: [u8; 32],
    pub bus_info: [u8; 32],
    pub version: u32,
    pub capabilities: u32,
    pub device_caps: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_fmtdesc {
    pub index: u32,
    pub type_: u32,
    pub flags: u32,
    pub description: [u8; 32],
    pub pixelformat: u32,
    pub mbus_code: u32,
    pub reserved: [u32; 3],
}

/// `v4l2_frmsizeenum`; the union is `discrete` (w, h) or `stepwise`
/// (min_w, max_w, step_w, min_h, max_h, step_h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_frmsizeenum {
    pub index: u32,
    pub pixel_format: u32,
    pub type_: u32,
    pub size: [u32; 6],
    pub reserved: [u32; 2],
}

/// `v4l2_frmivalenum`; the union is `discrete` (num, den) or `stepwise`
/// (min, max, step fractions).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_frmivalenum {
    pub index: u32,
    pub pixel_format: u32,
    pub width: u32,
    pub height: u32,
    pub type_: u32,
    pub interval: [u32; 6],
    pub reserved: [u32; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_pix_format {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub bytesperline: u32,
    pub sizeimage: u32,
    pub colorspace: u32,
    pub priv_: u32,
    pub flags: u32,
    pub ycbcr_enc: u32,
    pub quantization: u32,
    pub xfer_func: u32,
}

/// `v4l2_format`: the union starts at offset 8 (it holds pointers) and is 200 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_format {
    pub type_: u32,
    pub _pad: u32,
    pub pix: v4l2_pix_format,
    pub _rest: [u8; 200 - 48],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_fract {
    pub numerator: u32,
    pub denominator: u32,
}

/// `v4l2_streamparm` with the capture member of its 200-byte union.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_streamparm {
    pub type_: u32,
    pub capability: u32,
    pub capturemode: u32,
    pub timeperframe: v4l2_fract,
    pub extendedmode: u32,
    pub readbuffers: u32,
    pub reserved: [u32; 4],
    pub _rest: [u8; 200 - 40],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_requestbuffers {
    pub count: u32,
    pub type_: u32,
    pub memory: u32,
    pub capabilities: u32,
    pub flags: u8,
    pub reserved: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_timecode {
    pub type_: u32,
    pub flags: u32,
    pub frames: u8,
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub userbits: [u8; 4],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_buffer {
    pub index: u32,
    pub type_: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub field: u32,
    pub timestamp: libc::timeval,
    pub timecode: v4l2_timecode,
    pub sequence: u32,
    pub memory: u32,
    /// `m.offset` for MMAP buffers (the union is 8 bytes: `unsigned long userptr`).
    pub m_offset: u64,
    pub length: u32,
    pub reserved2: u32,
    pub request_fd: i32,
}

/// All-zero value of a plain C struct (every field an integer or array of them).
pub fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for the repr(C) integer structs above, for which all
    // zero bits is a valid value (as in C's memset).
    unsafe { std::mem::zeroed() }
}

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'V' as u64) << 8) | nr
}
const R: u64 = 2;
const W: u64 = 1;
const RW: u64 = 3;
use std::mem::size_of;
pub const VIDIOC_QUERYCAP: u64 = ioc(R, 0, size_of::<v4l2_capability>());
pub const VIDIOC_ENUM_FMT: u64 = ioc(RW, 2, size_of::<v4l2_fmtdesc>());
pub const VIDIOC_G_FMT: u64 = ioc(RW, 4, size_of::<v4l2_format>());
pub const VIDIOC_S_FMT: u64 = ioc(RW, 5, size_of::<v4l2_format>());
pub const VIDIOC_REQBUFS: u64 = ioc(RW, 8, size_of::<v4l2_requestbuffers>());
pub const VIDIOC_QUERYBUF: u64 = ioc(RW, 9, size_of::<v4l2_buffer>());
pub const VIDIOC_QBUF: u64 = ioc(RW, 15, size_of::<v4l2_buffer>());
pub const VIDIOC_DQBUF: u64 = ioc(RW, 17, size_of::<v4l2_buffer>());
pub const VIDIOC_STREAMON: u64 = ioc(W, 18, size_of::<i32>());
pub const VIDIOC_STREAMOFF: u64 = ioc(W, 19, size_of::<i32>());
pub const VIDIOC_G_PARM: u64 = ioc(RW, 21, size_of::<v4l2_streamparm>());
pub const VIDIOC_S_PARM: u64 = ioc(RW, 22, size_of::<v4l2_streamparm>());
pub const VIDIOC_ENUM_FRAMESIZES: u64 = ioc(RW, 74, size_of::<v4l2_frmsizeenum>());
pub const VIDIOC_ENUM_FRAMEINTERVALS: u64 = ioc(RW, 75, size_of::<v4l2_frmivalenum>());

/// `ioctl(fd, req, arg)`, retried on EINTR.
///
/// # Safety
/// `req` must be an ioctl whose argument is a `T` (the constants above with
/// their structures).
pub unsafe fn ioctl<T>(fd: RawFd, req: u64, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: per the caller, the kernel reads/writes exactly one T.
        let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
        if r != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A fourcc as text ("MJPG").
pub fn fourcc_str(f: u32) -> String {
    f.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// A NUL-terminated C string field as text.
pub fn c_str(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes and request numbers as `<linux/videodev2.h>` gives them on
    /// x86_64 (printed by a C program including the header).
    #[test]
    fn layouts_match_videodev2_h() {
        assert_eq!(size_of::<v4l2_capability>(), 104);
        assert_eq!(size_of::<v4l2_fmtdesc>(), 64);
        assert_eq!(size_of::<v4l2_frmsizeenum>(), 44);
        assert_eq!(size_of::<v4l2_frmivalenum>(), 52);
        assert_eq!(size_of::<v4l2_format>(), 208);
        assert_eq!(size_of::<v4l2_pix_format>(), 48);
        assert_eq!(size_of::<v4l2_requestbuffers>(), 20);
        assert_eq!(size_of::<v4l2_buffer>(), 88);
        assert_eq!(std::mem::offset_of!(v4l2_buffer, timestamp), 24);
        assert_eq!(std::mem::offset_of!(v4l2_buffer, sequence), 56);
        assert_eq!(std::mem::offset_of!(v4l2_buffer, m_offset), 64);
        assert_eq!(std::mem::offset_of!(v4l2_buffer, length), 72);
        assert_eq!(std::mem::offset_of!(v4l2_format, pix), 8);
        assert_eq!(size_of::<v4l2_streamparm>(), 204);
        for (got, want) in [
            (VIDIOC_QUERYCAP, 0x8068_5600u64),
            (VIDIOC_ENUM_FMT, 0xc040_5602),
            (VIDIOC_G_FMT, 0xc0d0_5604),
            (VIDIOC_S_FMT, 0xc0d0_5605),
            (VIDIOC_REQBUFS, 0xc014_5608),
            (VIDIOC_QUERYBUF, 0xc058_5609),
            (VIDIOC_QBUF, 0xc058_560f),
            (VIDIOC_DQBUF, 0xc058_5611),
            (VIDIOC_STREAMON, 0x4004_5612),
            (VIDIOC_STREAMOFF, 0x4004_5613),
            (VIDIOC_G_PARM, 0xc0cc_5615),
            (VIDIOC_S_PARM, 0xc0cc_5616),
            (VIDIOC_ENUM_FRAMESIZES, 0xc02c_564a),
            (VIDIOC_ENUM_FRAMEINTERVALS, 0xc034_564b),
        ] {
            assert_eq!(got, want, "{got:#x}");
        }
        assert_eq!(u32::from_le_bytes(*b"MJPG"), 0x4750_4a4d);
        assert_eq!(fourcc_str(0x5659_5559), "YUYV");
    }
}
