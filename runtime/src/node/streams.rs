//! Input streams of the robot node: validation on the I/O threads, latest-value
//! slots, per-stream counters, and the snapshot the inference thread takes.
//!
//! Hand-offs: the joint state lives in a `crossbeam` `AtomicCell` (seqlock: the
//! control thread reads it without blocking or allocating); images and taxels
//! live in slots whose mutex is held only to swap or copy a buffer (never
//! across a tick, never by the control thread).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crossbeam::atomic::AtomicCell;
use maniflow_bridge::msg::{CompressedImage, Float32MultiArray, Image, JointState};
use maniflow_bridge::so101::{JOINT_NAMES, N_JOINTS};
use maniflow_bridge::transport::image::ImageView;
use serde::Serialize;

use super::config::JointUnits;
use crate::policy::manifest::ColorOrder;

/// Monotonic nanoseconds since the node started (fits an atomic).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    pub fn ns_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }
    pub fn start(&self) -> Instant {
        self.start
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Why an input was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Bytes that do not decode.
    Malformed,
    /// Decoded, but unusable (wrong encoding, shape, names, NaN).
    Invalid,
}

/// Counters of one stream (lock-free; read by the status line).
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub malformed: AtomicU64,
    pub invalid: AtomicU64,
    /// Observations not used because this stream's newest sample was older
    /// than its max age (or absent).
    pub stale: AtomicU64,
    last_reason: Mutex<String>,
}

/// Counter snapshot for the final stats.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct StreamCounts {
    pub received: u64,
    pub accepted: u64,
    pub malformed: u64,
    pub invalid: u64,
    pub stale: u64,
    pub last_reject_reason: String,
}

impl StreamCounters {
    pub fn reject(&self, kind: Reject, reason: String) {
        match kind {
            Reject::Malformed => self.malformed.fetch_add(1, Ordering::Relaxed),
            Reject::Invalid => self.invalid.fetch_add(1, Ordering::Relaxed),
        };
        if let Ok(mut r) = self.last_reason.lock() {
            *r = reason;
        }
    }
    pub fn rejected(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
            + self.invalid.load(Ordering::Relaxed)
            + self.stale.load(Ordering::Relaxed)
    }
    pub fn counts(&self) -> StreamCounts {
        StreamCounts {
            received: self.received.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            last_reject_reason: self
                .last_reason
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default(),
        }
    }
}

/// The newest joint state, in LeRobot units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JointSample {
    pub pos: [f32; N_JOINTS],
    /// Header stamp (wall clock, ns since the epoch); receive wall time if the header has none.
    pub stamp_ns: i64,
    /// Receive time, [`Clock`] ns; 0 = never received.
    pub recv_ns: u64,
    pub seq: u64,
}

/// Header stamp in ns, or `fallback` when the sender left it at zero.
fn stamp_or(h: &maniflow_bridge::msg::Header, fallback: i64) -> i64 {
    time_or(h.stamp, fallback)
}

/// A stamp in ns since the epoch, or `fallback` for an unset (zero) stamp.
fn time_or(t: maniflow_bridge::msg::Time, fallback: i64) -> i64 {
    let ns = t.sec as i64 * 1_000_000_000 + t.nanosec as i64;
    if ns == 0 {
        fallback
    } else {
        ns
    }
}

/// Validates a JointState: the six SO-101 names (any order, extra names
/// ignored), positions finite, converted to LeRobot units.
pub fn joints_from_msg(m: &JointState, units: JointUnits) -> Result<[f32; N_JOINTS], String> {
    if m.position.len() != m.name.len() {
        return Err(format!(
            "{} names but {} positions",
            m.name.len(),
            m.position.len()
        ));
    }
    let mut q = [0.0f64; N_JOINTS];
    for (j, want) in JOINT_NAMES.iter().enumerate() {
        let Some(i) = m.name.iter().position(|n| n == want) else {
            return Err(format!("joint {want:?} missing (names: {:?})", m.name));
        };
        let v = m.position[i];
        if !v.is_finite() {
            return Err(format!("joint {want:?} position is {v}"));
        }
        q[j] = v;
    }
    Ok(match units {
        JointUnits::Lerobot => q.map(|v| v as f32),
        JointUnits::Radians => maniflow_bridge::kinematics::rad_to_lerobot(&q),
    })
}

/// A decoded camera frame (or tactile image), tightly packed HWC uint8.
#[derive(Debug, Clone, Default)]
pub struct ImageSlot {
    pub data: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub order: Option<ColorOrder>,
    pub stamp_ns: i64,
    pub recv_ns: u64,
    pub seq: u64,
}

/// Largest accepted image side (pixels).
pub const MAX_SIDE: u32 = 8192;

/// Checks a raw image's layout: (colour order, width, height, step, packed row bytes).
fn check_raw(
    encoding: &str,
    width: u32,
    height: u32,
    step: u32,
    len: usize,
) -> Result<(ColorOrder, usize, usize, usize, usize), String> {
    let order = match encoding {
        "rgb8" => ColorOrder::Rgb,
        "bgr8" => ColorOrder::Bgr,
        e => return Err(format!("encoding {e:?} not supported (rgb8, bgr8)")),
    };
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!("size {width}x{height} out of range"));
    }
    let (w, h) = (width as usize, height as usize);
    let row = w * 3;
    let step = step as usize;
    if step < row {
        return Err(format!("step {step} < width * 3 = {row}"));
    }
    let need = step * (h - 1) + row;
    if len < need {
        return Err(format!(
            "data has {len} bytes, {w}x{h} with step {step} needs {need}"
        ));
    }
    Ok((order, w, h, step, row))
}

/// Validates a raw Image into `slot` fields (takes its buffer; compacts padded rows).
pub fn image_from_msg(m: Image, slot: &mut ImageSlot) -> Result<(), String> {
    let (order, w, h, step, row) = check_raw(&m.encoding, m.width, m.height, m.step, m.data.len())?;
    let mut data = m.data;
    if step != row {
        for y in 1..h {
            data.copy_within(y * step..y * step + row, y * row);
        }
    }
    data.truncate(row * h);
    slot.data = data;
    slot.width = w;
    slot.height = h;
    slot.order = Some(order);
    Ok(())
}

/// Validates a borrowed image and copies its pixels into `slot` (the slot's
/// buffer is reused; padded rows are compacted).
pub fn image_from_view(v: &ImageView<'_>, slot: &mut ImageSlot) -> Result<(), String> {
    let (order, w, h, step, row) = check_raw(v.encoding, v.width, v.height, v.step, v.data.len())?;
    slot.data.clear();
    if step == row {
        slot.data.extend_from_slice(&v.data[..row * h]);
    } else {
        for y in 0..h {
            slot.data
                .extend_from_slice(&v.data[y * step..y * step + row]);
        }
    }
    slot.width = w;
    slot.height = h;
    slot.order = Some(order);
    Ok(())
}

/// Decodes a JPEG CompressedImage to RGB.
pub fn compressed_from_msg(m: &CompressedImage, slot: &mut ImageSlot) -> Result<(), String> {
    let f = m.format.to_ascii_lowercase();
    if !(f.contains("jpeg") || f.contains("jpg")) {
        return Err(format!("format {:?} not supported (jpeg)", m.format));
    }
    let (data, w, h) = maniflow_bridge::camera::decode_jpeg_rgb(&m.data)?;
    if w == 0 || h == 0 || w > MAX_SIDE as usize || h > MAX_SIDE as usize {
        return Err(format!("size {w}x{h} out of range"));
    }
    slot.data = data;
    slot.width = w;
    slot.height = h;
    slot.order = Some(ColorOrder::Rgb);
    Ok(())
}

/// Newest taxel vector.
#[derive(Debug, Clone, Default)]
pub struct TaxelSlot {
    pub data: Vec<f32>,
    pub stamp_ns: i64,
    pub recv_ns: u64,
    pub seq: u64,
}

pub fn taxels_from_msg(m: &Float32MultiArray, expected: usize) -> Result<(), String> {
    if m.data.len() != expected {
        return Err(format!(
            "{} taxels, the policy expects {expected}",
            m.data.len()
        ));
    }
    if let Some((i, v)) = m.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(format!("taxel {i} is {v}"));
    }
    Ok(())
}

/// A camera-like stream (camera or tactile image).
pub struct ImageStream {
    pub name: String,
    pub slot: Mutex<ImageSlot>,
    pub counters: StreamCounters,
    pub max_age_ns: u64,
}

pub enum TactileStream {
    Taxels {
        slot: Mutex<TaxelSlot>,
        counters: StreamCounters,
        max_age_ns: u64,
        size: usize,
    },
    Image(ImageStream),
}

impl TactileStream {
    pub fn counters(&self) -> &StreamCounters {
        match self {
            TactileStream::Taxels { counters, .. } => counters,
            TactileStream::Image(s) => &s.counters,
        }
    }
}

/// Everything the I/O threads write and the other threads read.
pub struct Inputs {
    pub clock: Clock,
    pub joints: AtomicCell<JointSample>,
    pub joint_counters: StreamCounters,
    pub joint_max_age_ns: u64,
    pub joint_units: JointUnits,
    /// In policy camera order.
    pub cameras: Vec<ImageStream>,
    pub tactile: Option<TactileStream>,
    /// Episode starts seen on `control.reset_topic` (the control thread clears
    /// the executor when it changes).
    pub episode_starts: AtomicU64,
    /// The episode number carried by the last start event (`u64::MAX` before
    /// any); stored before `episode_starts` is bumped.
    pub episode_id: AtomicU64,
}

impl Inputs {
    /// I/O thread: a JointState arrived (or failed to decode).
    pub fn on_joints(&self, r: Result<(JointState, i64), String>, recv_ns: u64) {
        let c = &self.joint_counters;
        c.received.fetch_add(1, Ordering::Relaxed);
        match r {
            Err(e) => c.reject(Reject::Malformed, e),
            Ok((m, recv_wall)) => match joints_from_msg(&m, self.joint_units) {
                Err(e) => c.reject(Reject::Invalid, e),
                Ok(pos) => {
                    let prev = self.joints.load();
                    self.joints.store(JointSample {
                        pos,
                        stamp_ns: stamp_or(&m.header, recv_wall),
                        recv_ns,
                        seq: prev.seq + 1,
                    });
                    c.accepted.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }

    /// Present joint state if fresh at `now_ns`.
    pub fn fresh_joints(&self, now_ns: u64) -> Option<JointSample> {
        let j = self.joints.load();
        (j.recv_ns != 0 && now_ns.saturating_sub(j.recv_ns) <= self.joint_max_age_ns).then_some(j)
    }
}

/// I/O thread: store a validated image into a stream slot.
pub fn on_image(s: &ImageStream, r: Result<(ImageSlot, i64), String>, kind: Reject) {
    s.counters.received.fetch_add(1, Ordering::Relaxed);
    match r {
        Err(e) => s.counters.reject(kind, e),
        Ok((mut img, stamp)) => store(s, &mut img, stamp),
    }
}

/// Swaps a validated frame into the stream's slot (stamped, numbered); `img`
/// gets the previous frame back.
fn store(s: &ImageStream, img: &mut ImageSlot, stamp: i64) {
    img.stamp_ns = stamp;
    if let Ok(mut slot) = s.slot.lock() {
        img.seq = slot.seq + 1;
        std::mem::swap(&mut *slot, img);
    }
    s.counters.accepted.fetch_add(1, Ordering::Relaxed);
}

/// Wraps a decoded Image message into a slot (validation errors are Invalid).
pub fn image_input(m: Image, recv_ns: u64, recv_wall: i64) -> Result<(ImageSlot, i64), String> {
    let stamp = stamp_or(&m.header, recv_wall);
    let mut slot = ImageSlot {
        recv_ns,
        ..Default::default()
    };
    image_from_msg(m, &mut slot)?;
    Ok((slot, stamp))
}

/// I/O thread: validates a received image (borrowed, e.g. straight from
/// shared memory) into `spare`, then swaps it into the stream's slot; `spare`
/// gets the previous frame's buffer back, so no frame allocates.
pub fn on_image_view(
    s: &ImageStream,
    v: &ImageView<'_>,
    recv_ns: u64,
    recv_wall: i64,
    spare: &mut ImageSlot,
) {
    s.counters.received.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = image_from_view(v, spare) {
        s.counters.reject(Reject::Invalid, e);
        return;
    }
    spare.recv_ns = recv_ns;
    store(s, spare, time_or(v.stamp, recv_wall));
}

/// A pressure image (tactile pads) from an Image message: `32FC1`, either byte
/// order, rows `step` bytes apart. Returns its stamp (or `recv_wall` when
/// unset), height, width and row-major pressures; every cell must be finite.
pub fn pressure_input(m: &Image, recv_wall: i64) -> Result<(i64, usize, usize, Vec<f32>), String> {
    if m.encoding != "32FC1" {
        return Err(format!(
            "pressure image encoding {:?}: expected 32FC1 (float pressure per cell)",
            m.encoding
        ));
    }
    let (h, w) = (m.height as usize, m.width as usize);
    let row = w.checked_mul(4).ok_or("width overflows")?;
    let step = m.step as usize;
    if h == 0 || w == 0 || step < row {
        return Err(format!(
            "pressure image {h}x{w} with step {step} (needs >= {row})"
        ));
    }
    let need = step
        .checked_mul(h - 1)
        .and_then(|n| n.checked_add(row))
        .ok_or("size overflows")?;
    if m.data.len() < need {
        return Err(format!(
            "pressure image {h}x{w}: {} bytes, needs {need}",
            m.data.len()
        ));
    }
    let mut out = Vec::with_capacity(h * w);
    for r in 0..h {
        for c in m.data[r * step..r * step + row].chunks_exact(4) {
            let b = [c[0], c[1], c[2], c[3]];
            out.push(if m.is_bigendian != 0 {
                f32::from_be_bytes(b)
            } else {
                f32::from_le_bytes(b)
            });
        }
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "pressure image cell {i} (row {}, column {}) is {}",
            i / w,
            i % w,
            out[i]
        ));
    }
    Ok((stamp_or(&m.header, recv_wall), h, w, out))
}

pub fn compressed_input(
    m: CompressedImage,
    recv_ns: u64,
    recv_wall: i64,
) -> Result<(ImageSlot, i64), String> {
    let stamp = stamp_or(&m.header, recv_wall);
    let mut slot = ImageSlot {
        recv_ns,
        ..Default::default()
    };
    compressed_from_msg(&m, &mut slot)?;
    Ok((slot, stamp))
}

/// One observation step, owned (the inference thread's history ring).
#[derive(Debug, Clone, Default)]
pub struct ObsBuffers {
    pub cams: Vec<ImageSlot>,
    pub state: [f32; N_JOINTS],
    pub taxels: Vec<f32>,
    pub tactile_image: ImageSlot,
    /// Oldest input stamp of this step (ns since the epoch): the observation's stamp.
    pub stamp_ns: i64,
    pub valid: bool,
}

/// Why a snapshot was not taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Stale {
    pub stream: String,
    pub age_ms: Option<f64>,
}

fn copy_image(src: &ImageSlot, dst: &mut ImageSlot) {
    dst.data.clear();
    dst.data.extend_from_slice(&src.data);
    dst.width = src.width;
    dst.height = src.height;
    dst.order = src.order;
    dst.stamp_ns = src.stamp_ns;
    dst.recv_ns = src.recv_ns;
    dst.seq = src.seq;
}

impl Inputs {
    /// Copies the newest complete, fresh observation into `out`. A stale or
    /// missing stream is counted (its `stale` counter) and reported.
    pub fn snapshot(&self, now_ns: u64, out: &mut ObsBuffers) -> Result<(), Stale> {
        out.valid = false;
        let age = |recv: u64| now_ns.saturating_sub(recv);
        let stale = |name: &str, c: &StreamCounters, recv: u64| {
            c.stale.fetch_add(1, Ordering::Relaxed);
            Stale {
                stream: name.to_string(),
                age_ms: (recv != 0).then(|| age(recv) as f64 / 1e6),
            }
        };
        let j = self.joints.load();
        if j.recv_ns == 0 || age(j.recv_ns) > self.joint_max_age_ns {
            return Err(stale("joints", &self.joint_counters, j.recv_ns));
        }
        out.state = j.pos;
        let mut oldest = j.stamp_ns;
        out.cams.resize_with(self.cameras.len(), ImageSlot::default);
        for (s, dst) in self.cameras.iter().zip(out.cams.iter_mut()) {
            let Ok(slot) = s.slot.lock() else {
                return Err(stale(&s.name, &s.counters, 0));
            };
            if slot.seq == 0 || age(slot.recv_ns) > s.max_age_ns {
                let r = slot.recv_ns;
                drop(slot);
                return Err(stale(&s.name, &s.counters, r));
            }
            copy_image(&slot, dst);
            oldest = oldest.min(slot.stamp_ns);
        }
        match &self.tactile {
            None => {}
            Some(TactileStream::Taxels {
                slot,
                counters,
                max_age_ns,
                ..
            }) => {
                let Ok(slot) = slot.lock() else {
                    return Err(stale("tactile", counters, 0));
                };
                if slot.seq == 0 || age(slot.recv_ns) > *max_age_ns {
                    let r = slot.recv_ns;
                    drop(slot);
                    return Err(stale("tactile", counters, r));
                }
                out.taxels.clear();
                out.taxels.extend_from_slice(&slot.data);
                oldest = oldest.min(slot.stamp_ns);
            }
            Some(TactileStream::Image(s)) => {
                let Ok(slot) = s.slot.lock() else {
                    return Err(stale("tactile", &s.counters, 0));
                };
                if slot.seq == 0 || age(slot.recv_ns) > s.max_age_ns {
                    let r = slot.recv_ns;
                    drop(slot);
                    return Err(stale("tactile", &s.counters, r));
                }
                copy_image(&slot, &mut out.tactile_image);
                oldest = oldest.min(slot.stamp_ns);
            }
        }
        out.stamp_ns = oldest;
        out.valid = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maniflow_bridge::msg::{Header, Time};

    fn js(names: &[&str], pos: &[f64]) -> JointState {
        JointState {
            header: Header::default(),
            name: names.iter().map(|s| s.to_string()).collect(),
            position: pos.to_vec(),
            velocity: vec![],
            effort: vec![],
        }
    }

    fn pressure_msg(enc: &str, big: bool, h: u32, w: u32, step: u32, cells: &[f32]) -> Image {
        let mut data = Vec::new();
        for r in 0..h as usize {
            for c in 0..w as usize {
                let v = cells[r * w as usize + c];
                data.extend_from_slice(&if big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                });
            }
            data.resize((r + 1) * step as usize, 0xAB);
        }
        Image {
            header: Header::new(Time { sec: 3, nanosec: 5 }, "tactile_pads"),
            height: h,
            width: w,
            encoding: enc.into(),
            is_bigendian: u8::from(big),
            step,
            data,
        }
    }

    #[test]
    fn pressure_images_decode_both_byte_orders_and_refuse_bad_input() {
        let cells: Vec<f32> = (0..6).map(|i| i as f32 * 0.25).collect();
        for big in [false, true] {
            // Rows padded to 16 bytes: the padding is skipped.
            let (stamp, h, w, v) =
                pressure_input(&pressure_msg("32FC1", big, 2, 3, 16, &cells), 7).unwrap();
            assert_eq!((stamp, h, w), (3_000_000_005, 2, 3));
            assert_eq!(v, cells);
        }
        let ok = pressure_msg("32FC1", false, 2, 3, 12, &cells);
        let mut unstamped = ok.clone();
        unstamped.header.stamp = Time::default();
        assert_eq!(pressure_input(&unstamped, 7).unwrap().0, 7);
        let e = pressure_input(&pressure_msg("mono16", false, 2, 3, 12, &cells), 0).unwrap_err();
        assert!(e.contains("mono16") && e.contains("32FC1"), "{e}");
        let mut short = ok.clone();
        short.data.pop();
        assert!(pressure_input(&short, 0)
            .unwrap_err()
            .contains("23 bytes, needs 24"));
        let mut narrow = ok.clone();
        narrow.step = 8;
        assert!(pressure_input(&narrow, 0).unwrap_err().contains("step 8"));
        let mut nan = cells.clone();
        nan[4] = f32::NAN;
        let e = pressure_input(&pressure_msg("32FC1", false, 2, 3, 12, &nan), 0).unwrap_err();
        assert!(e.contains("cell 4 (row 1, column 1) is NaN"), "{e}");
        let mut huge = ok;
        huge.height = u32::MAX;
        huge.width = u32::MAX;
        assert!(pressure_input(&huge, 0).is_err());
    }

    #[test]
    fn joint_states_are_reordered_by_name_and_checked() {
        let mut names: Vec<&str> = JOINT_NAMES.to_vec();
        names.reverse();
        let q = joints_from_msg(
            &js(&names, &[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]),
            JointUnits::Lerobot,
        )
        .unwrap();
        assert_eq!(q, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let e = joints_from_msg(&js(&names[..5], &[0.0; 5]), JointUnits::Lerobot).unwrap_err();
        assert!(e.contains("shoulder_pan") && e.contains("missing"), "{e}");
        let e = joints_from_msg(&js(&names, &[0.0; 5]), JointUnits::Lerobot).unwrap_err();
        assert!(e.contains("6 names but 5 positions"), "{e}");
        let mut p = [0.0; 6];
        p[2] = f64::NAN;
        let e = joints_from_msg(&js(&JOINT_NAMES, &p), JointUnits::Lerobot).unwrap_err();
        assert!(e.contains("elbow_flex") && e.contains("NaN"), "{e}");
        // radians: 90 deg on shoulder_pan
        let mut p = [0.0; 6];
        p[0] = std::f64::consts::FRAC_PI_2;
        let q = joints_from_msg(&js(&JOINT_NAMES, &p), JointUnits::Radians).unwrap();
        assert!((q[0].abs() - 90.0).abs() < 1e-3, "{q:?}");
    }

    fn img(w: u32, h: u32, step: u32, enc: &str, len: usize) -> Image {
        Image {
            header: Header {
                stamp: Time { sec: 1, nanosec: 5 },
                frame_id: "cam".into(),
            },
            height: h,
            width: w,
            encoding: enc.into(),
            is_bigendian: 0,
            step,
            data: (0..len).map(|i| i as u8).collect(),
        }
    }

    #[test]
    fn borrowed_images_validate_like_owned_ones_and_reuse_buffers() {
        use maniflow_bridge::transport::image::ImageView;
        // The same cases as image_from_msg: one check for both paths.
        for m in [
            img(2, 2, 8, "bgr8", 16),
            img(2, 2, 6, "mono16", 12),
            img(2, 2, 6, "rgb8", 11),
            img(2, 2, 5, "rgb8", 12),
            img(0, 2, 0, "rgb8", 0),
        ] {
            let (mut a, mut b) = (ImageSlot::default(), ImageSlot::default());
            let borrowed = image_from_view(&ImageView::of(&m), &mut a);
            let owned = image_from_msg(m, &mut b);
            assert_eq!(borrowed, owned);
            if owned.is_ok() {
                assert_eq!(
                    (a.data, a.width, a.height, a.order),
                    (b.data, b.width, b.height, b.order)
                );
            }
        }
        let s = ImageStream {
            name: "head".into(),
            slot: Mutex::new(ImageSlot::default()),
            counters: StreamCounters::default(),
            max_age_ns: 500_000_000,
        };
        let mut spare = ImageSlot::default();
        let first = img(2, 2, 8, "rgb8", 16);
        on_image_view(&s, &ImageView::of(&first), 10, 99, &mut spare);
        let second = img(2, 2, 6, "rgb8", 12);
        on_image_view(&s, &ImageView::of(&second), 20, 99, &mut spare);
        {
            let slot = s.slot.lock().unwrap();
            assert_eq!(slot.data, second.data);
            assert_eq!(
                (slot.seq, slot.recv_ns, slot.stamp_ns),
                (2, 20, 1_000_000_005)
            );
        }
        // The first frame's buffer came back as the spare, ready for reuse.
        assert_eq!(spare.data, vec![0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
        let mut bad = img(2, 2, 6, "rgb8", 12);
        bad.encoding = "yuv422".into();
        on_image_view(&s, &ImageView::of(&bad), 30, 99, &mut spare);
        let c = s.counters.counts();
        assert_eq!((c.received, c.accepted, c.invalid), (3, 2, 1));
        assert_eq!(s.slot.lock().unwrap().seq, 2);
    }

    #[test]
    fn images_are_checked_and_padded_rows_compacted() {
        let mut s = ImageSlot::default();
        image_from_msg(img(2, 2, 8, "bgr8", 16), &mut s).unwrap();
        assert_eq!(s.data, vec![0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
        assert_eq!(s.order, Some(ColorOrder::Bgr));
        let e = image_from_msg(img(2, 2, 6, "mono16", 12), &mut s).unwrap_err();
        assert!(e.contains("mono16"), "{e}");
        let e = image_from_msg(img(2, 2, 6, "rgb8", 11), &mut s).unwrap_err();
        assert!(e.contains("11 bytes"), "{e}");
        let e = image_from_msg(img(2, 2, 5, "rgb8", 12), &mut s).unwrap_err();
        assert!(e.contains("step 5"), "{e}");
        let e = image_from_msg(img(0, 2, 0, "rgb8", 0), &mut s).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let (slot, stamp) = image_input(img(2, 1, 6, "rgb8", 6), 7, 99).unwrap();
        assert_eq!((stamp, slot.recv_ns), (1_000_000_005, 7));
    }

    #[test]
    fn jpeg_compressed_images_decode_to_rgb() {
        let (w, h) = (16usize, 8usize);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i % 200) as u8).collect();
        let jpg = maniflow_bridge::camera::encode_jpeg_rgb(&rgb, w, h, 95).unwrap();
        let m = CompressedImage::jpeg(Header::default(), jpg);
        let (slot, stamp) = compressed_input(m, 3, 42).unwrap();
        assert_eq!(
            (slot.width, slot.height, slot.data.len()),
            (w, h, w * h * 3)
        );
        assert_eq!((stamp, slot.recv_ns), (42, 3)); // no header stamp: receive time
        let mut png = CompressedImage::jpeg(Header::default(), vec![1, 2, 3]);
        png.format = "png".into();
        assert!(compressed_input(png, 0, 0).unwrap_err().contains("png"));
        let bad = CompressedImage::jpeg(Header::default(), vec![0xFF, 0xD8, 0, 1]);
        assert!(compressed_input(bad, 0, 0).unwrap_err().contains("jpeg"));
    }

    #[test]
    fn taxels_must_match_and_be_finite() {
        let mut m = Float32MultiArray::default();
        m.data = vec![0.0; 4];
        assert!(taxels_from_msg(&m, 4).is_ok());
        assert!(taxels_from_msg(&m, 5).unwrap_err().contains("expects 5"));
        m.data[1] = f32::INFINITY;
        assert!(taxels_from_msg(&m, 4).unwrap_err().contains("taxel 1"));
    }

    #[test]
    fn snapshot_rejects_stale_streams_and_counts_them() {
        let inputs = Inputs {
            clock: Clock::new(),
            joints: AtomicCell::new(JointSample::default()),
            joint_counters: StreamCounters::default(),
            joint_max_age_ns: 100_000_000,
            joint_units: JointUnits::Lerobot,
            cameras: vec![ImageStream {
                name: "head".into(),
                slot: Mutex::new(ImageSlot::default()),
                counters: StreamCounters::default(),
                max_age_ns: 500_000_000,
            }],
            tactile: None,
            episode_starts: AtomicU64::new(0),
            episode_id: AtomicU64::new(u64::MAX),
        };
        let mut out = ObsBuffers::default();
        let e = inputs.snapshot(1_000_000_000, &mut out).unwrap_err();
        assert_eq!(e.stream, "joints");
        assert_eq!(e.age_ms, None);
        inputs.on_joints(Ok((js(&JOINT_NAMES, &[1.0; 6]), 5)), 950_000_000);
        let e = inputs.snapshot(1_000_000_000, &mut out).unwrap_err();
        assert_eq!(e.stream, "head");
        on_image(
            &inputs.cameras[0],
            image_input(img(2, 1, 6, "rgb8", 6), 990_000_000, 3),
            Reject::Invalid,
        );
        inputs.snapshot(1_000_000_000, &mut out).unwrap();
        assert!(out.valid);
        assert_eq!(out.state, [1.0; 6]);
        assert_eq!(out.cams[0].data.len(), 6);
        assert_eq!(out.stamp_ns, 5); // the joints' (receive-time) stamp is the oldest
                                     // 200 ms later the joints are stale
        let e = inputs.snapshot(1_150_000_000, &mut out).unwrap_err();
        assert_eq!(e.stream, "joints");
        assert!((e.age_ms.unwrap() - 200.0).abs() < 1e-6);
        assert_eq!(inputs.joint_counters.counts().stale, 2);
        assert_eq!(inputs.cameras[0].counters.counts().stale, 1);
        // malformed bytes are counted with the reason
        inputs.on_joints(Err("truncated".into()), 0);
        let c = inputs.joint_counters.counts();
        assert_eq!((c.received, c.accepted, c.malformed), (2, 1, 1));
        assert_eq!(c.last_reject_reason, "truncated");
    }
}
