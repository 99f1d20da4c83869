//! Recording demonstrations into LeRobot v3.0 datasets (`maniflow record`).
//!
//! The dataset layout is the SO-101 one of [`crate::dataset::synth`]:
//! `observation.images.<camera>` (RGB, stored as video or PNG),
//! `observation.state` (six `<joint>.pos`, LeRobot units), `observation.tactile`
//! (taxels, float32), optionally `observation.tactile_image` (the pads' pressure
//! images, 16-bit grey PNG, see [`PRESSURE_PER_COUNT`]) and `action` (the command sent to the arm: absolute joint
//! targets, like a leader arm), robot_type `so101_follower`.
//!
//! Every episode is committed atomically by [`DatasetWriter::save_episode`]: a
//! crash or SIGINT loses at most the episode in progress. Each episode carries
//! its recording quality in the episode metadata (extra float64 columns that
//! LeRobot ignores): `recording/achieved_fps`, `recording/dropped_frames`,
//! `recording/rate_deviation` (|achieved - nominal| / nominal),
//! `recording/rate_flagged` (1 when the deviation exceeds [`RATE_TOLERANCE`])
//! and `recording/success` (1, 0, or NaN when the robot does not say).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use maniflow_bridge::sim::{Expert, SimConfig, SimWorld};
use serde::Serialize;

use crate::dataset::error::Result;
use crate::dataset::meta::{FeatureSpec, Features};
use crate::dataset::synth::{ACTION, JOINT_NAMES, STATE, TACTILE};
use crate::dataset::video::VideoCodec;
use crate::dataset::writer::{DatasetWriter, Frame, WriterOptions};

/// Task string of the simulated pick task.
pub const SIM_TASK: &str = "Pick up the red cube.";
/// Task string of its slip variant (`--sim-task pick-slip`).
pub const SLIP_TASK: &str = "Pick up the fragile red cube without crushing or dropping it.";
/// Episodes whose achieved rate deviates from nominal by more than this are flagged.
pub const RATE_TOLERANCE: f64 = 0.05;
/// LeRobot's robot type for the SO-101 follower.
pub const ROBOT_TYPE: &str = "so101_follower";

/// Names of the extra episode-metadata columns.
pub const EXTRA_ACHIEVED_FPS: &str = "recording/achieved_fps";
pub const EXTRA_DROPPED: &str = "recording/dropped_frames";
pub const EXTRA_DEVIATION: &str = "recording/rate_deviation";
pub const EXTRA_FLAGGED: &str = "recording/rate_flagged";
pub const EXTRA_SUCCESS: &str = "recording/success";

/// The camera feature key of a camera name (`observation.images.<name>`).
pub fn camera_key(name: &str) -> String {
    format!("observation.images.{name}")
}

/// Feature key of the pads' pressure images (`observation.tactile_image`).
pub const TACTILE_IMAGE: &str = "observation.tactile_image";
/// Pressure of one stored count of a recorded pressure image: 16-bit counts of
/// 1/1000 of the simulator's pressure unit (range 0 to 65.535; the simulator's
/// squeeze reaches about 2.5, 5 under slip).
pub const PRESSURE_PER_COUNT: f64 = 1e-3;

/// The SO-101 features for cameras `(name, height, width)`, `taxels` taxels
/// (0: no tactile feature) and pressure images `(key, height, width)`.
pub fn so101_features(
    cameras: &[(String, usize, usize)],
    taxels: usize,
    pressure: &[(String, usize, usize)],
) -> Features {
    let mut f = Features::default();
    for (name, h, w) in cameras {
        f.insert(camera_key(name), FeatureSpec::camera(*h, *w));
    }
    f.insert(STATE, FeatureSpec::vector(&JOINT_NAMES));
    if taxels > 0 {
        let names: Vec<String> = (0..taxels).map(|i| format!("taxel_{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        f.insert(TACTILE, FeatureSpec::vector(&refs));
    }
    for (key, h, w) in pressure {
        f.insert(
            key.clone(),
            FeatureSpec::pressure_image(*h, *w, PRESSURE_PER_COUNT),
        );
    }
    f.insert(ACTION, FeatureSpec::vector(&JOINT_NAMES));
    f
}

/// The recording quality of one episode.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EpisodeTiming {
    pub frames: usize,
    pub nominal_fps: f64,
    /// (frames - 1) / (last stamp - first stamp).
    pub achieved_fps: f64,
    /// Frames missing between recorded ones (stamp gaps of more than 1.5 periods).
    pub dropped_frames: u64,
    /// |achieved - nominal| / nominal.
    pub rate_deviation: f64,
    /// `rate_deviation > RATE_TOLERANCE` (or dropped frames that make it so).
    pub rate_flagged: bool,
    pub duration_s: f64,
}

/// Accumulates frame stamps of one episode into an [`EpisodeTiming`].
#[derive(Debug, Clone)]
pub struct TimingAcc {
    nominal_fps: f64,
    first_ns: Option<i64>,
    last_ns: i64,
    frames: usize,
    dropped: u64,
}

impl TimingAcc {
    pub fn new(nominal_fps: f64) -> Self {
        TimingAcc {
            nominal_fps,
            first_ns: None,
            last_ns: 0,
            frames: 0,
            dropped: 0,
        }
    }

    /// A recorded frame with source stamp `stamp_ns`.
    pub fn push(&mut self, stamp_ns: i64) {
        if self.first_ns.is_some() {
            let period = 1e9 / self.nominal_fps;
            let gap = (stamp_ns - self.last_ns) as f64;
            let missing = (gap / period).round() - 1.0;
            if gap > 1.5 * period && missing > 0.0 {
                self.dropped += missing as u64;
            }
        } else {
            self.first_ns = Some(stamp_ns);
        }
        self.last_ns = stamp_ns;
        self.frames += 1;
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    pub fn finish(&self) -> EpisodeTiming {
        let duration_s = match self.first_ns {
            Some(f) => (self.last_ns - f) as f64 * 1e-9,
            None => 0.0,
        };
        let achieved = if self.frames >= 2 && duration_s > 0.0 {
            (self.frames - 1) as f64 / duration_s
        } else {
            0.0
        };
        let deviation = if self.nominal_fps > 0.0 {
            (achieved - self.nominal_fps).abs() / self.nominal_fps
        } else {
            0.0
        };
        EpisodeTiming {
            frames: self.frames,
            nominal_fps: self.nominal_fps,
            achieved_fps: achieved,
            dropped_frames: self.dropped,
            rate_deviation: deviation,
            rate_flagged: deviation > RATE_TOLERANCE,
            duration_s,
        }
    }
}

/// Writes the recording-quality columns of the current episode.
pub fn set_episode_quality(
    w: &mut DatasetWriter,
    t: &EpisodeTiming,
    success: Option<bool>,
) -> Result<()> {
    w.set_episode_extra(EXTRA_ACHIEVED_FPS, t.achieved_fps)?;
    w.set_episode_extra(EXTRA_DROPPED, t.dropped_frames as f64)?;
    w.set_episode_extra(EXTRA_DEVIATION, t.rate_deviation)?;
    w.set_episode_extra(EXTRA_FLAGGED, if t.rate_flagged { 1.0 } else { 0.0 })?;
    w.set_episode_extra(
        EXTRA_SUCCESS,
        match success {
            Some(true) => 1.0,
            Some(false) => 0.0,
            None => f64::NAN,
        },
    )?;
    Ok(())
}

/// One recorded (or discarded) episode.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeRecord {
    /// Index in the dataset (None: discarded).
    pub dataset_index: Option<usize>,
    /// The robot's / simulator's episode number, when it announces one.
    pub source_episode: Option<u64>,
    pub success: Option<bool>,
    pub timing: EpisodeTiming,
    pub save_s: f64,
}

/// What a recording produced.
#[derive(Debug, Clone, Serialize)]
pub struct RecordSummary {
    pub root: PathBuf,
    pub episodes_saved: usize,
    pub episodes_discarded: usize,
    pub frames: usize,
    pub flagged: usize,
    pub wall_s: f64,
    pub episodes: Vec<EpisodeRecord>,
}

/// Options of [`record_sim_expert_in_process`].
#[derive(Debug, Clone)]
pub struct InProcessOptions {
    pub sim: SimConfig,
    pub episodes: usize,
    pub fps: f64,
    pub joint_rate: f64,
    pub episode_timeout_s: f64,
    /// Frames kept after success (the simulator's hold before its reset).
    pub hold_after_success_s: f64,
    pub video: Option<VideoCodec>,
    pub task: String,
    pub keep_failed: bool,
    pub ffmpeg: Option<PathBuf>,
    /// Record the pads' pressure images (both pads stacked) under this feature key
    /// (e.g. [`TACTILE_IMAGE`]).
    pub tactile_image_key: Option<String>,
}

impl Default for InProcessOptions {
    fn default() -> Self {
        InProcessOptions {
            sim: SimConfig::default(),
            episodes: 10,
            fps: 30.0,
            joint_rate: 100.0,
            episode_timeout_s: 20.0,
            hold_after_success_s: 1.0,
            video: Some(VideoCodec::Av1),
            task: SIM_TASK.into(),
            keep_failed: false,
            ffmpeg: None,
            tactile_image_key: None,
        }
    }
}

/// Records the scripted expert in the simulator inside this process, stepped as
/// fast as the CPU allows (no transport, no sleeping) with exactly the loop of
/// `maniflow sim --expert`: the same frames, states (published after the
/// physics step, as the joint-state stream carries them) and commands a
/// recording over the transports gets, without its delivery jitter. Sim
/// episodes are numbered from 0 with `opts.sim.seed`; failed ones are skipped
/// unless `keep_failed`, until `opts.episodes` are saved (at most 2x attempts).
pub fn record_sim_expert_in_process(
    root: &Path,
    opts: &InProcessOptions,
    progress: &mut dyn FnMut(&EpisodeRecord),
) -> Result<RecordSummary> {
    let t0 = Instant::now();
    let cfg = opts.sim.clone();
    let mut world = SimWorld::new(cfg.clone());
    let mut expert = Expert::new(&cfg);
    let cams = vec![
        ("head".to_string(), cfg.image_height, cfg.image_width),
        ("wrist".to_string(), cfg.image_height, cfg.image_width),
    ];
    let pad_rows = cfg.tactile_image_rows;
    let pressure_shape = (2 * pad_rows, cfg.tactile_image_cols);
    let pressure_feats: Vec<(String, usize, usize)> = opts
        .tactile_image_key
        .iter()
        .map(|k| (k.clone(), pressure_shape.0, pressure_shape.1))
        .collect();
    let features = so101_features(&cams, world.taxel_count(), &pressure_feats);
    let wopts = WriterOptions {
        ffmpeg: opts.ffmpeg.clone(),
        ..Default::default()
    };
    let fps_int = opts.fps.round().max(1.0) as u32;
    let mut w =
        DatasetWriter::create_with(root, fps_int, ROBOT_TYPE, &features, opts.video, wopts)?;
    let n_px = cfg.image_width * cfg.image_height * 3;
    let mut head = vec![0u8; n_px];
    let mut wrist = vec![0u8; n_px];
    let mut taxels = vec![0.0f32; world.taxel_count()];
    let mut pressure = vec![0.0f32; world.tactile_image_len()];
    let dt = 1.0 / opts.joint_rate;
    let frame_dt = 1.0 / opts.fps;
    let (head_key, wrist_key) = (camera_key("head"), camera_key("wrist"));
    let mut records = Vec::new();
    let (mut saved, mut discarded, mut frames, mut flagged) = (0usize, 0usize, 0usize, 0usize);
    let max_attempts = opts.episodes.saturating_mul(2).max(1) as u64;
    let mut episode = 0u64;
    while saved < opts.episodes && episode < max_attempts {
        world.reset(episode);
        expert.reset();
        let mut timing = TimingAcc::new(opts.fps);
        let mut next_frame_t = 0.0f64;
        let mut success_at: Option<f64> = None;
        loop {
            let t_sim = world.time();
            let frame_due = t_sim + 1e-9 >= next_frame_t;
            let mut cmd = [0.0f32; 6];
            if frame_due {
                world.render_head(&mut head);
                world.render_wrist(&mut wrist);
                world.tactile(&mut taxels);
                if opts.tactile_image_key.is_some() {
                    world.tactile_image(&mut pressure);
                }
                let q = world.joint_positions();
                cmd = expert.act(&head, &q, &taxels, t_sim);
                world.set_command(&cmd);
            }
            world.step(dt);
            if frame_due {
                next_frame_t += frame_dt;
                let state = world.joint_positions();
                let mut f = Frame::new(opts.task.clone())
                    .image(head_key.clone(), head.clone())
                    .image(wrist_key.clone(), wrist.clone())
                    .vector(STATE, state.to_vec())
                    .vector(TACTILE, taxels.clone())
                    .vector(ACTION, cmd.to_vec());
                if let Some(k) = &opts.tactile_image_key {
                    f = f.vector(k.clone(), pressure.clone());
                }
                w.add_frame(f)?;
                timing.push((t_sim * 1e9).round() as i64);
            }
            let t_ep = world.time();
            if success_at.is_none() && world.success() {
                success_at = Some(t_ep);
            }
            if success_at.is_some_and(|s| t_ep >= s + opts.hold_after_success_s)
                || t_ep >= opts.episode_timeout_s
            {
                break;
            }
        }
        let success = success_at.is_some();
        let t = timing.finish();
        let rec = if success || opts.keep_failed {
            set_episode_quality(&mut w, &t, Some(success))?;
            let r = w.save_episode()?;
            saved += 1;
            frames += r.length;
            flagged += usize::from(t.rate_flagged);
            EpisodeRecord {
                dataset_index: Some(r.episode_index),
                source_episode: Some(episode),
                success: Some(success),
                timing: t,
                save_s: r.elapsed.as_secs_f64(),
            }
        } else {
            w.clear_episode();
            discarded += 1;
            EpisodeRecord {
                dataset_index: None,
                source_episode: Some(episode),
                success: Some(false),
                timing: t,
                save_s: 0.0,
            }
        };
        progress(&rec);
        records.push(rec);
        episode += 1;
    }
    w.finalize()?;
    Ok(RecordSummary {
        root: root.to_path_buf(),
        episodes_saved: saved,
        episodes_discarded: discarded,
        frames,
        flagged,
        wall_s: t0.elapsed().as_secs_f64(),
        episodes: records,
    })
}

/// The scripted expert's own success over `episodes` simulator episodes from
/// `seed` (in this process, no transport): (successes, mean time to success).
pub fn expert_success(
    seed: u64,
    slip: Option<maniflow_bridge::sim::slip::SlipConfig>,
    episodes: u64,
    episode_timeout_s: f64,
    joint_rate: f64,
    fps: f64,
) -> (u64, Option<f64>) {
    let cfg = SimConfig {
        seed,
        slip,
        ..SimConfig::default()
    };
    let mut world = SimWorld::new(cfg.clone());
    let mut expert = Expert::new(&cfg);
    let n_px = cfg.image_width * cfg.image_height * 3;
    let mut head = vec![0u8; n_px];
    let mut taxels = vec![0.0f32; world.taxel_count()];
    let (dt, frame_dt) = (1.0 / joint_rate, 1.0 / fps);
    let (mut ok, mut t_sum) = (0u64, 0.0f64);
    for ep in 0..episodes {
        world.reset(ep);
        expert.reset();
        let mut next_frame_t = 0.0;
        while world.time() < episode_timeout_s {
            let t = world.time();
            if t + 1e-9 >= next_frame_t {
                next_frame_t += frame_dt;
                world.render_head(&mut head);
                world.tactile(&mut taxels);
                let q = world.joint_positions();
                let cmd = expert.act(&head, &q, &taxels, t);
                world.set_command(&cmd);
            }
            world.step(dt);
            if world.success() {
                ok += 1;
                t_sum += world.time();
                break;
            }
        }
    }
    (ok, (ok > 0).then(|| t_sum / ok as f64))
}

/// Wall-clock pacing helper for progress lines: at most one per `every`.
pub struct Throttle {
    last: Option<Instant>,
    every: Duration,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle { last: None, every }
    }
    pub fn ready(&mut self) -> bool {
        let now = Instant::now();
        match self.last {
            Some(l) if now.duration_since(l) < self.every => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_counts_gaps_and_flags_rate() {
        let mut t = TimingAcc::new(30.0);
        let p = (1e9 / 30.0) as i64;
        for i in 0..31 {
            t.push(i * p);
        }
        let r = t.finish();
        assert_eq!(r.frames, 31);
        assert_eq!(r.dropped_frames, 0);
        assert!((r.achieved_fps - 30.0).abs() < 1e-3, "{r:?}");
        assert!(!r.rate_flagged);
        // Drop frames 10..=12 (3 frames) and 20: 27 frames over the same second.
        let mut t = TimingAcc::new(30.0);
        for i in (0..31).filter(|i| !(10..=12).contains(i) && *i != 20) {
            t.push(i * p);
        }
        let r = t.finish();
        assert_eq!(r.dropped_frames, 4);
        assert!((r.achieved_fps - 26.0).abs() < 1e-3, "{r:?}");
        assert!(r.rate_flagged, "{r:?}");
        // 4% slow: within tolerance.
        let mut t = TimingAcc::new(30.0);
        for i in 0..31 {
            t.push((i as f64 * 1e9 / 28.8) as i64);
        }
        let r = t.finish();
        assert!((r.rate_deviation - 0.04).abs() < 1e-3, "{r:?}");
        assert!(!r.rate_flagged);
        assert_eq!(r.dropped_frames, 0);
    }
}
