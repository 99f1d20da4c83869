//! `maniflow sim --serial`: the simulated arm as six STS3215 servos on a
//! pseudo-terminal (the Feetech emulator), so the node's `[robot]` bus path,
//! `maniflow calibrate` and LeRobot's own SO101Follower drive the simulator as
//! they would a real arm. The simulator is the physics: every step the
//! servos' shaft angles are set from the simulated joints, and the goals the
//! bus wrote (with torque on) become the simulator's command.

use std::path::{Path, PathBuf};

use anyhow::Context;
use maniflow_bridge::feetech::emulator::{Emulator, PtyEmulator};
use maniflow_bridge::feetech::so101::{self, Calibration, MotorCalibration};
use maniflow_bridge::feetech::table;
use maniflow_bridge::so101::N_JOINTS;

/// The emulated arm's calibration (in its EEPROM, and in the file written for
/// the node): homing offset 0, the joints over 500..3600 (+-136 deg around the
/// middle), wrist_roll over the full turn, the gripper 0..100 over 500..3600.
pub fn sim_calibration() -> Calibration {
    let mut c = [MotorCalibration {
        id: 0,
        drive_mode: 0,
        homing_offset: 0,
        range_min: 500,
        range_max: 3600,
    }; 6];
    for (i, m) in c.iter_mut().enumerate() {
        m.id = i as u8 + 1;
    }
    c[4].range_min = 0;
    c[4].range_max = 4095;
    Calibration(c)
}

/// LeRobot units -> shaft ticks, continuous (the inverse of `normalize`).
fn ticks(i: usize, v: f32, c: &MotorCalibration) -> f64 {
    let (min, max) = (f64::from(c.range_min), f64::from(c.range_max));
    match so101::norm_mode(i, true) {
        so101::NormMode::Degrees => f64::from(v) * 4095.0 / 360.0 + (min + max) / 2.0,
        _ => f64::from(v.clamp(0.0, 100.0)) / 100.0 * (max - min) + min,
    }
}

pub struct SerialArm {
    pty: PtyEmulator,
    cal: Calibration,
    last_goals: [i32; N_JOINTS],
    link: Option<PathBuf>,
}

impl SerialArm {
    /// Start the emulator with the arm at `q` (LeRobot units); optionally a
    /// symlink to the pty and the calibration file `<dir>/<id>.json`.
    pub fn start(
        q: &[f32; N_JOINTS],
        link: Option<&Path>,
        cal_out: Option<(&Path, &str)>,
    ) -> anyhow::Result<SerialArm> {
        let cal = sim_calibration();
        let shafts: Vec<f64> = (0..N_JOINTS).map(|i| ticks(i, q[i], &cal.0[i])).collect();
        let mut emu = Emulator::new(&shafts);
        for (i, s) in emu.servos.iter_mut().enumerate() {
            // The calibration is in the EEPROM, as after `maniflow calibrate`.
            let c = &cal.0[i];
            for (r, v) in [
                (table::MIN_POSITION_LIMIT, c.range_min),
                (table::MAX_POSITION_LIMIT, c.range_max),
                (table::HOMING_OFFSET, c.homing_offset),
            ] {
                let a = r.addr as usize;
                let _ = r.encode(v, &mut s.regs[a..a + r.size as usize]);
            }
            s.step(0.0);
        }
        let pty = PtyEmulator::start(emu, None).context("starting the servo emulator on a pty")?;
        if let Some(l) = link {
            let _ = std::fs::remove_file(l);
            std::os::unix::fs::symlink(&pty.path, l)
                .with_context(|| format!("linking {} to {}", l.display(), pty.path))?;
        }
        if let Some((dir, id)) = cal_out {
            let p = dir.join(format!("{id}.json"));
            cal.save(&p)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        let last_goals = [0; N_JOINTS];
        Ok(SerialArm {
            pty,
            cal,
            last_goals,
            link: link.map(Path::to_path_buf),
        })
    }

    pub fn path(&self) -> &str {
        &self.pty.path
    }

    /// The goals the bus wrote since the last call, as a command in LeRobot
    /// units, when torque is on.
    pub fn command(&mut self) -> Option<[f32; N_JOINTS]> {
        let em = self.pty.emu.lock().ok()?;
        if !em.servos.iter().all(|s| s.torque()) {
            return None;
        }
        let goals: Vec<i32> = em
            .servos
            .iter()
            .map(|s| s.get(table::GOAL_POSITION))
            .collect();
        drop(em);
        if goals[..] == self.last_goals[..] {
            return None;
        }
        self.last_goals.copy_from_slice(&goals);
        let mut q = [0f32; N_JOINTS];
        for i in 0..N_JOINTS {
            q[i] = so101::normalize(goals[i], &self.cal.0[i], so101::norm_mode(i, true)) as f32;
        }
        Some(q)
    }

    /// The simulated joints become the servos' shaft angles.
    pub fn set_joints(&self, q: &[f32; N_JOINTS]) {
        if let Ok(mut em) = self.pty.emu.lock() {
            for (i, s) in em.servos.iter_mut().enumerate() {
                s.actual = ticks(i, q[i], &self.cal.0[i]).rem_euclid(4096.0);
                s.step(0.0);
            }
        }
    }
}

impl Drop for SerialArm {
    fn drop(&mut self) {
        if let Some(l) = &self.link {
            let _ = std::fs::remove_file(l);
        }
    }
}
