//! `maniflow eval`: closed-loop evaluation of a policy on the simulated SO-101
//! through the real transports. Starts `maniflow sim` (a separate process, on
//! a free loopback port, holding episode 0 until the node's first command) and
//! runs the robot node (the same code as `maniflow run`) in this process for N
//! episodes; reports the success rate, the mean time to success, inference
//! latency percentiles, end-to-end latency, the safety counters and the
//! smoothness of the commanded motion (seam jumps, jerk, rejected chunks,
//! delays; per episode and overall), next to the scripted expert's own success
//! on the same episodes (same seed; run in this process without transports).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::node::config::{ExecutorKind, NodeConfig};
use crate::node::record::expert_success;
use crate::node::{run_node, NodeStats, RunOptions};
use crate::stats::Percentiles;
use anyhow::{bail, Context};
use maniflow_bridge::transport::TransportKind;
use serde::Serialize;

use super::record::free_port;
use super::run::write_json_atomic;
use super::sim::SimStats;

/// The node configuration used when `--config` is not given (launch/so101.toml).
const DEFAULT_CONFIG: &str = include_str!("../../../launch/so101.toml");

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Policy package directory.
    #[arg(long)]
    pub policy: PathBuf,
    /// Episodes to run.
    #[arg(long, default_value_t = 10)]
    pub episodes: u64,
    /// Sampling steps N (default: the manifest's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Scenario seed (cube poses; the expert baseline uses the same).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Simulator task: pick, or pick-slip (touch decides).
    #[arg(long, value_enum, default_value_t = super::sim::SimTask::Pick)]
    pub task: super::sim::SimTask,
    /// Write the report here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Node configuration (default: the bundled launch/so101.toml; transport and
    /// endpoints are replaced by the simulator's).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// zenoh | ros2-dds | ros2-zenoh.
    #[arg(long, default_value = "zenoh")]
    pub transport: TransportKind,
    /// Episode timeout (s).
    #[arg(long, default_value_t = 12.0)]
    pub episode_s: f64,
    /// Skip the scripted expert baseline.
    #[arg(long)]
    pub no_expert: bool,
    /// ONNX Runtime threads per session (default: the config's).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the node's status line every second.
    #[arg(long)]
    pub verbose: bool,
    /// Action-chunk executor (default: the config's control.executor).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
    /// Initial noise per chunk (default: the config's policy.noise, fresh).
    #[arg(long, value_enum)]
    pub noise_mode: Option<crate::policy::options::NoiseMode>,
    /// Drive the simulated arm through its servo bus (`maniflow sim --serial`
    /// and the node's `[robot]` path) instead of joint_states/joint_command.
    #[arg(long)]
    pub bus: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub policy: String,
    pub steps: usize,
    pub seed: u64,
    pub episodes: u64,
    pub transport: String,
    pub successes: u64,
    pub success_rate: f64,
    pub mean_time_to_success_s: Option<f64>,
    /// Mean and best `episode_return` of the episodes (0 to 1; see `maniflow_bridge::sim::reward`).
    pub mean_episode_return: Option<f64>,
    pub best_episode_return: Option<f64>,
    /// Episodes per outcome (success, crushed, dropped, grasped_not_lifted, never_grasped).
    #[serde(default)]
    pub outcomes: std::collections::BTreeMap<String, u64>,
    pub expert_success_rate: Option<f64>,
    pub expert_mean_time_to_success_s: Option<f64>,
    pub inference_us: Percentiles,
    pub e2e_latency_us: Percentiles,
    pub e2e_first_command_us: Percentiles,
    pub achieved_rate_hz: f64,
    pub deadline_misses: u64,
    /// Control-loop wake-up lateness against its absolute deadlines.
    pub lateness_us: Percentiles,
    pub realtime: crate::node::rt::RtReport,
    /// The bus thread's report (`--bus`).
    pub robot: Option<crate::node::robot::RobotReport>,
    pub chunks: crate::node::ChunkCounts,
    pub commands: crate::node::CommandCounts,
    pub safety: crate::node::SafetyCounts,
    pub wall_s: f64,
    pub per_episode: Vec<super::sim::EpisodeResult>,
    /// queue, ensemble, async, rtc-prefix or rtc-blend.
    pub executor: String,
    /// Seam jumps, jerk, chunks rejected by each check and delays, per episode
    /// (by the simulator's episode number) and overall.
    pub smoothness: crate::node::SmoothnessReport,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.episodes == 0 {
        bail!("--episodes must be >= 1");
    }
    if !(a.episode_s.is_finite() && a.episode_s > 0.0) {
        bail!("--episode-s must be > 0");
    }
    let t0 = Instant::now();
    let mut cfg = match &a.config {
        Some(p) => NodeConfig::load(p)?,
        None => toml::from_str::<NodeConfig>(DEFAULT_CONFIG)
            .map_err(|e| anyhow::anyhow!("built-in launch/so101.toml: {e}"))?,
    };
    cfg.policy.path = a.policy.clone();
    if let Some(s) = a.steps {
        if s == 0 {
            bail!("--steps must be >= 1");
        }
        cfg.policy.steps = Some(s);
    }
    if let Some(t) = a.threads {
        cfg.policy.threads = t.max(1);
    }
    if let Some(e) = a.executor {
        cfg.control.executor = e;
    }
    if let Some(n) = a.noise_mode {
        cfg.policy.noise = n;
    }
    let port = free_port()?;
    let endpoint = format!("tcp/127.0.0.1:{port}");
    cfg.transport.kind = a.transport;
    cfg.transport.connect = vec![endpoint.clone()];
    cfg.transport.listen = vec![];
    let tmp = std::env::temp_dir().join(format!("maniflow-eval-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let link = tmp.join("ttySO101");
    if a.bus {
        cfg.streams.remove("joints");
        let section = format!(
            "kind = \"so101\"\nport = {:?}\ncalibration_id = \"so101-sim\"\ncalibration_dir = {:?}\nrate_hz = 100.0\n",
            link.display().to_string(),
            tmp.display().to_string()
        );
        cfg.robot =
            Some(toml::from_str(&section).map_err(|e| anyhow::anyhow!("robot section: {e}"))?);
    }
    cfg.check()
        .map_err(|e| anyhow::anyhow!("node config: {e}"))?;

    let (engine, _) = super::run::load_node_engine(&cfg)?;
    let steps = engine.steps();
    let policy_name = engine.package().manifest.name.clone();

    let sim_json = tmp.join("sim.json");
    let sim_log = tmp.join("sim.log");
    let log = std::fs::File::create(&sim_log)
        .with_context(|| format!("creating {}", sim_log.display()))?;
    let exe = std::env::current_exe().context("locating the maniflow binary")?;
    let mut sim = Command::new(exe)
        .arg("sim")
        .args([
            "--transport",
            &a.transport.to_string(),
            "--listen",
            &endpoint,
        ])
        .args([
            "--seed",
            &a.seed.to_string(),
            "--task",
            a.task.name(),
            "--episodes",
            &a.episodes.to_string(),
        ])
        .args([
            "--episode-s",
            &a.episode_s.to_string(),
            "--wait-for-command",
            "--quiet",
        ])
        .arg("--stats-json")
        .arg(&sim_json)
        .args(if a.bus {
            vec![
                "--serial".into(),
                "--serial-link".into(),
                link.display().to_string(),
                "--serial-calibration".into(),
                tmp.display().to_string(),
                "--serial-id".into(),
                "so101-sim".into(),
            ]
        } else {
            vec![]
        })
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting `maniflow sim`")?;
    eprintln!(
        "eval: {} (N = {steps}) on the simulated SO-101, {} episodes, seed {}, {} on {endpoint}{}",
        a.policy.display(),
        a.episodes,
        a.seed,
        a.transport,
        if a.bus {
            ", joints and goals over its servo bus"
        } else {
            ""
        }
    );

    if a.bus {
        let t = Instant::now();
        while !link.exists() {
            if t.elapsed() > Duration::from_secs(20) {
                let _ = sim.kill();
                bail!(
                    "the simulator's servo bus did not appear at {} (see {})",
                    link.display(),
                    sim_log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let stop = super::stop_on_signal(None)?;
    let sim_done = Arc::new(AtomicBool::new(false));
    let limit = Duration::from_secs_f64(a.episodes as f64 * (a.episode_s + 1.5) + 60.0);
    let opts = RunOptions {
        duration: Some(limit),
        stop: stop.clone(),
        status_line: a.verbose,
        node_name: "maniflow_eval".into(),
        control_alloc_probe: None,
    };
    // Stop the node when the simulator has run its episodes.
    let watcher = {
        let (stop, done) = (stop.clone(), sim_done.clone());
        let sim_json = sim_json.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if sim_json.exists() {
                    done.store(true, Ordering::SeqCst);
                    stop.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let node = run_node(&cfg, engine, &opts);
    stop.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    // The simulator exits by itself after its episodes; otherwise stop it.
    let t_wait = Instant::now();
    loop {
        match sim.try_wait() {
            Ok(Some(_)) => break,
            _ if t_wait.elapsed() > Duration::from_secs(3) => {
                unsafe {
                    libc::kill(sim.id() as i32, libc::SIGINT);
                }
                std::thread::sleep(Duration::from_millis(500));
                let _ = sim.kill();
                let _ = sim.wait();
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let node: NodeStats = node?;
    let text = std::fs::read_to_string(&sim_json).with_context(|| {
        format!(
            "the simulator wrote no results ({}); its log: {}",
            sim_json.display(),
            sim_log.display()
        )
    })?;
    let sim_stats: SimStats =
        serde_json::from_str(&text).with_context(|| format!("reading {}", sim_json.display()))?;
    if !sim_done.load(Ordering::SeqCst) || (sim_stats.episodes.len() as u64) < a.episodes {
        bail!(
            "evaluation stopped after {} of {} episodes (see {})",
            sim_stats.episodes.len(),
            a.episodes,
            sim_log.display()
        );
    }
    let ok: Vec<f64> = sim_stats
        .episodes
        .iter()
        .filter_map(|e| e.time_to_success_s)
        .collect();
    let (expert_rate, expert_t) = if a.no_expert {
        (None, None)
    } else {
        let (n, t) = expert_success(
            a.seed,
            a.task.slip(),
            a.episodes,
            a.episode_s,
            100.0,
            cfg.control.rate_hz,
        );
        (Some(n as f64 / a.episodes as f64), t)
    };
    let report = EvalReport {
        policy: policy_name,
        steps,
        seed: a.seed,
        episodes: a.episodes,
        transport: if a.bus {
            format!("{} + servo bus", a.transport)
        } else {
            a.transport.to_string()
        },
        successes: ok.len() as u64,
        success_rate: ok.len() as f64 / a.episodes as f64,
        mean_time_to_success_s: (!ok.is_empty()).then(|| ok.iter().sum::<f64>() / ok.len() as f64),
        outcomes: outcome_counts(&sim_stats.episodes),
        mean_episode_return: returns_mean(&sim_stats.episodes),
        best_episode_return: sim_stats
            .episodes
            .iter()
            .filter_map(|e| e.episode_return)
            .reduce(f64::max),
        expert_success_rate: expert_rate,
        expert_mean_time_to_success_s: expert_t,
        inference_us: node.inference_us.clone(),
        e2e_latency_us: node.e2e_latency_us.clone(),
        e2e_first_command_us: node.e2e_first_command_us.clone(),
        achieved_rate_hz: node.achieved_rate_hz,
        deadline_misses: node.deadline_misses,
        lateness_us: node.lateness_us,
        realtime: node.realtime.clone(),
        robot: node.robot.clone(),
        chunks: node.chunks.clone(),
        commands: node.commands.clone(),
        safety: node.safety.clone(),
        wall_s: t0.elapsed().as_secs_f64(),
        per_episode: sim_stats.episodes.clone(),
        executor: node.executor.clone(),
        smoothness: node.smoothness.clone(),
    };
    print_report(&report);
    if let Some(p) = &a.json {
        write_json_atomic(p, &report)?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// Episodes per outcome name (every outcome that occurred).
fn outcome_counts(
    episodes: &[super::sim::EpisodeResult],
) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for e in episodes {
        *m.entry(e.outcome.name().to_string()).or_insert(0) += 1;
    }
    m
}

fn returns_mean(episodes: &[super::sim::EpisodeResult]) -> Option<f64> {
    let r: Vec<f64> = episodes.iter().filter_map(|e| e.episode_return).collect();
    (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64)
}

fn print_report(r: &EvalReport) {
    println!(
        "eval {} (N = {}), seed {}, {} episodes over {}: success {}/{} = {:.2}, mean time to success {}",
        r.policy,
        r.steps,
        r.seed,
        r.episodes,
        r.transport,
        r.successes,
        r.episodes,
        r.success_rate,
        r.mean_time_to_success_s.map_or("-".into(), |t| format!("{t:.2} s"))
    );
    let outcomes: Vec<String> = r.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("  outcomes: {}", outcomes.join(", "));
    if let (Some(m), Some(b)) = (r.mean_episode_return, r.best_episode_return) {
        println!(
            "  episode return (mean reward over the episode, 0 to 1): mean {m:.3}, best {b:.3}"
        );
    }
    if let Some(e) = r.expert_success_rate {
        println!(
            "  scripted expert on the same episodes: success {:.2}, mean time to success {}",
            e,
            r.expert_mean_time_to_success_s
                .map_or("-".into(), |t| format!("{t:.2} s"))
        );
    }
    println!(
        "  inference per chunk p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} chunks); end-to-end p50 {:.1} ms, p99 {:.1} ms",
        r.inference_us.p50_us / 1e3,
        r.inference_us.p99_us / 1e3,
        r.inference_us.max_us / 1e3,
        r.inference_us.count,
        r.e2e_latency_us.p50_us / 1e3,
        r.e2e_latency_us.p99_us / 1e3
    );
    println!(
        "  control {:.2} Hz, deadline misses {}; chunks produced {} accepted {} rejected {}; safety: clamped {} step {} nan {} first-jump {} velocity {} jerk {}; held (stale) {} (empty) {}",
        r.achieved_rate_hz,
        r.deadline_misses,
        r.chunks.produced,
        r.chunks.accepted,
        r.chunks.rejected_by_safety,
        r.safety.limit_clamped,
        r.safety.step_clamped,
        r.safety.nan_rejected,
        r.safety.chunk_first_jump,
        r.safety.chunk_velocity,
        r.safety.chunk_jerk,
        r.commands.held_stale_joints,
        r.commands.held_empty
    );
    println!(
        "  control wake-up lateness p50 {:.0} us, p99 {:.0} us, max {:.0} us (SCHED_FIFO {}, mlockall {})",
        r.lateness_us.p50_us,
        r.lateness_us.p99_us,
        r.lateness_us.max_us,
        r.realtime.sched_fifo,
        r.realtime.mlockall
    );
    print_smoothness(r);
    println!("  wall time {:.1} s", r.wall_s);
}

/// The smoothness table: one row per episode and the overall row.
fn print_smoothness(r: &EvalReport) {
    let s = &r.smoothness;
    println!(
        "  smoothness, executor {} (seam jump and jerk over the {} arm joints, gripper left out; delays in base ticks):",
        r.executor, s.arm_joints
    );
    println!(
        "  {:>7} {:>4} {:>7} | {:>6} {:>6} {:>6} deg | {:>9} {:>9} deg/s^3 | {:>4} {:>4} {:>4} {:>4} {:>4} | {:>5} {:>4} {:>5} {:>4} {:>6}",
        "episode", "ok", "t (s)", "p50", "p99", "max", "jerk mean", "max",
        "ok", "rej", "1st", "vel", "jerk", "delay", "max", "estim", "max", "prefix"
    );
    let row = |label: &str, ok: &str, t: &str, e: &crate::node::SmoothnessStats| {
        println!(
            "  {label:>7} {ok:>4} {t:>7} | {:>6.2} {:>6.2} {:>6.2}     | {:>9.0} {:>9.0}         | {:>4} {:>4} {:>4} {:>4} {:>4} | {:>5.2} {:>4} {:>5.2} {:>4} {:>6.2}",
            e.seam_jump_deg.p50,
            e.seam_jump_deg.p99,
            e.seam_jump_deg.max,
            e.jerk_mean_deg_s3,
            e.jerk_max_deg_s3,
            e.chunks_accepted,
            e.chunks_rejected,
            e.rejected_first_jump,
            e.rejected_velocity,
            e.rejected_jerk,
            e.delay_mean_ticks,
            e.delay_max_ticks,
            e.delay_estimate_mean_ticks,
            e.delay_estimate_max_ticks,
            e.prefix_rows_mean,
        );
    };
    for e in &s.per_episode {
        let sim = r.per_episode.iter().find(|p| Some(p.episode) == e.episode);
        let ok = sim.map_or("-", |p| if p.success { "yes" } else { "no" });
        let t = sim
            .and_then(|p| p.time_to_success_s)
            .map_or("-".to_string(), |t| format!("{t:.2}"));
        let label = e.episode.map_or("-".to_string(), |n| n.to_string());
        row(&label, ok, &t, e);
    }
    row("overall", "", "", &s.overall);
}
