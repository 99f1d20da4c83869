//! SO-101 forward / inverse kinematics (f64, nalgebra), built from the URDF
//! joint chain in `shared/design/SO101.md` ("new calibration" variant).
//!
//! # Conventions
//!
//! * **Frames.** Every pose is expressed in the URDF `base` link frame unless said
//!   otherwise. The arm stands on the table and the `base` origin is taken to lie
//!   on the table surface, so the table top is the plane `z = 0` of `base`
//!   (`+z` up). In the zero pose the arm stretches towards `-y` of `base`; we
//!   call `-y` "in front of the arm" (see [`reach`] for the reachable region).
//! * **URDF origins.** A joint origin `(xyz, rpy)` places the child frame at
//!   `xyz` in the parent frame, rotated by `R = Rz(yaw) * Ry(pitch) * Rx(roll)`
//!   (fixed-axis roll-pitch-yaw). Each revolute joint then rotates the child
//!   frame by its angle about its own local `z`.
//! * **Joint units.** Internally radians, URDF sign. LeRobot degrees map onto
//!   URDF radians with the *identity sign* (`rad = deg.to_radians()`) for joints
//!   1-5, since the "new calibration" URDF puts 0 at LeRobot's calibration
//!   midpoint. The gripper's `0..100` maps linearly onto the jaw range
//!   `[-0.174533, 1.74533]` rad: `0` = closed (lower limit), `100` = fully open.
//! * **Tool centre point.** The TCP is the URDF `gripperframe` fixed on the
//!   `gripper` link. In TCP coordinates the *approach* direction (from the wrist
//!   towards the finger tips) is `-y` ([`APPROACH_AXIS_TCP`]), and the *closing*
//!   axis (from the fixed finger towards the moving jaw, i.e. the direction the
//!   moving jaw opens) is `+z` ([`CLOSING_AXIS_TCP`]).
//! * **Jacobian.** Geometric, expressed in `base`, rows `[v; w]` (linear velocity
//!   of the TCP origin first, angular velocity second).
//! * **Gripper yaw.** For top-down grasps ([`top_down_rotation`]) the yaw is the
//!   angle of the closing axis in the table plane, measured from `+x` of `base`
//!   towards `+y`.

use nalgebra::{
    Isometry3, Matrix5, Matrix6x5, Rotation3, Translation3, UnitQuaternion, Vector3, Vector5,
    Vector6,
};

use crate::so101::URDF_LIMITS_RAD;

/// Number of arm joints (the gripper jaw excluded).
pub const ARM_JOINTS: usize = 5;

/// One URDF joint: where the child frame sits in the parent frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UrdfJoint {
    /// URDF joint name.
    pub name: &'static str,
    /// Parent link.
    pub parent: &'static str,
    /// Child link.
    pub child: &'static str,
    /// Origin translation (m).
    pub xyz: [f64; 3],
    /// Origin roll, pitch, yaw (rad), fixed axes.
    pub rpy: [f64; 3],
}

/// The six revolute joints of the SO-101, in LeRobot order (5 arm joints + jaw).
/// Values are the URDF's verbatim (its 3.14159 / 1.5708 are not exact pi).
#[allow(clippy::approx_constant)]
pub const URDF_JOINTS: [UrdfJoint; 6] = [
    UrdfJoint {
        name: "shoulder_pan",
        parent: "base",
        child: "shoulder",
        xyz: [0.0207909, -0.0230745, 0.0948817],
        rpy: [-3.14159, 0.0, 1.5708],
    },
    UrdfJoint {
        name: "shoulder_lift",
        parent: "shoulder",
        child: "upper_arm",
        xyz: [-0.0303992, -0.0182778, -0.0542],
        rpy: [-1.5708, -1.5708, 0.0],
    },
    UrdfJoint {
        name: "elbow_flex",
        parent: "upper_arm",
        child: "lower_arm",
        xyz: [-0.11257, -0.028, 0.0],
        rpy: [0.0, 0.0, 1.5708],
    },
    UrdfJoint {
        name: "wrist_flex",
        parent: "lower_arm",
        child: "wrist",
        xyz: [-0.1349, 0.0052, 0.0],
        rpy: [0.0, 0.0, -1.5708],
    },
    UrdfJoint {
        name: "wrist_roll",
        parent: "wrist",
        child: "gripper",
        xyz: [0.0, -0.0611, 0.0181],
        rpy: [1.5708, 0.0, 3.14159],
    },
    UrdfJoint {
        name: "gripper",
        parent: "gripper",
        child: "moving_jaw",
        xyz: [0.0202, 0.0188, -0.0234],
        rpy: [1.5708, 0.0, 0.0],
    },
];

/// `gripperframe` (TCP) origin on the `gripper` link: translation (m).
pub const GRIPPERFRAME_XYZ: [f64; 3] = [-0.0079, -0.000218, -0.0981274];
/// `gripperframe` (TCP) origin on the `gripper` link: roll, pitch, yaw (rad).
#[allow(clippy::approx_constant)]
pub const GRIPPERFRAME_RPY: [f64; 3] = [1.5708, 0.0, 1.5708];
/// `baseframe` origin on the `base` link (no rotation).
pub const BASEFRAME_XYZ: [f64; 3] = [0.020791, 0.0157608, 0.0324817];

/// Approach direction (wrist -> finger tips) in TCP coordinates.
pub const APPROACH_AXIS_TCP: [f64; 3] = [0.0, -1.0, 0.0];
/// Closing axis (fixed finger -> moving jaw) in TCP coordinates.
pub const CLOSING_AXIS_TCP: [f64; 3] = [0.0, 0.0, 1.0];

/// Rigid transform of a URDF origin: translation `xyz`, rotation
/// `Rz(yaw) * Ry(pitch) * Rx(roll)`.
pub fn urdf_origin(xyz: &[f64; 3], rpy: &[f64; 3]) -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::new(xyz[0], xyz[1], xyz[2]),
        UnitQuaternion::from_euler_angles(rpy[0], rpy[1], rpy[2]),
    )
}

/// Rotation by `angle` about local `z` (a revolute joint's motion).
fn rot_z(angle: f64) -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::identity(),
        UnitQuaternion::from_axis_angle(&Vector3::z_axis(), angle),
    )
}

/// Pose of the `gripperframe` (TCP) in the `gripper` link frame.
pub fn gripper_to_tcp() -> Isometry3<f64> {
    urdf_origin(&GRIPPERFRAME_XYZ, &GRIPPERFRAME_RPY)
}

/// Pose of the `baseframe` in the `base` frame.
pub fn baseframe() -> Isometry3<f64> {
    urdf_origin(&BASEFRAME_XYZ, &[0.0, 0.0, 0.0])
}

/// Joint limits (rad) of the five arm joints.
pub fn arm_limits() -> [(f64, f64); ARM_JOINTS] {
    let mut l = [(0.0, 0.0); ARM_JOINTS];
    l.copy_from_slice(&URDF_LIMITS_RAD[..ARM_JOINTS]);
    l
}

/// Clamp arm joint angles (rad) into the URDF limits.
pub fn clamp_arm(q: &mut [f64; ARM_JOINTS]) {
    for (qi, (lo, hi)) in q.iter_mut().zip(URDF_LIMITS_RAD.iter()) {
        *qi = qi.clamp(*lo, *hi);
    }
}

/// LeRobot units -> URDF radians. Joints 1-5: degrees -> radians, identity sign.
/// Gripper: `0..100` -> `[-0.174533, 1.74533]` rad linearly (values outside
/// `0..100` extrapolate; clamp first if needed).
pub fn lerobot_to_rad(q: &[f32; 6]) -> [f64; 6] {
    let mut out = [0.0; 6];
    for i in 0..ARM_JOINTS {
        out[i] = (q[i] as f64).to_radians();
    }
    let (lo, hi) = URDF_LIMITS_RAD[5];
    out[5] = lo + (q[5] as f64) / 100.0 * (hi - lo);
    out
}

/// URDF radians -> LeRobot units (inverse of [`lerobot_to_rad`]).
pub fn rad_to_lerobot(q: &[f64; 6]) -> [f32; 6] {
    let mut out = [0.0f32; 6];
    for i in 0..ARM_JOINTS {
        out[i] = q[i].to_degrees() as f32;
    }
    let (lo, hi) = URDF_LIMITS_RAD[5];
    out[5] = ((q[5] - lo) / (hi - lo) * 100.0) as f32;
    out
}

/// World (`base`) poses of every link of the arm for a full joint vector
/// (5 arm joints + jaw angle, rad).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkFrames {
    /// `base` link (identity).
    pub base: Isometry3<f64>,
    /// `shoulder` link.
    pub shoulder: Isometry3<f64>,
    /// `upper_arm` link.
    pub upper_arm: Isometry3<f64>,
    /// `lower_arm` link.
    pub lower_arm: Isometry3<f64>,
    /// `wrist` link.
    pub wrist: Isometry3<f64>,
    /// `gripper` link (carries the fixed finger).
    pub gripper: Isometry3<f64>,
    /// `moving_jaw` link.
    pub moving_jaw: Isometry3<f64>,
    /// `gripperframe` (TCP).
    pub tcp: Isometry3<f64>,
}

/// Poses of all links for joint angles `q` (rad; `q[5]` is the jaw angle).
pub fn link_frames(q: &[f64; 6]) -> LinkFrames {
    let mut frames = [Isometry3::identity(); 7];
    for (i, j) in URDF_JOINTS.iter().enumerate() {
        frames[i + 1] = frames[i] * urdf_origin(&j.xyz, &j.rpy) * rot_z(q[i]);
    }
    // The moving jaw hangs off `gripper` (frames[5]), not off its predecessor in
    // the array; joint 6's parent is `gripper`, which *is* frames[5].
    let tcp = frames[5] * gripper_to_tcp();
    LinkFrames {
        base: frames[0],
        shoulder: frames[1],
        upper_arm: frames[2],
        lower_arm: frames[3],
        wrist: frames[4],
        gripper: frames[5],
        moving_jaw: frames[6],
        tcp,
    }
}

/// Joint frames (after the origin transform and the joint rotation) of the 5 arm
/// joints, plus the TCP pose.
fn arm_frames(q: &[f64; ARM_JOINTS]) -> ([Isometry3<f64>; ARM_JOINTS], Isometry3<f64>) {
    let mut t = Isometry3::identity();
    let mut out = [Isometry3::identity(); ARM_JOINTS];
    for i in 0..ARM_JOINTS {
        let j = &URDF_JOINTS[i];
        t = t * urdf_origin(&j.xyz, &j.rpy) * rot_z(q[i]);
        out[i] = t;
    }
    (out, t * gripper_to_tcp())
}

/// Pose of the TCP (`gripperframe`) in the `base` frame.
pub fn fk(q: &[f64; ARM_JOINTS]) -> Isometry3<f64> {
    arm_frames(q).1
}

/// Geometric Jacobian of the TCP in `base`: rows 0-2 linear velocity of the TCP
/// origin, rows 3-5 angular velocity; column `i` is joint `i`.
pub fn jacobian(q: &[f64; ARM_JOINTS]) -> Matrix6x5<f64> {
    let (frames, tcp) = arm_frames(q);
    let p = tcp.translation.vector;
    let mut j = Matrix6x5::zeros();
    for (i, f) in frames.iter().enumerate() {
        let z = f.rotation * Vector3::z();
        let lin = z.cross(&(p - f.translation.vector));
        j.fixed_view_mut::<3, 1>(0, i).copy_from(&lin);
        j.fixed_view_mut::<3, 1>(3, i).copy_from(&z);
    }
    j
}

/// TCP orientation for a top-down grasp: approach straight down (`-z` of
/// `base`), closing axis at angle `yaw` from `+x` in the table plane.
pub fn top_down_rotation(yaw: f64) -> UnitQuaternion<f64> {
    let (s, c) = yaw.sin_cos();
    // Columns = TCP axes in base: x = y x z, y = -approach = +z_world, z = closing.
    let z = Vector3::new(c, s, 0.0);
    let y = Vector3::z();
    let x = y.cross(&z);
    UnitQuaternion::from_rotation_matrix(&Rotation3::from_basis_unchecked(&[x, y, z]))
}

/// Options of the damped-least-squares IK.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IkOptions {
    /// Iterations per start.
    pub max_iters: usize,
    /// Damping `lambda` of `dq = (J^T W J + lambda^2 I)^-1 J^T W e`.
    pub damping: f64,
    /// Position tolerance (m).
    pub pos_tol: f64,
    /// Rotation tolerance (rad, angle of the residual rotation).
    pub rot_tol: f64,
    /// Weight of the rotation rows relative to the position rows (m/rad).
    pub orientation_weight: f64,
    /// Largest joint step per iteration (rad).
    pub max_step: f64,
    /// Extra deterministic starts tried when the first one does not converge.
    pub restarts: usize,
}

impl Default for IkOptions {
    fn default() -> Self {
        Self {
            max_iters: 150,
            damping: 1e-3,
            pos_tol: 1e-4,
            rot_tol: 1e-3,
            orientation_weight: 0.2,
            max_step: 0.25,
            restarts: 32,
        }
    }
}

/// A converged (or best-effort) IK result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IkSolution {
    /// Arm joint angles (rad), within limits.
    pub q: [f64; ARM_JOINTS],
    /// Iterations spent (all starts together).
    pub iterations: usize,
    /// Final TCP position error (m).
    pub pos_err: f64,
    /// Final TCP rotation error (rad).
    pub rot_err: f64,
}

/// IK failures.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum IkError {
    /// No start reached the tolerances; the errors are those of the best attempt.
    #[error(
        "IK did not converge after {iters} iterations: best position error {pos_err:.5} m, \
         rotation error {rot_err:.5} rad"
    )]
    NotConverged {
        /// Best position error (m).
        pos_err: f64,
        /// Rotation error (rad) of that attempt.
        rot_err: f64,
        /// Iterations spent.
        iters: usize,
    },
    /// The target or the initial guess contains NaN / infinity.
    #[error("IK target or initial guess is not finite")]
    NonFinite,
}

/// Pose error `(position, rotation)` of `cur` w.r.t. `target`: world-frame
/// translation difference and rotation vector `log(R_t R_c^T)`.
fn pose_error(target: &Isometry3<f64>, cur: &Isometry3<f64>) -> (Vector3<f64>, Vector3<f64>) {
    let dp = target.translation.vector - cur.translation.vector;
    let dr = (target.rotation * cur.rotation.inverse()).scaled_axis();
    (dp, dr)
}

/// Deterministic start number `k >= 1`: `shoulder_pan` aimed at the target
/// (alternately the direct and the over-the-shoulder solution), the other joints
/// spread over their ranges (Halton sequence, middle 80 % of each range).
fn restart_guess(k: usize, target: &Vector3<f64>) -> [f64; ARM_JOINTS] {
    const PRIMES: [usize; ARM_JOINTS] = [2, 3, 5, 7, 11];
    let mut q = [0.0; ARM_JOINTS];
    for (i, p) in PRIMES.iter().enumerate() {
        let (mut f, mut r, mut n) = (1.0, 0.0, k);
        while n > 0 {
            f /= *p as f64;
            r += f * (n % p) as f64;
            n /= p;
        }
        let (lo, hi) = URDF_LIMITS_RAD[i];
        q[i] = lo + (hi - lo) * (0.1 + 0.8 * r);
    }
    // Bearing of the target from the pan axis, counter-clockwise from the
    // forward direction (-y); shoulder_pan turns the other way (its axis is -z).
    let dx = target.x - reach::PAN_AXIS_XY[0];
    let dy = target.y - reach::PAN_AXIS_XY[1];
    if dx.hypot(dy) > 1e-6 {
        let bearing = dx.atan2(-dy);
        let direct = -bearing;
        let back = if direct > 0.0 {
            direct - std::f64::consts::PI
        } else {
            direct + std::f64::consts::PI
        };
        let (lo, hi) = URDF_LIMITS_RAD[0];
        q[0] = if k % 2 == 1 { direct } else { back }.clamp(lo, hi);
    }
    q
}

/// Weighted pose error vector `[dp; w * dr]` and its parts' norms.
fn weighted_error(
    target: &Isometry3<f64>,
    q: &[f64; ARM_JOINTS],
    w: f64,
) -> (Vector6<f64>, f64, f64) {
    let (dp, dr) = pose_error(target, &fk(q));
    let e = Vector6::new(dp.x, dp.y, dp.z, w * dr.x, w * dr.y, w * dr.z);
    (e, dp.norm(), dr.norm())
}

/// One damped-least-squares run from `q0` (Levenberg-Marquardt style: the
/// damping starts at `opts.damping`, shrinks after a step that lowers the
/// weighted error and grows after one that does not, which is then undone).
/// Joints sitting on a limit whose step would push them further out are frozen
/// for that step, so the others keep converging along the limit.
/// Returns the final joints, iterations, position and rotation errors.
fn dls_run(
    target: &Isometry3<f64>,
    q0: &[f64; ARM_JOINTS],
    opts: &IkOptions,
) -> ([f64; ARM_JOINTS], usize, f64, f64) {
    let w = opts.orientation_weight.max(0.0);
    let lambda_min = opts.damping.max(1e-9);
    let mut lambda = lambda_min;
    let mut q = *q0;
    clamp_arm(&mut q);
    let (mut e, mut pe, mut re) = weighted_error(target, &q, w);
    let mut iters = 0;
    while !(pe < opts.pos_tol && re < opts.rot_tol) && iters < opts.max_iters {
        iters += 1;
        let mut j = jacobian(&q);
        for r in 3..6 {
            for c in 0..ARM_JOINTS {
                j[(r, c)] *= w;
            }
        }
        let mut dq = Vector5::zeros();
        for pass in 0..2 {
            let a: Matrix5<f64> = j.transpose() * j + Matrix5::identity() * (lambda * lambda);
            let b: Vector5<f64> = j.transpose() * e;
            match a.cholesky() {
                Some(c) => dq = c.solve(&b),
                None => return (q, iters, pe, re),
            }
            if pass == 1 {
                break;
            }
            // Freeze joints blocked by a limit and solve again without them.
            let mut blocked = false;
            for i in 0..ARM_JOINTS {
                let (lo, hi) = URDF_LIMITS_RAD[i];
                if (q[i] <= lo && dq[i] < 0.0) || (q[i] >= hi && dq[i] > 0.0) {
                    j.column_mut(i).fill(0.0);
                    blocked = true;
                }
            }
            if !blocked {
                break;
            }
        }
        let n = dq.amax();
        let scale = if n > opts.max_step {
            opts.max_step / n
        } else {
            1.0
        };
        let mut qn = q;
        for i in 0..ARM_JOINTS {
            qn[i] += scale * dq[i];
        }
        clamp_arm(&mut qn);
        let (en, pn, rn) = weighted_error(target, &qn, w);
        if en.norm_squared() < e.norm_squared() {
            (q, e, pe, re) = (qn, en, pn, rn);
            lambda = (lambda * 0.5).max(lambda_min);
        } else {
            lambda *= 4.0;
            if lambda > 1e3 {
                break;
            }
        }
    }
    (q, iters, pe, re)
}

/// Best-effort weighted DLS IK: tries `q_init` then `opts.restarts` spread-out
/// starts, stops at the first one within tolerance, otherwise returns the attempt
/// with the smallest weighted error. Never fails except on non-finite input.
pub fn ik_best_effort(
    target: &Isometry3<f64>,
    q_init: &[f64; ARM_JOINTS],
    opts: &IkOptions,
) -> Result<IkSolution, IkError> {
    let finite = target.translation.vector.iter().all(|v| v.is_finite())
        && target.rotation.coords.iter().all(|v| v.is_finite())
        && q_init.iter().all(|v| v.is_finite());
    if !finite {
        return Err(IkError::NonFinite);
    }
    let w = opts.orientation_weight.max(0.0);
    let mut total = 0;
    let mut best: Option<IkSolution> = None;
    for k in 0..=opts.restarts {
        let start = if k == 0 {
            *q_init
        } else {
            restart_guess(k, &target.translation.vector)
        };
        let (q, it, pe, re) = dls_run(target, &start, opts);
        total += it;
        let sol = IkSolution {
            q,
            iterations: total,
            pos_err: pe,
            rot_err: re,
        };
        if pe < opts.pos_tol && re < opts.rot_tol {
            return Ok(sol);
        }
        let better = match &best {
            None => true,
            Some(b) => pe + w * re < b.pos_err + w * b.rot_err,
        };
        if better {
            best = Some(sol);
        }
    }
    match best {
        Some(mut b) => {
            b.iterations = total;
            Ok(b)
        }
        None => Err(IkError::NonFinite),
    }
}

/// Damped-least-squares IK for a full 6-D TCP pose (in `base`). Joint limits are
/// enforced by clamping after every step. Errors with
/// [`IkError::NotConverged`] when no start meets `pos_tol` and `rot_tol`.
pub fn ik(
    target: &Isometry3<f64>,
    q_init: &[f64; ARM_JOINTS],
    opts: &IkOptions,
) -> Result<IkSolution, IkError> {
    let sol = ik_best_effort(target, q_init, opts)?;
    if sol.pos_err < opts.pos_tol && sol.rot_err < opts.rot_tol {
        Ok(sol)
    } else {
        Err(IkError::NotConverged {
            pos_err: sol.pos_err,
            rot_err: sol.rot_err,
            iters: sol.iterations,
        })
    }
}

/// IK for a top-down grasp: TCP at `target_pos`, approach straight down (`-z`
/// of `base`), closing axis at `yaw` (see [`top_down_rotation`]).
///
/// The SO-101 has 5 DoF, so not every 6-D pose is reachable. A vertical approach
/// *with any yaw* is, though, wherever the position is inside the top-down
/// workspace (the three pitch joints put the roll axis vertical, `shoulder_pan`
/// points the arm's plane at the target, `wrist_roll` sets the yaw, within its
/// ±160°), see [`reach`]. The solve weights position over orientation
/// (`orientation_weight`, default 0.2 m/rad) so that outside that region the
/// result degrades into "right place, tilted gripper"; it is reported as
/// converged only when both tolerances hold.
///
/// A parallel gripper is symmetric under a half turn about the approach axis,
/// so both closing directions `yaw` and `yaw + pi` are tried (wrist_roll cannot
/// turn a full circle); the converged solution closest to `q_init` wins. The
/// returned closing axis is therefore `±(cos yaw, sin yaw, 0)`.
pub fn ik_position_down(
    target_pos: &Vector3<f64>,
    yaw: f64,
    q_init: &[f64; ARM_JOINTS],
    opts: &IkOptions,
) -> Result<IkSolution, IkError> {
    if !yaw.is_finite() {
        return Err(IkError::NonFinite);
    }
    let base = wrap_half_turn(yaw);
    let targets = [base, base + std::f64::consts::PI]
        .map(|y| Isometry3::from_parts(Translation3::from(*target_pos), top_down_rotation(y)));
    // First both candidates from `q_init` alone (cheap), restarts only if needed.
    let quick = IkOptions {
        restarts: 0,
        ..*opts
    };
    let mut last_err = IkError::NonFinite;
    for o in [&quick, opts] {
        let mut best: Option<(f64, IkSolution)> = None;
        for t in &targets {
            match ik(t, q_init, o) {
                Ok(sol) => {
                    let d: f64 = sol
                        .q
                        .iter()
                        .zip(q_init.iter())
                        .map(|(a, b)| (a - b).abs())
                        .sum();
                    if best.as_ref().is_none_or(|(bd, _)| d < *bd) {
                        best = Some((d, sol));
                    }
                }
                Err(e) => last_err = e,
            }
        }
        if let Some((_, s)) = best {
            return Ok(s);
        }
        if opts.restarts == 0 {
            break;
        }
    }
    Err(last_err)
}

/// Wrap an angle into `(-pi/2, pi/2]` (symmetry of a parallel gripper).
pub fn wrap_half_turn(a: f64) -> f64 {
    use std::f64::consts::PI;
    let mut a = a.rem_euclid(PI);
    if a > PI / 2.0 {
        a -= PI;
    }
    a
}

/// The reachable top-down workspace used by the simulator and its tests.
///
/// Measured with [`ik_position_down`] (see the `top_down_reach_region` test):
/// a vertical grasp converges for every yaw, with the TCP anywhere from 1.5 cm
/// (a 3 cm cube's centre) to [`reach::Z_MAX`] above the table, over the annular
/// sector centred on the
/// `shoulder_pan` axis, radius [`reach::R_MIN`]..[`reach::R_MAX`], bearing
/// within ±[`reach::BEARING_MAX`] of the arm's forward direction (`-y` of
/// `base`). (Wider regions converge too: close to the table radius 0.06-0.26 m
/// and bearings up to ±1.85 rad, but only 0.10-0.22 m at 10 cm height; the
/// sector above is what the simulator samples cubes from.)
pub mod reach {
    /// Horizontal position of the `shoulder_pan` axis in `base` (x, y).
    pub const PAN_AXIS_XY: [f64; 2] = [0.0207909, -0.0230745];
    /// Smallest horizontal distance from the pan axis (m).
    pub const R_MIN: f64 = 0.14;
    /// Largest horizontal distance from the pan axis (m).
    pub const R_MAX: f64 = 0.22;
    /// Largest bearing from the forward direction (rad).
    pub const BEARING_MAX: f64 = 0.8;
    /// Highest TCP height (m above the table) checked over the whole sector.
    pub const Z_MAX: f64 = 0.10;
    /// Forward direction of the arm in `base` (unit, horizontal).
    pub const FORWARD: [f64; 2] = [0.0, -1.0];

    /// Table-plane point at distance `r` from the pan axis and `bearing` (rad,
    /// counter-clockwise seen from above, i.e. positive bearings lean towards `+x`).
    pub fn point(r: f64, bearing: f64) -> [f64; 2] {
        let (s, c) = bearing.sin_cos();
        // Rotate FORWARD by `bearing` counter-clockwise.
        let dx = c * FORWARD[0] - s * FORWARD[1];
        let dy = s * FORWARD[0] + c * FORWARD[1];
        [PAN_AXIS_XY[0] + r * dx, PAN_AXIS_XY[1] + r * dy]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Matrix4;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Hand-built homogeneous transform: translation + Rz(yaw) Ry(pitch) Rx(roll).
    fn h(xyz: [f64; 3], rpy: [f64; 3]) -> Matrix4<f64> {
        let (sr, cr) = rpy[0].sin_cos();
        let (sp, cp) = rpy[1].sin_cos();
        let (sy, cy) = rpy[2].sin_cos();
        let rx = Matrix4::new(
            1.0, 0.0, 0.0, 0.0, 0.0, cr, -sr, 0.0, 0.0, sr, cr, 0.0, 0.0, 0.0, 0.0, 1.0,
        );
        let ry = Matrix4::new(
            cp, 0.0, sp, 0.0, 0.0, 1.0, 0.0, 0.0, -sp, 0.0, cp, 0.0, 0.0, 0.0, 0.0, 1.0,
        );
        let rz = Matrix4::new(
            cy, -sy, 0.0, 0.0, sy, cy, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0,
        );
        let mut t = Matrix4::identity();
        t[(0, 3)] = xyz[0];
        t[(1, 3)] = xyz[1];
        t[(2, 3)] = xyz[2];
        t * rz * ry * rx
    }

    /// Independent FK: the table of SO101.md typed in again, plain 4x4 products.
    #[allow(clippy::approx_constant)]
    fn fk_by_hand(q: [f64; 5]) -> Matrix4<f64> {
        let rz = |a: f64| h([0.0; 3], [0.0, 0.0, a]);
        h([0.0207909, -0.0230745, 0.0948817], [-3.14159, 0.0, 1.5708])
            * rz(q[0])
            * h([-0.0303992, -0.0182778, -0.0542], [-1.5708, -1.5708, 0.0])
            * rz(q[1])
            * h([-0.11257, -0.028, 0.0], [0.0, 0.0, 1.5708])
            * rz(q[2])
            * h([-0.1349, 0.0052, 0.0], [0.0, 0.0, -1.5708])
            * rz(q[3])
            * h([0.0, -0.0611, 0.0181], [1.5708, 0.0, 3.14159])
            * rz(q[4])
            * h([-0.0079, -0.000218, -0.0981274], [1.5708, 0.0, 1.5708])
    }

    fn assert_pose_eq(a: &Isometry3<f64>, m: &Matrix4<f64>, tol: f64) {
        let am = a.to_homogeneous();
        let d = (am - m).amax();
        assert!(d < tol, "pose mismatch {d}\n{am}\nvs\n{m}");
    }

    fn random_q(rng: &mut ChaCha8Rng, margin: f64) -> [f64; 5] {
        let mut q = [0.0; 5];
        for (i, qi) in q.iter_mut().enumerate() {
            let (lo, hi) = URDF_LIMITS_RAD[i];
            *qi = rng.random_range(lo + margin..hi - margin);
        }
        q
    }

    #[test]
    fn fk_zero_pose_matches_hand_computation() {
        let q = [0.0; 5];
        assert_pose_eq(&fk(&q), &fk_by_hand(q), 1e-12);
        // The arm stretches towards -y at zero and the TCP sits above the table.
        let p = fk(&q).translation.vector;
        assert!(p.y < -0.2 && p.z > 0.0, "{p}");
    }

    #[test]
    fn fk_other_poses_match_hand_computation() {
        for q in [[0.5, -0.3, 0.8, -1.0, 1.2], [-1.2, 1.0, -1.5, 0.4, -2.0]] {
            assert_pose_eq(&fk(&q), &fk_by_hand(q), 1e-12);
        }
    }

    #[test]
    fn link_frames_consistent_with_fk() {
        let q6 = [0.3, -0.2, 0.4, 0.1, -0.5, 0.7];
        let lf = link_frames(&q6);
        let q5 = [q6[0], q6[1], q6[2], q6[3], q6[4]];
        assert_pose_eq(&lf.tcp, &fk_by_hand(q5), 1e-12);
        assert_eq!(lf.base, Isometry3::identity());
        // Jaw pivot expressed in the gripper frame is the joint origin.
        let pivot = lf.gripper.inverse() * lf.moving_jaw;
        assert!((pivot.translation.vector - Vector3::new(0.0202, 0.0188, -0.0234)).norm() < 1e-12);
        // The approach axis points from the wrist towards the TCP.
        let a = lf.tcp.rotation * Vector3::from(APPROACH_AXIS_TCP);
        let d = (lf.tcp.translation.vector - lf.gripper.translation.vector).normalize();
        assert!(a.dot(&d) > 0.99, "{a} vs {d}");
    }

    #[test]
    fn unit_conversions_round_trip() {
        let q = [10.0f32, -20.0, 30.5, -45.0, 90.0, 37.5];
        let r = lerobot_to_rad(&q);
        assert!((r[0] - 10f64.to_radians()).abs() < 1e-9);
        assert!((lerobot_to_rad(&[0.0; 6])[5] + 0.174533).abs() < 1e-9);
        let mut open = [0.0f32; 6];
        open[5] = 100.0;
        assert!((lerobot_to_rad(&open)[5] - 1.74533).abs() < 1e-9);
        let back = rad_to_lerobot(&r);
        for i in 0..6 {
            assert!((back[i] - q[i]).abs() < 1e-4, "{i}: {back:?}");
        }
    }

    #[test]
    fn jacobian_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20 {
            let q = random_q(&mut rng, 0.05);
            let j = jacobian(&q);
            let eps = 1e-6;
            for c in 0..5 {
                let mut qp = q;
                let mut qm = q;
                qp[c] += eps;
                qm[c] -= eps;
                let (tp, tm) = (fk(&qp), fk(&qm));
                let v = (tp.translation.vector - tm.translation.vector) / (2.0 * eps);
                let w = (tp.rotation * tm.rotation.inverse()).scaled_axis() / (2.0 * eps);
                for r in 0..3 {
                    assert!((j[(r, c)] - v[r]).abs() < 1e-6, "lin {r},{c}");
                    assert!((j[(r + 3, c)] - w[r]).abs() < 1e-6, "ang {r},{c}");
                }
            }
        }
    }

    #[test]
    fn ik_round_trips_random_configurations() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let opts = IkOptions::default();
        let mut iters = 0;
        for n in 0..50 {
            let q = random_q(&mut rng, 0.02);
            let target = fk(&q);
            let start = random_q(&mut rng, 0.02);
            let sol = match ik(&target, &start, &opts) {
                Ok(s) => s,
                Err(e) => panic!("config {n} {q:?}: {e}"),
            };
            iters += sol.iterations;
            assert!(sol.pos_err < 1e-3);
            let got = fk(&sol.q);
            assert!((got.translation.vector - target.translation.vector).norm() < 1e-3);
            assert!(got.rotation.angle_to(&target.rotation) < 1e-2);
            let l = arm_limits();
            for (qi, (lo, hi)) in sol.q.iter().zip(l.iter()) {
                assert!(qi >= lo && qi <= hi);
            }
        }
        println!("IK round trips: mean {} iterations", iters as f64 / 50.0);
    }

    #[test]
    fn ik_reports_unreachable_targets() {
        let target = Isometry3::translation(1.0, 0.0, 0.5);
        let opts = IkOptions {
            restarts: 1,
            ..IkOptions::default()
        };
        match ik(&target, &[0.0; 5], &opts) {
            Err(e @ IkError::NotConverged { pos_err, .. }) => {
                assert!(pos_err > 0.5);
                assert!(e.to_string().contains("did not converge"));
            }
            other => panic!("{other:?}"),
        }
        let nan = Isometry3::translation(f64::NAN, 0.0, 0.0);
        assert_eq!(ik(&nan, &[0.0; 5], &opts), Err(IkError::NonFinite));
    }

    #[test]
    fn top_down_reach_region() {
        // Every point of the documented sector, several yaws, cube-centre height
        // and pre-grasp height: a vertical grasp converges.
        let opts = IkOptions::default();
        let home = [0.0, -1.0, 1.0, 1.0, 0.0];
        for &z in &[0.015, 0.06, reach::Z_MAX] {
            for ri in 0..=4 {
                let r = reach::R_MIN + (reach::R_MAX - reach::R_MIN) * ri as f64 / 4.0;
                for bi in -2..=2 {
                    let b = reach::BEARING_MAX * bi as f64 / 2.0;
                    let [x, y] = reach::point(r, b);
                    for &yaw in &[-1.3, -0.7, 0.0, 0.45, 1.5] {
                        let p = Vector3::new(x, y, z);
                        let sol = match ik_position_down(&p, yaw, &home, &opts) {
                            Ok(s) => s,
                            Err(e) => panic!("r {r} bearing {b} z {z} yaw {yaw}: {e}"),
                        };
                        let t = fk(&sol.q);
                        assert!((t.translation.vector - p).norm() < 1e-3);
                        let a = t.rotation * Vector3::from(APPROACH_AXIS_TCP);
                        assert!(a.z < -0.999, "approach {a}");
                    }
                }
            }
        }
    }

    #[test]
    fn top_down_rotation_axes() {
        let r = top_down_rotation(0.3);
        let a = r * Vector3::from(APPROACH_AXIS_TCP);
        let c = r * Vector3::from(CLOSING_AXIS_TCP);
        assert!((a - Vector3::new(0.0, 0.0, -1.0)).norm() < 1e-12);
        assert!((c - Vector3::new(0.3f64.cos(), 0.3f64.sin(), 0.0)).norm() < 1e-12);
        assert!((wrap_half_turn(2.0) - (2.0 - std::f64::consts::PI)).abs() < 1e-12);
    }
}
