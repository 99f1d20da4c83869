//! `maniflow bus-bench`: bus time per control tick (SYNC_READ of the six
//! positions + SYNC_WRITE of six goals) with our driver, next to LeRobot
//! 0.6.1's `get_observation()` + `send_action()` (tests/lerobot/bench_bus.py),
//! both against the same STS3215 emulator on a pty, which replies after the
//! wire time at the baud rate (1 Mbps), in the same run. Prints percentiles,
//! the ratio, and the wire-time floor of one tick.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use maniflow_bridge::feetech::so101::{ArmConfig, Calibration, Role, So101};
use maniflow_bridge::feetech::{Bus, BusConfig, Failure, SerialPortIo};
use serde::Serialize;

use super::sim_serial::SerialArm;
use crate::stats::{Latency, Percentiles};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Measured ticks per driver (after 50 warm-up ticks).
    #[arg(long, default_value_t = 1000)]
    pub ticks: usize,
    /// Python with LeRobot 0.6.1 (default: the bootstrap's .venv).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Only our driver.
    #[arg(long)]
    pub no_lerobot: bool,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct BusBench {
    pub baud: u32,
    pub wire_floor_us: f64,
    pub ours_us: Percentiles,
    pub lerobot_us: Option<Percentiles>,
    pub ours_incomplete_reads: u64,
}

/// Bytes a tick waits for on the wire: the SYNC_READ request (14) and six
/// 2-byte replies (8 each). The SYNC_WRITE of six goals (26 bytes) has no
/// reply: writing returns once the bytes are queued, on a real adapter too.
const TICK_BYTES: usize = 14 + 6 * 8;

fn ours(path: &str, cal: Calibration, ticks: usize) -> anyhow::Result<(Latency, u64)> {
    let bus = Bus::new(SerialPortIo::open(path, 1_000_000)?, BusConfig::default());
    let mut arm = So101::connect(bus, cal, ArmConfig::lerobot(Role::Follower), false)?;
    let mut joints = [Err(Failure::Timeout); 6];
    let mut lat = Latency::new();
    let mut incomplete = 0;
    let mut goals = [0f64; 6];
    for k in 0..ticks + 50 {
        let t0 = Instant::now();
        arm.read_joints(&mut joints)?;
        for (g, j) in goals.iter_mut().zip(&joints) {
            match j {
                Ok((v, _)) => *g = *v,
                Err(_) => incomplete += 1,
            }
        }
        arm.write_goals(&goals)?;
        if k >= 50 {
            lat.record(t0.elapsed());
        }
    }
    arm.torque(false)?;
    Ok((lat, incomplete))
}

fn lerobot(
    py: &std::path::Path,
    path: &str,
    dir: &std::path::Path,
    ticks: usize,
) -> anyhow::Result<Latency> {
    let root = source_root();
    let out = std::process::Command::new(py)
        .arg(root.join("tests/lerobot/bench_bus.py"))
        .args(["--port", path, "--calibration-dir"])
        .arg(dir)
        .args(["--id", "bench", "--ticks", &ticks.to_string()])
        .output()
        .with_context(|| format!("running {}", py.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "LeRobot's tick failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or(""))
        .context("reading bench_bus.py's JSON line")?;
    let mut lat = Latency::new();
    for us in v["tick_us"].as_array().into_iter().flatten() {
        lat.record(Duration::from_secs_f64(us.as_f64().unwrap_or(0.0) / 1e6));
    }
    Ok(lat)
}

/// The source tree this binary was built from (bench scripts and the venv).
fn source_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn show(name: &str, p: &Percentiles) {
    println!(
        "  {name:<34} p50 {:>7.0} us  p99 {:>7.0} us  max {:>7.0} us  (n = {})",
        p.p50_us, p.p99_us, p.max_us, p.count
    );
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("maniflow-bus-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let arm = SerialArm::start(
        &maniflow_bridge::sim::HOME_LEROBOT,
        None,
        Some((&dir, "bench")),
    )?;
    let cal = Calibration::load(&dir.join("bench.json"))?;
    let floor = TICK_BYTES as f64 * 10.0;
    println!(
        "bus-bench: one control tick (SYNC_READ 6 positions + SYNC_WRITE 6 goals) on the STS3215 emulator at 1 Mbps; wire time of the read (request + 6 replies) {floor:.0} us"
    );
    let (ours, incomplete) = ours(arm.path(), cal, a.ticks)?;
    let ours = ours.percentiles();
    show("maniflow (Rust driver)", &ours);
    let le = if a.no_lerobot {
        None
    } else {
        let py = a
            .python
            .clone()
            .unwrap_or_else(|| source_root().join(".venv/bin/python"));
        let l = lerobot(&py, arm.path(), &dir, a.ticks)?.percentiles();
        show("LeRobot get_observation+send_action", &l);
        println!(
            "  ratio LeRobot / maniflow: p50 {:.2}x, p99 {:.2}x",
            l.p50_us / ours.p50_us.max(1e-9),
            l.p99_us / ours.p99_us.max(1e-9)
        );
        Some(l)
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(p) = &a.json {
        super::run::write_json_atomic(
            p,
            &BusBench {
                baud: 1_000_000,
                wire_floor_us: floor,
                ours_us: ours,
                lerobot_us: le,
                ours_incomplete_reads: incomplete,
            },
        )?;
    }
    Ok(())
}
