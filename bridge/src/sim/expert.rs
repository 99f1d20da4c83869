//! Scripted expert for the simulated pick task, working from the same
//! observations a policy gets: the head camera image, the joint positions and
//! the tactile pads (plus the known head camera calibration and cube size).
//!
//! Perception ([`locate_cube`]): pixels of the cube's top face are picked by
//! colour (the top face is the brightest red: it faces the light), back-projected
//! through the head camera onto the plane of the top face (`z = cube size`),
//! which removes perspective; their centroid is the cube centre and the phase of
//! their 4-fold angular moment (`sum r^4 e^{4i phi}`, dominated by the corners)
//! gives its yaw modulo 90 degrees. Without enough top-face pixels the whole red
//! silhouette is back-projected onto the mid-height plane instead.
//!
//! Plan (phases, [`Expert::phase`]): `locate` -> `approach` (joint-space move to
//! 7 cm above the cube, gripper vertical, closing axis on a face normal, jaw
//! open) -> `descend` (straight down in Cartesian space to the cube's centre
//! height) -> `close` (until the pads feel the cube, or a timeout) -> `lift`
//! (straight up 9 cm) -> `hold`. A grasp that never makes contact, or a cube
//! lost during the lift, sends it to `retry`: open, rise, go home and locate
//! again from a fresh image.

use nalgebra::{Isometry3, Translation3, Vector3};

use super::grip_control::GripControl;
use super::{head_camera, render::colors, SimConfig, HOME_LEROBOT};
use crate::kinematics::{self, IkOptions, ARM_JOINTS};
use crate::sim::render::{PinholeCamera, AMBIENT, LIGHT_DIR};

/// Cube pose estimate from the head image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CubeEstimate {
    /// Centre of the cube (world, m), at mid height.
    pub position: Vector3<f64>,
    /// Yaw of a face normal (rad, in `[-pi/4, pi/4)`).
    pub yaw: f64,
    /// Number of top-face pixels used (0: silhouette fallback).
    pub top_pixels: usize,
}

/// Find the red cube in an RGB8 image from `cam` (see the module docs).
pub fn locate_cube(rgb: &[u8], cam: &PinholeCamera, cube_size: f64) -> Option<CubeEstimate> {
    let (w, h) = (cam.width, cam.height);
    if rgb.len() < w * h * 3 {
        return None;
    }
    // Expected top-face red: the cube colour lit from straight above.
    let top_k = AMBIENT + (1.0 - AMBIENT) * LIGHT_DIR[2] as f32;
    let top_r = colors::CUBE[0] * top_k * 255.0;
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0usize);
    let (mut su, mut sv, mut ns) = (0.0, 0.0, 0usize);
    for (i, px) in rgb.chunks_exact(3).take(w * h).enumerate() {
        let (r, g, b) = (px[0] as f32, px[1] as f32, px[2] as f32);
        if !(r > 40.0 && r > 3.0 * g && r > 3.0 * b) {
            continue;
        }
        let (u, v) = ((i % w) as f64 + 0.5, (i / w) as f64 + 0.5);
        su += u;
        sv += v;
        ns += 1;
        if r > 0.85 * top_r {
            if let Some(p) = cam.backproject_to_plane_z(u, v, cube_size) {
                sx += p.x;
                sy += p.y;
                n += 1;
            }
        }
    }
    if n >= 3 {
        let (mx, my) = (sx / n as f64, sy / n as f64);
        // Second pass: 4-fold moment of the top-face points about the centroid.
        let (mut re, mut im) = (0.0, 0.0);
        for (i, px) in rgb.chunks_exact(3).take(w * h).enumerate() {
            let (r, g, b) = (px[0] as f32, px[1] as f32, px[2] as f32);
            if !(r > 0.85 * top_r && r > 3.0 * g && r > 3.0 * b) {
                continue;
            }
            let (u, v) = ((i % w) as f64 + 0.5, (i / w) as f64 + 0.5);
            if let Some(p) = cam.backproject_to_plane_z(u, v, cube_size) {
                let (dx, dy) = (p.x - mx, p.y - my);
                let r2 = dx * dx + dy * dy;
                let phi4 = 4.0 * dy.atan2(dx);
                re += r2 * r2 * phi4.cos();
                im += r2 * r2 * phi4.sin();
            }
        }
        // Corners sit at yaw + 45 deg (mod 90): arg M4 = 4 yaw + pi.
        let yaw = if re.hypot(im) > 0.0 {
            wrap_quarter((im.atan2(re) - std::f64::consts::PI) / 4.0)
        } else {
            0.0
        };
        return Some(CubeEstimate {
            position: Vector3::new(mx, my, cube_size / 2.0),
            yaw,
            top_pixels: n,
        });
    }
    if ns == 0 {
        return None;
    }
    let p = cam.backproject_to_plane_z(su / ns as f64, sv / ns as f64, cube_size / 2.0)?;
    Some(CubeEstimate {
        position: p.coords,
        yaw: 0.0,
        top_pixels: 0,
    })
}

/// Wrap into `[-pi/4, pi/4)`.
fn wrap_quarter(a: f64) -> f64 {
    let q = std::f64::consts::FRAC_PI_2;
    (a + q / 2.0).rem_euclid(q) - q / 2.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Locate,
    Approach,
    Descend,
    Close,
    Lift,
    Hold,
    RetryRise,
    RetryHome,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Locate => "locate",
            Phase::Approach => "approach",
            Phase::Descend => "descend",
            Phase::Close => "close",
            Phase::Lift => "lift",
            Phase::Hold => "hold",
            Phase::RetryRise => "retry",
            Phase::RetryHome => "retry",
        }
    }
}

/// Gripper command when open (LeRobot units): ~6.5 cm between the fingers.
pub const GRIPPER_OPEN: f32 = 50.0;
/// Gripper command to close (squeezes a 3 cm cube).
pub const GRIPPER_CLOSED: f32 = 0.0;
/// Height of the TCP above the cube centre before descending (m).
pub const PREGRASP_HEIGHT: f64 = 0.07;
/// How far the cube is lifted (m).
pub const LIFT_HEIGHT: f64 = 0.09;
/// Tactile sum that counts as contact.
pub const CONTACT_THRESHOLD: f32 = 0.05;

/// Scripted IK-based expert (see the module docs).
#[derive(Debug, Clone)]
pub struct Expert {
    cam: PinholeCamera,
    cube_size: f64,
    phase: Phase,
    phase_t0: f64,
    target: Option<CubeEstimate>,
    /// Last commanded arm joints (rad), IK warm start.
    q_cmd: Option<[f64; ARM_JOINTS]>,
    /// Start of the current move (joints) and its goal.
    q_from: [f64; ARM_JOINTS],
    q_to: [f64; ARM_JOINTS],
    move_time: f64,
    /// Cartesian segment (TCP positions) for straight moves.
    p_from: Vector3<f64>,
    p_to: Vector3<f64>,
    yaw: f64,
    gripper: f32,
    contact_since: Option<f64>,
    attempts: u32,
    /// Slip variant: the squeeze by touch ([`GripControl`]).
    feel: Option<GripControl>,
    last_t: Option<f64>,
}

impl Expert {
    /// Expert for a simulator configuration (head camera and cube size).
    pub fn new(cfg: &SimConfig) -> Self {
        Self {
            cam: head_camera(cfg),
            cube_size: cfg.cube_size_m,
            phase: Phase::Locate,
            phase_t0: 0.0,
            target: None,
            q_cmd: None,
            q_from: [0.0; ARM_JOINTS],
            q_to: [0.0; ARM_JOINTS],
            move_time: 1.0,
            p_from: Vector3::zeros(),
            p_to: Vector3::zeros(),
            yaw: 0.0,
            gripper: GRIPPER_OPEN,
            contact_since: None,
            attempts: 0,
            feel: cfg.slip.as_ref().map(|_| {
                GripControl::new(
                    cfg.taxel_rows,
                    cfg.taxel_cols,
                    super::PAD_AREA.z.1 - super::PAD_AREA.z.0,
                )
            }),
            last_t: None,
        }
    }

    /// Forget everything (call at episode start).
    pub fn reset(&mut self) {
        let cam = self.cam;
        let size = self.cube_size;
        let feel = self.feel.as_ref().map(GripControl::fresh);
        *self = Self {
            cam,
            cube_size: size,
            feel,
            ..Self::new(&SimConfig::default())
        };
    }

    /// Current phase name.
    pub fn phase(&self) -> &'static str {
        self.phase.name()
    }

    /// The cube estimate in use, if any.
    pub fn target(&self) -> Option<CubeEstimate> {
        self.target
    }

    /// Grasp attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    fn enter(&mut self, p: Phase, t: f64) {
        self.phase = p;
        self.phase_t0 = t;
    }

    /// Solve a top-down pose, falling back to the best effort.
    fn solve(&self, pos: &Vector3<f64>, yaw: f64, seed: &[f64; ARM_JOINTS]) -> [f64; ARM_JOINTS] {
        let quick = IkOptions {
            restarts: 0,
            max_iters: 60,
            pos_tol: 2e-4,
            rot_tol: 5e-3,
            ..IkOptions::default()
        };
        if let Ok(s) = kinematics::ik_position_down(pos, yaw, seed, &quick) {
            return s.q;
        }
        let full = IkOptions {
            pos_tol: 2e-4,
            rot_tol: 5e-3,
            ..IkOptions::default()
        };
        if let Ok(s) = kinematics::ik_position_down(pos, yaw, seed, &full) {
            return s.q;
        }
        let target =
            Isometry3::from_parts(Translation3::from(*pos), kinematics::top_down_rotation(yaw));
        match kinematics::ik_best_effort(&target, seed, &full) {
            Ok(s) => s.q,
            Err(_) => *seed,
        }
    }

    fn start_joint_move(&mut self, from: [f64; ARM_JOINTS], to: [f64; ARM_JOINTS], t: f64) {
        self.q_from = from;
        self.q_to = to;
        let d = from
            .iter()
            .zip(to.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        // ~1.6 rad/s peak joint speed, at least 0.5 s.
        self.move_time = (d / 1.6).max(0.5);
        self.phase_t0 = t;
    }

    fn start_line(&mut self, from: Vector3<f64>, to: Vector3<f64>, speed: f64, t: f64) {
        self.p_from = from;
        self.p_to = to;
        self.move_time = ((to - from).norm() / speed).max(0.3);
        self.phase_t0 = t;
    }

    /// Progress `0..1` of the current move (smooth-step).
    fn progress(&self, t: f64) -> f64 {
        let s = ((t - self.phase_t0) / self.move_time).clamp(0.0, 1.0);
        s * s * (3.0 - 2.0 * s)
    }

    /// One decision. `head_rgb`: head image (RGB8 of the configured size),
    /// `joints`: measured joints (LeRobot units), `tactile`: pads, `t`: time (s).
    /// Returns the joint command in LeRobot units.
    pub fn act(&mut self, head_rgb: &[u8], joints: &[f32; 6], tactile: &[f32], t: f64) -> [f32; 6] {
        let meas = kinematics::lerobot_to_rad(joints);
        let mut q_meas = [0.0; ARM_JOINTS];
        q_meas.copy_from_slice(&meas[..ARM_JOINTS]);
        let q_cmd = *self.q_cmd.get_or_insert(q_meas);
        let touch: f32 = tactile.iter().filter(|v| v.is_finite()).sum();
        let dt = t - self.last_t.unwrap_or(t);
        self.last_t = Some(t);
        let home = kinematics::lerobot_to_rad(&HOME_LEROBOT);
        let mut q_home = [0.0; ARM_JOINTS];
        q_home.copy_from_slice(&home[..ARM_JOINTS]);
        let mut q_out = q_cmd;

        match self.phase {
            Phase::Locate => {
                self.gripper = GRIPPER_OPEN;
                match locate_cube(head_rgb, &self.cam, self.cube_size) {
                    Some(est) => {
                        self.target = Some(est);
                        self.yaw = est.yaw;
                        let pre = est.position + Vector3::new(0.0, 0.0, PREGRASP_HEIGHT);
                        let q_pre = self.solve(&pre, est.yaw, &q_cmd);
                        self.attempts += 1;
                        self.start_joint_move(q_cmd, q_pre, t);
                        self.phase = Phase::Approach;
                    }
                    None => q_out = q_home,
                }
            }
            Phase::Approach => {
                let s = self.progress(t);
                q_out =
                    std::array::from_fn(|i| self.q_from[i] + (self.q_to[i] - self.q_from[i]) * s);
                if t - self.phase_t0 >= self.move_time + 0.15 {
                    let from = kinematics::fk(&q_out).translation.vector;
                    let mut to = self.target.map(|e| e.position).unwrap_or(from);
                    // By touch (slip variant): 3 mm deeper, more of the pads on the cube
                    // (a slipping cube has further to slide before it leaves them).
                    to.z = self.cube_size / 2.0 - if self.feel.is_some() { 0.005 } else { 0.002 };
                    self.start_line(from, to, 0.12, t);
                    self.phase = Phase::Descend;
                }
            }
            Phase::Descend | Phase::Lift | Phase::RetryRise => {
                let s = self.progress(t);
                let p = self.p_from + (self.p_to - self.p_from) * s;
                q_out = self.solve(&p, self.yaw, &q_cmd);
                let done = t - self.phase_t0 >= self.move_time + 0.1;
                if self.phase == Phase::Lift && touch < CONTACT_THRESHOLD {
                    self.begin_retry(q_out, t);
                } else if done {
                    match self.phase {
                        Phase::Descend => {
                            self.gripper = GRIPPER_CLOSED;
                            if let Some(f) = &mut self.feel {
                                f.begin_close(GRIPPER_OPEN);
                                self.gripper = GRIPPER_OPEN;
                            }
                            self.contact_since = None;
                            self.enter(Phase::Close, t);
                        }
                        Phase::Lift => self.enter(Phase::Hold, t),
                        _ => {
                            self.start_joint_move(q_out, q_home, t);
                            self.phase = Phase::RetryHome;
                        }
                    }
                }
            }
            Phase::Close => {
                self.gripper = match &mut self.feel {
                    Some(f) => f.close(joints[5], tactile, dt),
                    None => GRIPPER_CLOSED,
                };
                if touch > CONTACT_THRESHOLD {
                    let since = *self.contact_since.get_or_insert(t);
                    if t - since >= 0.2 {
                        let from = kinematics::fk(&q_cmd).translation.vector;
                        let to = from + Vector3::new(0.0, 0.0, LIFT_HEIGHT);
                        self.start_line(from, to, 0.1, t);
                        self.phase = Phase::Lift;
                    }
                } else {
                    self.contact_since = None;
                    if t - self.phase_t0 > 1.0 {
                        self.begin_retry(q_cmd, t);
                    }
                }
            }
            Phase::Hold => {
                if touch < CONTACT_THRESHOLD {
                    self.begin_retry(q_cmd, t);
                }
            }
            Phase::RetryHome => {
                self.gripper = GRIPPER_OPEN;
                let s = self.progress(t);
                q_out =
                    std::array::from_fn(|i| self.q_from[i] + (self.q_to[i] - self.q_from[i]) * s);
                if t - self.phase_t0 >= self.move_time + 0.3 {
                    self.enter(Phase::Locate, t);
                }
            }
        }
        if let (Some(f), Phase::Lift | Phase::Hold) = (&mut self.feel, self.phase) {
            self.gripper = f.hold(tactile, dt);
        }
        self.q_cmd = Some(q_out);
        let mut out = [0.0f32; 6];
        for i in 0..ARM_JOINTS {
            out[i] = q_out[i].to_degrees() as f32;
        }
        out[5] = self.gripper;
        out
    }

    /// Open the jaw and rise above the current position, then go home.
    fn begin_retry(&mut self, q: [f64; ARM_JOINTS], t: f64) {
        self.gripper = GRIPPER_OPEN;
        let from = kinematics::fk(&q).translation.vector;
        let to = Vector3::new(
            from.x,
            from.y,
            (self.cube_size / 2.0 + PREGRASP_HEIGHT).max(from.z),
        );
        self.start_line(from, to, 0.15, t);
        self.phase = Phase::RetryRise;
    }
}
