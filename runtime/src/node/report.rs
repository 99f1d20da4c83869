//! The node's final statistics (`maniflow run --stats-json`).

use std::collections::BTreeMap;

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
