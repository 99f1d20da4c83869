//! `maniflow robot`: the SO-101 bus driver as its own process, bridged to
//! zenoh or ROS 2, for setups that drive the arm from elsewhere (another
//! machine's node, a ROS 2 controller). The same bus thread as the robot
//! node's `[robot]` section (node::robot): `joint_states` (JointState, LeRobot
//! units) published at the bus rate, `joint_command` (Float64MultiArray, six
//! values, LeRobot units) in, written through the SO-101 safety filter against
//! the present position every cycle (joint limits, a per-cycle step, a start
//! ramp), and `diagnostics` (diagnostic_msgs/DiagnosticArray: the bus and each
//! servo, with counters, temperatures and safety holds) once a second.
//! With `--cameras CONFIG`, the cameras of that node config that have a
//! `source` (V4L2 devices, ffmpeg inputs) are published too, as
//! `sensor_msgs/Image` on their topics, for a node elsewhere to subscribe.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use maniflow_bridge::camera::CameraStats;
use maniflow_bridge::feetech::so101;
use maniflow_bridge::msg::{
    DiagnosticArray, DiagnosticStatus, Float64MultiArray, Header, JointState, KeyValue, Time,
};
use maniflow_bridge::so101::{JOINT_NAMES, N_JOINTS};
use maniflow_bridge::transport::{
    wall_ns, AnyTransport, Publish, Qos, Transport, TransportConfig, TransportKind,
    DEFAULT_ENDPOINT,
};
use serde::Serialize;

use super::run::{parse_duration, write_json_atomic};
use crate::control::safety::Safety;
use crate::control::so101_safety;
use crate::node::cameras::start_publishing_cameras;
use crate::node::config::load_camera_streams;
use crate::node::robot::{Command, Goals, JointSink, RobotLink, RobotReport, RobotSection};

pub const DIAGNOSTICS_TOPIC: &str = "diagnostics";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Serial port of the arm's bus adapter, e.g. /dev/ttyACM0.
    #[arg(long)]
    pub port: String,
    /// Calibration id (LeRobot's `--robot.id`).
    #[arg(long, default_value = "so101")]
    pub id: String,
    /// Directory holding `<id>.json` (default: LeRobot's directories).
    #[arg(long)]
    pub calibration_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1_000_000)]
    pub baud: u32,
    /// Bus cycles (joint_states messages) per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Hold the arm when a servo is hotter than this (deg C).
    #[arg(long, default_value_t = 60)]
    pub max_temperature_c: i32,
    /// Leave torque on at exit (default: off, the arm goes limp).
    #[arg(long)]
    pub keep_torque: bool,
    /// zenoh | ros2-dds | ros2-zenoh.
    #[arg(long, default_value = "zenoh")]
    pub transport: TransportKind,
    /// Robot name (zenoh key prefix maniflow/<robot>/, ROS namespace /<robot>).
    #[arg(long, default_value = "so101")]
    pub robot: String,
    /// Zenoh endpoint(s) to listen on (default tcp/127.0.0.1:7447 when no --connect).
    #[arg(long)]
    pub listen: Vec<String>,
    /// Zenoh endpoint(s) to connect to.
    #[arg(long)]
    pub connect: Vec<String>,
    /// ROS domain id (default: ROS_DOMAIN_ID, else 0).
    #[arg(long)]
    pub domain_id: Option<u16>,
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Also publish cameras read on this machine: the streams with a `source`
    /// in this node config (e.g. launch/so101-cameras.toml; its other sections
    /// are not read) as sensor_msgs/Image on their topics.
    #[arg(long)]
    pub cameras: Option<PathBuf>,
}

/// What `maniflow robot` did (`--stats-json`).
#[derive(Debug, Clone, Serialize)]
pub struct RobotStats {
    pub joint_states_published: u64,
    pub commands_received: u64,
    pub commands_malformed: u64,
    pub diagnostics_published: u64,
    pub bus: RobotReport,
    /// `--cameras`: per camera topic, the reader's counters and the images published.
    pub cameras: BTreeMap<String, PublishedCamera>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublishedCamera {
    #[serde(flatten)]
    pub reader: CameraStats,
    pub published: u64,
}

/// Publishes every complete reading as a JointState (preallocated message).
struct JointStatePublisher {
    publisher: Box<dyn Publish<JointState>>,
    msg: JointState,
    published: Arc<AtomicU64>,
}

impl JointSink for JointStatePublisher {
    fn joints(&mut self, pos: &[f32; N_JOINTS], stamp_ns: i64) {
        self.msg.header.stamp = Time::from_nanos(stamp_ns);
        for (d, s) in self.msg.position.iter_mut().zip(pos) {
            *d = f64::from(*s);
        }
        if self.publisher.publish(&self.msg).is_ok() {
            self.published.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn transport_config(a: &Args) -> TransportConfig {
    let mut tc = TransportConfig {
        kind: a.transport,
        robot: a.robot.clone(),
        domain_id: a.domain_id,
        listen: if a.listen.is_empty() && a.connect.is_empty() {
            vec![DEFAULT_ENDPOINT.to_string()]
        } else {
            a.listen.clone()
        },
        connect: a.connect.clone(),
        ..TransportConfig::default()
    };
    tc.namespace = None;
    tc
}

fn section(a: &Args) -> RobotSection {
    RobotSection {
        calibration_id: a.id.clone(),
        calibration_dir: a.calibration_dir.clone(),
        baud: a.baud,
        rate_hz: Some(a.rate),
        max_temperature_c: a.max_temperature_c,
        torque_off_at_exit: !a.keep_torque,
        ..RobotSection::so101(&a.port)
    }
}

/// Commands from `joint_command`: six finite values, else counted as malformed.
fn subscribe_commands(
    t: &AnyTransport,
    cmd: Arc<crossbeam::atomic::AtomicCell<Command>>,
    received: Arc<AtomicU64>,
    malformed: Arc<AtomicU64>,
) -> anyhow::Result<maniflow_bridge::transport::Subscription> {
    Ok(t.subscribe::<Float64MultiArray>(
        "joint_command",
        Qos::Command,
        Box::new(move |res| match res {
            Ok(x) if x.msg.data.len() == N_JOINTS && x.msg.data.iter().all(|v| v.is_finite()) => {
                let mut pos = [0f32; N_JOINTS];
                for (d, s) in pos.iter_mut().zip(&x.msg.data) {
                    *d = *s as f32;
                }
                let seq = cmd.load().seq + 1;
                cmd.store(Command { seq, pos });
                received.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                malformed.fetch_add(1, Ordering::Relaxed);
            }
        }),
    )?)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if !(a.rate > 0.0 && a.rate <= 1000.0) {
        anyhow::bail!("--rate must be in (0, 1000]");
    }
    let cfg = section(&a);
    cfg.check().map_err(anyhow::Error::msg)?;
    let tc = transport_config(&a);
    let t = AnyTransport::open(&tc, "so101_robot")
        .with_context(|| format!("opening the {} transport", tc.kind))?;
    let published = Arc::new(AtomicU64::new(0));
    let sink = JointStatePublisher {
        publisher: t.publisher::<JointState>("joint_states", Qos::Sensor)?,
        msg: JointState::positions(Header::default(), JOINT_NAMES, vec![0.0; N_JOINTS]),
        published: published.clone(),
    };
    let diag_pub = t.publisher::<DiagnosticArray>(DIAGNOSTICS_TOPIC, Qos::Command)?;
    let safety = Safety::new(so101_safety(a.rate as f32))
        .map_err(|e| anyhow::anyhow!("safety limits: {e}"))?;
    let link = RobotLink::start(
        &cfg,
        a.rate,
        Box::new(sink),
        Goals::Filtered(safety),
        "maniflow robot",
    )
    .with_context(|| format!("robot on {}", a.port))?;
    let cameras = match &a.cameras {
        None => Vec::new(),
        Some(p) => {
            let streams = load_camera_streams(p)?;
            start_publishing_cameras(&streams, &t, &[p])?
        }
    };
    let (received, malformed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let _cmd_sub = subscribe_commands(&t, link.cmd.clone(), received.clone(), malformed.clone())?;
    let stop = super::stop_on_signal(Some(
        "maniflow robot: stopping (torque off unless --keep-torque)",
    ))?;
    eprintln!(
        "maniflow robot: SO-101 on {} at {} Hz, {} transport (robot {}): joint_states out, joint_command in, diagnostics at 1 Hz{}",
        a.port,
        a.rate,
        tc.kind,
        a.robot,
        cameras
            .iter()
            .map(|(topic, r, _)| format!(", {topic} out ({})", r.stats().source))
            .collect::<String>()
    );
    let start = Instant::now();
    let mut diagnostics = 0u64;
    while !stop.load(Ordering::Relaxed) && !a.duration.is_some_and(|d| start.elapsed() >= d) {
        std::thread::sleep(
            Duration::from_millis(50).min(
                a.duration
                    .map_or(Duration::MAX, |d| d.saturating_sub(start.elapsed())),
            ),
        );
        if start.elapsed().as_secs() + 1 > diagnostics {
            let report = link.report.lock().map(|r| r.clone()).unwrap_or_default();
            if diag_pub
                .publish(&diagnostic_array(&report, &a.robot))
                .is_ok()
            {
                diagnostics += 1;
            }
        }
    }
    let report = link.finish();
    let _ = diag_pub.publish(&diagnostic_array(&report, &a.robot));
    let cameras = cameras
        .into_iter()
        .map(|(topic, r, n)| {
            let reader = r.finish();
            let published = n.load(Ordering::Relaxed);
            (topic, PublishedCamera { reader, published })
        })
        .collect();
    let stats = RobotStats {
        joint_states_published: published.load(Ordering::Relaxed),
        commands_received: received.load(Ordering::Relaxed),
        commands_malformed: malformed.load(Ordering::Relaxed),
        diagnostics_published: diagnostics + 1,
        bus: report,
        cameras,
    };
    println!(
        "robot summary: {} bus cycles ({} complete, {} incomplete), joint states {}, commands {} (malformed {}), goals written {} (clamped {}), disconnects {}, holds {}, lateness p99 {:.0} us",
        stats.bus.cycles,
        stats.bus.reads_ok,
        stats.bus.reads_incomplete,
        stats.joint_states_published,
        stats.commands_received,
        stats.commands_malformed,
        stats.bus.goals_written,
        stats.bus.goals_clamped,
        stats.bus.disconnects,
        stats.bus.holds.len(),
        stats.bus.lateness_us.p99_us,
    );
    if let Some(p) = &a.stats_json {
        write_json_atomic(p, &stats)?;
    }
    Ok(())
}

/// The bus and each servo as diagnostic statuses (`<robot>/bus`, `<robot>/<joint>`).
pub fn diagnostic_array(r: &RobotReport, robot: &str) -> DiagnosticArray {
    let bus_level = if !r.holds.is_empty() || r.disconnects > r.connects.saturating_sub(1) {
        DiagnosticStatus::ERROR
    } else if r.reads_incomplete > 0 || r.disconnects > 0 {
        DiagnosticStatus::WARN
    } else {
        DiagnosticStatus::OK
    };
    let bus_msg = match (r.holds.last(), bus_level) {
        (Some(h), _) => h.clone(),
        (None, DiagnosticStatus::ERROR) => format!("bus lost: {}", r.last_error),
        (None, DiagnosticStatus::WARN) => "incomplete readings or reconnections".to_string(),
        _ => "ok".to_string(),
    };
    let b = &r.bus;
    let mut status = vec![DiagnosticStatus {
        level: bus_level,
        name: format!("{robot}/bus"),
        message: bus_msg,
        hardware_id: r.port.clone(),
        values: vec![
            KeyValue::new("cycles", r.cycles),
            KeyValue::new("reads_ok", r.reads_ok),
            KeyValue::new("reads_incomplete", r.reads_incomplete),
            KeyValue::new("goals_written", r.goals_written),
            KeyValue::new("goals_clamped", r.goals_clamped),
            KeyValue::new("goals_blocked", r.goals_blocked),
            KeyValue::new("connects", r.connects),
            KeyValue::new("disconnects", r.disconnects),
            KeyValue::new("transactions", b.transactions),
            KeyValue::new("stale_bytes", b.stale_bytes),
            KeyValue::new("unexpected_packets", b.unexpected_packets),
            KeyValue::new("resyncs", b.resyncs),
            KeyValue::new("lateness_p99_us", format!("{:.0}", r.lateness_us.p99_us)),
            KeyValue::new("last_error", &r.last_error),
        ],
    }];
    for (i, name) in JOINT_NAMES.iter().enumerate() {
        let c = r.joints.get(i).copied().unwrap_or_default();
        let alarm = c.alarms_by_bit.iter().any(|n| *n > 0);
        let held = r.holds.iter().any(|h| h.contains(&format!(": {name} (")));
        let level = if held {
            DiagnosticStatus::ERROR
        } else if alarm || c.timeouts > 0 || c.checksum_errors > 0 {
            DiagnosticStatus::WARN
        } else {
            DiagnosticStatus::OK
        };
        let message = match level {
            DiagnosticStatus::ERROR => "safety hold".to_string(),
            DiagnosticStatus::WARN if alarm => "alarm replies".to_string(),
            DiagnosticStatus::WARN => "missed or corrupt replies".to_string(),
            _ => "ok".to_string(),
        };
        let mut values = vec![
            KeyValue::new("temperature_c", r.temperature_c[i]),
            KeyValue::new("requests", c.requests),
            KeyValue::new("replies", c.replies),
            KeyValue::new("timeouts", c.timeouts),
            KeyValue::new("checksum_errors", c.checksum_errors),
            KeyValue::new("retries", c.retries),
            KeyValue::new("alarm_replies", c.alarm_replies),
        ];
        for (bit, n) in c.alarms_by_bit.iter().enumerate() {
            if *n > 0 {
                values.push(KeyValue::new(format!("alarm_{}", alarm_name(bit)), n));
            }
        }
        status.push(DiagnosticStatus {
            level,
            name: format!("{robot}/{name}"),
            message,
            hardware_id: format!("STS3215 id {} on {}", so101::IDS[i], r.port),
            values,
        });
    }
    DiagnosticArray {
        header: Header::new(Time::from_nanos(wall_ns()), ""),
        status,
    }
}

fn alarm_name(bit: usize) -> String {
    maniflow_bridge::feetech::Alarms(1 << bit)
        .to_string()
        .replace([' ', '-'], "_")
}
