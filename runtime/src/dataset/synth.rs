//! A small, learnable SO-101 dataset for tests and demos.
//!
//! Layout (LeRobot SO-101 names): `observation.images.head`,
//! `observation.images.wrist` (RGB `S x S`), `observation.state` (6: five joints in
//! degrees, gripper 0..100), `observation.tactile` (taxels, float32), `action`
//! (6, absolute joint targets like a leader arm). robot_type `so101_follower`.
//!
//! The task: each episode draws a target joint configuration. The head camera
//! shows a disc whose position encodes the target's (shoulder_pan, shoulder_lift),
//! whose red/blue balance encodes elbow_flex, green encodes wrist_roll and radius
//! encodes wrist_flex, plus a white marker at the arm's present (pan, lift). The
//! leader moves with a first-order lag toward the target,
//! `action[t] = state[t] + ALPHA * (target - state[t])`, and the follower tracks it
//! with small noise, `state[t+1] = action[t] + N(0, 0.1 deg)`. Once every joint is
//! within 3 deg of the target (around the middle of a 60-frame episode) the
//! gripper closes (goal 90 -> 5) and the tactile taxels rise with a bump whose
//! place varies per episode. The wrist camera shows the two fingers (their gap is
//! the gripper opening, red with contact) and a line at the wrist flex.
//! A policy that reads the head image and the state predicts the chunk; a
//! constant one cannot. Everything is deterministic in the seed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::Result;
use super::meta::{FeatureSpec, Features};
use super::video::VideoCodec;
use super::writer::{DatasetWriter, Frame, WriterOptions};

/// The SO-101 state/action names (`<joint>.pos`), from the bridge's robot description.
pub const JOINT_NAMES: [&str; 6] = maniflow_bridge::so101::POS_FEATURE_NAMES;
pub const HEAD: &str = "observation.images.head";
pub const WRIST: &str = "observation.images.wrist";
pub const STATE: &str = "observation.state";
pub const TACTILE: &str = "observation.tactile";
pub const ACTION: &str = "action";
/// Leader lag per frame.
pub const ALPHA: f32 = 0.08;
/// Gripper lag per frame.
pub const GRIPPER_ALPHA: f32 = 0.2;
pub const GRIPPER_OPEN: f32 = 90.0;
pub const GRIPPER_CLOSED: f32 = 5.0;
/// Joint range shown across the head image, degrees.
pub const VIEW_RANGE_DEG: f32 = 80.0;

#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub episodes: usize,
    pub frames_per_episode: usize,
    pub fps: u32,
    pub image_size: usize,
    pub taxels: usize,
    pub seed: u64,
    pub video: Option<VideoCodec>,
    pub task: String,
    /// ffmpeg for video (`None`: search).
    pub ffmpeg: Option<PathBuf>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            episodes: 10,
            frames_per_episode: 60,
            fps: 30,
            image_size: 96,
            taxels: 32,
            seed: 0,
            video: None,
            task: "Reach the target and grasp it.".into(),
            ffmpeg: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub root: PathBuf,
    pub episodes: usize,
    pub frames: usize,
    /// Target joint configuration of each episode (five joints, degrees).
    pub targets: Vec<[f32; 5]>,
    pub elapsed: Duration,
}

/// The SO-101 feature set of the synthetic dataset, in LeRobot's usual order.
pub fn so101_features(image_size: usize, taxels: usize) -> Features {
    let mut f = Features::default();
    f.insert(HEAD, FeatureSpec::camera(image_size, image_size));
    f.insert(WRIST, FeatureSpec::camera(image_size, image_size));
    f.insert(STATE, FeatureSpec::vector(&JOINT_NAMES));
    let taxel_names: Vec<String> = (0..taxels).map(|i| format!("taxel_{i}")).collect();
    let names: Vec<&str> = taxel_names.iter().map(String::as_str).collect();
    f.insert(TACTILE, FeatureSpec::vector(&names));
    f.insert(ACTION, FeatureSpec::vector(&JOINT_NAMES));
    f
}

/// Writes the dataset (see the module docs) at `root` (absent or empty).
pub fn write_synthetic(root: &Path, cfg: &SynthConfig) -> Result<Summary> {
    let t0 = Instant::now();
    let opts = WriterOptions {
        ffmpeg: cfg.ffmpeg.clone(),
        ..Default::default()
    };
    let features = so101_features(cfg.image_size, cfg.taxels);
    let mut w =
        DatasetWriter::create_with(root, cfg.fps, "so101_follower", &features, cfg.video, opts)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut targets = Vec::new();
    for _ in 0..cfg.episodes {
        let ep = Episode::generate(&mut rng, cfg);
        targets.push(ep.target);
        for t in 0..cfg.frames_per_episode {
            let frame = Frame::new(cfg.task.clone())
                .image(HEAD, render_head(cfg.image_size, &ep.target, &ep.states[t]))
                .image(
                    WRIST,
                    render_wrist(
                        cfg.image_size,
                        &ep.states[t],
                        ep.tactile[t].iter().cloned().fold(0.0, f32::max),
                    ),
                )
                .vector(STATE, ep.states[t].to_vec())
                .vector(TACTILE, ep.tactile[t].clone())
                .vector(ACTION, ep.actions[t].to_vec());
            w.add_frame(frame)?;
        }
        w.save_episode()?;
    }
    w.finalize()?;
    Ok(Summary {
        root: root.to_path_buf(),
        episodes: cfg.episodes,
        frames: cfg.episodes * cfg.frames_per_episode,
        targets,
        elapsed: t0.elapsed(),
    })
}

/// One generated episode.
pub struct Episode {
    pub target: [f32; 5],
    pub states: Vec<[f32; 6]>,
    pub actions: Vec<[f32; 6]>,
    pub tactile: Vec<Vec<f32>>,
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller.
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// The leader's next position: `state + ALPHA (target - state)`, gripper toward `goal`.
pub fn leader_step(state: &[f32; 6], target: &[f32; 5], closing: bool) -> [f32; 6] {
    let mut a = [0f32; 6];
    for j in 0..5 {
        a[j] = state[j] + ALPHA * (target[j] - state[j]);
    }
    let goal = if closing {
        GRIPPER_CLOSED
    } else {
        GRIPPER_OPEN
    };
    a[5] = (state[5] + GRIPPER_ALPHA * (goal - state[5])).clamp(0.0, 100.0);
    a
}

/// Whether the gripper should be closing: every joint within 3 deg, or already closing.
pub fn should_close(state: &[f32; 6], target: &[f32; 5], was_closing: bool) -> bool {
    was_closing || (0..5).all(|j| (target[j] - state[j]).abs() < 3.0)
}

impl Episode {
    pub fn generate(rng: &mut ChaCha8Rng, cfg: &SynthConfig) -> Episode {
        let mut target = [0f32; 5];
        for t in target.iter_mut() {
            let mag: f32 = rng.random_range(30.0..70.0);
            *t = if rng.random::<bool>() { mag } else { -mag };
        }
        let mut state = [0f32; 6];
        for s in state.iter_mut().take(5) {
            *s = rng.random_range(-5.0..5.0);
        }
        state[5] = GRIPPER_OPEN + rng.random_range(-3.0..3.0);
        let center: f32 = rng.random_range(0.3..0.7) * cfg.taxels as f32;
        let sigma = (cfg.taxels as f32 / 8.0).max(0.5);
        let mut closing = false;
        let n = cfg.frames_per_episode;
        let (mut states, mut actions, mut tactile) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for _ in 0..n {
            closing = should_close(&state, &target, closing);
            let action = leader_step(&state, &target, closing);
            let contact = ((70.0 - state[5]) / 50.0).clamp(0.0, 1.0);
            let taxels: Vec<f32> = (0..cfg.taxels)
                .map(|k| {
                    let d = (k as f32 - center) / sigma;
                    contact * (-0.5 * d * d).exp() + 0.01 * normal(rng)
                })
                .collect();
            states.push(state);
            actions.push(action);
            tactile.push(taxels);
            let mut next = action;
            for (j, v) in next.iter_mut().enumerate() {
                *v += if j == 5 { 0.2 } else { 0.1 } * normal(rng);
            }
            next[5] = next[5].clamp(0.0, 100.0);
            state = next;
        }
        Episode {
            target,
            states,
            actions,
            tactile,
        }
    }
}

/// Pixel coordinate of a joint angle on the head image (`VIEW_RANGE_DEG` spans the image).
pub fn angle_to_px(deg: f32, size: usize) -> f32 {
    let m = size as f32 / 8.0;
    m + (deg + VIEW_RANGE_DEG) / (2.0 * VIEW_RANGE_DEG) * (size as f32 - 2.0 * m)
}

/// Inverse of [`angle_to_px`].
pub fn px_to_angle(px: f32, size: usize) -> f32 {
    let m = size as f32 / 8.0;
    (px - m) / (size as f32 - 2.0 * m) * (2.0 * VIEW_RANGE_DEG) - VIEW_RANGE_DEG
}

fn unit(deg: f32) -> f32 {
    ((deg + VIEW_RANGE_DEG) / (2.0 * VIEW_RANGE_DEG)).clamp(0.0, 1.0)
}

/// Head camera: target disc + arm marker on a dark gradient.
pub fn render_head(size: usize, target: &[f32; 5], state: &[f32; 6]) -> Vec<u8> {
    let mut img = vec![0u8; size * size * 3];
    for y in 0..size {
        let g = (20.0 + 30.0 * y as f32 / size as f32) as u8;
        for x in 0..size {
            let p = (y * size + x) * 3;
            img[p..p + 3].copy_from_slice(&[g, g, g.saturating_add(10)]);
        }
    }
    let (cx, cy) = (angle_to_px(target[0], size), angle_to_px(target[1], size));
    let radius = size as f32 * (0.05 + 0.07 * unit(target[3]));
    let r = (255.0 * unit(target[2])) as u8;
    let colour = [r, (255.0 * unit(target[4])) as u8, 255 - r];
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            if dx * dx + dy * dy <= radius * radius {
                let p = (y * size + x) * 3;
                img[p..p + 3].copy_from_slice(&colour);
            }
        }
    }
    let (mx, my) = (
        angle_to_px(state[0], size) as i64,
        angle_to_px(state[1], size) as i64,
    );
    let half = (size as i64 / 48).max(1);
    for y in my - half..=my + half {
        for x in mx - half..=mx + half {
            if (0..size as i64).contains(&x) && (0..size as i64).contains(&y) {
                let p = (y as usize * size + x as usize) * 3;
                img[p..p + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
    }
    img
}

/// Wrist camera: two fingers whose gap is the gripper opening (red with contact),
/// an object between them, a line at the wrist flex.
pub fn render_wrist(size: usize, state: &[f32; 6], contact: f32) -> Vec<u8> {
    let mut img = vec![60u8; size * size * 3];
    let s = size as f32;
    let set = |img: &mut Vec<u8>, x: usize, y: usize, c: [u8; 3]| {
        let p = (y * size + x) * 3;
        img[p..p + 3].copy_from_slice(&c);
    };
    // Object.
    let (o0, o1) = ((s * 0.4) as usize, (s * 0.6) as usize);
    for y in (s * 0.55) as usize..(s * 0.75) as usize {
        for x in o0..o1 {
            set(&mut img, x, y, [230, 140, 30]);
        }
    }
    // Fingers.
    let gap = state[5].clamp(0.0, 100.0) / 100.0 * s * 0.7;
    let c = contact.clamp(0.0, 1.0);
    let finger = [200, (200.0 * (1.0 - c)) as u8, (200.0 * (1.0 - c)) as u8];
    let fw = (s / 12.0).max(1.0);
    for (x0, x1) in [
        (s / 2.0 - gap / 2.0 - fw, s / 2.0 - gap / 2.0),
        (s / 2.0 + gap / 2.0, s / 2.0 + gap / 2.0 + fw),
    ] {
        for y in (s * 0.35) as usize..(s * 0.95) as usize {
            for x in x0.max(0.0) as usize..(x1.min(s)) as usize {
                set(&mut img, x, y, finger);
            }
        }
    }
    // Wrist flex line.
    let ly = ((unit(state[3]) * (s * 0.25)) as usize).min(size - 1);
    for x in 0..size {
        set(&mut img, x, ly, [120, 220, 120]);
    }
    img
}
