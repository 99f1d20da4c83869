//! `maniflow demo`: the main job on the embedded default, without a robot.
//!
//! Runs a policy package in a real-time closed loop at `--fps` on synthetic
//! camera frames and a kinematic stand-in for the SO-101 (each joint follows its
//! command with a first-order lag), through the same controller the robot node
//! uses: executor, whole-chunk checks, safety filter. Prints every inference and
//! a summary. Until the simulator and the bundled trained policy exist, the
//! default package is the test fixture `models/fixtures/tiny-maniflow`, whose
//! random weights produce meaningless, often out-of-range actions: watch the
//! safety layer clamp and reject them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::synthetic::SyntheticObservation;
use crate::control::executor::{ExecutorConfig, ExecutorMode};
use crate::control::safety::CommandVerdict;
use crate::control::{so101_safety, Controller};
use crate::stats::{peak_rss_bytes, Latency};

use super::RunOpts;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Policy package (default: the bundled one).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Control ticks to run.
    #[arg(long, default_value_t = 150)]
    pub ticks: u64,
    /// Control rate in Hz.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f32,
    #[command(flatten)]
    pub run: RunOpts,
}

/// The embedded default package: looked up beside the current directory, then in the source tree.
fn default_policy() -> anyhow::Result<PathBuf> {
    let rel = Path::new("models/fixtures/tiny-maniflow");
    let candidates = [
        std::env::current_dir()
            .map(|d| d.join(rel))
            .unwrap_or_else(|_| rel.to_path_buf()),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel),
    ];
    candidates
        .iter()
        .find(|p| p.join("policy.toml").is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "bundled policy not found (looked at {}); pass --policy DIR",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if !(a.fps > 0.0 && a.fps <= 1000.0) {
        anyhow::bail!("--fps must be in (0, 1000]");
    }
    let policy = match a.policy.clone() {
        Some(p) => p,
        None => default_policy()?,
    };
    let ort = crate::policy::ortlib::init()?;
    let engine = super::load_engine(&policy, &a.run)?;
    let m = engine.package().manifest.clone();
    println!(
        "maniflow demo: {} ({:?}) from {}",
        m.name,
        m.kind,
        policy.display()
    );
    println!("  ONNX Runtime {}", ort.0.display());
    println!(
        "  {} camera(s), state {}, action {} x {} (executes {}), N = {} step(s), {} Hz for {} ticks",
        m.inputs.cameras.len(),
        m.inputs.state.as_ref().map_or(0, |s| s.names.len()),
        engine.chunk_len(),
        engine.action_dim(),
        engine.n_action_steps(),
        engine.steps(),
        a.fps,
        a.ticks
    );
    if engine.action_dim() != 6 {
        anyhow::bail!(
            "the demo drives an SO-101 stand-in: the policy's action must have 6 values, it has {}",
            engine.action_dim()
        );
    }
    let mut obs = SyntheticObservation::new(&m, None);
    let mut ctl = Controller::new(
        engine,
        ExecutorConfig {
            mode: ExecutorMode::Queue,
            interpolation_multiplier: 1,
        },
        so101_safety(a.fps),
    )?;
    // The stand-in arm starts at the calibration midpoint, gripper half open.
    let mut present = [0.0f32, 0.0, 0.0, 0.0, 0.0, 50.0];
    let mut cmd = [0.0f32; 6];
    let period = Duration::from_secs_f64(1.0 / f64::from(a.fps));
    let alpha = 1.0 - (-f64::from(1.0 / a.fps) / 0.1).exp() as f32; // 100 ms servo time constant
    let (mut infer_lat, mut late) = (Latency::new(), Latency::new());
    let (mut inferences, mut rejected, mut clamped, mut held) = (0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    let mut last_wake = start;
    for k in 0..a.ticks {
        let deadline = start + period * k as u32;
        let now = Instant::now();
        if now < deadline {
            std::thread::sleep(deadline - now);
        }
        last_wake = Instant::now();
        late.record(last_wake.saturating_duration_since(deadline));
        obs.update(k);
        obs.state.copy_from_slice(&present);
        let t0 = Instant::now();
        let r = ctl.step(|e| obs.apply(e), &present, &mut cmd)?;
        let dt = t0.elapsed();
        match r.verdict {
            CommandVerdict::Clamped => clamped += 1,
            CommandVerdict::Held | CommandVerdict::Blocked => held += 1,
            CommandVerdict::Passed => {}
        }
        if r.inferred {
            inferences += 1;
            infer_lat.record(dt);
            if r.chunk_rejected {
                rejected += 1;
            }
            // The first few inferences, then about one line per second.
            let show = inferences <= 5 || k % (a.fps.round().max(1.0) as u64) == 0;
            if show {
                println!(
                    "tick {k:>4}  inference {:>6.2} ms  chunk {}  command [{}]",
                    dt.as_secs_f64() * 1e3,
                    if r.chunk_rejected {
                        "REJECTED (holding)"
                    } else {
                        "accepted          "
                    },
                    cmd.iter()
                        .map(|v| format!("{v:7.2}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
        for (p, c) in present.iter_mut().zip(&cmd) {
            *p += alpha * (c - *p);
        }
    }
    // Rate over the wake-ups: (ticks - 1) periods from the first to the last.
    let elapsed = (last_wake - start).as_secs_f64();
    let rate = a.ticks.saturating_sub(1) as f64 / elapsed.max(1e-9);
    let il = infer_lat.percentiles();
    let ll = late.percentiles();
    let c = ctl.safety.counters();
    if rejected == inferences && inferences > 0 {
        println!("note: every chunk was rejected by the whole-chunk checks, so the arm held its start pose;");
        println!("      expected for the random-weight fixture, whose actions jump far beyond the SO-101 limits.");
    }
    println!("summary");
    println!(
        "  {} ticks in {:.2} s = {:.2} Hz (target {}), wake-up lateness p50 {:.0} us, p99 {:.0} us",
        a.ticks, elapsed, rate, a.fps, ll.p50_us, ll.p99_us
    );
    println!(
        "  {inferences} inferences: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        il.p50_us / 1e3,
        il.p99_us / 1e3,
        il.max_us / 1e3
    );
    println!("  chunks rejected {rejected}, commands clamped {clamped}, ticks held {held}");
    println!(
        "  safety counters: nan {} limit {} step {} first_jump {} velocity {} jerk {} nonfinite {} held {}",
        c.nan_rejected, c.limit_clamped, c.step_clamped, c.chunk_first_jump, c.chunk_velocity, c.chunk_jerk, c.chunk_nonfinite, c.held
    );
    println!(
        "  final position [{}]",
        present
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  peak RSS {:.1} MB",
        peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0)
    );
    Ok(())
}
