//! The pick task's dense reward and an episode's return (`maniflow eval`'s
//! `episode_return`, seed 004's "reward"): how far an episode got, also when it failed.
//!
//! The reward at a simulation step is in [0, 1]:
//! - 1 once the task is done ([`SimWorld::success`]);
//! - otherwise `0.25 reach + 0.25 grasp + 0.5 lift`, where `reach = 1 - tanh(5 d)` with `d`
//!   the distance (m) from the TCP to the cube's centre, `grasp` is 1 while the cube is in the
//!   jaws, and `lift` is the cube's height above its resting height over the 5 cm of a
//!   success (0 to 1), counted only while it is held.
//!
//! The return is the reward integrated over the simulated time, plus 1 per second from the
//! episode's end to its nominal length when it succeeded (an episode stops 1 s after its
//! success, so a fast success is not paid less), divided by the nominal length: 0 to 1, the
//! mean reward over `--episode-s`.

use super::SimWorld;

/// Height above rest that counts as lifted (m), as in [`SimWorld::success`].
const LIFT_M: f64 = 0.05;

/// The reward of the world's present state, in [0, 1].
pub fn reward(world: &SimWorld) -> f64 {
    if world.success() {
        return 1.0;
    }
    let tcp = world.tcp_pose().translation.vector;
    let [x, y, z] = world.cube_position();
    let d = ((tcp.x - x).powi(2) + (tcp.y - y).powi(2) + (tcp.z - z).powi(2)).sqrt();
    let reach = 1.0 - (5.0 * d).tanh();
    let (grasp, lift) = if world.is_grasped() {
        (1.0, ((z - world.rest_z()) / LIFT_M).clamp(0.0, 1.0))
    } else {
        (0.0, 0.0)
    };
    let r = 0.25 * reach + 0.25 * grasp + 0.5 * lift;
    if r.is_finite() {
        r.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// An episode's reward integral, step by step.
#[derive(Debug, Clone, Copy, Default)]
pub struct EpisodeReturn {
    integral: f64,
}

impl EpisodeReturn {
    /// Adds `dt` seconds at the world's present reward.
    pub fn add(&mut self, world: &SimWorld, dt: f64) {
        self.integral += reward(world) * dt;
    }

    /// The return (0 to 1) of an episode of nominal length `episode_s` that ended after
    /// `duration_s` of simulated time.
    pub fn finish(&self, succeeded: bool, duration_s: f64, episode_s: f64) -> f64 {
        if episode_s <= 0.0 {
            return 0.0;
        }
        let rest = if succeeded {
            (episode_s - duration_s).max(0.0)
        } else {
            0.0
        };
        ((self.integral + rest) / episode_s).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{expert::Expert, SimConfig};

    /// The reward climbs with the expert's progress: far < near < grasped < lifted = 1, and
    /// a success scores a higher return than an arm that never moves.
    #[test]
    fn reward_follows_the_task_stages() {
        let mut w = SimWorld::new(SimConfig::default());
        w.reset(0);
        let start = reward(&w);
        assert!(start > 0.0 && start < 0.25, "far from the cube: {start}");
        let mut idle = EpisodeReturn::default();
        for _ in 0..100 {
            idle.add(&w, 0.01);
        }
        assert!(
            (idle.finish(false, 1.0, 1.0) - start).abs() < 1e-9,
            "a still arm: its constant reward"
        );

        let cfg = w.config().clone();
        let (mut ex, mut ret) = (Expert::new(&cfg), EpisodeReturn::default());
        let (mut head, mut taxels) = (
            vec![0u8; cfg.image_width * cfg.image_height * 3],
            vec![0f32; w.taxel_count()],
        );
        let (mut max_before_grasp, mut grasped_at, mut next_act, dt) = (0.0f64, None, 0.0, 0.01);
        while w.time() < 8.0 && !w.success() {
            if w.time() + 1e-9 >= next_act {
                w.render_head(&mut head);
                w.tactile(&mut taxels);
                let cmd = ex.act(&head, &w.joint_positions(), &taxels, w.time());
                w.set_command(&cmd);
                next_act += 1.0 / 30.0;
            }
            w.step(dt);
            ret.add(&w, dt);
            let r = reward(&w);
            if w.is_grasped() {
                grasped_at.get_or_insert(r);
                assert!(r >= 0.25, "held: the grasp term counts ({r})");
            } else if grasped_at.is_none() {
                max_before_grasp = max_before_grasp.max(r);
            }
        }
        assert!(w.success(), "the expert lifts the cube");
        assert!(
            max_before_grasp > 0.2 && max_before_grasp <= 0.25,
            "reaching is worth at most 0.25: {max_before_grasp}"
        );
        assert_eq!(reward(&w), 1.0);
        let (ok, failed) = (
            ret.finish(true, w.time(), 8.0),
            ret.finish(false, w.time(), 8.0),
        );
        assert!(
            ok > failed && ok > idle.finish(false, 1.0, 1.0) && ok <= 1.0,
            "{ok} {failed}"
        );
        // A success credits the rest of the nominal length at 1.
        assert!(
            (ok - failed - (8.0 - w.time()) / 8.0).abs() < 1e-6,
            "{ok} {failed} at {}",
            w.time()
        );
    }
}
