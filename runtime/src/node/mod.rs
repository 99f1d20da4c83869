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
//!   joints, the smoothness records ([`smoothness`]); with the `rtc` executor
//!   and a policy that takes an action prefix, each request carries the
//!   actions that will run while the inference does. It never blocks and never allocates: it reads the joint state from
//!   a seqlock cell, exchanges fixed-size messages over bounded `crossbeam`
//!   channels with `try_send`/`try_recv`, and records into preallocated HDR
//!   histograms.
//! - publisher: turns commands and accepted chunks into messages and publishes
//!   them; measures end-to-end latency (observation stamp -> command publish).

pub mod cameras;
pub mod config;
mod control_loop;
mod inference;
mod messages;
mod publisher;
pub mod record;
mod report;
pub mod robot;
pub mod rt;
pub mod smoothness;
pub mod streams;
mod wiring;

pub use report::{ChunkCounts, CommandCounts, NodeStats, SafetyCounts};
pub use smoothness::{SeamJump, SmoothnessReport, SmoothnessStats};

use std::sync::atomic::{AtomicBool, Ordering};
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

use config::NodeConfig;
use control_loop::control_loop;
use inference::inference_loop;
use messages::{Live, OutMsg, Ready, Request};
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
    let cams = cameras::start_node_cameras(cfg, &inputs)?;
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
        mode: cfg.control.executor_mode(engine.prefix_max()),
        interpolation_multiplier: m_interp,
    };
    // Rtc with a policy that continues a given prefix: requests carry one.
    let prefix_max = match ex_cfg.mode {
        ExecutorMode::Rtc { prefix: true } => engine.prefix_max(),
        _ => 0,
    };
    let smooth = smoothness::Smoothness::new(rate, m_interp);
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

    let (req_tx, req_rx) = bounded::<Request>(1);
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
    lock_memory(cfg, &rt_report);

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
                    prefix_max,
                    smooth,
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
    let mut silent = report::SilentStreams::default();
    while !ctl.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        silent.check(cfg, &transport, &inputs, start.elapsed());
        if last_t.elapsed() >= Duration::from_secs(1) && opts.status_line {
            let ticks = live.ticks.load(Ordering::Relaxed);
            let dt = last_t.elapsed().as_secs_f64();
            let rate_now = (ticks - last_ticks) as f64 / dt;
            last_ticks = ticks;
            last_t = Instant::now();
            report::print_status_line(start, rate_now, &live, &inputs);
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
    let camera_stats = cameras::finish(cams);
    let robot_report = robot.map(robot::RobotLink::finish);

    let rt = rt_report.lock().map(|r| r.clone()).unwrap_or_default();
    Ok(report::node_stats(
        cfg,
        &inputs,
        ctl_out,
        inf_out,
        pub_out,
        rt,
        robot_report,
        camera_stats,
        ex_cfg.mode,
    ))
}

/// `mlockall` when `[control] realtime` asks for it; says so when it cannot.
fn lock_memory(cfg: &NodeConfig, rt_report: &Mutex<rt::RtReport>) {
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
}
