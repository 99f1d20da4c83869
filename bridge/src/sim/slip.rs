//! The touch-decides variant of the pick task (`SimConfig::slip`): the cube's
//! weight and friction vary per episode, so the squeeze that holds it varies
//! too, and a cube is fragile: squeezed too hard, it is crushed.
//!
//! - Per episode, the squeeze that holds the cube against gravity, `hold`
//!   (rad beyond contact), is drawn uniformly from
//!   [`SlipConfig::hold_squeeze_rad`] (its own random stream: the cube's place
//!   and everything else in the episode are those of the plain pick task).
//!   `crush = hold + crush_margin_rad`.
//! - A grasped cube hanging in the jaws (lifted off the table) with
//!   `squeeze < hold` slides down the fingers at
//!   `slip_speed_mps * (1 - squeeze / hold)`; with `squeeze >= hold` it is held.
//!   Once its centre passes the finger tips it falls.
//! - A squeeze above `crush` at any time crushes it: the episode cannot succeed.
//! - Success: the cube at least 5 cm above the table, grasped, held (not
//!   slipping) and not crushed.
//!
//! Neither camera shows the squeeze or a slip of a few millimetres; the tactile
//! pads do: the pressure rises with the squeeze, and a slip moves the footprint
//! toward the finger tips (and, in the pressure images, loads its leading edge).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Mixed into the seed of the per-episode grip draw.
const GRIP_SEED: u64 = 0x5119_0BE5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlipConfig {
    /// Range of the squeeze (rad beyond contact) that holds the cube.
    pub hold_squeeze_rad: (f64, f64),
    /// Squeeze above the hold squeeze that crushes the cube (rad).
    pub crush_margin_rad: f64,
    /// Sliding speed (m/s) of a cube held with no squeeze at all.
    pub slip_speed_mps: f64,
}

impl Default for SlipConfig {
    /// Holding needs 0.10-0.30 rad of squeeze, 0.08 rad more crushes: a fixed
    /// squeeze suits at most 40 % of the episodes. The plain task's expert
    /// squeezes about 0.4 rad.
    fn default() -> Self {
        SlipConfig {
            hold_squeeze_rad: (0.10, 0.30),
            crush_margin_rad: 0.08,
            slip_speed_mps: 0.01,
        }
    }
}

/// This episode's cube: the squeeze that holds it and the one that crushes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CubeGrip {
    pub hold: f64,
    pub crush: f64,
}

impl SlipConfig {
    /// The cube of episode `episode` (deterministic in `(seed, episode)`).
    pub fn draw(&self, seed: u64, episode: u64) -> CubeGrip {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ GRIP_SEED);
        rng.set_stream(episode);
        let (lo, hi) = self.hold_squeeze_rad;
        let hold = if hi > lo {
            rng.random_range(lo..hi)
        } else {
            lo
        };
        CubeGrip {
            hold,
            crush: hold + self.crush_margin_rad,
        }
    }

    /// Why these settings cannot work, naming the field.
    pub fn check(&self) -> Result<(), String> {
        let (lo, hi) = self.hold_squeeze_rad;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && hi >= lo) {
            return Err(format!(
                "slip.hold_squeeze_rad = ({lo}, {hi}): needs 0 < low <= high"
            ));
        }
        if !(self.crush_margin_rad.is_finite() && self.crush_margin_rad > 0.0) {
            return Err(format!(
                "slip.crush_margin_rad = {}: must be > 0",
                self.crush_margin_rad
            ));
        }
        if !(self.slip_speed_mps.is_finite() && self.slip_speed_mps >= 0.0) {
            return Err(format!(
                "slip.slip_speed_mps = {}: must be >= 0",
                self.slip_speed_mps
            ));
        }
        Ok(())
    }
}

/// Speed (m/s, >= 0) at which a hanging cube slides down the fingers.
pub fn slide_speed(cfg: &SlipConfig, grip: &CubeGrip, squeeze: f64) -> f64 {
    if squeeze >= grip.hold {
        0.0
    } else {
        cfg.slip_speed_mps * (1.0 - squeeze.max(0.0) / grip.hold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grips_are_drawn_per_episode_in_range_and_slide_with_the_missing_squeeze() {
        let c = SlipConfig::default();
        let grips: Vec<CubeGrip> = (0..200).map(|e| c.draw(7, e)).collect();
        assert_eq!(grips[3], c.draw(7, 3));
        assert_ne!(grips[3], c.draw(8, 3));
        assert!(grips
            .iter()
            .all(|g| (0.10..0.30).contains(&g.hold) && (g.crush - g.hold - 0.08).abs() < 1e-12));
        let (lo, hi) = grips
            .iter()
            .fold((1.0f64, 0.0f64), |(a, b), g| (a.min(g.hold), b.max(g.hold)));
        assert!(
            lo < 0.12 && hi > 0.28,
            "the draws span the range: {lo}..{hi}"
        );
        let g = CubeGrip {
            hold: 0.2,
            crush: 0.28,
        };
        assert_eq!(slide_speed(&c, &g, 0.0), 0.01);
        assert!((slide_speed(&c, &g, 0.1) - 0.005).abs() < 1e-12);
        assert_eq!(slide_speed(&c, &g, 0.2), 0.0);
        assert_eq!(slide_speed(&c, &g, 0.5), 0.0);
        assert!(SlipConfig {
            crush_margin_rad: 0.0,
            ..c.clone()
        }
        .check()
        .unwrap_err()
        .contains("crush_margin_rad"));
        assert!(SlipConfig {
            hold_squeeze_rad: (0.3, 0.1),
            ..c
        }
        .check()
        .unwrap_err()
        .contains("hold_squeeze_rad"));
    }
}
