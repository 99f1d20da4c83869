//! The node's final statistics (`maniflow run --stats-json`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::rt;
use super::streams::StreamCounts;
use crate::control::safety::SafetyCounters;
use crate::stats::Percentiles;

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
    /// The robot's bus thread (`[robot]`), if any.
    pub robot: Option<super::robot::RobotReport>,
    /// Cameras read directly (streams with a `source`): frames, corrupt
    /// frames, connects and losses.
    pub cameras: BTreeMap<String, maniflow_bridge::camera::CameraStats>,
    /// The executor that ran (queue, ensemble, async, rtc) and, for rtc,
    /// whether the policy was given the prefix (`rtc-prefix`) or blended (`rtc-blend`).
    pub executor: String,
    /// Seam jumps, jerk, rejected chunks and delays, per episode and overall.
    pub smoothness: super::smoothness::SmoothnessReport,
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
    /// Joint (and chunk row) of each whole-chunk check's first violation.
    pub first_jump_by_joint: Vec<u64>,
    pub velocity_by_joint: Vec<u64>,
    pub jerk_by_joint: Vec<u64>,
    pub velocity_by_row: Vec<u64>,
    pub jerk_by_row: Vec<u64>,
}

impl From<&SafetyCounters> for SafetyCounts {
    fn from(c: &SafetyCounters) -> Self {
        let w = &c.where_rejected;
        SafetyCounts {
            nan_rejected: c.nan_rejected,
            limit_clamped: c.limit_clamped,
            step_clamped: c.step_clamped,
            chunk_first_jump: c.chunk_first_jump,
            chunk_velocity: c.chunk_velocity,
            chunk_jerk: c.chunk_jerk,
            chunk_nonfinite: c.chunk_nonfinite,
            held: c.held,
            first_jump_by_joint: w.first_jump_joint.to_vec(),
            velocity_by_joint: w.velocity_joint.to_vec(),
            jerk_by_joint: w.jerk_joint.to_vec(),
            velocity_by_row: w.velocity_row.to_vec(),
            jerk_by_row: w.jerk_row.to_vec(),
        }
    }
}

/// The once-a-second status line on stderr.
pub(super) fn print_status_line(
    start: Instant,
    rate_now: f64,
    live: &super::messages::Live,
    inputs: &super::streams::Inputs,
) {
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

/// The final statistics from what each thread returned.
pub(super) fn node_stats(
    cfg: &super::config::NodeConfig,
    inputs: &super::streams::Inputs,
    ctl_out: super::control_loop::ControlOut,
    inf_out: super::inference::InferOut,
    pub_out: super::publisher::PublishOut,
    rt: rt::RtReport,
    robot_report: Option<super::robot::RobotReport>,
    cameras: BTreeMap<String, maniflow_bridge::camera::CameraStats>,
    executor: crate::control::executor::ExecutorMode,
) -> NodeStats {
    let tick_hz = cfg.control.tick_hz();
    let mut inputs_counts = BTreeMap::new();
    inputs_counts.insert("joints".to_string(), inputs.joint_counters.counts());
    for c in &inputs.cameras {
        inputs_counts.insert(c.name.clone(), c.counters.counts());
    }
    if let Some(t) = &inputs.tactile {
        inputs_counts.insert("tactile".to_string(), t.counters().counts());
    }
    let elapsed = ctl_out.elapsed_s;
    let smoothness = ctl_out.smoothness.report(&ctl_out.safety);
    let mut chunks = inf_out.counts;
    chunks.accepted = ctl_out.accepted;
    chunks.rejected_by_safety = ctl_out.rejected;
    chunks.dropped_stale = ctl_out.dropped_stale;
    chunks.requested = ctl_out.requested;
    NodeStats {
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
        realtime: rt,
        peak_rss_mb: crate::stats::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1048576.0),
        control_allocations_after_warmup: ctl_out.allocations,
        robot: robot_report,
        cameras,
        executor: executor_name(executor),
        smoothness,
    }
}

/// How the executor is named in the reports.
pub(super) fn executor_name(mode: crate::control::executor::ExecutorMode) -> String {
    use crate::control::executor::ExecutorMode;
    match mode {
        ExecutorMode::Queue => "queue",
        ExecutorMode::TemporalEnsemble { .. } => "ensemble",
        ExecutorMode::Async { .. } => "async",
        ExecutorMode::Rtc { prefix: true } => "rtc-prefix",
        ExecutorMode::Rtc { prefix: false } => "rtc-blend",
    }
    .to_string()
}

/// How long an input stream may deliver nothing from the start before the node
/// names it on stderr (it keeps waiting for it: a publisher may still come up).
pub const SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Names, once each, the input streams that have delivered nothing
/// [`SILENT_AFTER`] after the start, with where the node listens and what to
/// check (a stream that never matches a publisher would otherwise only show as
/// skipped chunks). Called once per status-loop turn.
#[derive(Default)]
pub(super) struct SilentStreams {
    reported: Vec<String>,
}

impl SilentStreams {
    pub(super) fn check(
        &mut self,
        cfg: &super::config::NodeConfig,
        transport: &maniflow_bridge::transport::AnyTransport,
        inputs: &super::streams::Inputs,
        elapsed: std::time::Duration,
    ) {
        use maniflow_bridge::transport::Transport as _;
        if elapsed < SILENT_AFTER {
            return;
        }
        let mut streams: Vec<(&str, &super::streams::StreamCounters)> = Vec::new();
        if cfg.robot.is_none() {
            streams.push(("joints", &inputs.joint_counters));
        }
        for c in &inputs.cameras {
            streams.push((c.name.as_str(), &c.counters));
        }
        if let Some(t) = &inputs.tactile {
            streams.push(("tactile", t.counters()));
        }
        for (name, counters) in streams {
            if counters.received.load(Ordering::Relaxed) > 0
                || self.reported.iter().any(|r| r == name)
            {
                continue;
            }
            self.reported.push(name.to_string());
            let Some(s) = cfg.streams.get(name) else {
                continue;
            };
            eprintln!(
                "{}",
                silent_stream_message(cfg, name, s, &transport.wire_name(&s.topic))
            );
        }
    }
}

/// The report for a stream that delivered nothing (see [`SilentStreams`]).
pub(super) fn silent_stream_message(
    cfg: &super::config::NodeConfig,
    name: &str,
    s: &super::config::StreamConfig,
    wire: &str,
) -> String {
    use super::config::StreamType;
    use maniflow_bridge::transport::TransportKind;
    if s.source.is_some() {
        return format!(
            "maniflow run: stream `{name}` is silent: no frame from its camera (streams.{name}.source) in {} s; the policy waits for it.",
            SILENT_AFTER.as_secs()
        );
    }
    let ty = match s.kind {
        StreamType::Image | StreamType::PressureImage => "sensor_msgs/msg/Image",
        StreamType::CompressedImage => "sensor_msgs/msg/CompressedImage",
        StreamType::Taxels => "std_msgs/msg/Float32MultiArray",
        StreamType::JointState => "sensor_msgs/msg/JointState",
    };
    let kind = cfg.transport.kind;
    let where_ = match kind {
        TransportKind::Zenoh => "the same zenoh endpoints".to_string(),
        _ => format!(
            "ROS_DOMAIN_ID {} and namespace {}",
            cfg.transport
                .resolved_domain_id()
                .map_or_else(|e| e.to_string(), |d| d.to_string()),
            cfg.transport.resolved_namespace()
        ),
    };
    let qos = match kind {
        TransportKind::Zenoh => "",
        _ => " Our subscription is BEST_EFFORT: publishers of either reliability match it (ROS 2 refuses only a RELIABLE subscription on a BEST_EFFORT publication).",
    };
    format!(
        "maniflow run: stream `{name}` is silent: nothing on {wire} ({kind}, {ty}) in {} s; the policy waits for it. Check that its publisher runs, on {where_}, with that topic and type.{qos}",
        SILENT_AFTER.as_secs()
    )
}
