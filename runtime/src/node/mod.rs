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
pub mod rt;
pub mod streams;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arrayvec::ArrayVec;
use crossbeam::atomic::AtomicCell;
use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use maniflow_bridge::msg::{
    CompressedImage, Float32MultiArray, Float64MultiArray, Header, Image, JointState,
    JointTrajectory, JointTrajectoryPoint, Time,
};
use maniflow_bridge::so101::{JOINT_NAMES, N_JOINTS};
use maniflow_bridge::transport::{
    wall_ns, AnyTransport, Publish, Qos, Subscription, Transport, TransportError,
};
use serde::Serialize;

use crate::control::so101_safety;
use crate::engine::{Engine, ObservationStep, TactileReading};
use crate::executor::{Executor, ExecutorConfig, ExecutorMode, Tick};
use crate::manifest::TactileInput;
use crate::preprocess::Frame;
use crate::safety::{ChunkVerdict, CommandVerdict, Safety, SafetyCounters};
use crate::stats::{peak_rss_bytes, Latency, Percentiles};

use config::{CommandType, JointUnits, NodeConfig, StreamType};
use streams::{
    ImageSlot, ImageStream, Inputs, JointSample, ObsBuffers, Reject, StreamCounters, StreamCounts,
    TactileStream,
};

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

/// Live figures shared with the status line (atomics, written by the threads).
#[derive(Default)]
struct Live {
    ticks: AtomicU64,
    misses: AtomicU64,
    held_stale: AtomicU64,
    late_p99_ns: AtomicU64,
    e2e_p50_ns: AtomicU64,
    e2e_p99_ns: AtomicU64,
    infer_p50_ns: AtomicU64,
    chunks_accepted: AtomicU64,
    chunks_rejected: AtomicU64,
    chunks_skipped: AtomicU64,
    clamped: AtomicU64,
    published: AtomicU64,
}

/// A chunk on its way from the inference thread to the control thread (and on
/// to the publisher), in a pooled buffer.
struct ChunkMsg {
    buf: Box<[f32]>,
    /// Base timestep of row 0.
    start: u64,
    /// Observation stamp (ns since the epoch).
    obs_stamp_ns: i64,
}

enum Ready {
    Chunk(ChunkMsg),
    /// The request could not be served (stale or missing inputs, engine error).
    Skipped,
}

enum OutMsg {
    Command {
        pos: [f32; N_JOINTS],
        obs_stamp_ns: i64,
        first_of_chunk: bool,
    },
    Chunk(ChunkMsg),
}

/// Final statistics (`--stats-json`).
#[derive(Debug, Clone, Serialize)]
pub struct NodeStats {
    pub policy: String,
    pub transport: String,
    pub duration_s: f64,
    pub target_rate_hz: f64,
    pub achieved_rate_hz: f64,
    pub ticks: u64,
    /// Ticks whose wake-up lateness plus compute time exceeded the period.
    pub deadline_misses: u64,
    pub lateness_us: Percentiles,
    pub compute_us: Percentiles,
    /// Observation stamp -> command publish, every published command.
    pub e2e_latency_us: Percentiles,
    /// Observation stamp -> publish of the first command from each new chunk.
    pub e2e_first_command_us: Percentiles,
    /// Snapshot + preprocessing + encoder + N velocity steps, per chunk.
    pub inference_us: Percentiles,
    pub chunks: ChunkCounts,
    pub commands: CommandCounts,
    pub inputs: BTreeMap<String, StreamCounts>,
    pub safety: SafetyCounts,
    pub realtime: rt::RtReport,
    pub peak_rss_mb: f64,
    /// Heap allocations on the control thread between warm-up and the end
    /// (only when a probe was given; see [`RunOptions::control_alloc_probe`]).
    pub control_allocations_after_warmup: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ChunkCounts {
    pub requested: u64,
    pub produced: u64,
    pub accepted: u64,
    pub rejected_by_safety: u64,
    /// Chunks dropped because the joints went stale while they were computed.
    pub dropped_stale: u64,
    /// Requests not served (stale inputs or engine errors).
    pub skipped: u64,
    pub engine_errors: u64,
    pub last_engine_error: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct CommandCounts {
    pub published: u64,
    pub publish_errors: u64,
    /// Commands dropped because the publisher queue was full.
    pub queue_full: u64,
    /// Ticks that held position because the joint state was stale.
    pub held_stale_joints: u64,
    /// Ticks that held because no action was queued.
    pub held_empty: u64,
    /// Episode starts on `control.reset_topic` that cleared the executor.
    pub episode_resets: u64,
    pub chunk_messages: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SafetyCounts {
    pub nan_rejected: u64,
    pub limit_clamped: u64,
    pub step_clamped: u64,
    pub chunk_first_jump: u64,
    pub chunk_velocity: u64,
    pub chunk_jerk: u64,
    pub chunk_nonfinite: u64,
    pub held: u64,
}

impl From<&SafetyCounters> for SafetyCounts {
    fn from(c: &SafetyCounters) -> Self {
        SafetyCounts {
            nan_rejected: c.nan_rejected,
            limit_clamped: c.limit_clamped,
            step_clamped: c.step_clamped,
            chunk_first_jump: c.chunk_first_jump,
            chunk_velocity: c.chunk_velocity,
            chunk_jerk: c.chunk_jerk,
            chunk_nonfinite: c.chunk_nonfinite,
            held: c.held,
        }
    }
}

/// Builds the input streams the policy needs from the config.
fn build_inputs(cfg: &NodeConfig, engine: &Engine) -> anyhow::Result<Inputs> {
    let m = &engine.package().manifest;
    let ms = |s: f64| (s * 1e9) as u64;
    let joints = &cfg.streams["joints"];
    if engine.action_dim() != N_JOINTS {
        anyhow::bail!(
            "policy {}: the node drives an SO-101 ({N_JOINTS} joints) but the action has {} values",
            m.name,
            engine.action_dim()
        );
    }
    if let Some(st) = &m.inputs.state {
        if st.names.len() != N_JOINTS {
            anyhow::bail!(
                "policy {}: inputs.state has {} values, the SO-101 joint state has {N_JOINTS}",
                m.name,
                st.names.len()
            );
        }
    }
    let mut cameras = Vec::new();
    for c in &m.inputs.cameras {
        let name = c
            .key
            .strip_prefix("observation.images.")
            .unwrap_or(&c.key)
            .to_string();
        let Some(s) = cfg.streams.get(&name) else {
            anyhow::bail!(
                "policy input {} has no stream: add [streams.{name}] (type = \"image\") to the config",
                c.key
            );
        };
        cameras.push(ImageStream {
            name,
            slot: Mutex::new(ImageSlot::default()),
            counters: StreamCounters::default(),
            max_age_ns: ms(s.max_age_s()),
        });
    }
    let tactile = match &m.inputs.tactile {
        None => None,
        Some(t) => {
            let Some(s) = cfg.streams.get("tactile") else {
                anyhow::bail!(
                    "policy input {} has no stream: add [streams.tactile] to the config",
                    t.key()
                );
            };
            Some(match (t, s.kind) {
                (TactileInput::Taxels { size, .. }, StreamType::Taxels) => TactileStream::Taxels {
                    slot: Mutex::new(Default::default()),
                    counters: StreamCounters::default(),
                    max_age_ns: ms(s.max_age_s()),
                    size: *size,
                },
                (TactileInput::Image { .. }, StreamType::Image | StreamType::CompressedImage) => {
                    TactileStream::Image(ImageStream {
                        name: "tactile".into(),
                        slot: Mutex::new(ImageSlot::default()),
                        counters: StreamCounters::default(),
                        max_age_ns: ms(s.max_age_s()),
                    })
                }
                (t, k) => anyhow::bail!(
                    "streams.tactile.type = {k:?} does not match the policy's tactile input {} ({})",
                    t.key(),
                    match t {
                        TactileInput::Taxels { .. } => "taxels",
                        TactileInput::Image { .. } => "image",
                    }
                ),
            })
        }
    };
    Ok(Inputs {
        clock: streams::Clock::new(),
        joints: AtomicCell::new(JointSample::default()),
        joint_counters: StreamCounters::default(),
        joint_max_age_ns: ms(joints.max_age_s()),
        joint_units: joints.units.unwrap_or(JointUnits::Lerobot),
        cameras,
        tactile,
        episode_starts: AtomicU64::new(0),
    })
}

/// Subscribes every stream; the sinks validate into `inputs`.
fn subscribe_all(
    cfg: &NodeConfig,
    t: &AnyTransport,
    inputs: &Arc<Inputs>,
) -> Result<Vec<Subscription>, TransportError> {
    let mut subs = Vec::new();
    let err = |e: TransportError| e.to_string();
    {
        let inp = inputs.clone();
        subs.push(t.subscribe::<JointState>(
            &cfg.streams["joints"].topic,
            Qos::Sensor,
            Box::new(move |r| {
                let now = inp.clock.now_ns();
                inp.on_joints(r.map(|x| (x.msg, x.recv_wall_ns)).map_err(err), now);
            }),
        )?);
    }
    let image_sub = |idx: Option<usize>, topic: &str, kind: StreamType| {
        let inp = inputs.clone();
        match kind {
            StreamType::CompressedImage => t.subscribe::<CompressedImage>(
                topic,
                Qos::Sensor,
                Box::new(move |r| {
                    let Some(s) = pick_stream(&inp, idx) else {
                        return;
                    };
                    match r {
                        Err(e) => streams::on_image(s, Err(err(e)), Reject::Malformed),
                        Ok(x) => {
                            let now = inp.clock.ns_of(x.recv);
                            streams::on_image(
                                s,
                                streams::compressed_input(x.msg, now, x.recv_wall_ns),
                                Reject::Invalid,
                            )
                        }
                    }
                }),
            ),
            _ => t.subscribe::<Image>(
                topic,
                Qos::Sensor,
                Box::new(move |r| {
                    let Some(s) = pick_stream(&inp, idx) else {
                        return;
                    };
                    match r {
                        Err(e) => streams::on_image(s, Err(err(e)), Reject::Malformed),
                        Ok(x) => {
                            let now = inp.clock.ns_of(x.recv);
                            streams::on_image(
                                s,
                                streams::image_input(x.msg, now, x.recv_wall_ns),
                                Reject::Invalid,
                            )
                        }
                    }
                }),
            ),
        }
    };
    for (i, cam) in inputs.cameras.iter().enumerate() {
        let s = &cfg.streams[&cam.name];
        subs.push(image_sub(Some(i), &s.topic, s.kind)?);
    }
    match &inputs.tactile {
        None => {}
        Some(TactileStream::Image(_)) => {
            let s = &cfg.streams["tactile"];
            subs.push(image_sub(None, &s.topic, s.kind)?);
        }
        Some(TactileStream::Taxels { .. }) => {
            let inp = inputs.clone();
            subs.push(t.subscribe::<Float32MultiArray>(
                &cfg.streams["tactile"].topic,
                Qos::Sensor,
                Box::new(move |r| {
                    let Some(TactileStream::Taxels {
                        slot,
                        counters,
                        size,
                        ..
                    }) = &inp.tactile
                    else {
                        return;
                    };
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Err(e) => counters.reject(Reject::Malformed, err(e)),
                        Ok(x) => match streams::taxels_from_msg(&x.msg, *size) {
                            Err(e) => counters.reject(Reject::Invalid, e),
                            Ok(()) => {
                                let recv_ns = inp.clock.ns_of(x.recv);
                                if let Ok(mut sl) = slot.lock() {
                                    sl.data = x.msg.data;
                                    sl.stamp_ns = x.recv_wall_ns;
                                    sl.recv_ns = recv_ns;
                                    sl.seq += 1;
                                }
                                counters.accepted.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                    }
                }),
            )?);
        }
    }
    if !cfg.control.reset_topic.is_empty() {
        // Episode events ([episode, event, t], event 0 = start, as `maniflow sim`
        // publishes them): a start clears the executor on the control thread.
        let inp = inputs.clone();
        subs.push(t.subscribe::<Float64MultiArray>(
            &cfg.control.reset_topic,
            Qos::Command,
            Box::new(move |r| {
                if let Ok(x) = r {
                    if x.msg.data.len() >= 2 && x.msg.data[1] == 0.0 {
                        inp.episode_starts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }),
        )?);
    }
    Ok(subs)
}

/// The image stream a subscription feeds: camera `idx`, or the tactile image (None).
fn pick_stream(inp: &Inputs, idx: Option<usize>) -> Option<&ImageStream> {
    match idx {
        Some(i) => inp.cameras.get(i),
        None => match &inp.tactile {
            Some(TactileStream::Image(s)) => Some(s),
            _ => None,
        },
    }
}

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
    let cmd_pub: Option<Box<dyn Publish<Float64MultiArray>>>;
    let cmd_js_pub: Option<Box<dyn Publish<JointState>>>;
    match (
        cfg.outputs.command_topic.is_empty(),
        cfg.outputs.command_type,
    ) {
        (true, _) => {
            cmd_pub = None;
            cmd_js_pub = None;
        }
        (false, CommandType::Float64MultiArray) => {
            cmd_pub = Some(transport.publisher(&cfg.outputs.command_topic, Qos::Command)?);
            cmd_js_pub = None;
        }
        (false, CommandType::JointState) => {
            cmd_pub = None;
            cmd_js_pub = Some(transport.publisher(&cfg.outputs.command_topic, Qos::Command)?);
        }
    }
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
            Err(e) => rt_report.lock().map(|mut r| r.notes.push(e)).unwrap_or(()),
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
            .spawn(move || {
                publisher_loop(out_rx, pool_tx, cmd_pub, cmd_js_pub, chunk_pub, rate, &live)
            })?
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
                        Err(e) => rt_report.lock().map(|mut r| r.notes.push(e)).unwrap_or(()),
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
    })
}

struct ControlOut {
    ticks: u64,
    misses: u64,
    elapsed_s: f64,
    lateness: Latency,
    compute: Latency,
    accepted: u64,
    rejected: u64,
    dropped_stale: u64,
    requested: u64,
    queue_full: u64,
    held_stale: u64,
    held_empty: u64,
    episode_resets: u64,
    safety: SafetyCounters,
    allocations: Option<u64>,
}

#[allow(clippy::too_many_arguments)]
fn control_loop(
    executor: &mut Executor,
    safety: &mut Safety,
    inputs: &Inputs,
    tick_hz: f64,
    stop_ramp_ticks: u32,
    deadline_at: Option<Instant>,
    stop: &AtomicBool,
    done: &AtomicBool,
    req_tx: &Sender<u64>,
    ready_rx: &Receiver<Ready>,
    pool_tx: &Sender<Box<[f32]>>,
    out_tx: &Sender<OutMsg>,
    live: &Live,
    probe: Option<AllocProbe>,
) -> ControlOut {
    let warmup_ticks = (2.0 * tick_hz).round() as u64;
    let mut allocs_at_warmup: Option<u64> = None;
    let period_ns = (1e9 / tick_hz).round() as u64;
    let clock = rt::AbsClock::now();
    let mut o = ControlOut {
        ticks: 0,
        misses: 0,
        elapsed_s: 0.0,
        lateness: Latency::new(),
        compute: Latency::new(),
        accepted: 0,
        rejected: 0,
        dropped_stale: 0,
        requested: 0,
        queue_full: 0,
        held_stale: 0,
        held_empty: 0,
        episode_resets: 0,
        safety: SafetyCounters::default(),
        allocations: None,
    };
    let mut present = [0.0f32; N_JOINTS];
    let mut cmd = [0.0f32; N_JOINTS];
    let mut have_present = false;
    let mut in_flight = false;
    let mut was_fresh = false;
    let mut obs_stamp: i64 = 0;
    let mut first_pending = false;
    let mut stopping: Option<u32> = None;
    let status_every = (tick_hz.round() as u64).max(1);
    let mut first_wake_ns = 0u64;
    let mut last_wake_ns: u64;
    let mut k: u64 = 0;
    let mut episode_starts = inputs.episode_starts.load(Ordering::Relaxed);
    // A chunk requested before an episode reset belongs to the old episode.
    let mut discard_in_flight = false;
    loop {
        if stopping.is_none()
            && (stop.load(Ordering::Relaxed) || deadline_at.is_some_and(|d| Instant::now() >= d))
        {
            stopping = Some(stop_ramp_ticks.max(1));
            done.store(true, Ordering::Relaxed);
        }
        let deadline = k * period_ns;
        clock.sleep_until(deadline);
        let wake = clock.elapsed_ns();
        if k == 0 {
            first_wake_ns = wake;
        }
        last_wake_ns = wake;
        let late = wake.saturating_sub(deadline);
        o.lateness.record(Duration::from_nanos(late));
        let now_ns = inputs.clock.now_ns();
        let fresh = inputs.fresh_joints(now_ns);
        if let Some(j) = fresh {
            present = j.pos;
            have_present = true;
        } else if was_fresh {
            // Joints went stale: drop the queued actions (they were planned for
            // a world we no longer see) and hold.
            executor.reset();
        }
        was_fresh = fresh.is_some();
        let starts = inputs.episode_starts.load(Ordering::Relaxed);
        if starts != episode_starts {
            // A new episode (LeRobot's policy.reset()): forget queued actions.
            episode_starts = starts;
            executor.reset();
            discard_in_flight = in_flight;
            o.episode_resets += 1;
        }
        while let Ok(r) = ready_rx.try_recv() {
            in_flight = false;
            let stale_episode = std::mem::replace(&mut discard_in_flight, false);
            match r {
                Ready::Skipped => {}
                Ready::Chunk(c) => {
                    if stopping.is_some() || fresh.is_none() || stale_episode {
                        o.dropped_stale += 1;
                        let _ = pool_tx.try_send(c.buf);
                        continue;
                    }
                    match safety.check_chunk(&c.buf, &present) {
                        ChunkVerdict::Accepted => {
                            if executor.push_chunk(&c.buf, c.start).is_ok() {
                                o.accepted += 1;
                                live.chunks_accepted.fetch_add(1, Ordering::Relaxed);
                                obs_stamp = c.obs_stamp_ns;
                                first_pending = true;
                                if let Err(
                                    TrySendError::Full(OutMsg::Chunk(c))
                                    | TrySendError::Disconnected(OutMsg::Chunk(c)),
                                ) = out_tx.try_send(OutMsg::Chunk(c))
                                {
                                    let _ = pool_tx.try_send(c.buf);
                                }
                            } else {
                                o.rejected += 1;
                                let _ = pool_tx.try_send(c.buf);
                            }
                        }
                        ChunkVerdict::Rejected(_) => {
                            o.rejected += 1;
                            live.chunks_rejected.fetch_add(1, Ordering::Relaxed);
                            let _ = pool_tx.try_send(c.buf);
                        }
                    }
                }
            }
        }
        if stopping.is_none() && fresh.is_some() && !in_flight && executor.needs_inference() {
            if req_tx.try_send(executor.timestep()).is_ok() {
                in_flight = true;
                o.requested += 1;
            }
        }
        let (verdict, from_chunk) = if stopping.is_some() || fresh.is_none() {
            if fresh.is_none() {
                o.held_stale += 1;
                live.held_stale.fetch_add(1, Ordering::Relaxed);
            }
            (safety.hold(&mut cmd, &present), false)
        } else {
            match executor.tick(&mut cmd) {
                Tick::Action { .. } => (safety.filter_command(&mut cmd, &present), true),
                Tick::Empty => {
                    o.held_empty += 1;
                    (safety.hold(&mut cmd, &present), false)
                }
            }
        };
        if verdict == CommandVerdict::Clamped {
            live.clamped.fetch_add(1, Ordering::Relaxed);
        }
        if verdict != CommandVerdict::Blocked && have_present {
            let first = from_chunk && first_pending;
            if first {
                first_pending = false;
            }
            let msg = OutMsg::Command {
                pos: cmd,
                obs_stamp_ns: if from_chunk { obs_stamp } else { 0 },
                first_of_chunk: first,
            };
            if out_tx.try_send(msg).is_err() {
                o.queue_full += 1;
            }
        }
        let end = clock.elapsed_ns();
        o.compute
            .record(Duration::from_nanos(end.saturating_sub(wake)));
        if end.saturating_sub(deadline) > period_ns {
            o.misses += 1;
            live.misses.fetch_add(1, Ordering::Relaxed);
        }
        o.ticks += 1;
        live.ticks.store(o.ticks, Ordering::Relaxed);
        if o.ticks == warmup_ticks {
            allocs_at_warmup = probe.as_ref().map(|p| p());
        }
        if o.ticks % status_every == 0 {
            live.late_p99_ns.store(
                o.lateness.percentiles().p99_us as u64 * 1000,
                Ordering::Relaxed,
            );
        }
        if let Some(left) = stopping.as_mut() {
            *left -= 1;
            if *left == 0 {
                break;
            }
        }
        k += 1;
    }
    if let (Some(p), Some(base)) = (probe.as_ref(), allocs_at_warmup) {
        o.allocations = Some(p().saturating_sub(base));
    }
    o.elapsed_s = (last_wake_ns.saturating_sub(first_wake_ns)) as f64 / 1e9;
    o.safety = *safety.counters();
    o
}

struct InferOut {
    policy: String,
    latency: Latency,
    counts: ChunkCounts,
}

#[allow(clippy::too_many_arguments)]
fn inference_loop(
    engine: &mut Engine,
    inputs: &Inputs,
    rate_hz: f64,
    req_rx: &Receiver<u64>,
    ready_tx: &Sender<Ready>,
    pool_rx: &Receiver<Box<[f32]>>,
    live: &Live,
    stop: &AtomicBool,
) -> InferOut {
    let to = engine.n_obs_steps().max(1);
    let mut hist: Vec<ObsBuffers> = (0..to).map(|_| ObsBuffers::default()).collect();
    let mut fresh = ObsBuffers::default();
    let mut head = 0usize; // index of the newest history entry
    let mut valid = 0usize; // contiguous valid entries ending at head
    let base = Duration::from_secs_f64(1.0 / rate_hz);
    let mut next_sample = Instant::now();
    let mut out = InferOut {
        policy: engine.package().manifest.name.clone(),
        latency: Latency::new(),
        counts: ChunkCounts::default(),
    };
    let mut order: Vec<usize> = Vec::with_capacity(to);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let timeout = next_sample.saturating_duration_since(now);
        match req_rx.recv_timeout(timeout) {
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                // History sample at the base rate.
                let slot = (head + 1) % to;
                if inputs
                    .snapshot(inputs.clock.now_ns(), &mut hist[slot])
                    .is_ok()
                {
                    head = slot;
                    valid = (valid + 1).min(to);
                } else {
                    valid = 0;
                }
                next_sample += base;
                let now = Instant::now();
                if next_sample < now {
                    next_sample = now + base;
                }
            }
            Ok(start_ts) => {
                let t0 = Instant::now();
                if inputs.snapshot(inputs.clock.now_ns(), &mut fresh).is_err() {
                    out.counts.skipped += 1;
                    live.chunks_skipped.fetch_add(1, Ordering::Relaxed);
                    let _ = ready_tx.try_send(Ready::Skipped);
                    continue;
                }
                // Steps oldest..newest: the previous to-1 history entries, then
                // the fresh snapshot; missing history repeats the oldest
                // available step (LeRobot pads an episode start the same way).
                order.clear();
                let hist_avail = valid.min(to - 1);
                for i in 0..to - 1 {
                    // i = 0 is the oldest step
                    let back = (to - 1 - i).min(hist_avail); // how many steps back from head
                    if back == 0 {
                        order.push(usize::MAX); // use `fresh`
                    } else {
                        order.push((head + to * 2 - (back - 1)) % to);
                    }
                }
                order.push(usize::MAX);
                let mut set = Ok(());
                for (step, &idx) in order.iter().enumerate() {
                    let b = if idx == usize::MAX {
                        &fresh
                    } else {
                        &hist[idx]
                    };
                    set = set_step(engine, step, b);
                    if set.is_err() {
                        break;
                    }
                }
                let r = match set {
                    Ok(()) => engine.infer(),
                    Err(e) => Err(e),
                };
                match r {
                    Err(e) => {
                        out.counts.engine_errors += 1;
                        out.counts.skipped += 1;
                        out.counts.last_engine_error = e.to_string();
                        let _ = ready_tx.try_send(Ready::Skipped);
                    }
                    Ok(chunk) => {
                        let mut buf = match pool_rx.try_recv() {
                            Ok(b) => b,
                            Err(_) => vec![0.0f32; chunk.len()].into_boxed_slice(),
                        };
                        buf.copy_from_slice(chunk);
                        out.counts.produced += 1;
                        let d = t0.elapsed();
                        out.latency.record(d);
                        if out.counts.produced % 8 == 1 {
                            live.infer_p50_ns.store(
                                (out.latency.percentiles().p50_us * 1000.0) as u64,
                                Ordering::Relaxed,
                            );
                        }
                        let _ = ready_tx.try_send(Ready::Chunk(ChunkMsg {
                            buf,
                            start: start_ts,
                            obs_stamp_ns: fresh.stamp_ns,
                        }));
                    }
                }
            }
        }
    }
    out
}

fn set_step(
    engine: &mut Engine,
    step: usize,
    b: &ObsBuffers,
) -> Result<(), crate::error::EngineError> {
    let mut frames: ArrayVec<Frame<'_>, 8> = ArrayVec::new();
    for c in b.cams.iter().take(8) {
        frames.push(Frame {
            data: &c.data,
            width: c.width,
            height: c.height,
            order: c.order.unwrap_or(crate::manifest::ColorOrder::Rgb),
        });
    }
    let tactile = if !b.taxels.is_empty() {
        Some(TactileReading::Taxels(&b.taxels))
    } else if !b.tactile_image.data.is_empty() {
        let t = &b.tactile_image;
        Some(TactileReading::Image(Frame {
            data: &t.data,
            width: t.width,
            height: t.height,
            order: t.order.unwrap_or(crate::manifest::ColorOrder::Rgb),
        }))
    } else {
        None
    };
    engine.set_observation(
        step,
        &ObservationStep {
            cameras: &frames,
            state: Some(&b.state),
            tactile,
        },
    )
}

struct PublishOut {
    e2e: Latency,
    e2e_first: Latency,
    published: u64,
    errors: u64,
    chunks: u64,
}

fn publisher_loop(
    out_rx: Receiver<OutMsg>,
    pool_tx: Sender<Box<[f32]>>,
    cmd_pub: Option<Box<dyn Publish<Float64MultiArray>>>,
    cmd_js_pub: Option<Box<dyn Publish<JointState>>>,
    chunk_pub: Option<Box<dyn Publish<JointTrajectory>>>,
    rate_hz: f64,
    live: &Live,
) -> PublishOut {
    let mut o = PublishOut {
        e2e: Latency::new(),
        e2e_first: Latency::new(),
        published: 0,
        errors: 0,
        chunks: 0,
    };
    let mut f64msg = Float64MultiArray::vector("joint_command", vec![0.0; N_JOINTS]);
    let mut jsmsg = JointState {
        header: Header::default(),
        name: JOINT_NAMES.iter().map(|s| s.to_string()).collect(),
        position: vec![0.0; N_JOINTS],
        velocity: vec![],
        effort: vec![],
    };
    let mut last_err_print = Instant::now() - Duration::from_secs(10);
    let mut n = 0u64;
    // Runs until the control thread drops its sender (after the stop ramp).
    while let Ok(m) = out_rx.recv() {
        match m {
            OutMsg::Command {
                pos,
                obs_stamp_ns,
                first_of_chunk,
            } => {
                let r = if let Some(p) = &cmd_pub {
                    for (d, s) in f64msg.data.iter_mut().zip(pos.iter()) {
                        *d = f64::from(*s);
                    }
                    Some(p.publish(&f64msg))
                } else if let Some(p) = &cmd_js_pub {
                    jsmsg.header.stamp = Time::from_nanos(wall_ns());
                    for (d, s) in jsmsg.position.iter_mut().zip(pos.iter()) {
                        *d = f64::from(*s);
                    }
                    Some(p.publish(&jsmsg))
                } else {
                    None
                };
                match r {
                    Some(Err(e)) => {
                        o.errors += 1;
                        if last_err_print.elapsed() > Duration::from_secs(5) {
                            eprintln!("maniflow run: {e}");
                            last_err_print = Instant::now();
                        }
                    }
                    Some(Ok(())) | None => {
                        o.published += 1;
                        live.published.fetch_add(1, Ordering::Relaxed);
                        if obs_stamp_ns > 0 {
                            let lat = Duration::from_nanos(
                                wall_ns().saturating_sub(obs_stamp_ns).max(0) as u64,
                            );
                            o.e2e.record(lat);
                            if first_of_chunk {
                                o.e2e_first.record(lat);
                            }
                        }
                    }
                }
                n += 1;
                if n % 30 == 0 {
                    let p = o.e2e.percentiles();
                    live.e2e_p50_ns
                        .store((p.p50_us * 1000.0) as u64, Ordering::Relaxed);
                    live.e2e_p99_ns
                        .store((p.p99_us * 1000.0) as u64, Ordering::Relaxed);
                }
            }
            OutMsg::Chunk(c) => {
                if let Some(p) = &chunk_pub {
                    let da = N_JOINTS;
                    let rows = c.buf.len() / da;
                    let msg = JointTrajectory {
                        header: Header {
                            stamp: Time::from_nanos(c.obs_stamp_ns),
                            frame_id: String::new(),
                        },
                        joint_names: JOINT_NAMES.iter().map(|s| s.to_string()).collect(),
                        points: (0..rows)
                            .map(|i| JointTrajectoryPoint {
                                positions: c.buf[i * da..(i + 1) * da]
                                    .iter()
                                    .map(|v| f64::from(*v))
                                    .collect(),
                                time_from_start: maniflow_bridge::msg::Duration::from_secs_f64(
                                    i as f64 / rate_hz,
                                ),
                                ..Default::default()
                            })
                            .collect(),
                    };
                    match p.publish(&msg) {
                        Ok(()) => o.chunks += 1,
                        Err(_) => o.errors += 1,
                    }
                }
                let _ = pool_tx.try_send(c.buf);
            }
        }
    }
    o
}
