//! [`LeRobotDataset`]: a whole v3.0 dataset in memory, checked on open.
//!
//! Open reads `meta/info.json`, `meta/tasks.parquet`, `meta/episodes/*/*.parquet`,
//! `meta/stats.json` and every data file, places each row at its global `index`,
//! and checks the files against each other: episodes contiguous and matching the
//! data rows, frame indices, shapes, no NaN/Inf in float columns, task indices,
//! video files present and long enough. Image features are PNG-decoded; video
//! features are decoded once per mp4 file with ffmpeg and frame `g` of episode `e`
//! is frame `round((from_timestamp[e] + timestamp[g]) * fps)` of the file (LeRobot:
//! the frame at time `from_timestamp + timestamp`, tolerance 1e-4 s).
//!
//! Rows left in a data file by a save that was interrupted before its commit
//! (episode and index beyond `meta/info.json`'s totals) are skipped and counted in
//! [`LeRobotDataset::orphan_rows`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::{DatasetError, Result};
use super::meta::{EpisodeMeta, Info, DEFAULT_FEATURE_KEYS, TASKS_PATH};
use super::parquet_io::{self, column, f64_values, i64_values};
use super::stats::Stats;
use super::video;

/// How to open a dataset.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Camera features to decode (`None`: all of them). Others are not loaded.
    pub image_keys: Option<Vec<String>>,
    /// Refuse to open when the decoded cameras would take more bytes than this.
    pub max_image_bytes: usize,
    /// Allowed distance between a frame's video time and the frame grid (LeRobot: 1e-4 s).
    pub tolerance_s: f64,
    /// ffmpeg binary; `None` searches (see [`video::find_ffmpeg`]).
    pub ffmpeg: Option<PathBuf>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            image_keys: None,
            max_image_bytes: 8 << 30,
            tolerance_s: 1e-4,
            ffmpeg: None,
        }
    }
}

#[derive(Debug, Clone)]
struct ImageColumn {
    h: usize,
    w: usize,
    data: Vec<u8>,
}

/// A LeRobot v3.0 dataset loaded in memory. Frames are addressed by their global
/// index (`0..num_frames()`, the `index` column).
#[derive(Debug, Clone)]
pub struct LeRobotDataset {
    pub root: PathBuf,
    pub info: Info,
    /// `meta/stats.json`, when the dataset has one.
    pub stats: Option<Stats>,
    pub episodes: Vec<EpisodeMeta>,
    /// Task strings by task_index.
    pub tasks: Vec<String>,
    /// Data rows skipped because they belong to an uncommitted (interrupted) save.
    pub orphan_rows: usize,
    vectors: BTreeMap<String, (usize, Vec<f32>)>,
    images: BTreeMap<String, ImageColumn>,
    timestamps: Vec<f32>,
    frame_episode: Vec<u32>,
    task_index: Vec<u32>,
}

impl LeRobotDataset {
    pub fn open(root: &Path, opts: &OpenOptions) -> Result<Self> {
        if !root.is_dir() {
            return Err(DatasetError::Missing {
                path: root.to_path_buf(),
                what: "dataset directory".into(),
            });
        }
        let info = Info::load(root)?;
        let info_path = root.join(super::meta::INFO_PATH);

        let tasks = if root.join(TASKS_PATH).exists() {
            parquet_io::read_tasks(root)?
        } else if info.total_tasks > 0 {
            return Err(DatasetError::Missing {
                path: root.join(TASKS_PATH),
                what: "task table".into(),
            });
        } else {
            Vec::new()
        };

        let mut episodes = if info.total_episodes > 0 {
            parquet_io::read_episodes(root, &info.features)?
        } else {
            Vec::new()
        };
        let ep_dir = root.join(super::meta::EPISODES_DIR);
        // An interrupted save may have written the episodes table but not info.json.
        episodes.retain(|e| e.episode_index < info.total_episodes);
        if episodes.len() != info.total_episodes {
            return Err(DatasetError::invalid(
                &ep_dir,
                "episode_index",
                format!(
                    "meta/info.json says total_episodes = {}, the episode tables list {}",
                    info.total_episodes,
                    episodes.len()
                ),
            ));
        }
        let mut expect_from = 0usize;
        for (i, e) in episodes.iter().enumerate() {
            if e.episode_index != i {
                return Err(DatasetError::invalid(
                    &ep_dir,
                    "episode_index",
                    format!("expected episode {i}, found {}", e.episode_index),
                ));
            }
            if e.dataset_from_index != expect_from {
                return Err(DatasetError::invalid(
                    &ep_dir,
                    "dataset_from_index",
                    format!("episode {i} starts at {}, expected {expect_from} (end of the previous episode)", e.dataset_from_index),
                ));
            }
            expect_from = e.dataset_to_index;
        }
        if expect_from != info.total_frames {
            return Err(DatasetError::invalid(
                &info_path,
                "total_frames",
                format!(
                    "{} but the episodes cover {expect_from} frames",
                    info.total_frames
                ),
            ));
        }
        let stats = Stats::load(root)?;

        let total = info.total_frames;
        let mut frame_episode = vec![0u32; total];
        for e in &episodes {
            frame_episode[e.dataset_from_index..e.dataset_to_index].fill(e.episode_index as u32);
        }

        // Which cameras to decode, and the memory guard.
        let cameras = info.features.camera_keys();
        let selected: Vec<String> = match &opts.image_keys {
            None => cameras.clone(),
            Some(keys) => {
                for k in keys {
                    if !cameras.contains(k) {
                        return Err(DatasetError::Usage(format!(
                            "OpenOptions.image_keys: {k} is not a camera feature of {} (cameras: {cameras:?})",
                            root.display()
                        )));
                    }
                }
                keys.clone()
            }
        };
        let mut images = BTreeMap::new();
        let mut need_bytes = 0usize;
        for k in &selected {
            let f = info
                .features
                .get(k)
                .ok_or_else(|| DatasetError::Usage(format!("no feature {k}")))?;
            let (h, w, _) = f.hwc().ok_or_else(|| {
                DatasetError::invalid(&info_path, format!("features.{k}.shape"), "not (H, W, 3)")
            })?;
            need_bytes = need_bytes.saturating_add(total.saturating_mul(h * w * 3));
            images.insert(
                k.clone(),
                ImageColumn {
                    h,
                    w,
                    data: Vec::new(),
                },
            );
        }
        if need_bytes > opts.max_image_bytes {
            return Err(DatasetError::Usage(format!(
                "{}: decoding cameras {selected:?} needs {:.2} GiB, above OpenOptions.max_image_bytes ({:.2} GiB); \
                 select fewer cameras with OpenOptions.image_keys or raise the limit",
                root.display(),
                need_bytes as f64 / (1u64 << 30) as f64,
                opts.max_image_bytes as f64 / (1u64 << 30) as f64
            )));
        }
        for col in images.values_mut() {
            col.data = vec![0u8; total * col.h * col.w * 3];
        }

        let numeric: Vec<(String, usize, bool)> = info
            .features
            .iter()
            .filter(|(k, f)| f.is_numeric() && !DEFAULT_FEATURE_KEYS.iter().any(|(d, _)| d == k))
            .map(|(k, f)| (k.to_string(), f.numel(), f.dtype.starts_with("float")))
            .collect();
        let mut vectors: BTreeMap<String, (usize, Vec<f32>)> = numeric
            .iter()
            .map(|(k, n, _)| (k.clone(), (*n, vec![0f32; total * n])))
            .collect();
        // Pressure images: decoded into pressures, read like vectors of H * W values.
        let pressure: Vec<(String, usize, usize, f64)> = info
            .features
            .iter()
            .filter_map(|(k, f)| {
                f.pressure_image_shape()
                    .map(|(h, w, s)| (k.to_string(), h, w, s))
            })
            .collect();
        for (k, h, w, _) in &pressure {
            vectors.insert(k.clone(), (h * w, vec![0f32; total * h * w]));
        }
        let mut timestamps = vec![0f32; total];
        let mut task_index = vec![0u32; total];
        let mut filled = vec![false; total];
        let mut orphan_rows = 0usize;

        // Data files, in the order the episodes reference them.
        let mut files: Vec<(i64, i64)> = Vec::new();
        for e in &episodes {
            let f = (e.data_chunk_index, e.data_file_index);
            if !files.contains(&f) {
                files.push(f);
            }
        }
        let image_keys: Vec<String> = images
            .keys()
            .filter(|k| info.features.get(k).is_some_and(|f| f.dtype == "image"))
            .cloned()
            .collect();
        for (c, fi) in files {
            let path = root.join(info.data_file(c, fi));
            let (_, batches) = parquet_io::read_parquet(&path)?;
            for b in &batches {
                let ints = |name: &str| -> Result<Vec<i64>> {
                    i64_values(column(b, name, &path)?.as_ref(), name, &path)
                };
                let index = ints("index")?;
                let ep_idx = ints("episode_index")?;
                let fr_idx = ints("frame_index")?;
                let t_idx = ints("task_index")?;
                let ts = f64_values(column(b, "timestamp", &path)?.as_ref(), "timestamp", &path)?;
                let mut cols = Vec::new();
                for (k, n, is_float) in &numeric {
                    let (vals, src_float) =
                        parquet_io::numeric_feature(column(b, k, &path)?.as_ref(), *n, k, &path)?;
                    cols.push((k, *n, vals, *is_float || src_float));
                }
                let mut press_cols = Vec::new();
                for (k, h, w, scale) in &pressure {
                    let rows = parquet_io::image_bytes(column(b, k, &path)?.as_ref(), k, &path)?;
                    press_cols.push((k, h * w, (*h, *w, *scale), rows));
                }
                let mut img_cols = Vec::new();
                for k in &image_keys {
                    img_cols.push((
                        k,
                        parquet_io::image_bytes(column(b, k, &path)?.as_ref(), k, &path)?,
                    ));
                }
                for r in 0..b.num_rows() {
                    let (g, e) = (index[r], ep_idx[r]);
                    let in_range = g >= 0 && (g as usize) < total;
                    let known_ep = e >= 0 && (e as usize) < episodes.len();
                    if !in_range && !known_ep && g >= 0 && e >= 0 {
                        orphan_rows += 1;
                        continue;
                    }
                    if !in_range || !known_ep {
                        return Err(DatasetError::invalid(
                            &path,
                            "index/episode_index",
                            format!("row {r}: index {g}, episode {e} is outside the {total} frames / {} episodes of meta", episodes.len()),
                        ));
                    }
                    let g = g as usize;
                    let em = &episodes[frame_episode[g] as usize];
                    if em.episode_index as i64 != e {
                        return Err(DatasetError::invalid(
                            &path,
                            "episode_index",
                            format!("row {r}: frame index {g} is in episode {} per meta/episodes, the row says {e}", em.episode_index),
                        ));
                    }
                    if fr_idx[r] != (g - em.dataset_from_index) as i64 {
                        return Err(DatasetError::invalid(
                            &path,
                            "frame_index",
                            format!(
                                "row {r} (episode {e}, index {g}): frame_index {} but expected {}",
                                fr_idx[r],
                                g - em.dataset_from_index
                            ),
                        ));
                    }
                    if filled[g] {
                        return Err(DatasetError::invalid(
                            &path,
                            "index",
                            format!("row {r}: index {g} appears twice"),
                        ));
                    }
                    filled[g] = true;
                    if !ts[r].is_finite() {
                        return Err(DatasetError::invalid(
                            &path,
                            "timestamp",
                            format!("row {r} (episode {e}, frame {}): {}", fr_idx[r], ts[r]),
                        ));
                    }
                    timestamps[g] = ts[r] as f32;
                    if t_idx[r] < 0 || t_idx[r] as usize >= tasks.len() {
                        return Err(DatasetError::invalid(
                            &path,
                            "task_index",
                            format!("row {r} (episode {e}): task_index {} but meta/tasks.parquet has {} tasks", t_idx[r], tasks.len()),
                        ));
                    }
                    task_index[g] = t_idx[r] as u32;
                    for (k, n, vals, check) in &cols {
                        let row = &vals[r * n..(r + 1) * n];
                        if *check {
                            if let Some(j) = row.iter().position(|x| !x.is_finite()) {
                                return Err(DatasetError::invalid(
                                    &path,
                                    k.as_str(),
                                    format!(
                                        "row {r} (episode {e}, frame {}): element {j} is {}",
                                        fr_idx[r], row[j]
                                    ),
                                ));
                            }
                        }
                        if let Some((_, dst)) = vectors.get_mut(k.as_str()) {
                            dst[g * n..(g + 1) * n].copy_from_slice(row);
                        }
                    }
                    for (k, n, (h, w, scale), rows) in &press_cols {
                        let Some((_, dst)) = vectors.get_mut(k.as_str()) else {
                            continue;
                        };
                        decode_pressure_png(&rows[r], *h, *w, *scale, &mut dst[g * n..(g + 1) * n])
                            .map_err(|msg| {
                                DatasetError::invalid(
                                    &path,
                                    k.as_str(),
                                    format!("row {r} (episode {e}, frame {}): {msg}", fr_idx[r]),
                                )
                            })?;
                    }
                    for (k, rows) in &img_cols {
                        let Some(col) = images.get_mut(k.as_str()) else {
                            continue;
                        };
                        let fb = col.h * col.w * 3;
                        let dst = &mut col.data[g * fb..(g + 1) * fb];
                        decode_png(&rows[r], col.h, col.w, dst).map_err(|msg| {
                            DatasetError::invalid(
                                &path,
                                k.as_str(),
                                format!("row {r} (episode {e}, frame {}): {msg}", fr_idx[r]),
                            )
                        })?;
                    }
                }
            }
        }
        if let Some(g) = filled.iter().position(|f| !f) {
            let em = &episodes[frame_episode[g] as usize];
            let n_missing = filled[em.dataset_from_index..em.dataset_to_index]
                .iter()
                .filter(|f| !**f)
                .count();
            return Err(DatasetError::invalid(
                root.join(info.data_file(em.data_chunk_index, em.data_file_index)),
                "index",
                format!(
                    "episode {} spans frames [{}, {}) per meta/episodes but {n_missing} of its rows are missing (first: index {g})",
                    em.episode_index, em.dataset_from_index, em.dataset_to_index
                ),
            ));
        }

        let mut ds = LeRobotDataset {
            root: root.to_path_buf(),
            info,
            stats,
            episodes,
            tasks,
            orphan_rows,
            vectors,
            images,
            timestamps,
            frame_episode,
            task_index,
        };
        let video_keys: Vec<String> = ds
            .images
            .keys()
            .filter(|k| ds.info.features.get(k).is_some_and(|f| f.dtype == "video"))
            .cloned()
            .collect();
        if !video_keys.is_empty() {
            let ffmpeg = match &opts.ffmpeg {
                Some(p) => p.clone(),
                None => video::find_ffmpeg(&[root])?,
            };
            for k in &video_keys {
                ds.decode_video_key(k, &ffmpeg, opts.tolerance_s)?;
            }
        }
        Ok(ds)
    }

    fn decode_video_key(&mut self, key: &str, ffmpeg: &Path, tol: f64) -> Result<()> {
        let fps = self.info.fps as f64;
        // file -> [(frame number in file, global frame)]
        type Wanted = Vec<(usize, usize)>;
        let mut per_file: Vec<((i64, i64), Wanted)> = Vec::new();
        for e in &self.episodes {
            let vr = e.videos.get(key).ok_or_else(|| {
                DatasetError::invalid(
                    self.root.join(super::meta::EPISODES_DIR),
                    format!("videos/{key}/chunk_index"),
                    "column missing",
                )
            })?;
            let file = (vr.chunk_index, vr.file_index);
            let pos = match per_file.iter().position(|(f, _)| *f == file) {
                Some(p) => p,
                None => {
                    per_file.push((file, Vec::new()));
                    per_file.len() - 1
                }
            };
            for g in e.dataset_from_index..e.dataset_to_index {
                let t = vr.from_timestamp + self.timestamps[g] as f64;
                let k = (t * fps).round();
                if (k / fps - t).abs() > tol || k < 0.0 {
                    return Err(DatasetError::video(
                        self.video_path(key, file),
                        format!(
                            "episode {} frame {}: video time {t:.6} s (from_timestamp {} + timestamp {}) is not on the {fps} fps frame grid (tolerance {tol} s)",
                            e.episode_index,
                            g - e.dataset_from_index,
                            vr.from_timestamp,
                            self.timestamps[g]
                        ),
                    ));
                }
                per_file[pos].1.push((k as usize, g));
            }
        }
        let col = self
            .images
            .get_mut(key)
            .ok_or_else(|| DatasetError::Usage(format!("no camera {key}")))?;
        let (h, w) = (col.h, col.w);
        let fb = h * w * 3;
        for (file, mut wanted) in per_file {
            let path = self
                .info
                .video_file(key, file.0, file.1)
                .map(|p| self.root.join(p))
                .ok_or_else(|| {
                    DatasetError::invalid(
                        self.root.join(super::meta::INFO_PATH),
                        "video_path",
                        "null",
                    )
                })?;
            if !path.is_file() {
                return Err(DatasetError::Missing {
                    path,
                    what: format!("video file of {key}"),
                });
            }
            let (vw, vh) = video::probe_size(ffmpeg, &path)?;
            if (vw, vh) != (w, h) {
                return Err(DatasetError::invalid(
                    &path,
                    format!("features.{key}.shape"),
                    format!("video is {vw}x{vh} (WxH), info.json says {w}x{h}"),
                ));
            }
            wanted.sort_unstable();
            let mut next = 0usize;
            let data = &mut col.data;
            let n = video::decode_frames(ffmpeg, &path, w, h, |k, rgb| {
                while next < wanted.len() && wanted[next].0 == k {
                    let g = wanted[next].1;
                    data[g * fb..(g + 1) * fb].copy_from_slice(rgb);
                    next += 1;
                }
                Ok(())
            })?;
            if next < wanted.len() {
                let (k, g) = wanted[next];
                let ep = self.frame_episode[g];
                return Err(DatasetError::video(
                    &path,
                    format!(
                        "video is shorter than episode {ep}: it has {n} frames ({:.3} s) but frame {} of the episode is video frame {k} ({:.3} s)",
                        n as f64 / fps,
                        g - self.episodes[ep as usize].dataset_from_index,
                        k as f64 / fps
                    ),
                ));
            }
        }
        Ok(())
    }

    fn video_path(&self, key: &str, file: (i64, i64)) -> PathBuf {
        self.info
            .video_file(key, file.0, file.1)
            .map(|p| self.root.join(p))
            .unwrap_or_else(|| self.root.clone())
    }

    pub fn num_frames(&self) -> usize {
        self.timestamps.len()
    }

    pub fn num_episodes(&self) -> usize {
        self.episodes.len()
    }

    pub fn fps(&self) -> u32 {
        self.info.fps
    }

    /// Global frame indices of episode `ep`.
    pub fn episode_range(&self, ep: usize) -> Range<usize> {
        let e = &self.episodes[ep];
        e.dataset_from_index..e.dataset_to_index
    }

    /// Values of a numeric feature (`observation.state`, `action`, ...) at a frame.
    /// Panics on an unknown key (see [`Self::try_vector`]).
    pub fn vector(&self, key: &str, frame: usize) -> &[f32] {
        match self.try_vector(key, frame) {
            Some(v) => v,
            None => panic!(
                "no numeric feature {key:?} (have {:?}) or frame {frame} out of range",
                self.vector_keys()
            ),
        }
    }

    pub fn try_vector(&self, key: &str, frame: usize) -> Option<&[f32]> {
        let (n, data) = self.vectors.get(key)?;
        data.get(frame * n..(frame + 1) * n)
    }

    /// Numeric (non-bookkeeping) features, in feature order.
    pub fn vector_keys(&self) -> Vec<&str> {
        self.info
            .features
            .keys()
            .filter(|k| self.vectors.contains_key(*k))
            .collect()
    }

    /// RGB u8 HWC pixels of a decoded camera at a frame. Panics on an unknown or
    /// unloaded key (see [`Self::try_image`]).
    pub fn image(&self, key: &str, frame: usize) -> &[u8] {
        match self.try_image(key, frame) {
            Some(v) => v,
            None => panic!(
                "camera {key:?} not loaded (have {:?}) or frame {frame} out of range",
                self.image_keys()
            ),
        }
    }

    pub fn try_image(&self, key: &str, frame: usize) -> Option<&[u8]> {
        let c = self.images.get(key)?;
        let fb = c.h * c.w * 3;
        c.data.get(frame * fb..(frame + 1) * fb)
    }

    /// `(height, width, channels)` of a decoded camera.
    pub fn image_shape(&self, key: &str) -> Option<(usize, usize, usize)> {
        self.images.get(key).map(|c| (c.h, c.w, 3))
    }

    /// Decoded cameras, in feature order.
    pub fn image_keys(&self) -> Vec<&str> {
        self.info
            .features
            .keys()
            .filter(|k| self.images.contains_key(*k))
            .collect()
    }

    pub fn episode_of(&self, frame: usize) -> usize {
        self.frame_episode[frame] as usize
    }

    pub fn task_index_of(&self, frame: usize) -> usize {
        self.task_index[frame] as usize
    }

    pub fn task_of(&self, frame: usize) -> &str {
        self.tasks
            .get(self.task_index[frame] as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Seconds since the start of the frame's episode.
    pub fn timestamp(&self, frame: usize) -> f32 {
        self.timestamps[frame]
    }

    /// Index of the frame within its episode.
    pub fn frame_index(&self, frame: usize) -> usize {
        frame - self.episodes[self.episode_of(frame)].dataset_from_index
    }
}

/// Decodes PNG `bytes` into `dst` (RGB u8 HWC, `h x w`), converting grey / alpha.
pub(crate) fn decode_png(
    bytes: &[u8],
    h: usize,
    w: usize,
    dst: &mut [u8],
) -> std::result::Result<(), String> {
    if !bytes.starts_with(b"\x89PNG") {
        return Err("image bytes are not PNG (only PNG is supported)".into());
    }
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| format!("corrupt PNG: {e}"))?;
    let size = reader.output_buffer_size().ok_or("PNG too large")?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("corrupt PNG: {e}"))?;
    if (frame.height as usize, frame.width as usize) != (h, w) {
        return Err(format!(
            "PNG is {}x{} (HxW), info.json shape says {h}x{w}",
            frame.height, frame.width
        ));
    }
    let src = &buf[..frame.buffer_size()];
    let n = h * w;
    match frame.color_type {
        png::ColorType::Rgb => dst.copy_from_slice(&src[..n * 3]),
        png::ColorType::Rgba => {
            for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(4)) {
                d.copy_from_slice(&s[..3]);
            }
        }
        png::ColorType::Grayscale => {
            for (d, &s) in dst.chunks_exact_mut(3).zip(src.iter()) {
                d.fill(s);
            }
        }
        png::ColorType::GrayscaleAlpha => {
            for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(2)) {
                d.fill(s[0]);
            }
        }
        png::ColorType::Indexed => return Err("indexed PNG was not expanded".into()),
    }
    Ok(())
}

/// Decodes a 16-bit grey PNG (a pressure image, `h x w`) into pressures:
/// `dst[i] = count * pressure_per_count`.
pub(crate) fn decode_pressure_png(
    bytes: &[u8],
    h: usize,
    w: usize,
    pressure_per_count: f64,
    dst: &mut [f32],
) -> std::result::Result<(), String> {
    if !bytes.starts_with(b"\x89PNG") {
        return Err("pressure image bytes are not PNG".into());
    }
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = dec.read_info().map_err(|e| format!("corrupt PNG: {e}"))?;
    let size = reader.output_buffer_size().ok_or("PNG too large")?;
    let mut buf = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("corrupt PNG: {e}"))?;
    if (frame.color_type, frame.bit_depth) != (png::ColorType::Grayscale, png::BitDepth::Sixteen) {
        return Err(format!(
            "pressure image is {:?} {:?}, expected 16-bit grey (mono16)",
            frame.color_type, frame.bit_depth
        ));
    }
    if (frame.height as usize, frame.width as usize) != (h, w) || dst.len() != h * w {
        return Err(format!(
            "PNG is {}x{} (HxW), info.json shape says {h}x{w}",
            frame.height, frame.width
        ));
    }
    for (d, s) in dst.iter_mut().zip(buf.chunks_exact(2)) {
        *d = (f64::from(u16::from_be_bytes([s[0], s[1]])) * pressure_per_count) as f32;
    }
    Ok(())
}

/// Quantises pressures to counts of `pressure_per_count` (rounded, clamped to
/// the u16 range: below 0 reads 0, above the range saturates).
pub(crate) fn pressure_counts(pressures: &[f32], pressure_per_count: f64, out: &mut Vec<u16>) {
    out.clear();
    out.extend(pressures.iter().map(|&p| {
        (f64::from(p) / pressure_per_count)
            .round()
            .clamp(0.0, 65535.0) as u16
    }));
}

/// Encodes counts as a 16-bit grey PNG (what LeRobot reads as a uint16 image).
pub(crate) fn encode_pressure_png(counts: &[u16], h: usize, w: usize) -> Result<Vec<u8>> {
    let bytes: Vec<u8> = counts.iter().flat_map(|c| c.to_be_bytes()).collect();
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Sixteen);
        enc.set_compression(png::Compression::Fast);
        let err = |e: png::EncodingError| DatasetError::Usage(format!("PNG encoding: {e}"));
        let mut wr = enc.write_header().map_err(err)?;
        wr.write_image_data(&bytes).map_err(err)?;
        wr.finish().map_err(err)?;
    }
    Ok(out)
}

/// Encodes RGB u8 HWC as PNG (what HF `datasets` embeds for `Image` features).
pub(crate) fn encode_png(rgb: &[u8], h: usize, w: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let err = |e: png::EncodingError| DatasetError::Usage(format!("PNG encoding: {e}"));
        let mut wr = enc.write_header().map_err(err)?;
        wr.write_image_data(rgb).map_err(err)?;
        wr.finish().map_err(err)?;
    }
    Ok(out)
}
