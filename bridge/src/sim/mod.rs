//! A small, fast, deterministic simulated SO-101 pick task: a test fixture and a
//! demo, not a physics engine.
//!
//! # World and conventions
//!
//! * World frame = the URDF `base` frame (see [`crate::kinematics`]): the table
//!   top is the plane `z = 0`, `+z` up, the arm's forward direction is `-y`.
//! * Joints are commanded and reported in LeRobot units (degrees for joints
//!   1-5, identity sign w.r.t. the URDF; gripper `0..100`, 0 = closed).
//! * Servos: every joint follows its (clamped) command with a first-order lag,
//!   time constant [`SimConfig::servo_time_constant_s`], integrated exactly
//!   (`q += (cmd - q) * (1 - exp(-dt / tau))`).
//! * The cube (edge [`SimConfig::cube_size_m`], red) starts upright on the table
//!   at a random `(x, y, yaw)` drawn from the annular sector
//!   `r in cube_radius_m, |bearing| <= cube_bearing_max_rad` around the
//!   `shoulder_pan` axis (a subset of [`crate::kinematics::reach`], reachable with
//!   a vertical grasp at any yaw, up to 10 cm above the table).
//! * Gripper geometry (simplified, defined here, see [`FIXED_FINGER`] and
//!   [`MOVING_FINGER`]): a fixed finger on the `gripper` link whose inner face
//!   is the plane `x = -0.0229` of that link, and a moving finger on the
//!   `moving_jaw` link whose inner face closes onto it at the lower jaw limit.
//!   The TCP (`gripperframe`) lies midway between the inner faces when they are
//!   one cube (3 cm) apart, i.e. at gripper ≈ 21.
//! * Grasp model: when the cube's centre lies between the fingers and the jaw
//!   closes past the angle at which the moving finger touches it, the jaw stops
//!   at that contact angle, the cube is pushed flush against the fixed finger and
//!   turned to sit square in the jaws; once the servo "squeezes" (commanded jaw
//!   angle more than [`GRASP_SQUEEZE_RAD`] inside the contact angle) the cube is
//!   grasped and moves rigidly with the gripper. Opening the jaw (squeeze below
//!   [`RELEASE_SQUEEZE_RAD`]) releases it: it falls straight down under gravity
//!   and lands upright, keeping its yaw. Otherwise the cube is static: nothing
//!   else collides.
//! * Slip variant ([`SimConfig::slip`], [`slip`]): a fragile cube of unknown
//!   weight; too light a squeeze lets a lifted cube slide down the fingers and
//!   fall, too hard a one crushes it. The expert then squeezes by touch
//!   ([`grip_control`]).
//! * Tactile: two pads (0 = fixed finger, 1 = moving finger), `taxel_rows`
//!   along the finger (row 0 nearest the tip) x `taxel_cols` across it, each
//!   covering the finger's inner face from 2 mm to 42 mm above the tip.
//!   Pressure = `tactile_gain * squeeze` times the fraction of the taxel that the
//!   cube's face covers; 0 when not in contact.
//! * Cameras ([`render::PinholeCamera`], OpenCV axes): the head camera is fixed,
//!   in front of the arm, looking back down at the workspace
//!   ([`HEAD_EYE`] -> [`HEAD_TARGET`], [`HEAD_HFOV_RAD`]); the wrist camera is
//!   rigidly on the `gripper` link beside the fingers, looking along the approach
//!   direction ([`wrist_camera_pose`], [`WRIST_HFOV_RAD`]); image `x` runs along
//!   the closing axis.
//! * Determinism: all randomness comes from a `ChaCha8Rng` seeded with
//!   `SimConfig::seed` on stream `episode`.

pub mod expert;
pub mod grip_control;
pub mod outcome;
pub mod reward;
pub mod render;
pub mod slip;
pub mod tactile;

pub use expert::{locate_cube, CubeEstimate, Expert};
pub use outcome::Outcome;
pub use render::PinholeCamera;

use nalgebra::{Isometry3, Point3, Translation3, UnitQuaternion, Vector3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::kinematics::{self, lerobot_to_rad, rad_to_lerobot, reach, ARM_JOINTS};
use crate::so101::{limits_lerobot_units, N_JOINTS, URDF_LIMITS_RAD};

/// Home pose in LeRobot units: TCP 11 cm above the table, 12 cm in front of the
/// pan axis, pointing down, gripper half open; out of the head camera's view of
/// the cube region.
pub const HOME_LEROBOT: [f32; 6] = [-3.86, -36.64, 33.28, 93.37, 86.14, 40.0];

/// Head camera position (world).
pub const HEAD_EYE: [f64; 3] = [0.02, -0.50, 0.40];
/// Point the head camera looks at (world).
pub const HEAD_TARGET: [f64; 3] = [0.02, -0.13, 0.04];
/// Head camera horizontal field of view (rad).
pub const HEAD_HFOV_RAD: f64 = 1.0;
/// Wrist camera horizontal field of view (rad).
pub const WRIST_HFOV_RAD: f64 = 1.45;

/// Fixed finger: box (centre, half extents) in the `gripper` link frame.
pub const FIXED_FINGER: ([f64; 3], [f64; 3]) = ([-0.0269, -0.0002, -0.073], [0.004, 0.010, 0.033]);
/// Moving finger: box (centre, half extents) in the `moving_jaw` link frame.
pub const MOVING_FINGER: ([f64; 3], [f64; 3]) =
    ([-0.0266, -0.04965, 0.019], [0.004, 0.03305, 0.010]);
/// Inner face of the fixed finger: plane `x = FIXED_INNER_X` of the gripper link.
pub const FIXED_INNER_X: f64 = -0.0229;
/// Inner face of the moving finger: plane `x = -MOVING_INNER_OFFSET` of the
/// moving_jaw link.
pub const MOVING_INNER_OFFSET: f64 = 0.0306;
/// Finger tip depth (`z` in the gripper link frame).
pub const FINGER_TIP_Z: f64 = -0.106;
/// Squeeze (rad) beyond contact that makes the cube grasped.
pub const GRASP_SQUEEZE_RAD: f64 = 0.05;
/// Squeeze (rad) below which a grasped cube is released.
pub const RELEASE_SQUEEZE_RAD: f64 = 0.02;
/// Gravity (m/s^2) for a released cube.
pub const GRAVITY: f64 = 9.81;
/// Mixed into the seed of the tactile images' noise stream.
const TACTILE_NOISE_SEED: u64 = 0x7AC7_11E5;
/// The pad area on a finger in the gripper frame, the taxels' too: 40 mm along
/// the finger from 2 mm above the tip, 20 mm across.
pub const PAD_AREA: tactile::PadArea = tactile::PadArea {
    z: (FINGER_TIP_Z + 0.002, FINGER_TIP_Z + 0.042),
    y: (FIXED_FINGER.0[1] - 0.01, FIXED_FINGER.0[1] + 0.01),
};

/// Simulator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Seed of every random draw (with the episode number as stream).
    pub seed: u64,
    /// Camera image width (pixels).
    pub image_width: usize,
    /// Camera image height (pixels).
    pub image_height: usize,
    /// Servo first-order time constant (s).
    pub servo_time_constant_s: f64,
    /// Taxel rows per pad (along the finger).
    pub taxel_rows: usize,
    /// Taxel columns per pad (across the finger).
    pub taxel_cols: usize,
    /// Cube edge length (m).
    pub cube_size_m: f64,
    /// Range of the cube's horizontal distance from the pan axis (m).
    pub cube_radius_m: (f64, f64),
    /// Largest bearing of the cube from the arm's forward direction (rad).
    pub cube_bearing_max_rad: f64,
    /// Pressure per radian of squeeze.
    pub tactile_gain: f64,
    /// Tactile image rows per pad (along the finger), see [`tactile`].
    #[serde(default = "default_tactile_side")]
    pub tactile_image_rows: usize,
    /// Tactile image columns per pad (across the finger).
    #[serde(default = "default_tactile_side")]
    pub tactile_image_cols: usize,
    /// Standard deviation of the tactile images' sensor noise (pressure units).
    #[serde(default = "default_tactile_noise")]
    pub tactile_noise_std: f64,
    /// Load shift of the tactile images under slip (see [`tactile`]).
    #[serde(default = "default_tactile_shear")]
    pub tactile_shear_gain: f64,
    /// The touch-decides variant ([`slip`]): per-episode hold and crush squeezes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slip: Option<slip::SlipConfig>,
}

fn default_tactile_side() -> usize {
    16
}
fn default_tactile_noise() -> f64 {
    0.01
}
fn default_tactile_shear() -> f64 {
    10.0
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            image_width: 96,
            image_height: 96,
            servo_time_constant_s: 0.05,
            taxel_rows: 4,
            taxel_cols: 4,
            cube_size_m: 0.03,
            cube_radius_m: (0.15, 0.21),
            cube_bearing_max_rad: 0.7,
            tactile_gain: 5.0,
            tactile_image_rows: default_tactile_side(),
            tactile_image_cols: default_tactile_side(),
            tactile_noise_std: default_tactile_noise(),
            tactile_shear_gain: default_tactile_shear(),
            slip: None,
        }
    }
}

/// The head camera of a configuration.
pub fn head_camera(cfg: &SimConfig) -> PinholeCamera {
    PinholeCamera::look_at(
        &Point3::from(HEAD_EYE),
        &Point3::from(HEAD_TARGET),
        &Vector3::z(),
        HEAD_HFOV_RAD,
        cfg.image_width,
        cfg.image_height,
    )
}

/// Wrist camera pose (camera-to-world) for a given `gripper` link pose: beside
/// the fingers (5 cm off along the link's `-y`), 4 cm down the approach axis,
/// looking a little past the finger tips; image right = closing axis.
pub fn wrist_camera_pose(gripper: &Isometry3<f64>) -> Isometry3<f64> {
    let local = PinholeCamera::look_at_pose(
        &Point3::new(-0.008, -0.05, -0.04),
        &Point3::new(-0.008, 0.0, -0.13),
        &Vector3::y(),
    );
    gripper * local
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CubeState {
    Resting,
    /// Pose relative to the gripper link.
    Grasped(Isometry3<f64>),
    /// Vertical speed (m/s, negative down).
    Falling(f64),
}

/// The simulated world: arm, cube, cameras, tactile pads.
#[derive(Debug, Clone)]
pub struct SimWorld {
    cfg: SimConfig,
    head: PinholeCamera,
    time: f64,
    /// Arm joints (rad).
    q: [f64; ARM_JOINTS],
    /// Jaw angle as it is (blocked by the cube when in contact).
    jaw: f64,
    /// Jaw angle the servo would have without the cube.
    jaw_free: f64,
    /// Command (rad, jaw included).
    cmd: [f64; N_JOINTS],
    cube: Isometry3<f64>,
    cube_state: CubeState,
    /// Commanded squeeze beyond contact (rad), 0 when not touching.
    squeeze: f64,
    /// The cube's centre in the gripper frame (z, y) at the last step while
    /// squeezed, and its velocity against the pads since then (m/s).
    contact_prev: Option<(f64, f64)>,
    slip: (f64, f64),
    /// The tactile images' noise stream (its own, so the other draws of an
    /// episode do not depend on whether images are rendered).
    tactile_rng: ChaCha8Rng,
    /// The episode's cube in the slip variant, and whether it was crushed.
    grip: Option<slip::CubeGrip>,
    crushed: bool,
}

/// Contact of the moving finger with the cube.
struct Contact {
    /// Jaw angle at which the moving finger touches the cube.
    angle: f64,
    /// Cube pose after being pushed flush against the fixed finger and squared.
    cube: Isometry3<f64>,
}

impl SimWorld {
    /// A world in episode 0.
    pub fn new(cfg: SimConfig) -> Self {
        let head = head_camera(&cfg);
        let mut w = Self {
            cfg,
            head,
            time: 0.0,
            q: [0.0; ARM_JOINTS],
            jaw: 0.0,
            jaw_free: 0.0,
            cmd: [0.0; N_JOINTS],
            cube: Isometry3::identity(),
            cube_state: CubeState::Resting,
            squeeze: 0.0,
            contact_prev: None,
            slip: (0.0, 0.0),
            tactile_rng: ChaCha8Rng::seed_from_u64(0),
            grip: None,
            crushed: false,
        };
        w.reset(0);
        w
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Start episode `episode`: arm at [`HOME_LEROBOT`] (commanded there too),
    /// cube at a random reachable pose, time 0. Deterministic in `(seed, episode)`.
    pub fn reset(&mut self, episode: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed);
        rng.set_stream(episode);
        let home = lerobot_to_rad(&HOME_LEROBOT);
        self.q.copy_from_slice(&home[..ARM_JOINTS]);
        self.jaw = home[5];
        self.jaw_free = home[5];
        self.cmd = home;
        self.time = 0.0;
        self.squeeze = 0.0;
        self.contact_prev = None;
        self.slip = (0.0, 0.0);
        self.tactile_rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ TACTILE_NOISE_SEED);
        self.tactile_rng.set_stream(episode);
        self.grip = self
            .cfg
            .slip
            .as_ref()
            .map(|s| s.draw(self.cfg.seed, episode));
        self.crushed = false;
        self.cube_state = CubeState::Resting;
        let (r0, r1) = self.cfg.cube_radius_m;
        let r = if r1 > r0 {
            rng.random_range(r0..r1)
        } else {
            r0
        };
        let bm = self.cfg.cube_bearing_max_rad.abs();
        let bearing = if bm > 0.0 {
            rng.random_range(-bm..bm)
        } else {
            0.0
        };
        let yaw = rng.random_range(0.0..std::f64::consts::FRAC_PI_2);
        let [x, y] = reach::point(r, bearing);
        self.cube = Isometry3::from_parts(
            Translation3::new(x, y, self.rest_z()),
            UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw),
        );
    }

    /// Height of the cube's centre when it rests on the table.
    pub fn rest_z(&self) -> f64 {
        self.cfg.cube_size_m / 2.0
    }

    /// Command joint targets in LeRobot units. Non-finite entries are ignored
    /// (the previous command stays), the others are clamped to the SO-101 limits.
    pub fn set_command(&mut self, target: &[f32; 6]) {
        let lim = limits_lerobot_units();
        let cur = rad_to_lerobot(&self.cmd);
        let mut t = cur;
        for i in 0..N_JOINTS {
            if target[i].is_finite() {
                t[i] = target[i].clamp(lim[i].0, lim[i].1);
            }
        }
        let rad = lerobot_to_rad(&t);
        for i in 0..N_JOINTS {
            if target[i].is_finite() {
                self.cmd[i] = rad[i].clamp(URDF_LIMITS_RAD[i].0, URDF_LIMITS_RAD[i].1);
            }
        }
    }

    /// Advance by `dt` seconds (ignored unless finite and positive).
    pub fn step(&mut self, dt: f64) {
        if !(dt.is_finite() && dt > 0.0) {
            return;
        }
        let tau = self.cfg.servo_time_constant_s;
        let alpha = if tau > 0.0 {
            1.0 - (-dt / tau).exp()
        } else {
            1.0
        };
        for i in 0..ARM_JOINTS {
            self.q[i] += (self.cmd[i] - self.q[i]) * alpha;
        }
        self.jaw_free += (self.cmd[5] - self.jaw_free) * alpha;
        self.time += dt;

        let gripper = self.gripper_pose();
        match self.cube_state {
            CubeState::Grasped(rel) => {
                // The jaw stays at the contact angle while the servo squeezes.
                self.squeeze = (self.jaw - self.jaw_free).max(0.0);
                let rel = self.slide(rel, dt);
                if self.squeeze < RELEASE_SQUEEZE_RAD || rel.translation.z < FINGER_TIP_Z {
                    self.jaw = self.jaw_free;
                    self.squeeze = 0.0;
                    if rel.translation.z < FINGER_TIP_Z {
                        self.cube = gripper * rel;
                    }
                    let yaw = upright_yaw(&self.cube.rotation);
                    self.cube.rotation = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw);
                    self.cube_state = CubeState::Falling(0.0);
                } else {
                    self.cube = gripper * rel;
                    self.cube_state = CubeState::Grasped(rel);
                }
            }
            CubeState::Resting | CubeState::Falling(_) => {
                if let CubeState::Falling(vz) = self.cube_state {
                    let vz = vz - GRAVITY * dt;
                    let z = self.cube.translation.z + vz * dt;
                    if z <= self.rest_z() {
                        self.cube.translation.z = self.rest_z();
                        self.cube_state = CubeState::Resting;
                    } else {
                        self.cube.translation.z = z;
                        self.cube_state = CubeState::Falling(vz);
                    }
                }
                let prev_jaw = self.jaw;
                self.jaw = self.jaw_free;
                self.squeeze = 0.0;
                if let Some(c) = self.contact(&gripper) {
                    // The finger was not already past the cube (small tolerance for
                    // the jaw that just stopped on it) and now closes onto it.
                    if prev_jaw >= c.angle - 1e-6 && self.jaw_free < c.angle {
                        self.jaw = c.angle;
                        self.squeeze = c.angle - self.jaw_free;
                        self.cube = c.cube;
                        if self.squeeze > GRASP_SQUEEZE_RAD {
                            self.cube_state = CubeState::Grasped(gripper.inverse() * self.cube);
                        }
                    }
                }
            }
        }
        if self.grip.is_some_and(|g| self.squeeze > g.crush) {
            self.crushed = true;
        }
        self.track_slip(&gripper, dt);
    }

    /// Slip variant: a cube hanging in the jaws (off the table) with less than its
    /// hold squeeze slides toward the finger tips (`-z` of the gripper link).
    fn slide(&self, mut rel: Isometry3<f64>, dt: f64) -> Isometry3<f64> {
        let (Some(cfg), Some(grip)) = (&self.cfg.slip, &self.grip) else {
            return rel;
        };
        if self.cube.translation.z <= self.rest_z() + 1e-3 {
            return rel;
        }
        rel.translation.vector.z -= slip::slide_speed(cfg, grip, self.squeeze) * dt;
        rel
    }

    /// Velocity of the cube against the pads while squeezed (0 otherwise).
    fn track_slip(&mut self, gripper: &Isometry3<f64>, dt: f64) {
        if self.squeeze <= 0.0 {
            self.contact_prev = None;
            self.slip = (0.0, 0.0);
            return;
        }
        let c = (gripper.inverse() * self.cube).translation.vector;
        let now = (c.z, c.y);
        self.slip = match self.contact_prev {
            Some(p) => ((now.0 - p.0) / dt, (now.1 - p.1) / dt),
            None => (0.0, 0.0),
        };
        self.contact_prev = Some(now);
    }

    /// Tactile pressure images of both pads ([`tactile`]): pad 0 (fixed finger)
    /// then pad 1 (moving finger, columns mirrored: it faces the other way),
    /// each `tactile_image_rows x tactile_image_cols`, row-major, into the first
    /// [`Self::tactile_image_len`] entries of `out`, with sensor noise drawn
    /// from the episode's tactile stream.
    pub fn tactile_image(&mut self, out: &mut [f32]) {
        let (rows, cols) = (self.cfg.tactile_image_rows, self.cfg.tactile_image_cols);
        let per_pad = rows * cols;
        let n = self.tactile_image_len().min(out.len());
        out[..n].fill(0.0);
        let im = tactile::TactileImaging {
            rows,
            cols,
            shear_gain: self.cfg.tactile_shear_gain,
        };
        let contact = (self.squeeze > 0.0).then(|| {
            let c = (self.gripper_pose().inverse() * self.cube)
                .translation
                .vector;
            tactile::FaceContact {
                centre: (c.z, c.y),
                half: self.cfg.cube_size_m / 2.0,
                pressure: self.cfg.tactile_gain * self.squeeze,
                slip: self.slip,
            }
        });
        for pad in 0..2 {
            let Some(dst) = out.get_mut(pad * per_pad..(pad + 1) * per_pad) else {
                break;
            };
            tactile::render_pad(&PAD_AREA, contact.as_ref(), &im, dst);
            if pad == 1 {
                for row in dst.chunks_mut(cols.max(1)) {
                    row.reverse();
                }
            }
        }
        let std = self.cfg.tactile_noise_std;
        let rng = &mut self.tactile_rng;
        tactile::add_noise(&mut out[..n], std, || {
            // Box-Muller from two uniform draws.
            let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = rng.random_range(0.0..1.0);
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        });
    }

    /// Cells of [`Self::tactile_image`]: 2 pads x rows x cols.
    pub fn tactile_image_len(&self) -> usize {
        2 * self.cfg.tactile_image_rows * self.cfg.tactile_image_cols
    }

    /// Pose of the `gripper` link for the current joints.
    fn gripper_pose(&self) -> Isometry3<f64> {
        self.link_frames().gripper
    }

    /// World poses of all links for the current joints (jaw included).
    pub fn link_frames(&self) -> kinematics::LinkFrames {
        let q = self.q;
        kinematics::link_frames(&[q[0], q[1], q[2], q[3], q[4], self.jaw])
    }

    /// Cube pose after the jaws square it and push it onto the fixed finger, and
    /// the jaw angle at which the moving finger touches it; `None` when the cube
    /// is not between the fingers (or the jaw cannot reach it).
    fn contact(&self, gripper: &Isometry3<f64>) -> Option<Contact> {
        let h = self.cfg.cube_size_m / 2.0;
        let local = gripper.inverse() * self.cube;
        let c = local.translation.vector;
        if !(c.z > FINGER_TIP_Z - 0.006 && c.z < -0.045) {
            return None;
        }
        if (c.y - FIXED_FINGER.0[1]).abs() > FIXED_FINGER.1[1] + 0.6 * h {
            return None;
        }
        if c.x <= FIXED_INNER_X {
            return None;
        }
        // Square the cube in the jaws: turn it about world z so that a face
        // normal lines up with the closing axis (when the gripper is level).
        let closing = gripper.rotation * Vector3::x();
        let mut cube = self.cube;
        if closing.z.abs() < 0.3 && !matches!(self.cube_state, CubeState::Grasped(_)) {
            let cy = closing.y.atan2(closing.x);
            let yaw = upright_yaw(&cube.rotation);
            let quarter = std::f64::consts::FRAC_PI_2;
            let snapped = cy + ((yaw - cy) / quarter).round() * quarter;
            cube.rotation = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), snapped);
        }
        // Extent of the cube along the closing axis, then push it flush.
        let rel_rot = gripper.rotation.inverse() * cube.rotation;
        let m = rel_rot.to_rotation_matrix();
        let hx = h * (m[(0, 0)].abs() + m[(0, 1)].abs() + m[(0, 2)].abs());
        let mut lc = c;
        lc.x = FIXED_INNER_X + hx;
        let mut world = gripper * Point3::from(lc);
        if !matches!(self.cube_state, CubeState::Grasped(_)) {
            world.z = cube.translation.z;
        }
        cube.translation = Translation3::from(world.coords);
        // Contact angle: the moving finger's inner face passes the cube's far
        // face (at the cube centre's depth). f(angle) < 0 while the face is open.
        let contact_pt = Point3::new(lc.x + hx, lc.y, lc.z);
        let jaw_origin = {
            let j = &kinematics::URDF_JOINTS[5];
            kinematics::urdf_origin(&j.xyz, &j.rpy)
        };
        let f = |a: f64| {
            let jf = jaw_origin * UnitQuaternion::from_axis_angle(&Vector3::z_axis(), a);
            (jf.inverse_transform_point(&contact_pt)).x + MOVING_INNER_OFFSET
        };
        let (mut lo, mut hi) = URDF_LIMITS_RAD[5];
        if f(hi) >= 0.0 || f(lo) < 0.0 {
            return None;
        }
        for _ in 0..40 {
            let mid = 0.5 * (lo + hi);
            if f(mid) >= 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(Contact { angle: lo, cube })
    }

    /// Joint positions in LeRobot units.
    pub fn joint_positions(&self) -> [f32; 6] {
        let q = self.q;
        rad_to_lerobot(&[q[0], q[1], q[2], q[3], q[4], self.jaw])
    }

    /// Build the render scene for the current state.
    fn scene(&self) -> render::Scene {
        use render::colors;
        let lf = self.link_frames();
        let mut s = render::Scene::new();
        let pan = Vector3::new(reach::PAN_AXIS_XY[0], reach::PAN_AXIS_XY[1], 0.0);
        s.capsule(
            &pan,
            &(pan + Vector3::new(0.0, 0.0, 0.05)),
            0.045,
            colors::DARK,
        );
        let o = |f: &Isometry3<f64>| f.translation.vector;
        s.capsule(
            &(pan + Vector3::new(0.0, 0.0, 0.06)),
            &o(&lf.shoulder),
            0.03,
            colors::ARM,
        );
        s.capsule(&o(&lf.shoulder), &o(&lf.upper_arm), 0.028, colors::ARM);
        s.capsule(&o(&lf.upper_arm), &o(&lf.lower_arm), 0.022, colors::ARM);
        s.capsule(&o(&lf.lower_arm), &o(&lf.wrist), 0.02, colors::ARM);
        s.capsule(&o(&lf.wrist), &o(&lf.gripper), 0.02, colors::ARM);
        let body_end = lf.gripper * Point3::new(-0.004, 0.0, -0.04);
        s.capsule(&o(&lf.gripper), &body_end.coords, 0.022, colors::DARK);
        let fixed = lf.gripper
            * Isometry3::translation(FIXED_FINGER.0[0], FIXED_FINGER.0[1], FIXED_FINGER.0[2]);
        s.obb(&fixed, FIXED_FINGER.1, colors::FINGER);
        let moving = lf.moving_jaw
            * Isometry3::translation(MOVING_FINGER.0[0], MOVING_FINGER.0[1], MOVING_FINGER.0[2]);
        s.obb(&moving, MOVING_FINGER.1, colors::FINGER);
        let h = self.cfg.cube_size_m / 2.0;
        s.obb(&self.cube, [h, h, h], colors::CUBE);
        s
    }

    /// Render the head camera (RGB8, HWC, `image_height * image_width * 3`).
    pub fn render_head(&self, out: &mut [u8]) {
        render::render(&self.scene(), &self.head, out);
    }

    /// Render the wrist camera (RGB8, HWC).
    pub fn render_wrist(&self, out: &mut [u8]) {
        render::render(&self.scene(), &self.wrist_camera(), out);
    }

    /// The fixed head camera.
    pub fn head_camera(&self) -> &PinholeCamera {
        &self.head
    }

    /// The wrist camera at the current joints.
    pub fn wrist_camera(&self) -> PinholeCamera {
        PinholeCamera::with_pose(
            wrist_camera_pose(&self.gripper_pose()),
            WRIST_HFOV_RAD,
            self.cfg.image_width,
            self.cfg.image_height,
        )
    }

    /// Number of taxels: 2 pads x rows x cols.
    pub fn taxel_count(&self) -> usize {
        2 * self.cfg.taxel_rows * self.cfg.taxel_cols
    }

    /// Tactile pressures, pad-major then row-major (`[pad][row][col]`), into the
    /// first [`Self::taxel_count`] entries of `out` (0 when not touching).
    pub fn tactile(&self, out: &mut [f32]) {
        let n = self.taxel_count().min(out.len());
        out[..n].fill(0.0);
        if self.squeeze <= 0.0 {
            return;
        }
        let (rows, cols) = (self.cfg.taxel_rows, self.cfg.taxel_cols);
        let p = self.cfg.tactile_gain * self.squeeze;
        let h = self.cfg.cube_size_m / 2.0;
        let local = self.gripper_pose().inverse() * self.cube;
        let c = local.translation.vector;
        // Pad area on the finger: z in [tip + 2 mm, tip + 42 mm], y = +-1 cm.
        let (z0, z1) = (FINGER_TIP_Z + 0.002, FINGER_TIP_Z + 0.042);
        let (y0, y1) = (FIXED_FINGER.0[1] - 0.01, FIXED_FINGER.0[1] + 0.01);
        let (dz, dy) = ((z1 - z0) / rows as f64, (y1 - y0) / cols as f64);
        let cover = |centre: f64, pitch: f64, lo: f64, hi: f64| {
            let a = (centre - pitch / 2.0).max(lo);
            let b = (centre + pitch / 2.0).min(hi);
            ((b - a) / pitch).clamp(0.0, 1.0)
        };
        for pad in 0..2 {
            for r in 0..rows {
                let tz = z0 + (r as f64 + 0.5) * dz;
                let fz = cover(tz, dz, c.z - h, c.z + h);
                for col in 0..cols {
                    let ty = y0 + (col as f64 + 0.5) * dy;
                    let fy = cover(ty, dy, c.y - h, c.y + h);
                    let i = (pad * rows + r) * cols + col;
                    if i < n {
                        out[i] = (p * fz * fy) as f32;
                    }
                }
            }
        }
    }

    /// Cube centre (world, m).
    pub fn cube_position(&self) -> [f64; 3] {
        let t = self.cube.translation.vector;
        [t.x, t.y, t.z]
    }

    /// Cube pose (world).
    pub fn cube_pose(&self) -> Isometry3<f64> {
        self.cube
    }

    /// Put the cube down upright at `(x, y)` on the table with the given yaw
    /// (releases it if held). For fixtures and demos (e.g. disturbances).
    pub fn place_cube(&mut self, x: f64, y: f64, yaw: f64) {
        if !(x.is_finite() && y.is_finite() && yaw.is_finite()) {
            return;
        }
        self.cube = Isometry3::from_parts(
            Translation3::new(x, y, self.rest_z()),
            UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw),
        );
        self.cube_state = CubeState::Resting;
        self.squeeze = 0.0;
        self.jaw = self.jaw_free;
    }

    /// Whether the cube is held in the jaws.
    pub fn is_grasped(&self) -> bool {
        matches!(self.cube_state, CubeState::Grasped(_))
    }

    /// Cube lifted at least 5 cm above its resting height; in the slip variant
    /// also held (grasped with at least its hold squeeze) and not crushed.
    pub fn success(&self) -> bool {
        let lifted = self.cube.translation.z >= self.rest_z() + 0.05;
        match self.grip {
            None => lifted,
            Some(g) => lifted && self.is_grasped() && self.squeeze >= g.hold && !self.crushed,
        }
    }

    /// The episode's cube in the slip variant (hold and crush squeezes).
    pub fn grip(&self) -> Option<slip::CubeGrip> {
        self.grip
    }

    /// Slip variant: the cube was squeezed past its crush squeeze this episode.
    pub fn is_crushed(&self) -> bool {
        self.crushed
    }

    /// Squeeze beyond contact (rad), 0 when the jaws do not touch the cube.
    pub fn squeeze(&self) -> f64 {
        self.squeeze
    }

    /// Simulated time since the last reset (s).
    pub fn time(&self) -> f64 {
        self.time
    }

    /// TCP pose (world) at the current joints.
    pub fn tcp_pose(&self) -> Isometry3<f64> {
        self.link_frames().tcp
    }
}

/// Yaw of a rotation's `x` axis projected on the table plane (its `y` axis when
/// `x` is nearly vertical).
fn upright_yaw(r: &UnitQuaternion<f64>) -> f64 {
    let x = r * Vector3::x();
    if x.x.hypot(x.y) > 0.3 {
        x.y.atan2(x.x)
    } else {
        let y = r * Vector3::y();
        y.y.atan2(y.x) - std::f64::consts::FRAC_PI_2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grasp_joints(world: &SimWorld, z: f64) -> [f32; 6] {
        let c = world.cube_pose();
        let yaw = upright_yaw(&c.rotation);
        let p = Vector3::new(c.translation.x, c.translation.y, z);
        let home = lerobot_to_rad(&HOME_LEROBOT);
        let seed = [home[0], home[1], home[2], home[3], home[4]];
        let sol = kinematics::ik_position_down(&p, yaw, &seed, &kinematics::IkOptions::default())
            .expect("cube region is reachable top-down");
        let mut out = rad_to_lerobot(&[sol.q[0], sol.q[1], sol.q[2], sol.q[3], sol.q[4], 0.0]);
        out[5] = 50.0;
        out
    }

    fn run(world: &mut SimWorld, secs: f64) {
        let n = (secs / 0.01).round() as usize;
        for _ in 0..n {
            world.step(0.01);
        }
    }

    /// Teleport-free scripted grasp: open above, descend, close; returns the
    /// world in the closed state on the table.
    fn grasp(world: &mut SimWorld) {
        let h = world.rest_z();
        world.set_command(&grasp_joints(world, h + 0.07));
        run(world, 1.0);
        world.set_command(&grasp_joints(world, h - 0.002));
        run(world, 1.0);
        let mut cmd = grasp_joints(world, h - 0.002);
        cmd[5] = 0.0;
        world.set_command(&cmd);
        run(world, 0.6);
    }

    #[test]
    fn reset_is_deterministic_and_cube_is_in_the_region() {
        let mut a = SimWorld::new(SimConfig::default());
        let mut b = SimWorld::new(SimConfig::default());
        for ep in 0..20 {
            a.reset(ep);
            b.reset(ep);
            assert_eq!(a.cube_position(), b.cube_position());
            let [x, y, z] = a.cube_position();
            let r = (x - reach::PAN_AXIS_XY[0]).hypot(y - reach::PAN_AXIS_XY[1]);
            assert!((0.15..=0.21).contains(&r), "r {r}");
            assert!((z - 0.015).abs() < 1e-12);
        }
        a.reset(1);
        b.reset(2);
        assert_ne!(a.cube_position(), b.cube_position());
        let other = SimWorld::new(SimConfig {
            seed: 9,
            ..SimConfig::default()
        });
        assert_ne!(
            other.cube_position(),
            SimWorld::new(SimConfig::default()).cube_position()
        );
    }

    #[test]
    fn servo_follows_first_order_response() {
        let mut w = SimWorld::new(SimConfig::default());
        let start = w.joint_positions();
        let mut cmd = start;
        cmd[0] += 20.0;
        cmd[5] = 80.0;
        w.set_command(&cmd);
        let tau = w.config().servo_time_constant_s;
        for k in 1..=30 {
            w.step(0.005);
            let t = 0.005 * k as f64;
            let expect = start[0] as f64 + 20.0 * (1.0 - (-t / tau).exp());
            let got = w.joint_positions()[0] as f64;
            assert!((got - expect).abs() < 1e-3, "t {t}: {got} vs {expect}");
        }
        // After 1 s (20 tau) the joint has arrived.
        run(&mut w, 1.0);
        let q = w.joint_positions();
        assert!((q[0] - cmd[0]).abs() < 1e-3 && (q[5] - 80.0).abs() < 1e-3);
        // Non-finite commands are ignored, out-of-range ones clamped.
        w.set_command(&[f32::NAN, 1000.0, f32::INFINITY, 0.0, 0.0, -5.0]);
        run(&mut w, 1.0);
        let q = w.joint_positions();
        assert!((q[0] - cmd[0]).abs() < 1e-3);
        assert!((q[1] - limits_lerobot_units()[1].1).abs() < 1e-2);
        assert!((q[2] - cmd[2]).abs() < 1e-3);
        assert!(q[5].abs() < 1e-3);
    }

    #[test]
    fn grasp_lift_release() {
        let mut w = SimWorld::new(SimConfig::default());
        let mut taxels = vec![0.0f32; w.taxel_count()];
        assert_eq!(taxels.len(), 32);
        w.reset(3);
        let h = w.rest_z();
        w.set_command(&grasp_joints(&w, h + 0.07));
        run(&mut w, 1.0);
        w.set_command(&grasp_joints(&w, h - 0.002));
        run(&mut w, 1.0);
        // Open jaws around the cube: no contact.
        w.tactile(&mut taxels);
        assert!(taxels.iter().all(|&v| v == 0.0), "{taxels:?}");
        assert!(!w.is_grasped());
        let mut cmd = grasp_joints(&w, h - 0.002);
        cmd[5] = 0.0;
        w.set_command(&cmd);
        run(&mut w, 0.6);
        assert!(w.is_grasped());
        w.tactile(&mut taxels);
        let (pad0, pad1) = taxels.split_at(16);
        assert!(
            pad0.iter().any(|&v| v > 0.0) && pad1.iter().any(|&v| v > 0.0),
            "{taxels:?}"
        );
        assert!(taxels.iter().all(|&v| v >= 0.0));
        // The jaw stops on the cube (3 cm apart) instead of closing.
        assert!(w.joint_positions()[5] > 15.0, "{:?}", w.joint_positions());
        // Lift.
        let mut up = grasp_joints(&w, h + 0.08);
        up[5] = 0.0;
        w.set_command(&up);
        run(&mut w, 1.0);
        assert!(w.success(), "cube at {:?}", w.cube_position());
        let tcp = w.tcp_pose().translation.vector;
        let c = w.cube_position();
        assert!((tcp.x - c[0]).hypot(tcp.y - c[1]) < 0.02);
        // Release: the cube falls back onto the table.
        up[5] = 50.0;
        w.set_command(&up);
        run(&mut w, 0.1);
        assert!(!w.is_grasped());
        w.tactile(&mut taxels);
        assert!(taxels.iter().all(|&v| v == 0.0));
        run(&mut w, 1.0);
        assert!((w.cube_position()[2] - h).abs() < 1e-9);
        assert!(!w.success());
    }

    /// A grasped cube's face on the pads: the image is its footprint (exact area overlap,
    /// so the image and the taxels carry the same total load per pad), pad 1 is pad 0
    /// mirrored, noise is seeded per episode, and nothing touches before the grasp.
    #[test]
    fn tactile_images_show_the_grasped_face() {
        let quiet = SimConfig {
            tactile_noise_std: 0.0,
            ..SimConfig::default()
        };
        let mut w = SimWorld::new(quiet.clone());
        w.reset(3);
        let mut img = vec![1.0f32; w.tactile_image_len()];
        assert_eq!(img.len(), 2 * 16 * 16);
        w.tactile_image(&mut img);
        assert!(img.iter().all(|&v| v == 0.0));
        grasp(&mut w);
        assert!(w.is_grasped());
        w.tactile_image(&mut img);
        let mut taxels = vec![0.0f32; w.taxel_count()];
        w.tactile(&mut taxels);
        let (p0, p1) = img.split_at(256);
        // Load = sum of pressure x cell area; cells are 1/256 of the pad, taxels 1/16.
        let load = |v: &[f32], cells: f32| v.iter().sum::<f32>() / cells;
        assert!(load(p0, 256.0) > 0.0);
        assert!((load(p0, 256.0) - load(&taxels[..16], 16.0)).abs() < 1e-4 * load(p0, 256.0));
        for r in 0..16 {
            let mut mirrored = p1[r * 16..(r + 1) * 16].to_vec();
            mirrored.reverse();
            assert_eq!(mirrored, p0[r * 16..(r + 1) * 16].to_vec(), "row {r}");
        }
        // Rows nearest the tip carry the face, the far end of the pad does not.
        let row = |r: usize| p0[r * 16..(r + 1) * 16].iter().sum::<f32>();
        assert!(
            row(0) > 0.0 && row(15) == 0.0,
            "{:?}",
            (0..16).map(row).collect::<Vec<_>>()
        );
        // Still grasped, nothing slides: no shear.
        assert_eq!(w.slip, (0.0, 0.0));

        let noisy = |episode| {
            let mut w = SimWorld::new(SimConfig::default());
            w.reset(episode);
            let mut img = vec![0.0f32; w.tactile_image_len()];
            w.tactile_image(&mut img);
            img
        };
        let (a, b, c) = (noisy(3), noisy(3), noisy(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&v| v >= 0.0) && a.iter().any(|&v| v > 0.0));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        // Half-normal noise floor of std 0.01 where nothing touches: mean 0.01 / sqrt(2 pi).
        assert!((mean - 0.00399).abs() < 0.001, "{mean}");
    }

    #[test]
    fn closing_away_from_the_cube_grasps_nothing() {
        let mut w = SimWorld::new(SimConfig::default());
        w.reset(4);
        let mut cmd = HOME_LEROBOT;
        cmd[5] = 0.0;
        w.set_command(&cmd);
        run(&mut w, 1.0);
        let mut t = vec![0.0f32; w.taxel_count()];
        w.tactile(&mut t);
        assert!(t.iter().all(|&v| v == 0.0));
        assert!(!w.is_grasped());
    }

    #[test]
    fn images_are_deterministic_and_show_the_cube() {
        let cfg = SimConfig::default();
        let mut a = SimWorld::new(cfg.clone());
        let mut b = SimWorld::new(cfg.clone());
        a.reset(5);
        b.reset(5);
        let n = cfg.image_width * cfg.image_height * 3;
        let (mut ia, mut ib) = (vec![0u8; n], vec![0u8; n]);
        a.render_head(&mut ia);
        b.render_head(&mut ib);
        assert_eq!(ia, ib);
        let red = ia
            .chunks_exact(3)
            .filter(|p| p[0] > 100 && p[1] < 60 && p[2] < 60)
            .count();
        assert!(red > 10, "cube pixels {red}");
        // Wrist camera: above the cube, open jaws, both fingers and the cube in view.
        grasp(&mut a);
        a.render_wrist(&mut ia);
        let red = ia
            .chunks_exact(3)
            .filter(|p| p[0] > 100 && p[1] < 60 && p[2] < 60)
            .count();
        let grey = ia
            .chunks_exact(3)
            .filter(|p| p[0].abs_diff(p[2]) < 20 && p[0] > 40 && p[0] < 140)
            .count();
        assert!(red > 20 && grey > 20, "wrist: red {red}, finger {grey}");
        // Any image size works.
        let big = SimWorld::new(SimConfig {
            image_width: 640,
            image_height: 480,
            ..cfg
        });
        let mut img = vec![0u8; 640 * 480 * 3];
        big.render_head(&mut img);
        big.render_wrist(&mut img);
        assert!(img.iter().any(|&v| v != 0));
    }

    #[test]
    fn render_time() {
        let cfg = SimConfig::default();
        let mut w = SimWorld::new(cfg.clone());
        w.reset(1);
        let mut img = vec![0u8; cfg.image_width * cfg.image_height * 3];
        let n = 50;
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            w.render_head(&mut img);
            w.render_wrist(&mut img);
        }
        let per = t0.elapsed().as_secs_f64() / n as f64;
        println!(
            "render head+wrist 96x96: {:.3} ms per pair ({} build)",
            per * 1e3,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }

    #[test]
    fn head_camera_backprojection_finds_the_cube() {
        let cfg = SimConfig::default();
        let mut w = SimWorld::new(cfg.clone());
        let mut img = vec![0u8; cfg.image_width * cfg.image_height * 3];
        let mut worst: f64 = 0.0;
        let mut worst_yaw: f64 = 0.0;
        for ep in 0..20 {
            w.reset(ep);
            w.render_head(&mut img);
            let est = locate_cube(&img, w.head_camera(), cfg.cube_size_m).expect("cube visible");
            let c = w.cube_position();
            let err = (est.position.x - c[0]).hypot(est.position.y - c[1]);
            worst = worst.max(err);
            let true_yaw = upright_yaw(&w.cube_pose().rotation);
            let q = std::f64::consts::FRAC_PI_2;
            let dy = (est.yaw - true_yaw + q / 2.0).rem_euclid(q) - q / 2.0;
            worst_yaw = worst_yaw.max(dy.abs());
            assert!(err < 0.01, "episode {ep}: error {err} m");
        }
        println!("back-projection: worst {worst:.4} m, worst yaw error {worst_yaw:.3} rad");
    }

    /// Closed loop: sim at 100 Hz, expert at 30 Hz on freshly rendered images.
    fn run_expert_episode(
        world: &mut SimWorld,
        expert: &mut Expert,
        ep: u64,
        trace: Option<&mut Vec<[f32; 6]>>,
    ) -> bool {
        run_expert_episode_with(world, expert, ep, trace, 10.0, |_, _| {})
    }

    fn run_expert_episode_with(
        world: &mut SimWorld,
        expert: &mut Expert,
        ep: u64,
        trace: Option<&mut Vec<[f32; 6]>>,
        limit_s: f64,
        mut disturb: impl FnMut(&mut SimWorld, &Expert),
    ) -> bool {
        let cfg = world.config().clone();
        let mut img = vec![0u8; cfg.image_width * cfg.image_height * 3];
        let mut tac = vec![0.0f32; world.taxel_count()];
        world.reset(ep);
        expert.reset();
        let dt = 0.01;
        let mut next_act = 0.0;
        let mut trace = trace;
        while world.time() < limit_s {
            disturb(world, expert);
            if world.time() + 1e-9 >= next_act {
                world.render_head(&mut img);
                world.tactile(&mut tac);
                let cmd = expert.act(&img, &world.joint_positions(), &tac, world.time());
                world.set_command(&cmd);
                if let Some(tr) = trace.as_deref_mut() {
                    tr.push(world.joint_positions());
                }
                next_act += 1.0 / 30.0;
            }
            world.step(dt);
            if world.success() && expert.phase() == "hold" {
                return true;
            }
        }
        world.success()
    }

    #[test]
    fn expert_success_rate() {
        let cfg = SimConfig::default();
        let mut world = SimWorld::new(cfg.clone());
        let mut expert = Expert::new(&cfg);
        let n = 24;
        let mut ok = 0;
        for ep in 0..n {
            let s = run_expert_episode(&mut world, &mut expert, ep, None);
            if s {
                ok += 1;
            } else {
                println!(
                    "episode {ep} failed: phase {}, cube {:?}",
                    expert.phase(),
                    world.cube_position()
                );
            }
        }
        let rate = ok as f64 / n as f64;
        println!("expert success rate: {ok}/{n} = {rate:.2}");
        assert!(rate >= 0.9);
    }

    /// The slip variant: the expert squeezing by touch succeeds; fixed squeezes
    /// (the plain task's hard one, and light ones) do not.
    #[test]
    fn slip_variant_needs_touch() {
        let cfg = SimConfig {
            slip: Some(slip::SlipConfig::default()),
            ..SimConfig::default()
        };
        let mut world = SimWorld::new(cfg.clone());
        let mut expert = Expert::new(&cfg);
        let n = 20;
        let (mut ok, mut crushed, mut holds) = (0, 0, Vec::new());
        for ep in 0..n {
            let s = run_expert_episode_with(&mut world, &mut expert, ep, None, 15.0, |_, _| {});
            let g = world.grip().unwrap();
            holds.push(g.hold);
            ok += usize::from(s);
            crushed += usize::from(world.is_crushed());
            if !s {
                println!("episode {ep} failed: phase {}, hold {:.3}, squeeze {:.3}, crushed {}, cube {:?}", expert.phase(), g.hold, world.squeeze(), world.is_crushed(), world.cube_position());
            }
        }
        println!(
            "touch expert on the slip variant: {ok}/{n}, crushed {crushed}; holds {holds:.3?}"
        );
        assert!(ok as f64 >= 0.95 * n as f64, "{ok}/{n}");
        // The plain expert squeezes hard: every cube is crushed.
        let plain = SimConfig::default();
        let mut hard = Expert::new(&plain);
        let mut hard_ok = 0;
        for ep in 0..6 {
            hard_ok += usize::from(run_expert_episode_with(
                &mut world,
                &mut hard,
                ep,
                None,
                15.0,
                |_, _| {},
            ));
            assert!(world.is_crushed(), "episode {ep}: hold {:?}", world.grip());
            assert_eq!(Outcome::judge(&world, false, true), Outcome::Crushed);
        }
        assert_eq!(hard_ok, 0);
        // A cube never touched, and one held but not lifted, are told apart.
        world.reset(99);
        assert_eq!(Outcome::judge(&world, false, false), Outcome::NeverGrasped);
        assert_eq!(Outcome::judge(&world, false, true), Outcome::Dropped);
        assert_eq!(Outcome::judge(&world, true, true), Outcome::Success);
    }

    #[test]
    fn expert_replans_after_a_missed_grasp() {
        let cfg = SimConfig::default();
        let mut world = SimWorld::new(cfg.clone());
        let mut expert = Expert::new(&cfg);
        let mut moved = false;
        // While the gripper comes down, slide the cube 5 cm sideways: the first
        // grasp closes on nothing, the expert must re-locate and try again.
        let ok = run_expert_episode_with(&mut world, &mut expert, 2, None, 15.0, |w, e| {
            if !moved && e.phase() == "descend" {
                let [x, y, _] = w.cube_position();
                let yaw = upright_yaw(&w.cube_pose().rotation);
                w.place_cube(x + 0.05, y, yaw + 0.3);
                moved = true;
            }
        });
        assert!(moved);
        assert!(expert.attempts() >= 2, "attempts {}", expert.attempts());
        assert!(
            ok,
            "phase {}, cube {:?}",
            expert.phase(),
            world.cube_position()
        );
        println!("re-planned grasp succeeded at t = {:.2} s", world.time());
    }

    #[test]
    fn expert_trajectories_are_deterministic() {
        let cfg = SimConfig::default();
        let mut wa = SimWorld::new(cfg.clone());
        let mut wb = SimWorld::new(cfg.clone());
        let (mut ea, mut eb) = (Expert::new(&cfg), Expert::new(&cfg));
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        run_expert_episode(&mut wa, &mut ea, 7, Some(&mut ta));
        run_expert_episode(&mut wb, &mut eb, 7, Some(&mut tb));
        assert_eq!(ta, tb);
        assert_eq!(wa.cube_position(), wb.cube_position());
    }
}
