//! `maniflow bench POLICY_DIR`: stage latencies vs the raw ONNX Runtime sessions.
//!
//! Each iteration runs the whole observation-to-chunk path (preprocess every obs
//! step, encoder, N velocity steps, sampler arithmetic, unnormalise) and then the
//! same graphs through the bare sessions with the same tensors, so both are
//! measured in the same run under the same conditions. JSON keys are stable and
//! documented in the README ("Benchmark JSON").

use std::path::PathBuf;
use std::time::Instant;

use crate::cli::synthetic::SyntheticObservation;
use crate::policy::manifest::PolicyKind;
use crate::stats::{peak_rss_bytes, Latency, Percentiles};
use serde::Serialize;

use super::RunOpts;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Policy package directory.
    pub policy: PathBuf,
    /// Measured iterations.
    #[arg(long, default_value_t = 300)]
    pub iters: usize,
    /// Unmeasured warm-up iterations.
    #[arg(long, default_value_t = 30)]
    pub warmup: usize,
    /// Size of the synthetic camera frames, WIDTHxHEIGHT (default: the manifest's, no resize).
    #[arg(long)]
    pub frame_size: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunOpts,
}

#[derive(Serialize)]
pub struct BenchReport {
    pub policy: String,
    pub kind: PolicyKind,
    pub device: String,
    pub threads: usize,
    pub steps: usize,
    pub iters: usize,
    pub frame_size: Option<(usize, usize)>,
    pub preprocess: Percentiles,
    pub encoder: Percentiles,
    pub velocity_step: Percentiles,
    pub whole: Percentiles,
    pub raw_encoder: Percentiles,
    pub raw_velocity_step: Percentiles,
    pub raw_total: Percentiles,
    /// whole.p50 / raw_total.p50
    pub overhead_ratio: f64,
    /// whole.p99 / raw_total.p99
    pub overhead_ratio_p99: f64,
    /// whole.p99 / whole.p50
    pub jitter_ratio: f64,
    pub peak_rss_mb: f64,
}

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| anyhow::anyhow!("--frame-size `{s}`: expected WIDTHxHEIGHT"))?;
    let w: usize = w
        .parse()
        .map_err(|_| anyhow::anyhow!("--frame-size `{s}`: bad width"))?;
    let h: usize = h
        .parse()
        .map_err(|_| anyhow::anyhow!("--frame-size `{s}`: bad height"))?;
    if w == 0 || h == 0 {
        anyhow::bail!("--frame-size `{s}`: must be at least 1x1");
    }
    Ok((w, h))
}

pub fn measure(a: &Args) -> anyhow::Result<BenchReport> {
    let mut engine = super::load_engine(&a.policy, &a.run)?;
    let frame_size = a.frame_size.as_deref().map(parse_size).transpose()?;
    let mut obs = SyntheticObservation::new(&engine.package().manifest, frame_size);
    let kind = engine.kind();
    let steps = if kind == PolicyKind::Maniflow {
        engine.steps()
    } else {
        0
    };
    let (mut pre, mut enc, mut vel, mut whole) = (
        Latency::new(),
        Latency::new(),
        Latency::new(),
        Latency::new(),
    );
    let (mut raw_enc, mut raw_vel, mut raw_total) =
        (Latency::new(), Latency::new(), Latency::new());
    for it in 0..(a.warmup + a.iters) {
        obs.update(it as u64);
        let t0 = Instant::now();
        obs.apply(&mut engine)?;
        let t1 = Instant::now();
        engine.infer()?;
        let t2 = Instant::now();
        // Raw sessions, same tensors.
        let r0 = Instant::now();
        engine.run_obs_graph()?;
        let r1 = Instant::now();
        let mut rv = std::time::Duration::ZERO;
        for _ in 0..steps {
            let v0 = Instant::now();
            engine.run_velocity()?;
            let d = v0.elapsed();
            rv += d;
            if it >= a.warmup {
                raw_vel.record(d);
            }
        }
        if it >= a.warmup {
            let times = engine.last_times();
            pre.record(t1 - t0);
            enc.record(times.encoder);
            if steps > 0 {
                vel.record(times.velocity / steps as u32);
            }
            whole.record(t2 - t0);
            raw_enc.record(r1 - r0);
            raw_total.record((r1 - r0) + rv);
        }
    }
    let (w, r) = (whole.percentiles(), raw_total.percentiles());
    Ok(BenchReport {
        policy: a.policy.display().to_string(),
        kind,
        device: a.run.device.clone(),
        threads: a.run.threads,
        steps,
        iters: a.iters,
        frame_size,
        preprocess: pre.percentiles(),
        encoder: enc.percentiles(),
        velocity_step: vel.percentiles(),
        whole: w,
        raw_encoder: raw_enc.percentiles(),
        raw_velocity_step: raw_vel.percentiles(),
        raw_total: r,
        overhead_ratio: w.p50_us / r.p50_us.max(1e-9),
        overhead_ratio_p99: w.p99_us / r.p99_us.max(1e-9),
        jitter_ratio: w.p99_us / w.p50_us.max(1e-9),
        peak_rss_mb: peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0)),
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.iters == 0 {
        anyhow::bail!("--iters must be >= 1");
    }
    let r = measure(&a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} ({:?}) on {}, {} thread(s), N = {}, {} iterations",
        r.policy, r.kind, r.device, r.threads, r.steps, r.iters
    );
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>10}",
        "stage [us]", "p50", "p99", "p99.9", "max"
    );
    let row = |name: &str, p: &Percentiles| {
        println!(
            "{:<18} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            name, p.p50_us, p.p99_us, p.p999_us, p.max_us
        )
    };
    row("preprocess", &r.preprocess);
    row("encoder", &r.encoder);
    if r.steps > 0 {
        row("velocity step", &r.velocity_step);
    }
    row("whole path", &r.whole);
    row("raw encoder", &r.raw_encoder);
    if r.steps > 0 {
        row("raw velocity step", &r.raw_velocity_step);
    }
    row("raw total", &r.raw_total);
    println!(
        "overhead_ratio {:.3} (p50), {:.3} (p99); p99/p50 {:.2}; peak RSS {:.1} MB",
        r.overhead_ratio, r.overhead_ratio_p99, r.jitter_ratio, r.peak_rss_mb
    );
    Ok(())
}
