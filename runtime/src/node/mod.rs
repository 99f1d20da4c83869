//! The node layer: the robot node behind `maniflow run` and the recorder
//! behind `maniflow record`. It owns the robot's streams (subscriptions,
//! validation, latest-value slots), the node config (`launch/so101.toml`), the
//! real-time threads and what they publish, and writing episodes from the
//! streams into LeRobot datasets. It imports the control and policy layers (and
//! `dataset` for recording), never the CLI.
//!
//! The robot node behind `maniflow run`: transports in, policy, commands out.
//!
//! Threads (ARCHITECTURE.md):
//! - I/O: the transports' own threads decode every sample and validate it into
//!   [`streams::Inputs`] (latest-value slots, counters).
//! - inference: keeps the `n_obs_steps` history at the policy's base rate, and
//!   on request from the control thread snapshots the newest complete fresh
//!   observation, runs the engine, and hands back the chunk in a pooled buffer.
//! - control: absolute deadlines at `rate_hz * interpolation`, SCHED_FIFO when
//!   permitted; executor, whole-chunk checks, safety filter, hold on stale
//!   joints. It never blocks and never allocates: it reads the joint state from
//!   a seqlock cell, exchanges fixed-size messages over bounded `crossbeam`
//!   channels with `try_send`/`try_recv`, and records into preallocated HDR
//!   histograms.
//! - publisher: turns commands and accepted chunks into messages and publishes
//!   them; measures end-to-end latency (observation stamp -> command publish).

pub mod config;
mod control_loop;
mod inference;
mod messages;
mod publisher;
pub mod record;
mod report;
pub mod robot;
pub mod rt;
pub mod streams;
mod wiring;

pub use report::{ChunkCounts, CommandCounts, NodeStats, SafetyCounts};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam::channel::bounded;
use maniflow_bridge::msg::JointTrajectory;
use maniflow_bridge::transport::{AnyTransport, Publish, Qos, Transport};

use crate::control::executor::{Executor, ExecutorConfig, ExecutorMode};
use crate::control::safety::Safety;
use crate::control::so101_safety;
use crate::policy::engine::Engine;
use crate::stats::peak_rss_bytes;

use config::NodeConfig;
use control_loop::control_loop;
use inference::inference_loop;
use messages::{Live, OutMsg, Ready};
use publisher::publisher_loop;
use wiring::{build_inputs, subscribe_all};

/// Run-time options that are not in the config file.
#[derive(Clone)]
pub struct RunOptions {
    /// Stop after this long (None: until `stop` is set).
    pub duration: Option<Duration>,
    /// Set by SIGINT/SIGTERM (or a test) to stop cleanly.
    pub stop: Arc<AtomicBool>,
    /// Print a status line every second.
    pub status_line: bool,
    /// ROS 2 node name.
    pub node_name: String,
    /// Test hook: called on the control thread after warm-up and at the end;
    /// returns that thread's allocation count (a counting global allocator), so
    /// `NodeStats::control_allocations_after_warmup` proves the loop allocates nothing.
    pub control_alloc_probe: Option<AllocProbe>,
}

/// See [`RunOptions::control_alloc_probe`].
pub type AllocProbe = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Loads the policy, connects, runs until stopped; returns the final stats.
pub fn run_node(
    cfg: &NodeConfig,
    mut engine: Engine,
    opts: &RunOptions,
) -> anyhow::Result<NodeStats> {
    let rate = cfg.control.rate_hz;
    let m_interp = cfg.control.interpolation;
    let tick_hz = cfg.control.tick_hz();
    let inputs = Arc::new(build_inputs(cfg, &engine)?);
    let transport = AnyTransport::open(&cfg.transport, &opts.node_name)
        .with_context(|| format!("opening the {} transport", cfg.transport.kind))?;
    let subs = subscribe_all(cfg, &transport, &inputs)?;
    for s in &subs {
        tracing::info!("subscribed {}", s.wire_name());
    }
    let robot = match &cfg.robot {
        Some(r) => Some(
            robot::RobotLink::start(
                r,
                tick_hz,
                Box::new(robot::NodeInputs(inputs.clone())),
                robot::Goals::AsCommanded,
                "maniflow run",
            )
            .with_context(|| format!("robot on {}", r.port))?,
        ),
        None => None,
    };
    let sink = publisher::open_command_sink(cfg, &transport, robot.as_ref())?;
    let chunk_pub: Option<Box<dyn Publish<JointTrajectory>>> = if cfg.outputs.chunk_topic.is_empty()
    {
        None
    } else {
        Some(transport.publisher(&cfg.outputs.chunk_topic, Qos::Command)?)
    };

    // Control-thread state, built before the threads start (no allocation later).
    let ex_cfg = ExecutorConfig {
        mode: cfg.control.executor_mode(),
        interpolation_multiplier: m_interp,
    };
    let n_exec = match ex_cfg.mode {
        ExecutorMode::TemporalEnsemble { .. } => 1,
        _ => engine.n_action_steps(),
    };
    let chunk_len = engine.chunk_len();
    let da = engine.action_dim();
    let mut executor = Executor::new(ex_cfg, da, chunk_len, n_exec)
        .map_err(|e| anyhow::anyhow!("control.executor: {e}"))?;
    let mut safety = Safety::new(so101_safety(rate as f32))
        .map_err(|e| anyhow::anyhow!("safety limits: {e}"))?;

    let (req_tx, req_rx) = bounded::<u64>(1);
    let (ready_tx, ready_rx) = bounded::<Ready>(4);
    let (pool_tx, pool_rx) = bounded::<Box<[f32]>>(16);
    for _ in 0..12 {
        let _ = pool_tx.try_send(vec![0.0f32; chunk_len * da].into_boxed_slice());
    }
    let (out_tx, out_rx) = bounded::<OutMsg>(256);

    let live = Arc::new(Live::default());
    // Set by the control thread when the stop ramp begins: inference stops.
    let control_done = Arc::new(AtomicBool::new(false));

    let rt_report = Arc::new(Mutex::new(rt::RtReport {
        priority: cfg.control.priority,
        ..Default::default()
    }));
    if cfg.control.realtime {
        match rt::lock_memory() {
            Ok(()) => rt_report
                .lock()
                .map(|mut r| r.mlockall = true)
                .unwrap_or(()),
            Err(e) => {
                eprintln!("maniflow run: warning: realtime = true but memory is not locked ({e}); page faults can delay the control loop under memory pressure (README, Real-time properties)");
                rt_report.lock().map(|mut r| r.notes.push(e)).unwrap_or(())
            }
        }
    } else {
        rt_report
            .lock()
            .map(|mut r| r.notes.push("realtime = false in the config".into()))
            .unwrap_or(());
    }

    let start = Instant::now();
    let deadline_at = opts.duration.map(|d| start + d);

    // ---------------- inference thread
    let inf = {
        let inputs = inputs.clone();
        let live = live.clone();
        let stop = control_done.clone();
        let ready_tx = ready_tx.clone();
        let pool_rx = pool_rx.clone();
        std::thread::Builder::new()
            .name("maniflow-infer".into())
            .spawn(move || {
                inference_loop(
                    &mut engine,
                    &inputs,
                    rate,
                    &req_rx,
                    &ready_tx,
                    &pool_rx,
                    &live,
                    &stop,
                )
            })?
    };

    // ---------------- publisher thread
    let publ = {
        let live = live.clone();
        let pool_tx = pool_tx.clone();
        let rate = rate;
        std::thread::Builder::new()
            .name("maniflow-publish".into())
            .spawn(move || publisher_loop(out_rx, pool_tx, sink, chunk_pub, rate, &live))?
    };

    // ---------------- control thread
    let ctl = {
        let inputs = inputs.clone();
        let live = live.clone();
        let stop = opts.stop.clone();
        let done = control_done.clone();
        let rt_report = rt_report.clone();
        let c = cfg.control.clone();
        let probe = opts.control_alloc_probe.clone();
        std::thread::Builder::new()
            .name("maniflow-control".into())
            .spawn(move || {
                if c.realtime {
                    if let Some(cpu) = c.cpu {
                        match rt::pin_current_thread(cpu) {
                            Ok(()) => rt_report
                                .lock()
                                .map(|mut r| r.cpu = Some(cpu))
                                .unwrap_or(()),
                            Err(e) => rt_report.lock().map(|mut r| r.notes.push(e)).unwrap_or(()),
                        }
                    }
                    match rt::make_current_thread_fifo(c.priority) {
                        Ok(()) => rt_report
                            .lock()
                            .map(|mut r| r.sched_fifo = true)
                            .unwrap_or(()),
                        Err(e) => {
                            eprintln!("maniflow run: warning: realtime = true but the control thread is not SCHED_FIFO ({e}); it competes with every other process for the CPU (README, Real-time properties)");
                            rt_report.lock().map(|mut r| r.notes.push(e)).unwrap_or(())
                        }
                    }
                }
                control_loop(
                    &mut executor,
                    &mut safety,
                    &inputs,
                    tick_hz,
                    c.stop_ramp_ticks,
                    deadline_at,
                    &stop,
                    &done,
                    &req_tx,
                    &ready_rx,
                    &pool_tx,
                    &out_tx,
                    &live,
                    probe,
                )
            })?
    };

    // ---------------- status line (this thread)
    std::thread::sleep(Duration::from_millis(50));
    if let Ok(r) = rt_report.lock() {
        eprintln!(
            "maniflow run: control thread SCHED_FIFO {} (priority {}), mlockall {}{}",
            if r.sched_fifo { "on" } else { "OFF" },
            r.priority,
            if r.mlockall { "on" } else { "OFF" },
            if r.notes.is_empty() {
                String::new()
            } else {
                format!(" -- {}", r.notes.join("; "))
            }
        );
    }
    let mut last_ticks = 0u64;
    let mut last_t = Instant::now();
    while !ctl.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if last_t.elapsed() >= Duration::from_secs(1) && opts.status_line {
            let ticks = live.ticks.load(Ordering::Relaxed);
            let dt = last_t.elapsed().as_secs_f64();
            let rate_now = (ticks - last_ticks) as f64 / dt;
            last_ticks = ticks;
            last_t = Instant::now();
            let ms = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
            let rejected: u64 = inputs.joint_counters.rejected()
                + inputs
                    .cameras
                    .iter()
                    .map(|c| c.counters.rejected())
                    .sum::<u64>()
                + inputs
                    .tactile
                    .as_ref()
                    .map_or(0, |t| t.counters().rejected());
            eprintln!(
                "t {:>6.1}s | rate {:>7.2} Hz | late p99 {:.3} ms | e2e p50 {:.1} p99 {:.1} ms | infer p50 {:.2} ms | chunks ok {} rej {} skip {} | inputs rejected {} | clamped {} held(stale) {} | misses {}",
                start.elapsed().as_secs_f64(),
                rate_now,
                ms(&live.late_p99_ns),
                ms(&live.e2e_p50_ns),
                ms(&live.e2e_p99_ns),
                ms(&live.infer_p50_ns),
                live.chunks_accepted.load(Ordering::Relaxed),
                live.chunks_rejected.load(Ordering::Relaxed),
                live.chunks_skipped.load(Ordering::Relaxed),
                rejected,
                live.clamped.load(Ordering::Relaxed),
                live.held_stale.load(Ordering::Relaxed),
                live.misses.load(Ordering::Relaxed),
            );
        }
    }
    let ctl_out = ctl
        .join()
        .map_err(|_| anyhow::anyhow!("control thread panicked"))?;
    let inf_out = inf
        .join()
        .map_err(|_| anyhow::anyhow!("inference thread panicked"))?;
    let pub_out = publ
        .join()
        .map_err(|_| anyhow::anyhow!("publisher thread panicked"))?;
    drop(subs);
    let robot_report = robot.map(robot::RobotLink::finish);

    let mut inputs_counts = BTreeMap::new();
    inputs_counts.insert("joints".to_string(), inputs.joint_counters.counts());
    for c in &inputs.cameras {
        inputs_counts.insert(c.name.clone(), c.counters.counts());
    }
    if let Some(t) = &inputs.tactile {
        inputs_counts.insert("tactile".to_string(), t.counters().counts());
    }
    let elapsed = ctl_out.elapsed_s;
    let mut chunks = inf_out.counts;
    chunks.accepted = ctl_out.accepted;
    chunks.rejected_by_safety = ctl_out.rejected;
    chunks.dropped_stale = ctl_out.dropped_stale;
    chunks.requested = ctl_out.requested;
    let report = rt_report.lock().map(|r| r.clone()).unwrap_or_default();
    Ok(NodeStats {
        policy: inf_out.policy,
        transport: cfg.transport.kind.to_string(),
        duration_s: elapsed,
        target_rate_hz: tick_hz,
        achieved_rate_hz: if elapsed > 0.0 && ctl_out.ticks > 1 {
            (ctl_out.ticks - 1) as f64 / elapsed
        } else {
            0.0
        },
        ticks: ctl_out.ticks,
        deadline_misses: ctl_out.misses,
        lateness_us: ctl_out.lateness.percentiles(),
        compute_us: ctl_out.compute.percentiles(),
        e2e_latency_us: pub_out.e2e.percentiles(),
        e2e_first_command_us: pub_out.e2e_first.percentiles(),
        inference_us: inf_out.latency.percentiles(),
        chunks,
        commands: CommandCounts {
            published: pub_out.published,
            publish_errors: pub_out.errors,
            queue_full: ctl_out.queue_full,
            held_stale_joints: ctl_out.held_stale,
            held_empty: ctl_out.held_empty,
            episode_resets: ctl_out.episode_resets,
            chunk_messages: pub_out.chunks,
        },
        inputs: inputs_counts,
        safety: SafetyCounts::from(&ctl_out.safety),
        realtime: report,
        peak_rss_mb: peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0),
        control_allocations_after_warmup: ctl_out.allocations,
        robot: robot_report,
    })
}
