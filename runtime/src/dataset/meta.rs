//! `meta/info.json` ([`Info`], [`FeatureSpec`]), per-episode metadata
//! ([`EpisodeMeta`]), path templates, and atomic file replacement.
//!
//! Field names, order and defaults follow LeRobot 0.6.1's `DatasetInfo`
//! (`lerobot/datasets/utils.py`); unknown fields are kept and written back.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::error::{DatasetError, Result};

pub const CODEBASE_VERSION: &str = "v3.0";
pub const INFO_PATH: &str = "meta/info.json";
pub const STATS_PATH: &str = "meta/stats.json";
pub const TASKS_PATH: &str = "meta/tasks.parquet";
pub const EPISODES_DIR: &str = "meta/episodes";
pub const DEFAULT_DATA_PATH: &str = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet";
pub const DEFAULT_VIDEO_PATH: &str =
    "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4";
pub const DEFAULT_EPISODES_PATH: &str =
    "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet";
pub const DEFAULT_CHUNK_SIZE: usize = 1000;
pub const DEFAULT_DATA_FILE_SIZE_IN_MB: usize = 100;
pub const DEFAULT_VIDEO_FILE_SIZE_IN_MB: usize = 200;

/// The per-frame bookkeeping columns every LeRobot dataset has (LeRobot's
/// `DEFAULT_FEATURES`), in LeRobot's order.
pub const DEFAULT_FEATURE_KEYS: [(&str, &str); 5] = [
    ("timestamp", "float32"),
    ("frame_index", "int64"),
    ("episode_index", "int64"),
    ("index", "int64"),
    ("task_index", "int64"),
];

/// `features.<key>.info` entries of a pressure image: the encoding (16-bit grey
/// PNG) and the pressure of one stored count.
pub const PRESSURE_ENCODING_KEY: &str = "tactile.encoding";
pub const PRESSURE_ENCODING: &str = "mono16";
pub const PRESSURE_SCALE_KEY: &str = "tactile.pressure_per_count";

/// One entry of `info.json` `features`: `{"dtype", "shape", "names", "info"?}`.
/// Cameras have dtype `"image"` or `"video"` and shape `[H, W, C]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    pub dtype: String,
    pub shape: Vec<usize>,
    /// A list of names (`["shoulder_pan.pos", ...]`, `["height","width","channels"]`),
    /// a dict (older datasets: `{"motors": [...]}`) or null.
    #[serde(default)]
    pub names: Option<Value>,
    /// Video stream description (`video.codec`, `video.fps`, ...) of video features;
    /// the encoding and scale of pressure images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl FeatureSpec {
    /// A float32 vector feature with per-dimension names.
    pub fn vector(names: &[&str]) -> Self {
        FeatureSpec {
            dtype: "float32".into(),
            shape: vec![names.len()],
            names: Some(Value::from(
                names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )),
            info: None,
            extra: Default::default(),
        }
    }

    /// A float32 vector feature without names.
    pub fn vector_len(len: usize) -> Self {
        FeatureSpec {
            dtype: "float32".into(),
            shape: vec![len],
            names: None,
            info: None,
            extra: Default::default(),
        }
    }

    /// An RGB camera feature `(H, W, 3)`; the writer stores it as `"image"` or
    /// `"video"` depending on its video codec option.
    pub fn camera(height: usize, width: usize) -> Self {
        FeatureSpec {
            dtype: "image".into(),
            shape: vec![height, width, 3],
            names: Some(Value::from(vec!["height", "width", "channels"])),
            info: None,
            extra: Default::default(),
        }
    }

    /// A single-channel pressure image `(H, W, 1)` (tactile pads), stored as 16-bit
    /// grey PNG (`"image"`): a stored count times `pressure_per_count` is the
    /// pressure. LeRobot reads such an image as float32 `(1, H, W)` counts
    /// (its uint16 path, the one depth maps take); our reader returns pressures.
    pub fn pressure_image(height: usize, width: usize, pressure_per_count: f64) -> Self {
        FeatureSpec {
            dtype: "image".into(),
            shape: vec![height, width, 1],
            names: Some(Value::from(vec!["height", "width", "channels"])),
            info: Some(serde_json::json!({
                PRESSURE_ENCODING_KEY: PRESSURE_ENCODING,
                PRESSURE_SCALE_KEY: pressure_per_count,
            })),
            extra: Default::default(),
        }
    }

    /// `Some((H, W, pressure_per_count))` for a pressure image feature.
    pub fn pressure_image_shape(&self) -> Option<(usize, usize, f64)> {
        let info = self.info.as_ref()?;
        if self.dtype != "image" || info.get(PRESSURE_ENCODING_KEY)?.as_str()? != PRESSURE_ENCODING
        {
            return None;
        }
        let scale = info.get(PRESSURE_SCALE_KEY)?.as_f64()?;
        match self.shape[..] {
            [h, w, 1] => Some((h, w, scale)),
            _ => None,
        }
    }

    pub(crate) fn scalar(dtype: &str) -> Self {
        FeatureSpec {
            dtype: dtype.into(),
            shape: vec![1],
            names: None,
            info: None,
            extra: Default::default(),
        }
    }

    /// An RGB camera (`"image"` or `"video"`; pressure images are not cameras).
    pub fn is_camera(&self) -> bool {
        (self.dtype == "image" || self.dtype == "video") && !self.is_pressure_image()
    }

    /// Marked as a pressure image ([`Self::pressure_image`]), whatever its shape.
    pub fn is_pressure_image(&self) -> bool {
        self.dtype == "image"
            && self
                .info
                .as_ref()
                .and_then(|i| i.get(PRESSURE_ENCODING_KEY))
                .is_some()
    }

    /// Numeric dtypes LeRobot stores as `datasets.Value` (or lists of them).
    pub fn is_numeric(&self) -> bool {
        matches!(
            self.dtype.as_str(),
            "float32"
                | "float64"
                | "float16"
                | "int64"
                | "int32"
                | "int16"
                | "int8"
                | "uint8"
                | "uint16"
                | "uint32"
                | "uint64"
                | "bool"
        )
    }

    /// Number of scalars per frame (product of the shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// `(H, W, C)` of a camera feature. LeRobot writes `[H, W, C]`; a few older
    /// datasets write `[C, H, W]` (with names `["channels", "height", "width"]`).
    pub fn hwc(&self) -> Option<(usize, usize, usize)> {
        if self.shape.len() != 3 {
            return None;
        }
        let chw = matches!(&self.names, Some(Value::Array(n))
            if n.first().and_then(|v| v.as_str()).is_some_and(|s| s.starts_with("channel")));
        if chw {
            Some((self.shape[1], self.shape[2], self.shape[0]))
        } else {
            Some((self.shape[0], self.shape[1], self.shape[2]))
        }
    }
}

/// `features`: an ORDERED map (the order is the column order and the camera
/// order policies see), kept as a vector of pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features(pub Vec<(String, FeatureSpec)>);

impl Features {
    pub fn get(&self, key: &str) -> Option<&FeatureSpec> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, f)| f)
    }
    pub fn get_mut(&mut self, key: &str) -> Option<&mut FeatureSpec> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, f)| f)
    }
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FeatureSpec)> {
        self.0.iter().map(|(k, f)| (k.as_str(), f))
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
    pub fn insert(&mut self, key: impl Into<String>, spec: FeatureSpec) {
        let key = key.into();
        match self.get_mut(&key) {
            Some(f) => *f = spec,
            None => self.0.push((key, spec)),
        }
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Keys of dtype `"video"`, in order.
    pub fn video_keys(&self) -> Vec<String> {
        self.iter()
            .filter(|(_, f)| f.dtype == "video")
            .map(|(k, _)| k.to_string())
            .collect()
    }
    /// Keys of dtype `"image"` or `"video"`, in order.
    pub fn camera_keys(&self) -> Vec<String> {
        self.iter()
            .filter(|(_, f)| f.is_camera())
            .map(|(k, _)| k.to_string())
            .collect()
    }
}

impl Serialize for Features {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Features;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of feature name to {dtype, shape, names}")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Features, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, FeatureSpec>()? {
                    out.push((k, v));
                }
                Ok(Features(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn default_chunks_size() -> usize {
    DEFAULT_CHUNK_SIZE
}
fn default_data_mb() -> usize {
    DEFAULT_DATA_FILE_SIZE_IN_MB
}
fn default_video_mb() -> usize {
    DEFAULT_VIDEO_FILE_SIZE_IN_MB
}
fn default_data_path() -> String {
    DEFAULT_DATA_PATH.into()
}

/// `meta/info.json` (LeRobot `DatasetInfo`, same field order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub codebase_version: String,
    pub fps: u32,
    pub features: Features,
    #[serde(default)]
    pub total_episodes: usize,
    #[serde(default)]
    pub total_frames: usize,
    #[serde(default)]
    pub total_tasks: usize,
    #[serde(default = "default_chunks_size")]
    pub chunks_size: usize,
    #[serde(default = "default_data_mb")]
    pub data_files_size_in_mb: usize,
    #[serde(default = "default_video_mb")]
    pub video_files_size_in_mb: usize,
    #[serde(default = "default_data_path")]
    pub data_path: String,
    #[serde(default)]
    pub video_path: Option<String>,
    #[serde(default)]
    pub robot_type: Option<String>,
    #[serde(default)]
    pub splits: BTreeMap<String, String>,
    /// Fields this version does not know (`tools`, v2 leftovers...), written back as read.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl Info {
    /// A fresh v3.0 info with the default bookkeeping features appended.
    pub fn new(fps: u32, robot_type: Option<String>, user: &Features, use_videos: bool) -> Self {
        let mut features = user.clone();
        for (k, dtype) in DEFAULT_FEATURE_KEYS {
            features.insert(k, FeatureSpec::scalar(dtype));
        }
        Info {
            codebase_version: CODEBASE_VERSION.into(),
            fps,
            features,
            total_episodes: 0,
            total_frames: 0,
            total_tasks: 0,
            chunks_size: DEFAULT_CHUNK_SIZE,
            data_files_size_in_mb: DEFAULT_DATA_FILE_SIZE_IN_MB,
            video_files_size_in_mb: DEFAULT_VIDEO_FILE_SIZE_IN_MB,
            data_path: DEFAULT_DATA_PATH.into(),
            video_path: use_videos.then(|| DEFAULT_VIDEO_PATH.into()),
            robot_type,
            splits: BTreeMap::new(),
            extra: Default::default(),
        }
    }

    /// Reads and checks `root/meta/info.json`.
    pub fn load(root: &Path) -> Result<Info> {
        let path = root.join(INFO_PATH);
        if !path.is_file() {
            return Err(DatasetError::Missing {
                path,
                what: "meta/info.json (is this a LeRobot dataset root?)".into(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| DatasetError::io(&path, e))?;
        // Check the version before the full schema, so a v2.1 file gets the right message.
        let raw: Value = serde_json::from_str(&text).map_err(|e| DatasetError::Json {
            path: path.clone(),
            source: e,
        })?;
        let version = raw
            .get("codebase_version")
            .and_then(Value::as_str)
            .unwrap_or("<absent>");
        if version != CODEBASE_VERSION {
            let hint = if version.starts_with("v2") {
                " (convert it with `python -m lerobot.scripts.convert_dataset_v21_to_v30`)"
            } else {
                ""
            };
            return Err(DatasetError::Version {
                path,
                found: version.to_string(),
                hint,
            });
        }
        // Parse the text again (not `raw`): serde_json's Value sorts keys, and the
        // feature order matters.
        let info: Info = serde_json::from_str(&text).map_err(|e| DatasetError::Json {
            path: path.clone(),
            source: e,
        })?;
        info.validate(&path)?;
        Ok(info)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        if self.fps == 0 {
            return Err(DatasetError::invalid(path, "fps", "must be positive"));
        }
        if self.chunks_size == 0 {
            return Err(DatasetError::invalid(
                path,
                "chunks_size",
                "must be positive",
            ));
        }
        for (k, dtype) in DEFAULT_FEATURE_KEYS {
            let Some(f) = self.features.get(k) else {
                return Err(DatasetError::invalid(
                    path,
                    format!("features.{k}"),
                    "missing",
                ));
            };
            let int_ok = dtype == "int64" && f.dtype.starts_with("int");
            let float_ok = dtype == "float32" && f.dtype.starts_with("float");
            if !(int_ok || float_ok) || f.shape != [1] {
                return Err(DatasetError::invalid(
                    path,
                    format!("features.{k}"),
                    format!(
                        "expected dtype {dtype} shape [1], found {} {:?}",
                        f.dtype, f.shape
                    ),
                ));
            }
        }
        for (k, f) in self.features.iter() {
            if f.shape.is_empty() || f.shape.contains(&0) {
                return Err(DatasetError::invalid(
                    path,
                    format!("features.{k}.shape"),
                    format!("{:?} is not a valid shape", f.shape),
                ));
            }
            if f.is_pressure_image() {
                match f.pressure_image_shape() {
                    Some((_, _, s)) if s.is_finite() && s > 0.0 => {}
                    _ => {
                        return Err(DatasetError::invalid(
                            path,
                            format!("features.{k}"),
                            format!(
                                "a pressure image needs shape (H, W, 1), {PRESSURE_ENCODING_KEY} = \"{PRESSURE_ENCODING}\" \
                                 and a positive {PRESSURE_SCALE_KEY} (found shape {:?}, info {})",
                                f.shape,
                                f.info.as_ref().map_or("null".into(), |i| i.to_string())
                            ),
                        ))
                    }
                }
            }
            if f.is_camera() {
                match f.hwc() {
                    Some((_, _, 3)) => {}
                    _ => {
                        return Err(DatasetError::invalid(
                            path,
                            format!("features.{k}.shape"),
                            format!("camera shape {:?} is not (H, W, 3)", f.shape),
                        ))
                    }
                }
            }
            if f.dtype == "video" && self.video_path.is_none() {
                return Err(DatasetError::invalid(
                    path,
                    "video_path",
                    format!("null, but feature {k} has dtype video"),
                ));
            }
        }
        Ok(())
    }

    /// Writes `root/meta/info.json` atomically (LeRobot layout: 4-space indent).
    pub fn save(&self, root: &Path) -> Result<()> {
        write_json_atomic(&root.join(INFO_PATH), self)
    }

    pub fn data_file(&self, chunk_index: i64, file_index: i64) -> String {
        format_path(&self.data_path, None, chunk_index, file_index)
    }

    pub fn video_file(&self, key: &str, chunk_index: i64, file_index: i64) -> Option<String> {
        self.video_path
            .as_deref()
            .map(|t| format_path(t, Some(key), chunk_index, file_index))
    }
}

/// Where one episode's frames of one video key live.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoRef {
    pub chunk_index: i64,
    pub file_index: i64,
    /// Seconds into the mp4 file where the episode's frame 0 is.
    pub from_timestamp: f64,
    pub to_timestamp: f64,
}

/// One row of `meta/episodes/*/*.parquet` (without the `stats/...` columns).
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeMeta {
    pub episode_index: usize,
    pub tasks: Vec<String>,
    pub length: usize,
    pub data_chunk_index: i64,
    pub data_file_index: i64,
    /// Global frame index range `[dataset_from_index, dataset_to_index)`.
    pub dataset_from_index: usize,
    pub dataset_to_index: usize,
    pub videos: BTreeMap<String, VideoRef>,
    pub meta_chunk_index: i64,
    pub meta_file_index: i64,
    /// Extra per-episode float64 columns `<name>` (e.g. `recording/achieved_fps`),
    /// written after LeRobot's own columns and read back when present. LeRobot
    /// ignores columns it does not know.
    pub extra: BTreeMap<String, f64>,
}

/// Expands LeRobot's path templates: `{video_key}`, `{chunk_index:03d}`, `{file_index:03d}`.
pub fn format_path(
    template: &str,
    video_key: Option<&str>,
    chunk_index: i64,
    file_index: i64,
) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let field = &rest[open + 1..open + close];
        let (name, spec) = field.split_once(':').unwrap_or((field, ""));
        let width: usize = spec
            .strip_prefix('0')
            .and_then(|s| s.strip_suffix('d'))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        match name {
            "chunk_index" => out.push_str(&format!("{chunk_index:0width$}")),
            "file_index" => out.push_str(&format!("{file_index:0width$}")),
            "video_key" | "image_key" => out.push_str(video_key.unwrap_or("")),
            _ => out.push_str(&rest[open..open + close + 1]),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// LeRobot's `update_chunk_file_indices`: next file, new chunk every `chunks_size` files.
pub fn next_chunk_file(chunk_index: i64, file_index: i64, chunks_size: usize) -> (i64, i64) {
    if file_index + 1 >= chunks_size as i64 {
        (chunk_index + 1, 0)
    } else {
        (chunk_index, file_index + 1)
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary sibling of `path`: hidden, and not ending in `.parquet`/`.mp4`,
/// so neither LeRobot's `*/*.parquet` glob nor this reader ever picks it up.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

pub(crate) fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DatasetError::io(dir, e))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically: write a temporary sibling, fsync, rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    create_parent(path)?;
    let tmp = temp_sibling(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(DatasetError::io(path, e));
    }
    Ok(())
}

/// JSON the way LeRobot's `write_json` writes it (`indent=4, ensure_ascii=False`).
pub(crate) fn to_json_pretty<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    // Serialising our own plain data into a Vec cannot fail.
    if value.serialize(&mut ser).is_err() {
        buf.clear();
    }
    buf
}

pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, &to_json_pretty(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_like_python_format() {
        assert_eq!(
            format_path(DEFAULT_DATA_PATH, None, 0, 12),
            "data/chunk-000/file-012.parquet"
        );
        assert_eq!(
            format_path(DEFAULT_VIDEO_PATH, Some("observation.images.head"), 3, 1000),
            "videos/observation.images.head/chunk-003/file-1000.mp4"
        );
        assert_eq!(next_chunk_file(0, 998, 1000), (0, 999));
        assert_eq!(next_chunk_file(0, 999, 1000), (1, 0));
    }

    #[test]
    fn info_round_trips_and_keeps_unknown_fields_and_order() {
        let mut user = Features::default();
        user.insert("observation.state", FeatureSpec::vector(&["a", "b"]));
        user.insert("action", FeatureSpec::vector(&["a", "b"]));
        let mut info = Info::new(30, Some("so101_follower".into()), &user, false);
        info.extra
            .insert("tools".into(), serde_json::json!([{"name": "say"}]));
        let text = String::from_utf8(to_json_pretty(&info)).unwrap();
        let keys: Vec<&str> = [
            "codebase_version",
            "fps",
            "features",
            "total_episodes",
            "data_path",
            "video_path",
            "robot_type",
            "splits",
            "tools",
        ]
        .to_vec();
        let pos: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(
            text.contains("\"names\": null"),
            "default features carry names: null"
        );
        let back: Info = serde_json::from_str(&text).unwrap();
        assert_eq!(back, info);
        let order: Vec<&str> = back.features.keys().collect();
        assert_eq!(order[..3], ["observation.state", "action", "timestamp"]);
    }
}
