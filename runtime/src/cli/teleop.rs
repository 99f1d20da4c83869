//! `maniflow teleop`: a leader SO-101 (moved by hand, torque off) drives a
//! follower SO-101, both on their own serial ports, at `--rate` Hz through the
//! same safety filter as the policy (joint limits, per-tick step against the
//! follower's present position, a start ramp). Absolute deadlines; lateness,
//! bus time and safety counters printed at the end (and as JSON).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use maniflow_bridge::feetech::so101::{
    calibration_root, ArmConfig, Calibration, Joints, Role, So101,
};
use maniflow_bridge::feetech::{Bus, BusConfig, Failure, SerialPortIo};
use maniflow_bridge::so101::N_JOINTS;
use serde::Serialize;

use super::run::{parse_duration, write_json_atomic};
use crate::control::safety::{CommandVerdict, Safety};
use crate::control::so101_safety;
use crate::stats::{Latency, Percentiles};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Serial port of the leader arm.
    #[arg(long)]
    pub leader: String,
    /// Serial port of the follower arm.
    #[arg(long)]
    pub follower: String,
    #[arg(long, default_value = "so101")]
    pub leader_id: String,
    #[arg(long, default_value = "so101")]
    pub follower_id: String,
    /// Directory holding `<id>.json` of both arms (default: LeRobot's directories).
    #[arg(long)]
    pub calibration_dir: Option<PathBuf>,
    /// Control rate (Hz).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    #[arg(long, default_value_t = 1_000_000)]
    pub baud: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TeleopStats {
    pub rate_hz: f64,
    pub achieved_rate_hz: f64,
    pub ticks: u64,
    pub deadline_misses: u64,
    pub lateness_us: Percentiles,
    /// Leader read + follower read + follower write, per tick.
    pub bus_us: Percentiles,
    pub incomplete_reads: u64,
    pub clamped: u64,
    pub blocked: u64,
}

fn calibration(dir: Option<&std::path::Path>, role: Role, id: &str) -> anyhow::Result<Calibration> {
    Ok(match dir {
        Some(d) => Calibration::load(&d.join(format!("{id}.json")))?,
        None => Calibration::find(&calibration_root(), role, id)?.0,
    })
}

fn open(
    port: &str,
    baud: u32,
    cal: Calibration,
    role: Role,
) -> anyhow::Result<So101<SerialPortIo>> {
    let bus = Bus::new(SerialPortIo::open(port, baud)?, BusConfig::default());
    So101::connect(bus, cal, ArmConfig::lerobot(role), false)
        .with_context(|| format!("{role:?} arm on {port}"))
}

/// Where the two arms are.
#[derive(Debug, Clone)]
pub struct Arms {
    pub leader: String,
    pub follower: String,
    pub leader_id: String,
    pub follower_id: String,
    pub calibration_dir: Option<PathBuf>,
    pub baud: u32,
}

/// A leader driving a follower, one tick at a time.
pub struct Teleop {
    leader: So101<SerialPortIo>,
    follower: So101<SerialPortIo>,
    safety: Safety,
    lj: Joints,
    fj: Joints,
    pub incomplete: u64,
    pub clamped: u64,
    pub blocked: u64,
}

impl Teleop {
    /// Connect both arms (the follower's torque on, goal = present).
    pub fn open(arms: &Arms, rate: f64) -> anyhow::Result<Teleop> {
        let dir = arms.calibration_dir.as_deref();
        let leader = open(
            &arms.leader,
            arms.baud,
            calibration(dir, Role::Leader, &arms.leader_id)?,
            Role::Leader,
        )?;
        let follower = open(
            &arms.follower,
            arms.baud,
            calibration(dir, Role::Follower, &arms.follower_id)?,
            Role::Follower,
        )?;
        let safety = Safety::new(so101_safety(rate as f32))
            .map_err(|e| anyhow::anyhow!("safety limits: {e}"))?;
        let none = [Err(Failure::Timeout); 6];
        Ok(Teleop {
            leader,
            follower,
            safety,
            lj: none,
            fj: none,
            incomplete: 0,
            clamped: 0,
            blocked: 0,
        })
    }

    /// Read both arms, filter the leader's position, send it to the follower:
    /// (the command sent, the follower's present position) when both read fully.
    pub fn tick(&mut self) -> anyhow::Result<Option<([f32; N_JOINTS], [f32; N_JOINTS])>> {
        self.leader.read_joints(&mut self.lj)?;
        self.follower.read_joints(&mut self.fj)?;
        if !self.lj.iter().chain(self.fj.iter()).all(Result::is_ok) {
            self.incomplete += 1;
            return Ok(None);
        }
        let (mut cmd, mut present) = ([0f32; N_JOINTS], [0f32; N_JOINTS]);
        for i in 0..N_JOINTS {
            cmd[i] = self.lj[i].map(|x| x.0 as f32).unwrap_or(0.0);
            present[i] = self.fj[i].map(|x| x.0 as f32).unwrap_or(0.0);
        }
        match self.safety.filter_command(&mut cmd, &present) {
            CommandVerdict::Blocked => {
                self.blocked += 1;
                return Ok(None);
            }
            CommandVerdict::Clamped => self.clamped += 1,
            _ => {}
        }
        self.follower.write_goals(&cmd.map(f64::from))?;
        Ok(Some((cmd, present)))
    }

    /// Torque off on the follower.
    pub fn finish(&mut self) {
        let _ = self.follower.torque(false);
    }
}

/// Run `tele` at `rate` Hz on absolute deadlines until `stop` or `duration`;
/// `on_tick` sees every (command, present). Returns (ticks, misses, lateness, bus time).
pub fn drive(
    tele: &mut Teleop,
    rate: f64,
    stop: &std::sync::atomic::AtomicBool,
    duration: Option<Duration>,
    mut on_tick: impl FnMut(&[f32; N_JOINTS], &[f32; N_JOINTS]),
) -> anyhow::Result<(u64, u64, Latency, Latency)> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let (mut lateness, mut bus_time) = (Latency::new(), Latency::new());
    let (mut ticks, mut misses) = (0u64, 0u64);
    let start = Instant::now();
    let mut k: u32 = 0;
    while !stop.load(Ordering::Relaxed) && !duration.is_some_and(|d| start.elapsed() >= d) {
        let due = start + period * k;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let wake = Instant::now();
        lateness.record(wake.saturating_duration_since(due));
        if let Some((cmd, present)) = tele.tick()? {
            on_tick(&cmd, &present);
        }
        let el = wake.elapsed();
        bus_time.record(el);
        if wake + el > due + period {
            misses += 1;
        }
        ticks += 1;
        k += 1;
    }
    Ok((ticks, misses, lateness, bus_time))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if !(a.rate > 0.0 && a.rate <= 1000.0) {
        anyhow::bail!("--rate must be in (0, 1000]");
    }
    let arms = Arms {
        leader: a.leader.clone(),
        follower: a.follower.clone(),
        leader_id: a.leader_id.clone(),
        follower_id: a.follower_id.clone(),
        calibration_dir: a.calibration_dir.clone(),
        baud: a.baud,
    };
    let mut tele = Teleop::open(&arms, a.rate)?;
    let stop = super::stop_on_signal(Some("maniflow teleop: stopping (torque off)"))?;
    eprintln!(
        "maniflow teleop: leader {} -> follower {} at {} Hz; Ctrl-C to stop",
        a.leader, a.follower, a.rate
    );
    let start = Instant::now();
    let r = drive(&mut tele, a.rate, &stop, a.duration, |_, _| {});
    tele.finish();
    let (ticks, misses, lateness, bus_time) = r?;
    let secs = start.elapsed().as_secs_f64();
    let s = TeleopStats {
        rate_hz: a.rate,
        achieved_rate_hz: ticks as f64 / secs.max(1e-9),
        ticks,
        deadline_misses: misses,
        lateness_us: lateness.percentiles(),
        bus_us: bus_time.percentiles(),
        incomplete_reads: tele.incomplete,
        clamped: tele.clamped,
        blocked: tele.blocked,
    };
    println!(
        "teleop: {} ticks at {:.1} Hz (target {}), misses {}, lateness p99 {:.0} us, bus per tick p50 {:.0} us p99 {:.0} us, incomplete reads {}, clamped {}, blocked {}",
        s.ticks, s.achieved_rate_hz, s.rate_hz, s.deadline_misses, s.lateness_us.p99_us, s.bus_us.p50_us, s.bus_us.p99_us, s.incomplete_reads, s.clamped, s.blocked
    );
    if let Some(p) = &a.stats_json {
        write_json_atomic(p, &s)?;
    }
    Ok(())
}
