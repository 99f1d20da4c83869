//! ROS 2 messages as serde structs, and their CDR encoding.
//!
//! Field order and types follow the `.msg` files exactly, so the CDR bytes are
//! what a ROS 2 node (rmw_cyclonedds, rmw_fastrtps, rmw_zenoh) puts on the wire:
//! a 4-byte encapsulation header `00 01 00 00` (plain CDR / XCDR1, little endian)
//! and then the CDR body, aligned relative to the byte after the header.
//! `tests/golden/*.hex` are frames serialised by Eclipse Cyclone DDS (see the
//! README there); the tests below compare against them byte for byte.
//!
//! Two quirks of `cdr-encoding` 0.10 shape this module:
//!
//! * its `serialize_bytes` writes the raw bytes **without** the `u32` length
//!   prefix a CDR `sequence<octet>` needs (fixed in 0.11), so a plain
//!   `#[serde(with = "serde_bytes")]` would emit frames no peer can read. The
//!   byte fields (`Image::data`, `CompressedImage::data`) therefore go through
//!   [`cdr_bytes`], which lets [`encode`] write them in one bulk copy with a
//!   correct length prefix whichever `cdr-encoding` version is linked, and
//!   falls back to a portable element-wise sequence for any other serializer
//!   (e.g. `ros2-client` or `rustdds` serialising our types themselves).
//! * its deserializer reads `sequence<octet>` element by element (0.11 reads it
//!   in one slice). That is correct and bounded, only slower for big images:
//!   a 640x480 rgb8 `Image` encodes in ~0.12 ms but decodes in ~4.5 ms with
//!   0.10, ~0.07 ms with 0.11 (release build, same tests pass on both; the
//!   workspace already links 0.11 through rustdds).
//!
//! [`decode`] never panics and allocates O(input length): `cdr-encoding`
//! gives serde no size hint for sequences, so a length prefix of `0xFFFFFFFF`
//! grows the vector only as far as real input bytes go, then fails with
//! "unexpected end of input" (see the `huge_length_prefix_fails_fast` test).

use std::cell::Cell;
use std::sync::OnceLock;

use byteorder::{BigEndian, LittleEndian};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Encapsulation identifier for plain CDR, big endian (`00 00`).
pub const CDR_BE: [u8; 2] = [0x00, 0x00];
/// Encapsulation identifier for plain CDR, little endian (`00 01`); what we emit.
pub const CDR_LE: [u8; 2] = [0x00, 0x01];
/// The full 4-byte header [`encode`] writes: CDR_LE and options `00 00`.
pub const ENCAPSULATION_HEADER: [u8; 4] = [0x00, 0x01, 0x00, 0x00];
/// Bytes [`decode`] tolerates after the CDR body. DDS writers (Cyclone DDS's C
/// serializer among them) may pad the payload to a multiple of 4 and record
/// the pad count in the options field, so up to 3 bytes of padding are
/// accepted (their value is not checked); 4 or more are an error.
pub const MAX_TRAILING_PADDING: usize = 3;

/// Errors from [`encode`] and [`decode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    /// The input cannot even hold the 4-byte encapsulation header.
    #[error("CDR frame too short: {len} bytes, the encapsulation header alone needs 4")]
    TooShort { len: usize },
    /// The encapsulation identifier is neither CDR_BE (00 00) nor CDR_LE (00 01).
    #[error(
        "unsupported encapsulation header {:02x} {:02x}: only plain CDR (XCDR1) 00 00 (big endian) \
         and 00 01 (little endian) are supported{}",
        .0[0], .0[1], encapsulation_hint(*.0)
    )]
    BadEncapsulation([u8; 2]),
    /// The CDR body does not decode as the requested type (truncated, bad
    /// UTF-8, ...), or a value could not be encoded.
    #[error("CDR error: {0}")]
    Cdr(String),
    /// More bytes follow the decoded message than CDR padding explains.
    #[error(
        "{trailing} unexpected bytes after the {consumed}-byte CDR body \
         (at most {MAX_TRAILING_PADDING} bytes of padding are allowed)"
    )]
    TrailingBytes { trailing: usize, consumed: usize },
    /// A helper constructor got inconsistent arguments.
    #[error("invalid message: {0}")]
    Invalid(String),
}

fn encapsulation_hint(id: [u8; 2]) -> &'static str {
    match id {
        [0x00, 0x02] | [0x00, 0x03] => " (got PL_CDR, parameter-list XCDR1)",
        [0x00, 0x06] | [0x00, 0x07] => {
            " (got CDR2, XCDR2: the peer must use XCDR1 like ROS 2 does)"
        }
        [0x00, 0x08] | [0x00, 0x09] => " (got D_CDR2, delimited XCDR2)",
        [0x00, 0x0a] | [0x00, 0x0b] => " (got PL_CDR2, parameter-list XCDR2)",
        _ => "",
    }
}

impl From<cdr_encoding::Error> for MsgError {
    fn from(e: cdr_encoding::Error) -> Self {
        MsgError::Cdr(e.to_string())
    }
}

// ---------------------------------------------------------------------------
// Encoding and decoding
// ---------------------------------------------------------------------------

/// Encodes `msg` into `out` (cleared first, capacity reused): the header
/// `00 01 00 00`, then the little-endian CDR body.
pub fn encode<M: Serialize>(msg: &M, out: &mut Vec<u8>) -> Result<(), MsgError> {
    out.clear();
    let res = encode_to_writer(msg, &mut *out);
    if res.is_err() {
        out.clear();
    }
    res
}

/// [`encode`] into any writer, e.g. a byte counter and then a shared-memory
/// buffer of exactly that size (zenoh publishes images that way, no copy).
pub fn encode_to_writer<M: Serialize, W: std::io::Write>(
    msg: &M,
    mut w: W,
) -> Result<(), MsgError> {
    w.write_all(&ENCAPSULATION_HEADER)
        .map_err(|e| MsgError::Cdr(e.to_string()))?;
    // The serializer counts alignment from its own start, i.e. from the byte
    // after the header, as CDR requires.
    let mode = if cdr_bytes::native_bytes_have_length_prefix() {
        cdr_bytes::Mode::Native
    } else {
        cdr_bytes::Mode::LengthThenRaw
    };
    let _guard = cdr_bytes::ModeGuard::set(mode);
    cdr_encoding::to_writer::<M, LittleEndian, _>(w, msg)?;
    Ok(())
}

/// Runs `publish`, a ROS 2 backend that serialises our message itself with
/// cdr-encoding 0.11 (RustDDS, the vendored ros2-client), with byte fields
/// (`Image::data`) written in one bulk copy instead of element by element.
pub fn with_bulk_bytes<R>(publish: impl FnOnce() -> R) -> R {
    let _guard = cdr_bytes::ModeGuard::set(cdr_bytes::Mode::Native);
    publish()
}

/// [`encode`] into a fresh vector.
pub fn encode_vec<M: Serialize>(msg: &M) -> Result<Vec<u8>, MsgError> {
    let mut out = Vec::new();
    encode(msg, &mut out)?;
    Ok(out)
}

/// Decodes a CDR frame (4-byte encapsulation header + body).
///
/// Accepts CDR_LE (`00 01`) and CDR_BE (`00 00`) with any options bytes;
/// anything else is [`MsgError::BadEncapsulation`]. Up to
/// [`MAX_TRAILING_PADDING`] bytes after the body are accepted as padding, more
/// are [`MsgError::TrailingBytes`]. Never panics; allocation is bounded by a
/// small multiple of `bytes.len()`.
pub fn decode<M: DeserializeOwned>(bytes: &[u8]) -> Result<M, MsgError> {
    let (msg, _) = decode_with_len(bytes)?;
    Ok(msg)
}

/// Like [`decode`], also returning how many body bytes (after the header) the
/// message used.
pub fn decode_with_len<M: DeserializeOwned>(bytes: &[u8]) -> Result<(M, usize), MsgError> {
    if bytes.len() < 4 {
        return Err(MsgError::TooShort { len: bytes.len() });
    }
    let (id, body) = ([bytes[0], bytes[1]], &bytes[4..]);
    let (msg, consumed) = match id {
        CDR_LE => cdr_encoding::from_bytes::<M, LittleEndian>(body)?,
        CDR_BE => cdr_encoding::from_bytes::<M, BigEndian>(body)?,
        other => return Err(MsgError::BadEncapsulation(other)),
    };
    let trailing = body.len().saturating_sub(consumed);
    if trailing > MAX_TRAILING_PADDING {
        return Err(MsgError::TrailingBytes { trailing, consumed });
    }
    Ok((msg, consumed))
}

/// Serde adapter for `sequence<octet>` fields (`uint8[]` in .msg files).
///
/// Deserialises like `serde_bytes` (bulk where the deserializer offers bytes,
/// element-wise otherwise, capacity never taken from the input). Serialises:
/// inside [`encode`] as one `u32` length plus one bulk write; everywhere else
/// as an ordinary sequence of `u8`, which every serde format (and both
/// `cdr-encoding` 0.10 and 0.11) encodes correctly.
pub mod cdr_bytes {
    use super::*;
    use serde::ser::{Error as _, SerializeTuple};
    use serde::{Deserializer, Serializer};

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(super) enum Mode {
        /// Any serializer: a length-prefixed sequence of `u8` elements.
        Portable,
        /// cdr-encoding whose `serialize_bytes` writes the length itself (0.11+).
        Native,
        /// cdr-encoding 0.10: `serialize_bytes` writes only the raw bytes, so
        /// write the `u32` length first (as a tuple element, which aligns it).
        LengthThenRaw,
    }

    thread_local! {
        static MODE: Cell<Mode> = const { Cell::new(Mode::Portable) };
    }

    /// Sets the mode for this thread until dropped, then restores the old one.
    pub(super) struct ModeGuard(Mode);

    impl ModeGuard {
        pub(super) fn set(mode: Mode) -> Self {
            ModeGuard(MODE.with(|m| m.replace(mode)))
        }
    }

    impl Drop for ModeGuard {
        fn drop(&mut self) {
            MODE.with(|m| m.set(self.0));
        }
    }

    /// Whether the linked cdr-encoding writes a length prefix in
    /// `serialize_bytes` (probed once: 0.10 does not, 0.11 does).
    pub(super) fn native_bytes_have_length_prefix() -> bool {
        static PROBE: OnceLock<bool> = OnceLock::new();
        *PROBE.get_or_init(|| {
            cdr_encoding::to_vec::<_, LittleEndian>(&serde_bytes::Bytes::new(&[0xAB]))
                .map(|v| v.len() == 5)
                .unwrap_or(false)
        })
    }

    pub fn serialize<T, S>(bytes: &T, serializer: S) -> Result<S::Ok, S::Error>
    where
        T: AsRef<[u8]> + ?Sized,
        S: Serializer,
    {
        let bytes = bytes.as_ref();
        match MODE.with(Cell::get) {
            Mode::Portable => serializer.collect_seq(bytes),
            Mode::Native => serializer.serialize_bytes(bytes),
            Mode::LengthThenRaw => {
                let len = u32::try_from(bytes.len())
                    .map_err(|_| S::Error::custom("byte sequence longer than u32::MAX"))?;
                let mut t = serializer.serialize_tuple(2)?;
                t.serialize_element(&len)?;
                t.serialize_element(serde_bytes::Bytes::new(bytes))?;
                t.end()
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        serde_bytes::deserialize(deserializer)
    }
}

// ---------------------------------------------------------------------------
// Type information
// ---------------------------------------------------------------------------

/// A ROS 2 message type.
pub trait RosMessage: Serialize + DeserializeOwned {
    /// ROS package, e.g. `"sensor_msgs"`.
    const PACKAGE: &'static str;
    /// Message name, e.g. `"Image"`.
    const NAME: &'static str;

    /// DDS type name, e.g. `"sensor_msgs::msg::dds_::Image_"`.
    fn dds_type_name() -> String {
        format!("{}::msg::dds_::{}_", Self::PACKAGE, Self::NAME)
    }

    /// ROS type name, e.g. `"sensor_msgs/msg/Image"`.
    fn ros_type_name() -> String {
        format!("{}/msg/{}", Self::PACKAGE, Self::NAME)
    }

    /// REP-2016 type hash (`RIHS01_<64 hex>`) computed from the field list
    /// ([`crate::type_hash`]); every type here has a description.
    fn type_hash() -> Result<&'static str, crate::type_hash::TypeHashError> {
        crate::type_hash::rihs01(&Self::ros_type_name())
    }
}

macro_rules! ros_message {
    ($ty:ty, $pkg:literal, $name:literal) => {
        impl RosMessage for $ty {
            const PACKAGE: &'static str = $pkg;
            const NAME: &'static str = $name;
        }
    };
}

ros_message!(Time, "builtin_interfaces", "Time");
ros_message!(Duration, "builtin_interfaces", "Duration");
ros_message!(Header, "std_msgs", "Header");
ros_message!(Image, "sensor_msgs", "Image");
ros_message!(CompressedImage, "sensor_msgs", "CompressedImage");
ros_message!(JointState, "sensor_msgs", "JointState");
ros_message!(MultiArrayDimension, "std_msgs", "MultiArrayDimension");
ros_message!(MultiArrayLayout, "std_msgs", "MultiArrayLayout");
ros_message!(Float32MultiArray, "std_msgs", "Float32MultiArray");
ros_message!(Float64MultiArray, "std_msgs", "Float64MultiArray");
ros_message!(
    JointTrajectoryPoint,
    "trajectory_msgs",
    "JointTrajectoryPoint"
);
ros_message!(JointTrajectory, "trajectory_msgs", "JointTrajectory");
ros_message!(KeyValue, "diagnostic_msgs", "KeyValue");
ros_message!(DiagnosticStatus, "diagnostic_msgs", "DiagnosticStatus");
ros_message!(DiagnosticArray, "diagnostic_msgs", "DiagnosticArray");

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// builtin_interfaces/Time.
#[derive(
    Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
pub struct Time {
    pub sec: i32,
    pub nanosec: u32,
}

/// builtin_interfaces/Duration.
#[derive(
    Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
pub struct Duration {
    pub sec: i32,
    pub nanosec: u32,
}

/// Splits nanoseconds into (sec, nanosec) with 0 <= nanosec < 1e9, saturating
/// at the i32 range of `sec`.
fn split_nanos(ns: i64) -> (i32, u32) {
    let sec = ns.div_euclid(NANOS_PER_SEC);
    if sec > i32::MAX as i64 {
        (i32::MAX, (NANOS_PER_SEC - 1) as u32)
    } else if sec < i32::MIN as i64 {
        (i32::MIN, 0)
    } else {
        (sec as i32, ns.rem_euclid(NANOS_PER_SEC) as u32)
    }
}

fn join_nanos(sec: i32, nanosec: u32) -> i64 {
    // |sec| <= 2^31 and nanosec < 2^32: no overflow.
    sec as i64 * NANOS_PER_SEC + nanosec as i64
}

impl Time {
    pub const fn new(sec: i32, nanosec: u32) -> Self {
        Time { sec, nanosec }
    }

    /// From nanoseconds since the epoch; saturates outside the i32-seconds range.
    pub fn from_nanos(ns: i64) -> Self {
        let (sec, nanosec) = split_nanos(ns);
        Time { sec, nanosec }
    }

    /// Nanoseconds since the epoch (`nanosec` is not normalised first, as in rclcpp).
    pub fn as_nanos(&self) -> i64 {
        join_nanos(self.sec, self.nanosec)
    }

    /// From a wall-clock time (ROS time is the system clock unless sim time is used).
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        let ns = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
        };
        Time::from_nanos(ns)
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Time::from_system_time(std::time::SystemTime::now())
    }
}

impl Duration {
    pub const fn new(sec: i32, nanosec: u32) -> Self {
        Duration { sec, nanosec }
    }

    /// From nanoseconds; saturates outside the i32-seconds range.
    pub fn from_nanos(ns: i64) -> Self {
        let (sec, nanosec) = split_nanos(ns);
        Duration { sec, nanosec }
    }

    pub fn as_nanos(&self) -> i64 {
        join_nanos(self.sec, self.nanosec)
    }

    /// From seconds, rounded to the nearest nanosecond; saturates, NaN gives zero.
    pub fn from_secs_f64(secs: f64) -> Self {
        if secs.is_nan() {
            return Duration::default();
        }
        // `as` saturates for out-of-range floats.
        Duration::from_nanos((secs * 1e9).round() as i64)
    }

    pub fn as_secs_f64(&self) -> f64 {
        self.sec as f64 + self.nanosec as f64 * 1e-9
    }
}

impl From<std::time::Duration> for Duration {
    /// Saturates at i32::MAX seconds.
    fn from(d: std::time::Duration) -> Self {
        Duration::from_nanos(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// std_msgs/Header.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Header {
    pub stamp: Time,
    pub frame_id: String,
}

impl Header {
    pub fn new(stamp: Time, frame_id: impl Into<String>) -> Self {
        Header {
            stamp,
            frame_id: frame_id.into(),
        }
    }
}

/// sensor_msgs/Image.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Image {
    pub header: Header,
    pub height: u32,
    pub width: u32,
    pub encoding: String,
    pub is_bigendian: u8,
    pub step: u32,
    #[serde(with = "cdr_bytes")]
    pub data: Vec<u8>,
}

impl Image {
    /// A packed image with `channels` bytes per pixel (step = width * channels).
    /// Errors when `data.len() != height * step`.
    pub fn packed(
        header: Header,
        encoding: &str,
        channels: u32,
        width: u32,
        height: u32,
        data: Vec<u8>,
    ) -> Result<Self, MsgError> {
        let step = width.checked_mul(channels).ok_or_else(|| {
            MsgError::Invalid(format!("{encoding} image {width} wide: step overflows u32"))
        })?;
        let expected = step as u64 * height as u64;
        if data.len() as u64 != expected {
            return Err(MsgError::Invalid(format!(
                "{encoding} image {width}x{height} needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(Image {
            header,
            height,
            width,
            encoding: encoding.to_string(),
            is_bigendian: 0,
            step,
            data,
        })
    }

    /// An `rgb8` image (3 bytes per pixel, row-major, no row padding).
    pub fn rgb8(header: Header, width: u32, height: u32, data: Vec<u8>) -> Result<Self, MsgError> {
        Image::packed(header, "rgb8", 3, width, height, data)
    }

    /// A `bgr8` image.
    pub fn bgr8(header: Header, width: u32, height: u32, data: Vec<u8>) -> Result<Self, MsgError> {
        Image::packed(header, "bgr8", 3, width, height, data)
    }

    /// A `mono8` image.
    pub fn mono8(header: Header, width: u32, height: u32, data: Vec<u8>) -> Result<Self, MsgError> {
        Image::packed(header, "mono8", 1, width, height, data)
    }
}

/// sensor_msgs/CompressedImage.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct CompressedImage {
    pub header: Header,
    /// "jpeg" or "png" (image_transport also writes e.g. "rgb8; jpeg compressed bgr8").
    pub format: String,
    #[serde(with = "cdr_bytes")]
    pub data: Vec<u8>,
}

impl CompressedImage {
    pub fn jpeg(header: Header, data: Vec<u8>) -> Self {
        CompressedImage {
            header,
            format: "jpeg".into(),
            data,
        }
    }

    pub fn png(header: Header, data: Vec<u8>) -> Self {
        CompressedImage {
            header,
            format: "png".into(),
            data,
        }
    }
}

/// sensor_msgs/JointState.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct JointState {
    pub header: Header,
    pub name: Vec<String>,
    pub position: Vec<f64>,
    pub velocity: Vec<f64>,
    pub effort: Vec<f64>,
}

impl JointState {
    /// Names and positions only (velocity and effort empty, as the .msg allows).
    pub fn positions<S: Into<String>>(
        header: Header,
        names: impl IntoIterator<Item = S>,
        position: Vec<f64>,
    ) -> Self {
        JointState {
            header,
            name: names.into_iter().map(Into::into).collect(),
            position,
            velocity: Vec::new(),
            effort: Vec::new(),
        }
    }
}

/// std_msgs/MultiArrayDimension.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiArrayDimension {
    pub label: String,
    pub size: u32,
    pub stride: u32,
}

/// std_msgs/MultiArrayLayout.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiArrayLayout {
    pub dim: Vec<MultiArrayDimension>,
    pub data_offset: u32,
}

impl MultiArrayLayout {
    /// A one-dimensional layout: `dim = [{label, len, len}]`, offset 0.
    pub fn vector(label: impl Into<String>, len: u32) -> Self {
        MultiArrayLayout {
            dim: vec![MultiArrayDimension {
                label: label.into(),
                size: len,
                stride: len,
            }],
            data_offset: 0,
        }
    }
}

/// std_msgs/Float32MultiArray.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Float32MultiArray {
    pub layout: MultiArrayLayout,
    pub data: Vec<f32>,
}

impl Float32MultiArray {
    /// A vector with a one-dimensional layout labelled `label`.
    pub fn vector(label: impl Into<String>, data: Vec<f32>) -> Self {
        Float32MultiArray {
            layout: MultiArrayLayout::vector(label, data.len().min(u32::MAX as usize) as u32),
            data,
        }
    }
}

/// std_msgs/Float64MultiArray.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Float64MultiArray {
    pub layout: MultiArrayLayout,
    pub data: Vec<f64>,
}

impl Float64MultiArray {
    /// A vector with a one-dimensional layout labelled `label`.
    pub fn vector(label: impl Into<String>, data: Vec<f64>) -> Self {
        Float64MultiArray {
            layout: MultiArrayLayout::vector(label, data.len().min(u32::MAX as usize) as u32),
            data,
        }
    }
}

/// trajectory_msgs/JointTrajectoryPoint.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct JointTrajectoryPoint {
    pub positions: Vec<f64>,
    pub velocities: Vec<f64>,
    pub accelerations: Vec<f64>,
    pub effort: Vec<f64>,
    pub time_from_start: Duration,
}

/// trajectory_msgs/JointTrajectory.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct JointTrajectory {
    pub header: Header,
    pub joint_names: Vec<String>,
    pub points: Vec<JointTrajectoryPoint>,
}

/// diagnostic_msgs/KeyValue.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl ToString) -> Self {
        KeyValue {
            key: key.into(),
            value: value.to_string(),
        }
    }
}

/// diagnostic_msgs/DiagnosticStatus (`level`: OK 0, WARN 1, ERROR 2, STALE 3).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DiagnosticStatus {
    pub level: u8,
    pub name: String,
    pub message: String,
    pub hardware_id: String,
    pub values: Vec<KeyValue>,
}

impl DiagnosticStatus {
    pub const OK: u8 = 0;
    pub const WARN: u8 = 1;
    pub const ERROR: u8 = 2;
    pub const STALE: u8 = 3;
}

/// diagnostic_msgs/DiagnosticArray.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct DiagnosticArray {
    pub header: Header,
    pub status: Vec<DiagnosticStatus>,
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};
    use std::fmt::Debug;

    const SO101: [&str; 6] = [
        "shoulder_pan",
        "shoulder_lift",
        "elbow_flex",
        "wrist_flex",
        "wrist_roll",
        "gripper",
    ];

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("golden hex"))
            .collect()
    }

    fn names() -> Vec<String> {
        SO101.iter().map(|s| s.to_string()).collect()
    }

    fn stamp() -> Time {
        Time::new(1_700_000_000, 123_456_789)
    }

    // The values of make_golden.py's `samples()`.
    fn g_time() -> Time {
        Time::new(-2, 999_999_999)
    }
    fn g_duration() -> Duration {
        Duration::new(3, 500_000_000)
    }
    fn g_header() -> Header {
        Header::new(stamp(), "base")
    }
    fn g_joint_state() -> JointState {
        JointState {
            header: Header::new(stamp(), "so101"),
            name: names(),
            position: vec![0.0, -1.5, 1.25, 0.5, -0.125, 0.75],
            velocity: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            effort: vec![],
        }
    }
    fn g_image() -> Image {
        let data = (0..36u32).map(|i| (i * 7 % 256) as u8).collect();
        Image::rgb8(Header::new(stamp(), "camera_optical"), 4, 3, data).unwrap()
    }
    fn g_compressed_image() -> CompressedImage {
        CompressedImage::jpeg(
            Header::new(stamp(), "cam"),
            vec![
                0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0x4A, 0x46, 0x49, 0x46, 0x00, 0xFF, 0xD9,
            ],
        )
    }
    fn g_float32_multi_array() -> Float32MultiArray {
        Float32MultiArray::vector("joints", vec![0.0, 1.5, -2.25, 3.0, 0.0625, -7.0])
    }
    fn g_float64_multi_array() -> Float64MultiArray {
        Float64MultiArray {
            layout: MultiArrayLayout {
                dim: vec![
                    MultiArrayDimension {
                        label: "t".into(),
                        size: 2,
                        stride: 6,
                    },
                    MultiArrayDimension {
                        label: "joint".into(),
                        size: 3,
                        stride: 3,
                    },
                ],
                data_offset: 1,
            },
            data: vec![0.5, -0.25, 1e100, -1e-100, 2.0, 3.0],
        }
    }
    fn g_joint_trajectory() -> JointTrajectory {
        JointTrajectory {
            header: Header::new(stamp(), "base_link"),
            joint_names: names(),
            points: vec![
                JointTrajectoryPoint {
                    positions: vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
                    time_from_start: Duration::new(0, 100_000_000),
                    ..Default::default()
                },
                JointTrajectoryPoint {
                    positions: vec![0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
                    velocities: vec![0.0; 6],
                    accelerations: vec![1.0],
                    effort: vec![],
                    time_from_start: Duration::new(1, 5),
                },
            ],
        }
    }

    fn g_diagnostic_array() -> DiagnosticArray {
        DiagnosticArray {
            header: Header::new(stamp(), ""),
            status: vec![
                DiagnosticStatus {
                    level: DiagnosticStatus::OK,
                    name: "so101/bus".into(),
                    message: "ok".into(),
                    hardware_id: "/dev/ttyACM0".into(),
                    values: vec![KeyValue::new("cycles", 1234), KeyValue::new("x", "")],
                },
                DiagnosticStatus {
                    level: DiagnosticStatus::ERROR,
                    name: "so101/gripper".into(),
                    message: "overload".into(),
                    hardware_id: "id 6".into(),
                    values: vec![],
                },
            ],
        }
    }

    const G_TIME: &str = include_str!("../tests/golden/time.hex");
    const G_DURATION: &str = include_str!("../tests/golden/duration.hex");
    const G_HEADER: &str = include_str!("../tests/golden/header.hex");
    const G_JOINT_STATE: &str = include_str!("../tests/golden/joint_state.hex");
    const G_IMAGE: &str = include_str!("../tests/golden/image.hex");
    const G_COMPRESSED_IMAGE: &str = include_str!("../tests/golden/compressed_image.hex");
    const G_F32: &str = include_str!("../tests/golden/float32_multi_array.hex");
    const G_F64: &str = include_str!("../tests/golden/float64_multi_array.hex");
    const G_TRAJ: &str = include_str!("../tests/golden/joint_trajectory.hex");
    const G_DIAG: &str = include_str!("../tests/golden/diagnostic_array.hex");

    /// Every golden frame, with a function that decodes it as its own type
    /// (Ok(()) when it decoded), for the type-erased robustness tests.
    type DecodeFn = fn(&[u8]) -> Result<(), MsgError>;
    fn goldens() -> Vec<(&'static str, Vec<u8>, DecodeFn)> {
        fn d<M: DeserializeOwned>(b: &[u8]) -> Result<(), MsgError> {
            decode::<M>(b).map(|_| ())
        }
        vec![
            ("time", hex(G_TIME), d::<Time>),
            ("duration", hex(G_DURATION), d::<Duration>),
            ("header", hex(G_HEADER), d::<Header>),
            ("joint_state", hex(G_JOINT_STATE), d::<JointState>),
            ("image", hex(G_IMAGE), d::<Image>),
            (
                "compressed_image",
                hex(G_COMPRESSED_IMAGE),
                d::<CompressedImage>,
            ),
            ("float32_multi_array", hex(G_F32), d::<Float32MultiArray>),
            ("float64_multi_array", hex(G_F64), d::<Float64MultiArray>),
            ("joint_trajectory", hex(G_TRAJ), d::<JointTrajectory>),
            ("diagnostic_array", hex(G_DIAG), d::<DiagnosticArray>),
        ]
    }

    /// Decodes the given bytes as every message type; only panics matter.
    fn decode_as_everything(b: &[u8]) {
        let _ = decode::<Time>(b);
        let _ = decode::<Duration>(b);
        let _ = decode::<Header>(b);
        let _ = decode::<JointState>(b);
        let _ = decode::<Image>(b);
        let _ = decode::<CompressedImage>(b);
        let _ = decode::<MultiArrayLayout>(b);
        let _ = decode::<Float32MultiArray>(b);
        let _ = decode::<Float64MultiArray>(b);
        let _ = decode::<JointTrajectoryPoint>(b);
        let _ = decode::<JointTrajectory>(b);
        let _ = decode::<DiagnosticArray>(b);
    }

    fn check_golden<M: RosMessage + PartialEq + Debug>(golden_hex: &str, value: M) {
        let golden = hex(golden_hex);
        assert_eq!(
            &golden[..4],
            &ENCAPSULATION_HEADER,
            "{}",
            M::ros_type_name()
        );
        let decoded: M = decode(&golden).unwrap();
        assert_eq!(decoded, value, "decoding golden {}", M::ros_type_name());
        let encoded = encode_vec(&value).unwrap();
        assert_eq!(encoded, golden, "encoding {}", M::ros_type_name());
        assert_eq!(decode::<M>(&encoded).unwrap(), value);
    }

    #[test]
    fn golden_time() {
        check_golden(G_TIME, g_time());
    }
    #[test]
    fn golden_duration() {
        check_golden(G_DURATION, g_duration());
    }
    #[test]
    fn golden_header() {
        check_golden(G_HEADER, g_header());
    }
    #[test]
    fn golden_joint_state() {
        check_golden(G_JOINT_STATE, g_joint_state());
    }
    #[test]
    fn golden_image() {
        check_golden(G_IMAGE, g_image());
    }
    #[test]
    fn golden_compressed_image() {
        check_golden(G_COMPRESSED_IMAGE, g_compressed_image());
    }
    #[test]
    fn golden_float32_multi_array() {
        check_golden(G_F32, g_float32_multi_array());
    }
    #[test]
    fn golden_float64_multi_array() {
        check_golden(G_F64, g_float64_multi_array());
    }
    #[test]
    fn golden_joint_trajectory() {
        check_golden(G_TRAJ, g_joint_trajectory());
    }
    #[test]
    fn golden_diagnostic_array() {
        check_golden(G_DIAG, g_diagnostic_array());
    }

    /// Frames as a Cyclone DDS DataReader received them over loopback: the C
    /// layer pads the payload to a multiple of 4 with zero bytes (options
    /// field left 00 00). They must decode to the same values.
    #[test]
    fn golden_wire_frames_with_padding() {
        let wire = hex(include_str!("../tests/golden/wire_header.hex"));
        assert_eq!(wire.len(), hex(G_HEADER).len() + 3);
        assert_eq!(decode_with_len::<Header>(&wire).unwrap(), (g_header(), 17));
        assert_eq!(
            &wire[..wire.len() - 3],
            &encode_vec(&g_header()).unwrap()[..]
        );
        let wire = hex(include_str!("../tests/golden/wire_compressed_image.hex"));
        assert_eq!(wire.len(), hex(G_COMPRESSED_IMAGE).len() + 3);
        assert_eq!(
            decode::<CompressedImage>(&wire).unwrap(),
            g_compressed_image()
        );
        assert_eq!(
            &wire[..wire.len() - 3],
            &encode_vec(&g_compressed_image()).unwrap()[..]
        );
    }

    #[test]
    fn serde_bytes_length_prefix_probe() {
        // Documents why `cdr_bytes` exists: with cdr-encoding 0.10 a plain
        // serde_bytes field loses its u32 length (0.11 writes it). The probe
        // must agree with what the linked version does.
        let raw =
            cdr_encoding::to_vec::<_, LittleEndian>(&serde_bytes::Bytes::new(&[1, 2, 3])).unwrap();
        match raw.len() {
            3 => assert!(!cdr_bytes::native_bytes_have_length_prefix()),
            7 => assert!(cdr_bytes::native_bytes_have_length_prefix()),
            _ => panic!("unexpected {raw:?}"),
        }
    }

    #[test]
    fn bytes_portable_mode_matches_encode() {
        // Outside `encode` (e.g. ros2-client serialising our type with its
        // own cdr-encoding), the byte field is an element-wise sequence: same bytes.
        let img = g_image();
        let portable = cdr_encoding::to_vec::<_, LittleEndian>(&img).unwrap();
        assert_eq!(&encode_vec(&img).unwrap()[4..], &portable[..]);
        let c = g_compressed_image();
        let portable = cdr_encoding::to_vec::<_, LittleEndian>(&c).unwrap();
        assert_eq!(&encode_vec(&c).unwrap()[4..], &portable[..]);
    }

    #[test]
    fn encode_reuses_and_clears_buffer() {
        let mut buf = vec![0xEE; 1000];
        encode(&g_time(), &mut buf).unwrap();
        assert_eq!(buf, hex(G_TIME));
        encode(&g_header(), &mut buf).unwrap();
        assert_eq!(buf, hex(G_HEADER));
    }

    #[test]
    fn big_endian_frames_decode() {
        // Time {sec: -2, nanosec: 999_999_999} in CDR_BE.
        let mut be = vec![0x00, 0x00, 0x00, 0x00];
        be.extend_from_slice(&(-2i32).to_be_bytes());
        be.extend_from_slice(&999_999_999u32.to_be_bytes());
        assert_eq!(decode::<Time>(&be).unwrap(), g_time());
        // Header with a string (alignment is the same, only byte order differs).
        let mut be = vec![0x00, 0x00, 0x00, 0x00];
        be.extend_from_slice(&1_700_000_000i32.to_be_bytes());
        be.extend_from_slice(&123_456_789u32.to_be_bytes());
        be.extend_from_slice(&5u32.to_be_bytes());
        be.extend_from_slice(b"base\0");
        assert_eq!(decode::<Header>(&be).unwrap(), g_header());
    }

    #[test]
    fn bad_encapsulation_is_rejected_with_header_bytes() {
        let mut frame = hex(G_TIME);
        for id in [[0x00, 0x07], [0x00, 0x03], [0x01, 0x01], [0xFF, 0xFF]] {
            frame[0] = id[0];
            frame[1] = id[1];
            let err = decode::<Time>(&frame).unwrap_err();
            assert_eq!(err, MsgError::BadEncapsulation(id));
            let text = err.to_string();
            assert!(
                text.contains(&format!("{:02x} {:02x}", id[0], id[1])),
                "{text}"
            );
        }
        let err = decode::<Time>(&[0x00, 0x07, 0, 0]).unwrap_err().to_string();
        assert!(err.contains("XCDR2"), "{err}");
    }

    #[test]
    fn options_bytes_are_ignored() {
        let mut frame = hex(G_TIME);
        frame[3] = 0x02; // e.g. "2 bytes of padding" as Cyclone's C writer records it
        assert_eq!(decode::<Time>(&frame).unwrap(), g_time());
    }

    #[test]
    fn too_short_frames() {
        for n in 0..4 {
            assert_eq!(
                decode::<Time>(&[0u8, 1, 0, 0][..n]).unwrap_err(),
                MsgError::TooShort { len: n }
            );
        }
    }

    #[test]
    fn trailing_padding_accepted_garbage_rejected() {
        let golden = hex(G_HEADER); // 21 bytes: 17-byte body, unaligned end
        for pad in 1..=MAX_TRAILING_PADDING {
            let mut f = golden.clone();
            f.extend(std::iter::repeat_n(0u8, pad));
            f[3] = pad as u8;
            let (h, used) = decode_with_len::<Header>(&f).unwrap();
            assert_eq!((h, used), (g_header(), 17));
        }
        let mut f = golden.clone();
        f.extend([0u8; 4]);
        assert_eq!(
            decode::<Header>(&f).unwrap_err(),
            MsgError::TrailingBytes {
                trailing: 4,
                consumed: 17
            }
        );
        // A JointState frame is not a Header followed by padding.
        assert!(matches!(
            decode::<Header>(&hex(G_JOINT_STATE)),
            Err(MsgError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn every_truncation_fails() {
        for (name, frame, dec) in goldens() {
            assert!(dec(&frame).is_ok(), "{name}");
            for n in 0..frame.len() {
                // Cutting off the last bytes of a string's NUL terminator or of
                // padding is still a different (shorter) message; every
                // truncation must at least not decode to a panic. All of ours
                // end in a primitive/NUL, so they must fail.
                assert!(dec(&frame[..n]).is_err(), "{name} truncated to {n} decoded");
                decode_as_everything(&frame[..n]);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0101);
        let mut buf = Vec::new();
        for i in 0..10_000 {
            let len = rng.random_range(0..200);
            buf.clear();
            buf.resize(len, 0);
            rng.fill_bytes(&mut buf);
            if i % 2 == 0 && len >= 4 {
                // Mostly valid headers, so the body decoder gets exercised.
                buf[..4].copy_from_slice(&[0, (i % 4 == 0) as u8, 0, 0]);
            }
            decode_as_everything(&buf);
        }
    }

    #[test]
    fn random_bit_flips_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xb17f_11b5);
        let goldens = goldens();
        for i in 0..10_000 {
            let (_, frame, dec) = &goldens[i % goldens.len()];
            let mut f = frame.clone();
            for _ in 0..rng.random_range(1..=4) {
                let bit = rng.random_range(0..f.len() * 8);
                f[bit / 8] ^= 1 << (bit % 8);
            }
            let _ = dec(&f);
            decode_as_everything(&f);
        }
    }

    #[test]
    fn huge_length_prefix_fails_fast() {
        let t0 = std::time::Instant::now();
        // Image.data claims 0xFFFFFFFF bytes.
        let mut f = encode_vec(&g_image()).unwrap();
        let data_len_at = f.len() - 36 - 4;
        assert_eq!(&f[data_len_at..data_len_at + 4], &36u32.to_le_bytes());
        f[data_len_at..data_len_at + 4].copy_from_slice(&[0xFF; 4]);
        assert!(matches!(decode::<Image>(&f), Err(MsgError::Cdr(_))));
        // JointState.name claims 2^32-1 strings; frame_id claims 2^32-1 bytes.
        let mut f = hex(G_JOINT_STATE);
        f[0x18..0x1c].copy_from_slice(&[0xFF; 4]);
        assert!(decode::<JointState>(&f).is_err());
        let mut f = hex(G_JOINT_STATE);
        f[0x0c..0x10].copy_from_slice(&[0xFF; 4]);
        assert!(decode::<JointState>(&f).is_err());
        // Every u32 position of every golden, overwritten with 0xFFFFFFFF.
        for (_, frame, _) in goldens() {
            for at in (4..frame.len().saturating_sub(3)).step_by(4) {
                let mut f = frame.clone();
                f[at..at + 4].copy_from_slice(&[0xFF; 4]);
                decode_as_everything(&f);
            }
        }
        // A lone sequence header of 0xFFFFFFFF f64s with no elements.
        let f = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(decode::<Float64MultiArray>(&f).is_err());
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn large_image_round_trip() {
        let (w, h) = (640u32, 480u32);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let img = Image::rgb8(Header::new(Time::from_nanos(42), "cam"), w, h, data).unwrap();
        let frame = encode_vec(&img).unwrap();
        assert_eq!(
            frame.len(),
            4 + 8 + 8 + 4 + 4 + 4 + 5 + 3 + 4 + 4 + (w * h * 3) as usize
        );
        assert_eq!(decode::<Image>(&frame).unwrap(), img);
    }

    #[test]
    fn type_names() {
        assert_eq!(Image::dds_type_name(), "sensor_msgs::msg::dds_::Image_");
        assert_eq!(Image::ros_type_name(), "sensor_msgs/msg/Image");
        assert_eq!(
            JointState::dds_type_name(),
            "sensor_msgs::msg::dds_::JointState_"
        );
        assert_eq!(Time::ros_type_name(), "builtin_interfaces/msg/Time");
        assert_eq!(
            JointTrajectory::dds_type_name(),
            "trajectory_msgs::msg::dds_::JointTrajectory_"
        );
        assert_eq!(
            Float32MultiArray::ros_type_name(),
            "std_msgs/msg/Float32MultiArray"
        );
        assert!(JointState::type_hash()
            .unwrap()
            .starts_with("RIHS01_a13ee3a3"));
        assert!(Image::type_hash().unwrap().starts_with("RIHS01_d31d41a9"));
        assert!(CompressedImage::type_hash()
            .unwrap()
            .starts_with("RIHS01_15640771"));
    }

    #[test]
    fn time_and_duration_helpers() {
        assert_eq!(Time::from_nanos(-1), Time::new(-1, 999_999_999));
        assert_eq!(Time::from_nanos(1_500_000_000), Time::new(1, 500_000_000));
        for ns in [
            0,
            1,
            -1,
            123_456_789_012,
            -123_456_789_012,
            i32::MAX as i64 * NANOS_PER_SEC,
        ] {
            assert_eq!(Time::from_nanos(ns).as_nanos(), ns);
            assert_eq!(Duration::from_nanos(ns).as_nanos(), ns);
        }
        assert_eq!(Time::from_nanos(i64::MAX), Time::new(i32::MAX, 999_999_999));
        assert_eq!(Time::from_nanos(i64::MIN), Time::new(i32::MIN, 0));
        assert_eq!(Duration::from_secs_f64(1.25), Duration::new(1, 250_000_000));
        assert_eq!(
            Duration::from_secs_f64(-0.5),
            Duration::new(-1, 500_000_000)
        );
        assert_eq!(Duration::from_secs_f64(f64::NAN), Duration::default());
        assert_eq!(Duration::from_secs_f64(1e300).sec, i32::MAX);
        assert_eq!(Duration::new(2, 500_000_000).as_secs_f64(), 2.5);
        assert_eq!(
            Duration::from(std::time::Duration::from_millis(1500)),
            Duration::new(1, 500_000_000)
        );
        let now = Time::now();
        assert!(now.sec > 1_700_000_000);
        let before =
            Time::from_system_time(std::time::UNIX_EPOCH - std::time::Duration::from_nanos(1));
        assert_eq!(before, Time::new(-1, 999_999_999));
    }

    #[test]
    fn image_helpers_check_sizes() {
        assert!(Image::rgb8(Header::default(), 4, 3, vec![0; 35]).is_err());
        assert!(Image::mono8(Header::default(), 4, 3, vec![0; 12]).is_ok());
        assert!(Image::rgb8(Header::default(), u32::MAX, 1, vec![]).is_err());
        let e = Image::bgr8(Header::default(), 2, 2, vec![0; 3]).unwrap_err();
        assert!(e.to_string().contains("needs 12 bytes"), "{e}");
    }
}
