//! A real SO-101 on this machine's serial port as the node's joint source and
//! command sink: a bus thread reads the joints (one SYNC_READ per cycle, LeRobot
//! units) into the node's inputs and writes the control thread's latest
//! command as goals (one SYNC_WRITE), with no transport hop. Telemetry
//! (temperature) and the alarm bits of every reply are watched: an overload or
//! overheat holds the arm and releases the gripper, with a message naming the
//! joint. A failing port (a pulled cable) makes the joints stale, so the
//! control thread holds; the thread reconnects when the port returns.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::atomic::AtomicCell;
use maniflow_bridge::feetech::bus::{BusCounters, IdCounters};
use maniflow_bridge::feetech::so101::{self, ArmConfig, Calibration, Joints, Role, So101};
use maniflow_bridge::feetech::{table, Alarms, Bus, BusConfig, BusError, Failure, SerialPortIo};
use maniflow_bridge::so101::N_JOINTS;
use maniflow_bridge::transport::wall_ns;
use serde::{Deserialize, Serialize};

use super::streams::{Inputs, JointSample};

/// `[robot]` in the node config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotSection {
    /// Only "so101".
    pub kind: String,
    /// Serial port of the bus adapter, e.g. /dev/ttyACM0.
    pub port: String,
    /// The calibration id (LeRobot's `--robot.id`).
    #[serde(default = "default_id")]
    pub calibration_id: String,
    /// Directory of `<calibration_id>.json` (default: LeRobot's).
    pub calibration_dir: Option<PathBuf>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Bus cycles per second (default: the control tick rate).
    pub rate_hz: Option<f64>,
    /// Joint readings older than this are stale (the control thread holds).
    #[serde(default = "default_max_age")]
    pub max_age_ms: f64,
    /// Read the servos' temperature every this many cycles.
    #[serde(default = "default_telemetry")]
    pub telemetry_every: u32,
    /// Hold the arm when a servo is hotter than this (deg C).
    #[serde(default = "default_max_temp")]
    pub max_temperature_c: i32,
    /// With no complete reading for this long, the bus is lost (a pulled
    /// cable, a powered-off arm): drop it and reconnect by reopening the port.
    #[serde(default = "default_lost_after")]
    pub lost_after_ms: f64,
    /// Turn torque off when the node exits.
    #[serde(default = "yes")]
    pub torque_off_at_exit: bool,
    /// Position loop gains (LeRobot: 16 / 0 / 32).
    #[serde(default = "p16")]
    pub p: i32,
    #[serde(default)]
    pub i: i32,
    #[serde(default = "d32")]
    pub d: i32,
}

fn default_id() -> String {
    "so101".into()
}
fn default_baud() -> u32 {
    1_000_000
}
fn default_max_age() -> f64 {
    100.0
}
fn default_lost_after() -> f64 {
    500.0
}
fn default_telemetry() -> u32 {
    15
}
fn default_max_temp() -> i32 {
    60
}
fn yes() -> bool {
    true
}
fn p16() -> i32 {
    16
}
fn d32() -> i32 {
    32
}

impl RobotSection {
    pub fn check(&self) -> Result<(), String> {
        if self.kind != "so101" {
            return Err(format!(
                "robot.kind = \"{}\": only \"so101\" is supported",
                self.kind
            ));
        }
        if let Some(r) = self.rate_hz {
            if !(r.is_finite() && r > 0.0 && r <= 1000.0) {
                return Err(format!("robot.rate_hz = {r} must be in (0, 1000]"));
            }
        }
        if !(self.max_age_ms.is_finite() && self.max_age_ms > 0.0) {
            return Err(format!(
                "robot.max_age_ms = {} must be > 0",
                self.max_age_ms
            ));
        }
        for (k, v) in [("p", self.p), ("i", self.i), ("d", self.d)] {
            if !(0..=255).contains(&v) {
                return Err(format!("robot.{k} = {v} must be in 0..=255"));
            }
        }
        Ok(())
    }

    fn calibration(&self) -> anyhow::Result<Calibration> {
        Ok(match &self.calibration_dir {
            Some(d) => Calibration::load(&d.join(format!("{}.json", self.calibration_id)))?,
            None => {
                Calibration::find(
                    &so101::calibration_root(),
                    Role::Follower,
                    &self.calibration_id,
                )?
                .0
            }
        })
    }

    fn arm_config(&self) -> ArmConfig {
        ArmConfig {
            p: self.p,
            i: self.i,
            d: self.d,
            ..ArmConfig::lerobot(Role::Follower)
        }
    }

    fn connect(&self, cal: Calibration) -> anyhow::Result<So101<SerialPortIo>> {
        let port = SerialPortIo::open(&self.port, self.baud)?;
        let bus = Bus::new(port, BusConfig::default());
        Ok(So101::connect(bus, cal, self.arm_config(), false)?)
    }
}

/// The control thread's latest command (LeRobot units), for the bus thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct Command {
    pub seq: u64,
    pub pos: [f32; N_JOINTS],
}

/// What the bus thread did (`NodeStats.robot`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RobotReport {
    pub port: String,
    pub connects: u64,
    pub disconnects: u64,
    pub cycles: u64,
    pub reads_ok: u64,
    /// Cycles where some joint had no reading (the joints stay stale).
    pub reads_incomplete: u64,
    pub goals_written: u64,
    /// Safety holds, each naming the joint and the cause.
    pub holds: Vec<String>,
    pub last_error: String,
    pub bus: BusCounters,
    /// Per joint (shoulder_pan .. gripper): the bus counters of its servo.
    pub joints: Vec<IdCounters>,
    /// Last telemetry: temperature per joint, deg C.
    pub temperature_c: [i32; N_JOINTS],
}

/// The running bus thread.
pub struct RobotLink {
    pub cmd: Arc<AtomicCell<Command>>,
    pub report: Arc<Mutex<RobotReport>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RobotLink {
    /// Connect (one-line errors: port, calibration, missing ids) and start the bus thread.
    pub fn start(
        cfg: &RobotSection,
        tick_hz: f64,
        inputs: Arc<Inputs>,
    ) -> anyhow::Result<RobotLink> {
        let cal = cfg.calibration()?;
        let arm = cfg.connect(cal)?;
        let cmd = Arc::new(AtomicCell::new(Command::default()));
        let report = Arc::new(Mutex::new(RobotReport {
            port: cfg.port.clone(),
            connects: 1,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            cfg: cfg.clone(),
            cal,
            arm: Some(arm),
            inputs,
            cmd: cmd.clone(),
            report: report.clone(),
            last_cmd: 0,
            hold: false,
            joints: [Err(Failure::Timeout); 6],
            last_complete: Instant::now(),
        };
        let period = Duration::from_secs_f64(1.0 / cfg.rate_hz.unwrap_or(tick_hz));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("maniflow-bus".into())
            .spawn(move || worker.run(period, &s2))?;
        Ok(RobotLink {
            cmd,
            report,
            stop,
            thread: Some(thread),
        })
    }

    /// Stop the thread (torque off if configured); the final report.
    pub fn finish(mut self) -> RobotReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

struct Worker {
    cfg: RobotSection,
    cal: Calibration,
    arm: Option<So101<SerialPortIo>>,
    inputs: Arc<Inputs>,
    cmd: Arc<AtomicCell<Command>>,
    report: Arc<Mutex<RobotReport>>,
    last_cmd: u64,
    hold: bool,
    joints: Joints,
    last_complete: Instant,
}

impl Worker {
    fn run(&mut self, period: Duration, stop: &AtomicBool) {
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
            let due = start + period * k as u32;
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
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
        let Some(arm) = self.arm.as_mut() else {
            return Ok(());
        };
        match arm.read_joints(&mut self.joints) {
            Ok(()) => {}
            Err(so101::ArmError::Bus(e)) => return Err(e),
            Err(e) => {
                return Err(BusError::Invalid {
                    port: self.cfg.port.clone(),
                    message: e.to_string(),
                })
            }
        }
        let inputs = self.inputs.clone();
        let c = &inputs.joint_counters;
        c.received.fetch_add(1, Ordering::Relaxed);
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
        if !complete && self.last_complete.elapsed().as_secs_f64() * 1000.0 > self.cfg.lost_after_ms
        {
            return Err(BusError::Invalid {
                port: self.cfg.port.clone(),
                message: format!(
                    "no complete joint reading for {:.0} ms (robot.lost_after_ms)",
                    self.cfg.lost_after_ms
                ),
            });
        }
        if complete {
            self.last_complete = Instant::now();
            let prev = inputs.joints.load();
            inputs.joints.store(JointSample {
                pos,
                stamp_ns: wall_ns(),
                recv_ns: inputs.clock.now_ns(),
                seq: prev.seq + 1,
            });
            c.accepted.fetch_add(1, Ordering::Relaxed);
        }
        let mut wrote = false;
        let cmd = self.cmd.load();
        if !self.hold && cmd.seq != self.last_cmd {
            self.last_cmd = cmd.seq;
            let goals = cmd.pos.map(f64::from);
            if let Some(arm) = self.arm.as_mut() {
                match arm.write_goals(&goals) {
                    Ok(()) => wrote = true,
                    Err(so101::ArmError::Bus(e)) => return Err(e),
                    Err(e) => {
                        return Err(BusError::Invalid {
                            port: self.cfg.port.clone(),
                            message: e.to_string(),
                        })
                    }
                }
            }
        }
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
        eprintln!("maniflow run: {msg}");
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
        eprintln!("maniflow run: robot bus lost ({msg}); holding, reconnecting every 0.5 s");
        self.publish_counters();
        self.arm = None;
        if let Ok(mut r) = self.report.lock() {
            r.disconnects += 1;
            r.last_error = msg;
        }
    }

    fn reconnect(&mut self) {
        match self.cfg.connect(self.cal) {
            Ok(arm) => {
                eprintln!("maniflow run: robot bus back on {}", self.cfg.port);
                self.arm = Some(arm);
                self.last_cmd = self.cmd.load().seq;
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
        if let (Some(arm), Ok(mut r)) = (self.arm.as_ref(), self.report.lock()) {
            r.bus = arm.bus.counters;
            r.joints = so101::IDS
                .iter()
                .map(|id| arm.bus.id_counters(*id))
                .collect();
        }
    }
}
