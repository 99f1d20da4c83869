//! What `maniflow cameras` lists: every `/dev/video*` node with its driver,
//! card and bus, and for capture devices each pixel format with its frame
//! sizes and rates (`VIDIOC_ENUM_FMT`, `ENUM_FRAMESIZES`, `ENUM_FRAMEINTERVALS`).

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::sys::*;

#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// A streaming video capture node (false: metadata or output node).
    pub capture: bool,
    pub formats: Vec<FormatInfo>,
    /// Why the node could not be queried (busy, permissions, not V4L2).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FormatInfo {
    /// The fourcc, e.g. `MJPG`, `YUYV` (the two a `v4l2` source reads).
    pub fourcc: String,
    pub description: String,
    pub compressed: bool,
    pub sizes: Vec<SizeInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeInfo {
    pub width: u32,
    pub height: u32,
    /// Discrete frame rates (fps); empty when the device gives a range.
    pub fps: Vec<f64>,
    /// A stepwise or continuous size range, as text (then width/height are its maximum).
    pub range: Option<String>,
}

/// `/dev/video*` nodes in `dir`, in numeric order (video2 before video10).
pub fn video_nodes(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Every video node under /dev, queried.
pub fn list_devices() -> Vec<DeviceInfo> {
    video_nodes(Path::new("/dev"))
        .iter()
        .map(|p| query(p))
        .collect()
}

/// One node: capabilities, then formats, sizes and rates.
pub fn query(path: &Path) -> DeviceInfo {
    let mut info = DeviceInfo {
        path: path.to_path_buf(),
        driver: String::new(),
        card: String::new(),
        bus: String::new(),
        capture: false,
        formats: Vec::new(),
        error: None,
    };
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            info.error = Some(format!("open: {e}"));
            return info;
        }
    };
    let fd = file.as_raw_fd();
    let mut cap: v4l2_capability = zeroed();
    // SAFETY: QUERYCAP takes a v4l2_capability.
    if let Err(e) = unsafe { ioctl(fd, VIDIOC_QUERYCAP, &mut cap) } {
        info.error = Some(format!("VIDIOC_QUERYCAP: {e}"));
        return info;
    }
    info.driver = c_str(&cap.driver);
    info.card = c_str(&cap.card);
    info.bus = c_str(&cap.bus_info);
    let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    };
    info.capture = caps & CAP_VIDEO_CAPTURE != 0 && caps & CAP_STREAMING != 0;
    if info.capture {
        info.formats = formats(fd);
    }
    info
}

fn formats(fd: RawFd) -> Vec<FormatInfo> {
    let mut out = Vec::new();
    for index in 0..64 {
        let mut d: v4l2_fmtdesc = zeroed();
        d.index = index;
        d.type_ = BUF_TYPE_VIDEO_CAPTURE;
        // SAFETY: ENUM_FMT takes a v4l2_fmtdesc.
        if unsafe { ioctl(fd, VIDIOC_ENUM_FMT, &mut d) }.is_err() {
            break; // EINVAL: no more
        }
        out.push(FormatInfo {
            fourcc: fourcc_str(d.pixelformat),
            description: c_str(&d.description),
            compressed: d.flags & FMT_FLAG_COMPRESSED != 0,
            sizes: sizes(fd, d.pixelformat),
        });
    }
    out
}

fn sizes(fd: RawFd, fourcc: u32) -> Vec<SizeInfo> {
    let mut out = Vec::new();
    for index in 0..256 {
        let mut s: v4l2_frmsizeenum = zeroed();
        s.index = index;
        s.pixel_format = fourcc;
        // SAFETY: ENUM_FRAMESIZES takes a v4l2_frmsizeenum.
        if unsafe { ioctl(fd, VIDIOC_ENUM_FRAMESIZES, &mut s) }.is_err() {
            break;
        }
        if s.type_ == FRMSIZE_TYPE_DISCRETE {
            let (w, h) = (s.size[0], s.size[1]);
            out.push(SizeInfo {
                width: w,
                height: h,
                fps: rates(fd, fourcc, w, h),
                range: None,
            });
        } else {
            let [min_w, max_w, step_w, min_h, max_h, step_h] = s.size;
            out.push(SizeInfo {
                width: max_w,
                height: max_h,
                fps: Vec::new(),
                range: Some(format!(
                    "{min_w}x{min_h} to {max_w}x{max_h} in steps of {step_w}x{step_h}"
                )),
            });
            break; // a range is the only entry
        }
    }
    out
}

fn rates(fd: RawFd, fourcc: u32, width: u32, height: u32) -> Vec<f64> {
    let mut out = Vec::new();
    for index in 0..64 {
        let mut i: v4l2_frmivalenum = zeroed();
        i.index = index;
        i.pixel_format = fourcc;
        i.width = width;
        i.height = height;
        // SAFETY: ENUM_FRAMEINTERVALS takes a v4l2_frmivalenum.
        if unsafe { ioctl(fd, VIDIOC_ENUM_FRAMEINTERVALS, &mut i) }.is_err()
            || i.type_ != FRMIVAL_TYPE_DISCRETE
        {
            break;
        }
        let (num, den) = (i.interval[0], i.interval[1]);
        if num > 0 {
            out.push((f64::from(den) / f64::from(num) * 100.0).round() / 100.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_nodes_are_found_in_numeric_order() {
        let d = tempfile::tempdir().unwrap();
        for n in ["video10", "video2", "video0", "vide", "videox", "media0"] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        let names: Vec<String> = video_nodes(d.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["video0", "video2", "video10"]);
        assert!(video_nodes(&d.path().join("absent")).is_empty());
        // a file that is no V4L2 device: an error, not a panic
        let i = query(&d.path().join("video0"));
        assert!(!i.capture && i.error.is_some(), "{i:?}");
    }
}
