//! What the node's threads share and send each other: the live figures behind
//! the status line, and the pooled chunk and command messages.

use std::sync::atomic::AtomicU64;

use maniflow_bridge::so101::N_JOINTS;

/// Live figures shared with the status line (atomics, written by the threads).
#[derive(Default)]
pub(super) struct Live {
    pub(super) ticks: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) held_stale: AtomicU64,
    pub(super) late_p99_ns: AtomicU64,
    pub(super) e2e_p50_ns: AtomicU64,
    pub(super) e2e_p99_ns: AtomicU64,
    pub(super) infer_p50_ns: AtomicU64,
    pub(super) chunks_accepted: AtomicU64,
    pub(super) chunks_rejected: AtomicU64,
    pub(super) chunks_skipped: AtomicU64,
    pub(super) clamped: AtomicU64,
    pub(super) published: AtomicU64,
}

/// A chunk on its way from the inference thread to the control thread (and on
/// to the publisher), in a pooled buffer.
pub(super) struct ChunkMsg {
    pub(super) buf: Box<[f32]>,
    /// Base timestep of row 0.
    pub(super) start: u64,
    /// Observation stamp (ns since the epoch).
    pub(super) obs_stamp_ns: i64,
}

/// Most prefix rows a request carries (the engine's `prefix_max` is clamped to it).
pub(super) const MAX_PREFIX: usize = 16;

/// A request from the control thread to the inference thread (fixed size,
/// `Copy`: sending it allocates nothing).
#[derive(Clone, Copy)]
pub(super) struct Request {
    /// Base timestep of the chunk's row 0 (the next one to execute).
    pub(super) start: u64,
    /// Rows of `rows` given as the chunk's first actions (0 = none).
    pub(super) d: usize,
    /// The actions that execute while the inference runs, `(d, N_JOINTS)`
    /// row-major (unnormalised), for timesteps `start..start + d`.
    pub(super) rows: [f32; MAX_PREFIX * N_JOINTS],
}

impl Request {
    pub(super) fn new(start: u64) -> Request {
        Request {
            start,
            d: 0,
            rows: [0.0; MAX_PREFIX * N_JOINTS],
        }
    }

    /// The given prefix rows (`d * N_JOINTS` values).
    pub(super) fn prefix(&self) -> &[f32] {
        &self.rows[..self.d.min(MAX_PREFIX) * N_JOINTS]
    }
}

pub(super) enum Ready {
    Chunk(ChunkMsg),
    /// The request could not be served (stale or missing inputs, engine error).
    Skipped,
}

pub(super) enum OutMsg {
    Command {
        pos: [f32; N_JOINTS],
        obs_stamp_ns: i64,
        first_of_chunk: bool,
    },
    Chunk(ChunkMsg),
}
