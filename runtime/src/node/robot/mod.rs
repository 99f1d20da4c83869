//! A real SO-101 on this machine's serial port: a bus thread reads the joints
//! (one SYNC_READ per cycle, LeRobot units) into a [`JointSink`] and writes the
//! latest [`Command`] as goals (one SYNC_WRITE). In the robot node the sink is
//! the node's inputs and the commands come from the control thread, with no
//! transport hop; in `maniflow robot` the sink publishes `joint_states` and the
//! commands arrive from the transport, through the safety filter on this
//! thread. Telemetry (temperature) and the alarm bits of every reply are
//! watched: an overload or overheat holds the arm and releases the gripper,
//! with a message naming the joint. A failing port (a pulled cable) makes the
//! joints stale, so the control thread holds; the thread reconnects when the
//! port returns.

mod section;
mod worker;

pub use section::RobotSection;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::atomic::AtomicCell;
use maniflow_bridge::feetech::bus::{BusCounters, IdCounters};
use maniflow_bridge::so101::N_JOINTS;
use serde::Serialize;

use super::streams::{Inputs, JointSample};
use crate::control::safety::Safety;

/// Where the bus thread's joint readings go.
pub trait JointSink: Send + 'static {
    /// A complete reading (LeRobot units), read at wall-clock `stamp_ns`.
    fn joints(&mut self, pos: &[f32; N_JOINTS], stamp_ns: i64);
    /// A cycle that did not read every joint.
    fn incomplete(&mut self) {}
}

/// The robot node's inputs as the sink: the control thread's seqlock cell.
pub struct NodeInputs(pub Arc<Inputs>);

impl JointSink for NodeInputs {
    fn joints(&mut self, pos: &[f32; N_JOINTS], stamp_ns: i64) {
        let c = &self.0.joint_counters;
        c.received.fetch_add(1, Ordering::Relaxed);
        let prev = self.0.joints.load();
        self.0.joints.store(JointSample {
            pos: *pos,
            stamp_ns,
            recv_ns: self.0.clock.now_ns(),
            seq: prev.seq + 1,
        });
        c.accepted.fetch_add(1, Ordering::Relaxed);
    }
    fn incomplete(&mut self) {
        self.0
            .joint_counters
            .received
            .fetch_add(1, Ordering::Relaxed);
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
    /// Bus cycle wake-up lateness against its absolute deadlines.
    pub lateness_us: crate::stats::Percentiles,
    /// Goals written through the safety filter (`Goals::Filtered`) that it
    /// clamped, and commands it refused.
    pub goals_clamped: u64,
    pub goals_blocked: u64,
}

/// The running bus thread.
pub struct RobotLink {
    pub cmd: Arc<AtomicCell<Command>>,
    pub report: Arc<Mutex<RobotReport>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How the bus thread turns commands into goals.
pub enum Goals {
    /// Write each new command once, as it is (the node's control thread has
    /// already filtered it).
    AsCommanded,
    /// Every cycle, write the latest command through this safety filter
    /// against the present position (`maniflow robot`: commands from
    /// elsewhere, at their own rate, reach the arm rate-limited).
    Filtered(Safety),
}

impl RobotLink {
    /// Connect (one-line errors: port, calibration, missing ids) and start the
    /// bus thread at `cfg.rate_hz`, else `default_hz`. `who` prefixes messages.
    pub fn start(
        cfg: &RobotSection,
        default_hz: f64,
        sink: Box<dyn JointSink>,
        goals: Goals,
        who: &'static str,
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
        let mut worker = worker::Worker::new(
            cfg.clone(),
            cal,
            arm,
            sink,
            goals,
            who,
            cmd.clone(),
            report.clone(),
        );
        let period = Duration::from_secs_f64(1.0 / cfg.rate_hz.unwrap_or(default_hz));
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
