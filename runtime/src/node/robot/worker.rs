//! The bus thread: one cycle per period on absolute deadlines (joints in,
//! goals out, telemetry now and then), safety holds on alarms, reconnection
//! after a lost port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::atomic::AtomicCell;
use maniflow_bridge::feetech::so101::{self, Calibration, Joints, So101};
use maniflow_bridge::feetech::{table, Alarms, BusError, Failure, SerialPortIo};
use maniflow_bridge::so101::N_JOINTS;
use maniflow_bridge::transport::wall_ns;

use super::{Command, Goals, JointSink, RobotReport, RobotSection};
use crate::control::safety::CommandVerdict;
use crate::stats::Latency;

pub(super) struct Worker {
    cfg: RobotSection,
    cal: Calibration,
    arm: Option<So101<SerialPortIo>>,
    sink: Box<dyn JointSink>,
    goals: Goals,
    who: &'static str,
    cmd: Arc<AtomicCell<Command>>,
    report: Arc<Mutex<RobotReport>>,
    last_cmd: u64,
    /// Commands up to this sequence number were sent before the bus was
    /// lost: after a reconnection only a newer one moves the arm.
    resume_after: u64,
    hold: bool,
    joints: Joints,
    /// The last complete reading (LeRobot units).
    present: Option<[f32; N_JOINTS]>,
    last_complete: Instant,
    lateness: Latency,
}

fn arm_error(port: &str, e: so101::ArmError) -> BusError {
    match e {
        so101::ArmError::Bus(e) => e,
        e => BusError::Invalid {
            port: port.to_string(),
            message: e.to_string(),
        },
    }
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: RobotSection,
        cal: Calibration,
        arm: So101<SerialPortIo>,
        sink: Box<dyn JointSink>,
        goals: Goals,
        who: &'static str,
        cmd: Arc<AtomicCell<Command>>,
        report: Arc<Mutex<RobotReport>>,
    ) -> Worker {
        Worker {
            cfg,
            cal,
            arm: Some(arm),
            sink,
            goals,
            who,
            cmd,
            report,
            last_cmd: 0,
            resume_after: 0,
            hold: false,
            joints: [Err(Failure::Timeout); 6],
            present: None,
            last_complete: Instant::now(),
            lateness: Latency::new(),
        }
    }

    pub(super) fn run(&mut self, period: Duration, stop: &AtomicBool) {
        let start = Instant::now();
        let mut k: u64 = 0;
        let mut next_reconnect = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if self.arm.is_some() {
                if let Err(e) = self.cycle(k) {
                    self.lost(e);
                }
            } else if Instant::now() >= next_reconnect {
                next_reconnect = Instant::now() + Duration::from_millis(500);
                self.reconnect();
            }
            k += 1;
            let due = start + period.mul_f64(k as f64);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            self.lateness
                .record(Instant::now().saturating_duration_since(due));
        }
        if let Some(arm) = self.arm.as_mut() {
            if self.cfg.torque_off_at_exit {
                let _ = arm.torque(false);
            }
        }
        self.publish_counters();
    }

    /// One bus cycle: joints in, goals out, telemetry now and then.
    fn cycle(&mut self, k: u64) -> Result<(), BusError> {
        let complete = self.read()?;
        let wrote = self.write_goals()?;
        if self.cfg.telemetry_every > 0 && k % u64::from(self.cfg.telemetry_every) == 0 {
            self.telemetry()?;
        }
        if let Ok(mut r) = self.report.lock() {
            r.cycles += 1;
            if complete {
                r.reads_ok += 1;
            } else {
                r.reads_incomplete += 1;
            }
            if wrote {
                r.goals_written += 1;
            }
        }
        if k % 32 == 0 {
            self.publish_counters();
        }
        Ok(())
    }

    /// Read the joints into the sink; whether every joint answered. An error
    /// when the bus is lost (no complete reading for `lost_after_ms`).
    fn read(&mut self) -> Result<bool, BusError> {
        let Some(arm) = self.arm.as_mut() else {
            return Ok(false);
        };
        arm.read_joints(&mut self.joints)
            .map_err(|e| arm_error(&self.cfg.port, e))?;
        let mut pos = [0f32; N_JOINTS];
        let mut complete = true;
        for i in 0..N_JOINTS {
            match self.joints[i] {
                Ok((v, alarms)) => {
                    pos[i] = v as f32;
                    if alarms.has(Alarms::OVERLOAD) || alarms.has(Alarms::OVERHEAT) {
                        self.safety_hold(i, &alarms.to_string());
                    }
                }
                Err(_) => complete = false,
            }
        }
        if !complete {
            self.sink.incomplete();
            if self.last_complete.elapsed().as_secs_f64() * 1000.0 > self.cfg.lost_after_ms {
                return Err(BusError::Invalid {
                    port: self.cfg.port.clone(),
                    message: format!(
                        "no complete joint reading for {:.0} ms (robot.lost_after_ms)",
                        self.cfg.lost_after_ms
                    ),
                });
            }
            return Ok(false);
        }
        self.last_complete = Instant::now();
        self.present = Some(pos);
        self.sink.joints(&pos, wall_ns());
        Ok(true)
    }

    /// Write the goals `self.goals` asks for; whether any were written.
    fn write_goals(&mut self) -> Result<bool, BusError> {
        let cmd = self.cmd.load();
        if self.hold || cmd.seq <= self.resume_after {
            return Ok(false);
        }
        let mut goal = cmd.pos;
        match &mut self.goals {
            Goals::AsCommanded => {
                if cmd.seq == self.last_cmd {
                    return Ok(false);
                }
            }
            Goals::Filtered(safety) => {
                let Some(present) = self.present else {
                    return Ok(false);
                };
                let verdict = safety.filter_command(&mut goal, &present);
                let mut r = self.report.lock().ok();
                match verdict {
                    CommandVerdict::Blocked => {
                        if let Some(r) = r.as_mut() {
                            r.goals_blocked += 1;
                        }
                        return Ok(false);
                    }
                    CommandVerdict::Clamped => {
                        if let Some(r) = r.as_mut() {
                            r.goals_clamped += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        self.last_cmd = cmd.seq;
        let Some(arm) = self.arm.as_mut() else {
            return Ok(false);
        };
        arm.write_goals(&goal.map(f64::from))
            .map_err(|e| arm_error(&self.cfg.port, e))?;
        Ok(true)
    }

    fn telemetry(&mut self) -> Result<(), BusError> {
        let Some(arm) = self.arm.as_mut() else {
            return Ok(());
        };
        let mut t = [Err(Failure::Timeout); 6];
        arm.bus
            .sync_read(table::PRESENT_TEMPERATURE, &so101::IDS, &mut t)?;
        for i in 0..N_JOINTS {
            if let Ok(r) = t[i] {
                if let Ok(mut rep) = self.report.lock() {
                    rep.temperature_c[i] = r.value;
                }
                if r.value > self.cfg.max_temperature_c {
                    self.safety_hold(
                        i,
                        &format!(
                            "temperature {} C above robot.max_temperature_c {}",
                            r.value, self.cfg.max_temperature_c
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Hold the arm where it is and release the gripper; say why, once.
    fn safety_hold(&mut self, joint: usize, why: &str) {
        if self.hold {
            return;
        }
        self.hold = true;
        let msg = format!(
            "SAFETY HOLD: {} (id {}): {why}; the arm holds its present position and the gripper is released (torque off); let it cool or clear the obstruction, power-cycle the arm and restart",
            so101::MOTORS[joint],
            so101::IDS[joint]
        );
        eprintln!("{}: {msg}", self.who);
        if let Some(arm) = self.arm.as_mut() {
            let mut raw = [Err(Failure::Timeout); 6];
            if arm
                .bus
                .sync_read(table::PRESENT_POSITION, &so101::IDS, &mut raw)
                .is_ok()
                && raw.iter().all(Result::is_ok)
            {
                let goals: Vec<i32> = raw
                    .iter()
                    .map(|r| r.map(|x| x.value).unwrap_or(0))
                    .collect();
                let _ = arm
                    .bus
                    .sync_write(table::GOAL_POSITION, &so101::IDS, &goals);
            }
            let _ = arm.bus.write(so101::IDS[5], table::TORQUE_ENABLE, 0);
        }
        if let Ok(mut r) = self.report.lock() {
            r.holds.push(msg);
        }
    }

    /// The port failed (a pulled cable, a dead adapter): drop the bus; the
    /// joints go stale and the control thread holds.
    fn lost(&mut self, e: BusError) {
        let msg = e.to_string();
        eprintln!(
            "{}: robot bus lost ({msg}); holding, reconnecting every 0.5 s",
            self.who
        );
        self.publish_counters();
        self.arm = None;
        self.present = None;
        if let Goals::Filtered(s) = &mut self.goals {
            s.reset();
        }
        if let Ok(mut r) = self.report.lock() {
            r.disconnects += 1;
            r.last_error = msg;
        }
    }

    fn reconnect(&mut self) {
        match self.cfg.connect(self.cal) {
            Ok(arm) => {
                eprintln!("{}: robot bus back on {}", self.who, self.cfg.port);
                self.arm = Some(arm);
                self.last_cmd = self.cmd.load().seq;
                self.resume_after = self.last_cmd;
                self.last_complete = Instant::now();
                if let Ok(mut r) = self.report.lock() {
                    r.connects += 1;
                }
            }
            Err(e) => {
                if let Ok(mut r) = self.report.lock() {
                    r.last_error = e.to_string();
                }
            }
        }
    }

    fn publish_counters(&mut self) {
        let Ok(mut r) = self.report.lock() else {
            return;
        };
        r.lateness_us = self.lateness.percentiles();
        if let Some(arm) = self.arm.as_ref() {
            r.bus = arm.bus.counters;
            r.joints = so101::IDS
                .iter()
                .map(|id| arm.bus.id_counters(*id))
                .collect();
        }
    }
}
