//! The scripted expert's squeeze by touch, for the slip variant ([`super::slip`]).
//!
//! Closing: the jaw closes slowly ([`CLOSE_RATE`]) until the pads feel the cube;
//! the jaw's position then is the contact position, and the command becomes
//! the contact position minus a light squeeze ([`START_SQUEEZE`]). Holding: the
//! footprint's centre along the finger (pad 0's taxel rows, pressure-weighted)
//! is tracked from frame to frame; while it moves toward the finger tips faster
//! than [`SLIP_SPEED`] the cube is slipping and the squeeze grows at
//! [`TIGHTEN_RATE`]; when a slip stops, [`MARGIN`] more is added once. What was
//! learnt about the cube is kept for a regrasp in the same episode.

/// Gripper joint: radians per LeRobot unit (0..100 spans the URDF range).
pub const RAD_PER_UNIT: f64 = (1.74533 + 0.174533) / 100.0;
/// First squeeze beyond contact (rad): more than the grasp needs (0.05).
pub const START_SQUEEZE: f64 = 0.08;
/// Squeeze added per second while slipping (rad/s).
pub const TIGHTEN_RATE: f64 = 0.25;
/// Squeeze added once a slip has stopped (rad).
pub const MARGIN: f64 = 0.03;
/// Closing speed before contact (LeRobot units per second).
pub const CLOSE_RATE: f32 = 50.0;
/// Footprint speed toward the tips that counts as a slip (m/s).
pub const SLIP_SPEED: f64 = 0.0005;
/// Pressure (sum over the taxels) that counts as contact.
pub const CONTACT: f32 = 0.05;

#[derive(Debug, Clone)]
pub struct GripControl {
    rows: usize,
    cols: usize,
    /// Length of the pad along the finger (m).
    pad_len: f64,
    contact_units: Option<f32>,
    /// Squeeze beyond contact to command (rad).
    pub squeeze: f64,
    cmd: f32,
    prev_centre: Option<f64>,
    slipping: bool,
}

impl GripControl {
    pub fn new(rows: usize, cols: usize, pad_len: f64) -> Self {
        GripControl {
            rows,
            cols,
            pad_len,
            contact_units: None,
            squeeze: START_SQUEEZE,
            cmd: 50.0,
            prev_centre: None,
            slipping: false,
        }
    }

    /// The same controller for a new episode (nothing learnt).
    pub fn fresh(&self) -> GripControl {
        GripControl::new(self.rows, self.cols, self.pad_len)
    }

    /// Start closing from the jaw command `from` (the squeeze learnt so far stays).
    pub fn begin_close(&mut self, from: f32) {
        self.contact_units = None;
        self.cmd = from;
        self.prev_centre = None;
        self.slipping = false;
    }

    /// Whether the pads have felt the cube since [`Self::begin_close`].
    pub fn in_contact(&self) -> bool {
        self.contact_units.is_some()
    }

    /// The jaw command while closing: `jaw` is the jaw's position (LeRobot units).
    pub fn close(&mut self, jaw: f32, taxels: &[f32], dt: f64) -> f32 {
        let touch: f32 = taxels.iter().filter(|v| v.is_finite()).sum();
        if self.contact_units.is_none() && touch > CONTACT {
            self.contact_units = Some(jaw);
        }
        match self.contact_units {
            Some(c) => self.command(c),
            None => {
                self.cmd = (self.cmd - CLOSE_RATE * dt as f32).max(0.0);
                self.cmd
            }
        }
    }

    /// The jaw command while holding (lifting, carrying): tightens on slip.
    pub fn hold(&mut self, taxels: &[f32], dt: f64) -> f32 {
        let centre = self.footprint_centre(taxels);
        if let (Some(now), Some(prev)) = (centre, self.prev_centre) {
            let toward_tips = (prev - now) / dt.max(1e-6);
            if toward_tips > SLIP_SPEED {
                self.squeeze += TIGHTEN_RATE * dt;
                self.slipping = true;
            } else if self.slipping {
                self.squeeze += MARGIN;
                self.slipping = false;
            }
        }
        self.prev_centre = centre;
        match self.contact_units {
            Some(c) => self.command(c),
            None => self.cmd,
        }
    }

    fn command(&mut self, contact: f32) -> f32 {
        self.cmd = (f64::from(contact) - self.squeeze / RAD_PER_UNIT).max(0.0) as f32;
        self.cmd
    }

    /// Pressure-weighted centre of pad 0 along the finger (m from the tip end
    /// of the pad), `None` without pressure.
    pub fn footprint_centre(&self, taxels: &[f32]) -> Option<f64> {
        let pitch = self.pad_len / self.rows.max(1) as f64;
        let (mut sum, mut moment) = (0.0f64, 0.0f64);
        for r in 0..self.rows {
            let row: f64 = taxels
                .iter()
                .skip(r * self.cols)
                .take(self.cols)
                .filter(|v| v.is_finite())
                .map(|&v| f64::from(v))
                .sum();
            sum += row;
            moment += row * (r as f64 + 0.5) * pitch;
        }
        (sum > f64::from(CONTACT) / 2.0).then(|| moment / sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_slowly_latches_contact_and_tightens_only_while_slipping() {
        let mut g = GripControl::new(2, 1, 0.04);
        g.begin_close(50.0);
        assert_eq!(g.close(50.0, &[0.0, 0.0, 0.0, 0.0], 0.1), 45.0);
        assert!(!g.in_contact());
        // Contact at jaw 21: command 21 - 0.08 rad.
        let c = g.close(21.0, &[0.3, 0.3, 0.3, 0.3], 0.1);
        assert!(g.in_contact());
        assert!((f64::from(c) - (21.0 - START_SQUEEZE / RAD_PER_UNIT)).abs() < 1e-4);
        // Footprint centres: equal rows -> the pad's middle (2 cm).
        assert!((g.footprint_centre(&[1.0, 1.0]).unwrap() - 0.02).abs() < 1e-12);
        // Steady: no change. Moving toward the tips (row 0) by 1 mm per 0.1 s: slip.
        g.hold(&[1.0, 1.0], 0.1);
        g.hold(&[1.0, 1.0], 0.1);
        assert_eq!(g.squeeze, START_SQUEEZE);
        g.hold(&[1.1, 0.9], 0.1); // centre 2 cm -> 1.9 cm in 0.1 s: 10 mm/s
        assert!((g.squeeze - (START_SQUEEZE + TIGHTEN_RATE * 0.1)).abs() < 1e-12);
        // Slip stopped: the margin once, then nothing.
        g.hold(&[1.1, 0.9], 0.1);
        let after = START_SQUEEZE + TIGHTEN_RATE * 0.1 + MARGIN;
        assert!((g.squeeze - after).abs() < 1e-12);
        g.hold(&[1.1, 0.9], 0.1);
        assert!((g.squeeze - after).abs() < 1e-12);
        // Moving away from the tips is not a slip.
        g.hold(&[0.9, 1.1], 0.1);
        assert!((g.squeeze - after).abs() < 1e-12);
    }
}
