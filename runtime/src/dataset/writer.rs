//! [`DatasetWriter`]: records episodes into a LeRobot v3.0 dataset.
//!
//! Frames are buffered per episode (float vectors as-is, `image` cameras as PNG,
//! pressure images (given as float vectors) as 16-bit grey PNG of counts,
//! `video` cameras streamed into one ffmpeg encoder per camera as they arrive).
//! `save_episode` then commits the episode; every file it touches is written to a
//! temporary name and renamed over the old one, in this order:
//!
//! 1. `data/chunk-C/file-F.parquet` (the current file rewritten with the new row
//!    group; a new file once `data_files_size_in_mb` would be passed),
//! 2. `videos/<key>/chunk-C/file-F.mp4` (episode mp4 appended by stream copy; a
//!    new file once `video_files_size_in_mb` would be passed),
//! 3. `meta/tasks.parquet`, `meta/episodes/chunk-000/file-000.parquet`, `meta/stats.json`,
//! 4. `meta/info.json`, the commit point: the reader trusts its totals and skips
//!    anything a crash left beyond them.
//!
//! A crash or a dropped writer at any moment leaves a dataset that opens with all
//! episodes saved before. Episode metadata stays in one file (about 1 kB per
//! episode). After a failed save the writer refuses further saves (files on disk
//! may hold the failed episode's bytes past the committed end).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::error::{DatasetError, Result};
use super::meta::{
    create_parent, format_path, next_chunk_file, temp_sibling, EpisodeMeta, FeatureSpec, Features,
    Info, VideoRef, DEFAULT_EPISODES_PATH, DEFAULT_FEATURE_KEYS, INFO_PATH,
};
use super::parquet_io::{self, EpisodeColumns};
use super::reader::{encode_png, encode_pressure_png, pressure_counts};
use super::stats::{self, ImageStatsAcc, Stats};
use super::video::{self, EpisodeEncoder, VideoCodec};

/// Storage settings (LeRobot defaults).
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub chunks_size: usize,
    pub data_files_size_in_mb: usize,
    pub video_files_size_in_mb: usize,
    /// ffmpeg binary; `None` searches (see [`video::find_ffmpeg`]).
    pub ffmpeg: Option<PathBuf>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunks_size: super::meta::DEFAULT_CHUNK_SIZE,
            data_files_size_in_mb: super::meta::DEFAULT_DATA_FILE_SIZE_IN_MB,
            video_files_size_in_mb: super::meta::DEFAULT_VIDEO_FILE_SIZE_IN_MB,
            ffmpeg: None,
        }
    }
}

/// One recorded frame: every float feature, every camera (RGB u8 HWC), the task.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub vectors: BTreeMap<String, Vec<f32>>,
    pub images: BTreeMap<String, Vec<u8>>,
    pub task: String,
}

impl Frame {
    pub fn new(task: impl Into<String>) -> Self {
        Frame {
            task: task.into(),
            ..Default::default()
        }
    }
    pub fn vector(mut self, key: impl Into<String>, values: Vec<f32>) -> Self {
        self.vectors.insert(key.into(), values);
        self
    }
    pub fn image(mut self, key: impl Into<String>, rgb: Vec<u8>) -> Self {
        self.images.insert(key.into(), rgb);
        self
    }
}

/// What `save_episode` committed.
#[derive(Debug, Clone)]
pub struct EpisodeReport {
    pub episode_index: usize,
    pub length: usize,
    /// Frames in the dataset after this episode.
    pub total_frames: usize,
    pub data_file: PathBuf,
    pub video_files: Vec<PathBuf>,
    pub elapsed: Duration,
}

#[derive(Default)]
struct EpisodeBuffer {
    len: usize,
    vectors: BTreeMap<String, Vec<f32>>,
    images: BTreeMap<String, Vec<Vec<u8>>>,
    image_stats: BTreeMap<String, ImageStatsAcc>,
    encoders: BTreeMap<String, EpisodeEncoder>,
    tasks: Vec<String>,
    extra: BTreeMap<String, f64>,
}

struct VideoCursor {
    file: (i64, i64),
    to_timestamp: f64,
}

pub struct DatasetWriter {
    root: PathBuf,
    info: Info,
    codec: Option<VideoCodec>,
    ffmpeg: Option<PathBuf>,
    schema: SchemaRef,
    tasks: Vec<String>,
    episodes: Vec<EpisodeMeta>,
    ep_stats: Vec<Stats>,
    data_file: (i64, i64),
    data_batches: Vec<RecordBatch>,
    data_file_frames: usize,
    video_cursor: BTreeMap<String, VideoCursor>,
    buf: EpisodeBuffer,
    poisoned: Option<String>,
}

impl DatasetWriter {
    /// Creates a new dataset at `root` (absent or an empty directory).
    /// `features` are the user features (cameras `(H, W, 3)` and float32 vectors),
    /// in the order they should appear; the bookkeeping features are added.
    /// Cameras are stored as `"video"` when `video` is `Some`, else as `"image"`.
    pub fn create(
        root: &Path,
        fps: u32,
        robot_type: &str,
        features: &Features,
        video: Option<VideoCodec>,
    ) -> Result<Self> {
        Self::create_with(
            root,
            fps,
            robot_type,
            features,
            video,
            WriterOptions::default(),
        )
    }

    pub fn create_with(
        root: &Path,
        fps: u32,
        robot_type: &str,
        features: &Features,
        video: Option<VideoCodec>,
        opts: WriterOptions,
    ) -> Result<Self> {
        if fps == 0 {
            return Err(DatasetError::Usage("fps must be positive".into()));
        }
        if opts.chunks_size == 0
            || opts.data_files_size_in_mb == 0
            || opts.video_files_size_in_mb == 0
        {
            return Err(DatasetError::Usage(
                "chunks_size and file size limits must be positive".into(),
            ));
        }
        if root.exists() {
            let non_empty = std::fs::read_dir(root)
                .map_err(|e| DatasetError::io(root, e))?
                .next()
                .is_some();
            if non_empty {
                return Err(DatasetError::Usage(format!(
                    "{}: already exists and is not empty",
                    root.display()
                )));
            }
        }
        let mut user = Features::default();
        for (k, f) in features.iter() {
            if DEFAULT_FEATURE_KEYS.iter().any(|(d, _)| *d == k) {
                return Err(DatasetError::Usage(format!(
                    "feature {k} is added by the writer; do not declare it"
                )));
            }
            let mut f: FeatureSpec = f.clone();
            if f.is_pressure_image() {
                if !f
                    .pressure_image_shape()
                    .is_some_and(|(_, _, s)| s.is_finite() && s > 0.0)
                {
                    return Err(DatasetError::Usage(format!(
                        "pressure image {k}: shape {:?} / info {:?} is not (H, W, 1) with a positive scale",
                        f.shape, f.info
                    )));
                }
            } else if f.is_camera() {
                let Some((h, w, 3)) = f.hwc().filter(|_| f.shape.len() == 3 && f.shape[2] == 3)
                else {
                    return Err(DatasetError::Usage(format!(
                        "camera {k}: shape {:?} is not [H, W, 3]",
                        f.shape
                    )));
                };
                if video.is_some() && (h % 2 != 0 || w % 2 != 0) {
                    return Err(DatasetError::Usage(format!(
                        "camera {k}: yuv420p video needs even H and W, got {h}x{w}"
                    )));
                }
                f.dtype = if video.is_some() { "video" } else { "image" }.into();
                f.info = None;
            } else if f.dtype != "float32" || f.shape.len() != 1 || f.shape[0] == 0 {
                return Err(DatasetError::Usage(format!(
                    "feature {k}: dtype {} shape {:?} not supported by the writer (float32 vectors, cameras)",
                    f.dtype, f.shape
                )));
            }
            user.insert(k, f);
        }
        let ffmpeg = match (&video, opts.ffmpeg) {
            (Some(_), Some(p)) => Some(p),
            (Some(_), None) => Some(video::find_ffmpeg(&[root])?),
            (None, p) => p,
        };
        let mut info = Info::new(fps, Some(robot_type.to_string()), &user, video.is_some());
        info.chunks_size = opts.chunks_size;
        info.data_files_size_in_mb = opts.data_files_size_in_mb;
        info.video_files_size_in_mb = opts.video_files_size_in_mb;
        let schema = parquet_io::data_schema(&info.features)?;
        std::fs::create_dir_all(root).map_err(|e| DatasetError::io(root, e))?;
        info.save(root)?;
        Ok(DatasetWriter {
            root: root.to_path_buf(),
            info,
            codec: video,
            ffmpeg,
            schema,
            tasks: Vec::new(),
            episodes: Vec::new(),
            ep_stats: Vec::new(),
            data_file: (0, 0),
            data_batches: Vec::new(),
            data_file_frames: 0,
            video_cursor: BTreeMap::new(),
            buf: EpisodeBuffer::default(),
            poisoned: None,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn info(&self) -> &Info {
        &self.info
    }

    pub fn num_episodes(&self) -> usize {
        self.episodes.len()
    }

    /// Frames buffered in the current (unsaved) episode.
    pub fn pending_frames(&self) -> usize {
        self.buf.len
    }

    /// Adds one frame to the current episode (nothing is committed until `save_episode`).
    /// A frame that fails validation changes nothing; an ffmpeg encoder failure
    /// discards the current episode (its cameras would no longer line up).
    pub fn add_frame(&mut self, frame: Frame) -> Result<()> {
        // Validate everything before touching the buffer.
        for key in frame.vectors.keys().chain(frame.images.keys()) {
            if !self.info.features.contains(key)
                || DEFAULT_FEATURE_KEYS.iter().any(|(d, _)| d == key)
            {
                return Err(DatasetError::Usage(format!(
                    "frame has unknown feature {key}"
                )));
            }
        }
        for (k, f) in self.info.features.iter() {
            if DEFAULT_FEATURE_KEYS.iter().any(|(d, _)| *d == k) {
                continue;
            }
            if let Some((h, w, _)) = f.pressure_image_shape() {
                let v = frame.vectors.get(k).ok_or_else(|| {
                    DatasetError::Usage(format!("frame lacks pressure image {k}"))
                })?;
                if v.len() != h * w {
                    return Err(DatasetError::Usage(format!(
                        "pressure image {k}: {} values, expected {h} x {w}",
                        v.len()
                    )));
                }
                if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                    return Err(DatasetError::Usage(format!(
                        "pressure image {k}: cell {j} is {}",
                        v[j]
                    )));
                }
            } else if f.is_camera() {
                let img = frame
                    .images
                    .get(k)
                    .ok_or_else(|| DatasetError::Usage(format!("frame lacks camera {k}")))?;
                if img.len() != f.numel() {
                    return Err(DatasetError::Usage(format!(
                        "camera {k}: {} bytes, expected {:?} = {} (RGB u8 HWC)",
                        img.len(),
                        f.shape,
                        f.numel()
                    )));
                }
            } else {
                let v = frame
                    .vectors
                    .get(k)
                    .ok_or_else(|| DatasetError::Usage(format!("frame lacks feature {k}")))?;
                if v.len() != f.numel() {
                    return Err(DatasetError::Usage(format!(
                        "feature {k}: {} values, expected {}",
                        v.len(),
                        f.numel()
                    )));
                }
                if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                    return Err(DatasetError::Usage(format!(
                        "feature {k}: element {j} is {}",
                        v[j]
                    )));
                }
            }
        }
        // Pressure images as counts and their PNGs, before the buffer changes.
        let mut pressure = BTreeMap::new();
        for (k, v) in &frame.vectors {
            if let Some((h, w, scale)) = self
                .info
                .features
                .get(k)
                .and_then(|f| f.pressure_image_shape())
            {
                let mut counts = Vec::with_capacity(v.len());
                pressure_counts(v, scale, &mut counts);
                let png = encode_pressure_png(&counts, h, w)?;
                pressure.insert(k.clone(), (counts, png));
            }
        }
        if self.buf.len == 0 {
            self.start_encoders()?;
        }
        for k in self.info.features.video_keys() {
            if let (Some(enc), Some(img)) = (self.buf.encoders.get_mut(&k), frame.images.get(&k)) {
                if let Err(e) = enc.push(img) {
                    // The cameras' videos would no longer line up: the episode is discarded.
                    self.clear_episode();
                    return Err(e);
                }
            }
        }
        for (k, img) in &frame.images {
            let f = self
                .info
                .features
                .get(k)
                .ok_or_else(|| DatasetError::Usage(format!("no feature {k}")))?;
            if f.dtype == "image" {
                let (h, w, _) = f
                    .hwc()
                    .ok_or_else(|| DatasetError::Usage(format!("camera {k}: bad shape")))?;
                self.buf
                    .images
                    .entry(k.clone())
                    .or_default()
                    .push(encode_png(img, h, w)?);
            }
            self.buf
                .image_stats
                .entry(k.clone())
                .or_default()
                .add_frame(img);
        }
        for (k, v) in frame.vectors {
            match pressure.remove(&k) {
                // Stored as counts (PNG), and the counts kept for the stats.
                Some((counts, png)) => {
                    self.buf.images.entry(k.clone()).or_default().push(png);
                    let acc = self.buf.vectors.entry(k).or_default();
                    acc.extend(counts.iter().map(|&c| f32::from(c)));
                }
                None => self.buf.vectors.entry(k).or_default().extend_from_slice(&v),
            }
        }
        self.buf.tasks.push(frame.task);
        self.buf.len += 1;
        Ok(())
    }

    fn start_encoders(&mut self) -> Result<()> {
        let (Some(codec), Some(ffmpeg)) = (self.codec, self.ffmpeg.clone()) else {
            return Ok(());
        };
        for (k, f) in self.info.features.iter() {
            if f.dtype != "video" {
                continue;
            }
            let (h, w, _) = f
                .hwc()
                .ok_or_else(|| DatasetError::Usage(format!("camera {k}: bad shape")))?;
            let final_name = format!("episode-{:06}.mp4", self.episodes.len());
            let out = temp_sibling(&self.root.join("videos").join(k).join(final_name));
            create_parent(&out)?;
            let enc = EpisodeEncoder::start(&ffmpeg, &out, w, h, self.info.fps, codec)?;
            self.buf.encoders.insert(k.to_string(), enc);
        }
        Ok(())
    }

    /// Sets an extra per-episode metadata column (float64) of the current
    /// episode, e.g. `recording/achieved_fps`. Every episode of a dataset must
    /// carry the same set of extra names (checked at `save_episode`).
    pub fn set_episode_extra(&mut self, name: &str, value: f64) -> Result<()> {
        if name.is_empty()
            || !name.contains('/')
            || name.starts_with("stats/")
            || name.starts_with("videos/")
            || name.starts_with("meta/")
            || name.starts_with("data/")
        {
            return Err(DatasetError::Usage(format!(
                "episode extra {name:?}: use a `<group>/<name>` column name outside LeRobot's data/, videos/, stats/ and meta/ groups"
            )));
        }
        self.buf.extra.insert(name.to_string(), value);
        Ok(())
    }

    /// Discards the current episode's frames (and kills its encoders).
    pub fn clear_episode(&mut self) {
        self.buf = EpisodeBuffer::default();
    }

    /// Commits the buffered frames as the next episode (see the module docs).
    pub fn save_episode(&mut self) -> Result<EpisodeReport> {
        if let Some(why) = &self.poisoned {
            return Err(DatasetError::Usage(format!(
                "an earlier save_episode failed ({why}); open a new writer"
            )));
        }
        if self.buf.len == 0 {
            return Err(DatasetError::Usage("save_episode: no frames added".into()));
        }
        if let Some(first) = self.episodes.first() {
            let a: Vec<&String> = first.extra.keys().collect();
            let b: Vec<&String> = self.buf.extra.keys().collect();
            if a != b {
                return Err(DatasetError::Usage(format!(
                    "save_episode: extra metadata {b:?} differs from the dataset's {a:?}"
                )));
            }
        }
        let t0 = Instant::now();
        let buf = std::mem::take(&mut self.buf);
        match self.commit(buf) {
            Ok(mut r) => {
                r.elapsed = t0.elapsed();
                Ok(r)
            }
            Err(e) => {
                self.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn commit(&mut self, mut buf: EpisodeBuffer) -> Result<EpisodeReport> {
        let ep_index = self.episodes.len();
        let len = buf.len;
        let global_start = self.info.total_frames;
        let fps = self.info.fps;

        // Tasks: unique in order of appearance, new ones appended to the table.
        let mut ep_tasks: Vec<String> = Vec::new();
        for t in &buf.tasks {
            if !ep_tasks.contains(t) {
                ep_tasks.push(t.clone());
            }
        }
        let n_tasks_before = self.tasks.len();
        for t in &ep_tasks {
            if !self.tasks.contains(t) {
                self.tasks.push(t.clone());
            }
        }
        let task_index: Vec<i64> = buf
            .tasks
            .iter()
            .map(|t| self.tasks.iter().position(|x| x == t).unwrap_or(0) as i64)
            .collect();

        // Episode stats (LeRobot computes them for every non-string feature).
        let mut st = Stats::default();
        for (k, f) in self.info.features.iter() {
            let fs = if let Some((h, w, _)) = f.pressure_image_shape() {
                // Over every cell of every frame, in stored counts (what LeRobot reads).
                let Some(v) = buf.vectors.get(k) else {
                    continue;
                };
                let vals: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
                let mut fs = stats::vector_stats(&vals, len * h * w, 1);
                fs.shape = vec![1, 1, 1];
                fs.count = len as u64;
                fs
            } else if f.is_camera() {
                match buf.image_stats.get(k) {
                    Some(acc) => acc.finish(),
                    None => continue,
                }
            } else {
                let vals: Vec<f64> = match k {
                    "timestamp" => (0..len).map(|i| (i as f32 / fps as f32) as f64).collect(),
                    "frame_index" => (0..len).map(|i| i as f64).collect(),
                    "episode_index" => vec![ep_index as f64; len],
                    "index" => (0..len).map(|i| (global_start + i) as f64).collect(),
                    "task_index" => task_index.iter().map(|&i| i as f64).collect(),
                    _ => match buf.vectors.get(k) {
                        Some(v) => v.iter().map(|&x| x as f64).collect(),
                        None => continue,
                    },
                };
                stats::vector_stats(&vals, len, f.numel())
            };
            st.features.insert(k.to_string(), fs);
        }

        // 1. Data file.
        let data_limit = self.info.data_files_size_in_mb as f64 * 1024.0 * 1024.0;
        if !self.data_batches.is_empty() {
            let cur = self
                .root
                .join(self.info.data_file(self.data_file.0, self.data_file.1));
            let size = std::fs::metadata(&cur)
                .map(|m| m.len() as f64)
                .unwrap_or(0.0);
            let per_frame = size / self.data_file_frames.max(1) as f64;
            if size + per_frame * len as f64 >= data_limit {
                self.data_file =
                    next_chunk_file(self.data_file.0, self.data_file.1, self.info.chunks_size);
                self.data_batches.clear();
                self.data_file_frames = 0;
            }
        }
        let cols = EpisodeColumns {
            episode_index: ep_index as i64,
            global_start: global_start as i64,
            fps,
            len,
            vectors: &buf.vectors,
            images: &buf.images,
            task_index: &task_index,
        };
        let batch = parquet_io::data_batch(&self.schema, &self.info.features, &cols)?;
        self.data_batches.push(batch);
        self.data_file_frames += len;
        let data_rel = self.info.data_file(self.data_file.0, self.data_file.1);
        let data_path = self.root.join(&data_rel);
        parquet_io::write_parquet(&data_path, self.schema.clone(), &self.data_batches)?;

        // 2. Videos.
        let mut videos = BTreeMap::new();
        let mut video_files = Vec::new();
        let ep_duration = len as f64 / fps as f64;
        for key in self.info.features.video_keys() {
            let enc = buf.encoders.remove(&key).ok_or_else(|| {
                DatasetError::Usage(format!("no encoder for video feature {key}"))
            })?;
            if enc.frames != len {
                return Err(DatasetError::Usage(format!(
                    "video {key}: {} frames encoded for {len} frames",
                    enc.frames
                )));
            }
            let ep_mp4 = enc.finish()?;
            let result = self.append_video(&key, &ep_mp4, ep_duration);
            let _ = std::fs::remove_file(&ep_mp4);
            let (vref, path) = result?;
            videos.insert(key.clone(), vref);
            video_files.push(path);
        }

        // 3. Metadata.
        self.episodes.push(EpisodeMeta {
            episode_index: ep_index,
            tasks: ep_tasks,
            length: len,
            data_chunk_index: self.data_file.0,
            data_file_index: self.data_file.1,
            dataset_from_index: global_start,
            dataset_to_index: global_start + len,
            videos,
            meta_chunk_index: 0,
            meta_file_index: 0,
            extra: std::mem::take(&mut buf.extra),
        });
        self.ep_stats.push(st);
        if self.tasks.len() != n_tasks_before {
            parquet_io::write_tasks(&self.root, &self.tasks)?;
        }
        let ep_rel = format_path(DEFAULT_EPISODES_PATH, None, 0, 0);
        parquet_io::write_episodes(
            &self.root,
            &ep_rel,
            &self.info.features,
            &self.episodes,
            &self.ep_stats,
        )?;
        self.write_stats()?;

        // 4. Commit.
        if ep_index == 0 {
            if let Some(codec) = self.codec {
                for key in self.info.features.video_keys() {
                    if let Some(f) = self.info.features.get_mut(&key) {
                        if let Some((h, w, _)) = f.hwc() {
                            f.info = Some(codec.info_block(h, w, fps));
                        }
                    }
                }
            }
        }
        self.info.total_episodes = self.episodes.len();
        self.info.total_frames = global_start + len;
        self.info.total_tasks = self.tasks.len();
        self.info.splits = [(
            "train".to_string(),
            format!("0:{}", self.info.total_episodes),
        )]
        .into();
        self.info.save(&self.root)?;

        Ok(EpisodeReport {
            episode_index: ep_index,
            length: len,
            total_frames: self.info.total_frames,
            data_file: data_path,
            video_files,
            elapsed: Duration::ZERO,
        })
    }

    /// Appends one episode mp4 to the key's current file (or starts a new file).
    fn append_video(
        &mut self,
        key: &str,
        ep_mp4: &Path,
        ep_duration: f64,
    ) -> Result<(VideoRef, PathBuf)> {
        let ffmpeg = self
            .ffmpeg
            .clone()
            .ok_or_else(|| DatasetError::Usage("no ffmpeg for video".into()))?;
        let limit = self.info.video_files_size_in_mb as f64 * 1024.0 * 1024.0;
        let ep_size = std::fs::metadata(ep_mp4)
            .map_err(|e| DatasetError::io(ep_mp4, e))?
            .len() as f64;
        let rel = |info: &Info, f: (i64, i64)| info.video_file(key, f.0, f.1).unwrap_or_default();
        let (file, from) = match self.video_cursor.get(key) {
            None => ((0, 0), 0.0),
            Some(cur) => {
                let path = self.root.join(rel(&self.info, cur.file));
                let size = std::fs::metadata(&path)
                    .map_err(|e| DatasetError::io(&path, e))?
                    .len() as f64;
                if size + ep_size >= limit {
                    (
                        next_chunk_file(cur.file.0, cur.file.1, self.info.chunks_size),
                        0.0,
                    )
                } else {
                    (cur.file, cur.to_timestamp)
                }
            }
        };
        let path = self.root.join(rel(&self.info, file));
        create_parent(&path)?;
        if from == 0.0 {
            std::fs::rename(ep_mp4, &path).map_err(|e| DatasetError::io(&path, e))?;
        } else {
            let tmp = temp_sibling(&path);
            let r = video::concat(&ffmpeg, &[&path, ep_mp4], &tmp)
                .and_then(|_| std::fs::rename(&tmp, &path).map_err(|e| DatasetError::io(&path, e)));
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            r?;
        }
        let to = from + ep_duration;
        self.video_cursor.insert(
            key.to_string(),
            VideoCursor {
                file,
                to_timestamp: to,
            },
        );
        Ok((
            VideoRef {
                chunk_index: file.0,
                file_index: file.1,
                from_timestamp: from,
                to_timestamp: to,
            },
            path,
        ))
    }

    fn write_stats(&self) -> Result<()> {
        let refs: Vec<&Stats> = self.ep_stats.iter().collect();
        Stats::aggregate(&refs).save(&self.root)
    }

    /// Writes the final `meta/stats.json` and `meta/info.json`. Frames added but not
    /// saved are an error (save or clear them first). Idempotent.
    pub fn finalize(&mut self) -> Result<()> {
        if self.buf.len > 0 {
            return Err(DatasetError::Usage(format!(
                "finalize: {} frames of an unsaved episode; call save_episode() or clear_episode() first",
                self.buf.len
            )));
        }
        if !self.ep_stats.is_empty() {
            self.write_stats()?;
        }
        self.info.save(&self.root)?;
        debug_assert!(self.root.join(INFO_PATH).exists());
        Ok(())
    }
}
