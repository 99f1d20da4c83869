//! `maniflow run`: the robot node (transports in, policy, commands out) until
//! SIGINT/SIGTERM or `--duration`; a status line every second and final stats
//! as JSON. Under `ros2 launch`, the trailing `--ros-args -r __node:=NAME -r
//! __ns:=/NS` that launch_ros appends are understood (see `main.rs`).

use std::path::PathBuf;
use std::time::Duration;

use crate::node::config::{ExecutorKind, NodeConfig};
use crate::node::{run_node, NodeStats, RunOptions};
use crate::policy::options::{EngineOptions, ExecutionProvider};
use anyhow::Context;
use maniflow_bridge::transport::TransportKind;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Node configuration (TOML), e.g. launch/so101.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Policy package directory (overrides policy.path).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// zenoh | ros2-dds | ros2-zenoh (overrides transport.kind).
    #[arg(long)]
    pub transport: Option<TransportKind>,
    /// ROS 2 namespace (overrides transport.namespace).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Zenoh endpoint to connect to (repeatable; replaces transport.connect).
    #[arg(long)]
    pub connect: Vec<String>,
    /// Zenoh endpoint to listen on (repeatable; replaces transport.listen).
    #[arg(long)]
    pub listen: Vec<String>,
    /// Stop after this long (e.g. 10s, 500ms, 2m); default: until SIGINT.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write the final statistics here as JSON.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Base control rate in Hz (overrides control.rate_hz).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Interpolation multiplier (overrides control.interpolation).
    #[arg(long)]
    pub interpolation: Option<usize>,
    /// Action-chunk executor (overrides control.executor).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
    /// Sampling steps N (overrides policy.steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// No status line.
    #[arg(long)]
    pub quiet: bool,
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(v) = s.strip_suffix("min") {
        (v, 60.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60.0)
    } else if let Some(v) = s.strip_suffix('h') {
        (v, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?}: a duration must be > 0"));
    }
    Ok(Duration::from_secs_f64(v * mul))
}

/// What the ROS arguments launch_ros appends ask of us.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RosArgs {
    pub node: Option<String>,
    pub namespace: Option<String>,
}

/// Parses `--ros-args -r __node:=X -r __ns:=/Y` (and `--remap`); other ROS
/// arguments are reported and ignored.
pub fn parse_ros_args(args: &[String]) -> RosArgs {
    let mut r = RosArgs::default();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ros-args" | "--" => {}
            "-r" | "--remap" => {
                if let Some(v) = it.next() {
                    if let Some(n) = v.strip_prefix("__node:=") {
                        r.node = Some(n.to_string());
                    } else if let Some(n) = v.strip_prefix("__ns:=") {
                        r.namespace = Some(n.to_string());
                    } else {
                        eprintln!("maniflow run: ignoring ROS remapping {v:?} (set topic names in the config)");
                    }
                }
            }
            other => eprintln!("maniflow run: ignoring ROS argument {other:?}"),
        }
    }
    r
}

pub fn run(a: Args, ros: RosArgs) -> anyhow::Result<()> {
    let mut cfg = NodeConfig::load(&a.config)?;
    if let Some(p) = a.policy {
        cfg.policy.path = p;
    }
    if let Some(t) = a.transport {
        cfg.transport.kind = t;
    }
    if let Some(ns) = a.namespace.or(ros.namespace) {
        cfg.transport.namespace = Some(ns);
    }
    if !a.connect.is_empty() {
        cfg.transport.connect = a.connect;
    }
    if !a.listen.is_empty() {
        cfg.transport.listen = a.listen;
    }
    if let Some(r) = a.rate {
        cfg.control.rate_hz = r;
    }
    if let Some(m) = a.interpolation {
        cfg.control.interpolation = m;
    }
    if let Some(e) = a.executor {
        cfg.control.executor = e;
    }
    if let Some(s) = a.steps {
        cfg.policy.steps = Some(s);
    }
    cfg.check().map_err(|e| {
        anyhow::anyhow!(
            "config {} (with command-line overrides): {e}",
            a.config.display()
        )
    })?;

    let (engine, ort) = load_node_engine(&cfg)?;
    let m = &engine.package().manifest;
    eprintln!(
        "maniflow run: policy {} ({:?}, N = {}, chunk {} x {}, executes {}) from {}",
        m.name,
        m.kind,
        engine.steps(),
        engine.chunk_len(),
        engine.action_dim(),
        engine.n_action_steps(),
        cfg.policy.path.display()
    );
    eprintln!("maniflow run: ONNX Runtime {}", ort.display());
    eprintln!(
        "maniflow run: transport {} (robot {}, namespace {}), control {} Hz x {} = {} Hz, executor {:?}",
        cfg.transport.kind,
        cfg.transport.robot,
        cfg.transport.resolved_namespace(),
        cfg.control.rate_hz,
        cfg.control.interpolation,
        cfg.control.tick_hz(),
        cfg.control.executor
    );

    let stop = super::stop_on_signal(Some(
        "maniflow run: stopping (ramping to hold); press Ctrl-C again to quit at once",
    ))?;
    let opts = RunOptions {
        duration: a.duration,
        stop,
        status_line: !a.quiet,
        node_name: ros.node.unwrap_or_else(|| "maniflow_policy".into()),
        control_alloc_probe: None,
    };
    let stats = run_node(&cfg, engine, &opts)?;
    print_summary(&stats);
    if let Some(p) = &a.stats_json {
        write_json_atomic(p, &stats)?;
        eprintln!("maniflow run: stats written to {}", p.display());
    }
    Ok(())
}

/// Initialises ONNX Runtime and loads the node config's policy (device,
/// threads, steps, seed from `[policy]`); returns the engine and the library path.
pub fn load_node_engine(cfg: &NodeConfig) -> anyhow::Result<(crate::Engine, std::path::PathBuf)> {
    let ort = crate::policy::ortlib::init()?;
    let provider: ExecutionProvider = cfg
        .policy
        .device
        .parse()
        .map_err(|e: String| anyhow::anyhow!("policy.device: {e}"))?;
    if cfg.policy.steps == Some(0) {
        anyhow::bail!("policy.steps must be >= 1");
    }
    let eo = EngineOptions {
        intra_threads: cfg.policy.threads,
        provider,
        error_on_failure: !cfg.policy.cpu_fallback,
        steps: cfg.policy.steps,
        seed: cfg.policy.seed,
        noise: cfg.policy.noise,
    };
    let engine = crate::Engine::load(&cfg.policy.path, &eo)
        .with_context(|| format!("loading policy package {}", cfg.policy.path.display()))?;
    Ok((engine, ort.0))
}

/// Writes JSON through a temporary file and a rename (never a half file),
/// creating the parent directory if needed.
pub fn write_json_atomic<T: serde::Serialize>(p: &std::path::Path, v: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, p).with_context(|| format!("renaming to {}", p.display()))?;
    Ok(())
}

fn print_summary(s: &NodeStats) {
    println!(
        "summary ({} over {}, {:.1} s)",
        s.policy, s.transport, s.duration_s
    );
    println!(
        "  rate {:.3} Hz (target {}), {} ticks, deadline misses {}",
        s.achieved_rate_hz, s.target_rate_hz, s.ticks, s.deadline_misses
    );
    println!(
        "  wake-up lateness p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us; compute p99 {:.0} us",
        s.lateness_us.p50_us, s.lateness_us.p99_us, s.lateness_us.p999_us, s.lateness_us.max_us, s.compute_us.p99_us
    );
    println!(
        "  end-to-end (observation stamp -> command publish) p50 {:.1} ms, p99 {:.1} ms; first command of a chunk p50 {:.1} ms",
        s.e2e_latency_us.p50_us / 1e3,
        s.e2e_latency_us.p99_us / 1e3,
        s.e2e_first_command_us.p50_us / 1e3
    );
    println!(
        "  inference per chunk p50 {:.2} ms, p99 {:.2} ms; chunks requested {} produced {} accepted {} rejected {} dropped(stale) {} skipped {}",
        s.inference_us.p50_us / 1e3,
        s.inference_us.p99_us / 1e3,
        s.chunks.requested,
        s.chunks.produced,
        s.chunks.accepted,
        s.chunks.rejected_by_safety,
        s.chunks.dropped_stale,
        s.chunks.skipped
    );
    for (name, c) in &s.inputs {
        println!(
            "  input {name:<8} received {} accepted {} malformed {} invalid {} stale {}{}",
            c.received,
            c.accepted,
            c.malformed,
            c.invalid,
            c.stale,
            if c.last_reject_reason.is_empty() {
                String::new()
            } else {
                format!(" (last: {})", c.last_reject_reason)
            }
        );
    }
    println!(
        "  commands published {}, held (stale joints) {}, held (empty queue) {}; safety: clamped {} step {} nan {} first-jump {} velocity {} jerk {}",
        s.commands.published,
        s.commands.held_stale_joints,
        s.commands.held_empty,
        s.safety.limit_clamped,
        s.safety.step_clamped,
        s.safety.nan_rejected,
        s.safety.chunk_first_jump,
        s.safety.chunk_velocity,
        s.safety.chunk_jerk
    );
    println!("  peak RSS {:.1} MB", s.peak_rss_mb);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5min").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1s").unwrap_err().contains("> 0"));
        assert!(parse_duration("abc").unwrap_err().contains("abc"));
    }

    #[test]
    fn ros_args_from_launch_ros() {
        let v: Vec<String> = [
            "--ros-args",
            "-r",
            "__node:=pol",
            "-r",
            "__ns:=/arm1",
            "-p",
            "x:=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = parse_ros_args(&v);
        assert_eq!(r.node.as_deref(), Some("pol"));
        assert_eq!(r.namespace.as_deref(), Some("/arm1"));
    }
}
