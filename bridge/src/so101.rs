//! SO-101 facts shared by every layer (see `shared/design/SO101.md` and
//! `LEROBOT.md`): joint order as LeRobot names it, servo IDs 1..6, and the joint
//! limits in LeRobot units (degrees from the calibration midpoint for joints 1-5,
//! 0..100 for the gripper).

/// Number of joints (servos) on the arm, gripper included.
pub const N_JOINTS: usize = 6;

/// Joint names in LeRobot order; servo id = index + 1.
pub const JOINT_NAMES: [&str; N_JOINTS] = [
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
];

/// Feature names of the state / action vector as LeRobot writes them (`<joint>.pos`).
pub const POS_FEATURE_NAMES: [&str; N_JOINTS] = [
    "shoulder_pan.pos",
    "shoulder_lift.pos",
    "elbow_flex.pos",
    "wrist_flex.pos",
    "wrist_roll.pos",
    "gripper.pos",
];

/// URDF joint limits in radians (lower, upper) for the five revolute arm joints,
/// and the jaw range the gripper's 0..100 maps onto.
pub const URDF_LIMITS_RAD: [(f64, f64); N_JOINTS] = [
    (-1.91986, 1.91986),
    (-1.74533, 1.74533),
    (-1.69, 1.69),
    (-1.65806, 1.65806),
    (-2.79253, 2.79253),
    (-0.174533, 1.74533),
];

/// Joint limits in LeRobot units: degrees for joints 1-5, percent (0..100) for the gripper.
pub fn limits_lerobot_units() -> [(f32, f32); N_JOINTS] {
    let mut out = [(0.0f32, 0.0f32); N_JOINTS];
    for (i, (lo, hi)) in URDF_LIMITS_RAD.iter().enumerate() {
        out[i] = if i == N_JOINTS - 1 {
            (0.0, 100.0)
        } else {
            (lo.to_degrees() as f32, hi.to_degrees() as f32)
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_degrees_match_the_urdf() {
        let l = limits_lerobot_units();
        // shoulder_pan: 1.91986 rad = 110.0 deg
        assert!((l[0].1 - 110.0).abs() < 1e-2, "{:?}", l[0]);
        assert!((l[0].0 + 110.0).abs() < 1e-2);
        // wrist_roll: 2.79253 rad = 160.0 deg
        assert!((l[4].1 - 160.0).abs() < 1e-2);
        assert_eq!(l[5], (0.0, 100.0));
    }
}
