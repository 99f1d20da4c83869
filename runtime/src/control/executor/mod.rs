//! Action-chunk executor with LeRobot semantics.
//!
//! A policy inference produces a *chunk*: `(chunk_len, da)` row-major `f32`
//! unnormalised actions, row 0 being the action for the base control step at
//! which the chunk starts (`start_timestep`). The executor turns a stream of
//! chunks into one command per control tick, following one of three LeRobot
//! execution schemes or real-time chunking ([`ExecutorMode`]), optionally with
//! linear interpolation between consecutive base actions
//! ([`ExecutorConfig::interpolation_multiplier`]).
//!
//! Every push also measures the *delay* of the chunk: how many of its rows had
//! already been executed when it arrived (see [`Executor::last_delay`],
//! [`Executor::delay_estimate`]); the `Rtc` mode plans with it.
//!
//! Files: this one holds the types, the queue and the tick; `ensemble.rs` the
//! temporal ensembler; `merge.rs` the timestep-indexed merge shared by Async
//! and Rtc; `rtc.rs` real-time chunking (delay estimate, prefix, blend weights).
//!
//! Hot path: after [`Executor::new`], [`Executor::push_chunk`],
//! [`Executor::tick`], [`Executor::needs_inference`], [`Executor::prefix_rows`]
//! and [`Executor::reset`] perform no heap allocation (every buffer is
//! preallocated with its final size and never grows).

mod ensemble;
mod merge;
mod rtc;
#[cfg(test)]
mod rtc_tests;
#[cfg(test)]
pub(crate) mod tests;

pub use rtc::{rtc_blend_weight, DELAY_WINDOW, INITIAL_DELAY_ESTIMATE};

use rtc::DelayRing;
use thiserror::Error;

/// LeRobot async-inference aggregate function, applied when an incoming chunk
/// row targets a timestep that is already queued (`old` = queued value,
/// `new` = incoming value), element-wise in `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// `0.3 * old + 0.7 * new` (LeRobot `weighted_average`).
    WeightedAverage,
    /// `new` (LeRobot `latest_only`).
    LatestOnly,
    /// `0.5 * old + 0.5 * new` (LeRobot `average`).
    Average,
    /// `0.7 * old + 0.3 * new` (LeRobot `conservative`).
    Conservative,
}

impl Aggregate {
    /// Combines a queued value `old` with an incoming value `new`.
    #[inline]
    pub fn apply(self, old: f32, new: f32) -> f32 {
        match self {
            Aggregate::WeightedAverage => 0.3 * old + 0.7 * new,
            Aggregate::LatestOnly => new,
            Aggregate::Average => 0.5 * old + 0.5 * new,
            Aggregate::Conservative => 0.7 * old + 0.3 * new,
        }
    }
}

/// How chunks are turned into base actions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExecutorMode {
    /// LeRobot `select_action` queue: a push replaces the queue with the first
    /// `n_action_steps` rows of the chunk; each base tick pops one row;
    /// inference is needed when the queue is empty.
    Queue,
    /// LeRobot `ACTTemporalEnsembler` (requires `n_action_steps == 1`): every
    /// push updates the ensemble and yields exactly one action (for
    /// `start_timestep`), consumed by the next base tick; inference is needed
    /// whenever that action has been consumed. Weights `w_i = exp(-coeff * i)`,
    /// `i = 0` being the oldest prediction of a timestep.
    TemporalEnsemble {
        /// Exponential weighting coefficient; must be finite (0 = plain average).
        coeff: f32,
    },
    /// LeRobot async inference (`robot_client`): a timestep-indexed queue,
    /// inference needed when `queued / chunk_len <= threshold`.
    Async {
        /// Chunk-size threshold in `[0, 1]`.
        threshold: f32,
        /// How overlapping timesteps are merged.
        aggregate: Aggregate,
    },
    /// Real-time chunking (Black et al. 2025, "Real-Time Execution of Action
    /// Chunking Flow Policies"): a timestep-indexed queue like Async; the next
    /// inference starts early, when `queued <= max(chunk_len - n_action_steps,
    /// delay_estimate + 1)` (execution horizon `s = n_action_steps`), and the
    /// new chunk is joined to the queue by a splice or a soft-masked blend
    /// (see [`Executor::push_chunk`]).
    Rtc {
        /// `true`: the policy was given the actions that execute while it
        /// runs (the prefix, [`Executor::prefix_rows`]) and continues them, so
        /// its chunk replaces the queue exactly (splice). `false` (ACT, policies
        /// without a prefix input): the old queue is blended into the new chunk
        /// over the overlap with RTC's soft-mask weights, without guidance.
        prefix: bool,
    },
}

/// Executor configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExecutorConfig {
    /// Execution scheme.
    pub mode: ExecutorMode,
    /// `M >= 1`: the control loop ticks at `fps * M`; each base action is
    /// spread over `M` sub-ticks by linear interpolation. `1` = plain execution.
    pub interpolation_multiplier: usize,
}

/// Executor construction / push errors. Each message names the offending
/// parameter.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum ExecutorError {
    /// `da` (action dimension) is 0.
    #[error("da (action dimension) must be >= 1, got 0")]
    ZeroDa,
    /// `chunk_len` is 0.
    #[error("chunk_len must be >= 1, got 0")]
    ZeroChunkLen,
    /// `n_action_steps` outside `1..=chunk_len`.
    #[error("n_action_steps must be in 1..={chunk_len} (chunk_len), got {n_action_steps}")]
    BadNActionSteps {
        /// Requested value.
        n_action_steps: usize,
        /// Chunk length it must not exceed.
        chunk_len: usize,
    },
    /// `interpolation_multiplier` is 0.
    #[error("interpolation_multiplier must be >= 1, got 0")]
    ZeroMultiplier,
    /// Async `threshold` outside `[0, 1]` (or NaN).
    #[error("Async threshold must be in [0, 1], got {0}")]
    BadThreshold(f32),
    /// TemporalEnsemble `coeff` not finite, or weights `exp(-coeff * i)` /
    /// their cumulative sums overflow for `i < chunk_len`.
    #[error("TemporalEnsemble coeff must be finite and give finite weights exp(-coeff*i) for i < chunk_len, got {0}")]
    BadCoeff(f32),
    /// TemporalEnsemble with `n_action_steps != 1`.
    #[error("TemporalEnsemble requires n_action_steps == 1, got {0}")]
    EnsembleNActionSteps(usize),
    /// Pushed chunk has the wrong number of values.
    #[error("chunk has {got} values, expected chunk_len * da = {expected}")]
    ChunkLength {
        /// `chunk_len * da`.
        expected: usize,
        /// `chunk.len()`.
        got: usize,
    },
}

/// Result of one control tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// `out` holds a command derived from the base action of `timestep`;
    /// `sub_tick` in `0..M` is the position inside the interpolation group
    /// (`sub_tick == M - 1` emits the base action itself).
    Action {
        /// Base timestep of the action being executed.
        timestep: u64,
        /// Sub-tick index in `0..interpolation_multiplier`.
        sub_tick: usize,
    },
    /// Nothing available (queue empty at the start of an interpolation group,
    /// or `out.len() != da`); `out` is untouched and the caller holds.
    Empty,
}

/// Action-chunk executor. See the module docs and [`ExecutorMode`].
#[derive(Debug, Clone)]
pub struct Executor {
    mode: ExecutorMode,
    /// Interpolation multiplier `M >= 1`.
    m: usize,
    da: usize,
    chunk_len: usize,
    n_action_steps: usize,

    /// Pending base actions, `(chunk_len, da)` row-major. Valid rows are
    /// `head..head + len`; their timesteps are contiguous, row `head` being
    /// `queue_ts`. Used by every mode (TemporalEnsemble keeps its single
    /// pending action here).
    queue: Vec<f32>,
    /// Scratch of the same layout `(chunk_len, da)` used to rebuild the Async
    /// queue; swapped with `queue` (no allocation).
    scratch: Vec<f32>,
    head: usize,
    len: usize,
    queue_ts: u64,

    /// Ensemble weights `w[i] = exp(-coeff * i)`, `(chunk_len,)`.
    w: Vec<f32>,
    /// Cumulative sums `wc[i] = w[0] + ... + w[i]`, `(chunk_len,)`.
    wc: Vec<f32>,
    /// Ensembled actions, `(chunk_len, da)` row-major, rows `0..ens_len` valid;
    /// row 0 is the next timestep.
    ens: Vec<f32>,
    /// Number of predictions averaged into each ensembled row, `(chunk_len,)`.
    ens_count: Vec<usize>,
    ens_len: usize,
    /// `false` = LeRobot's `ensembled_actions is None`.
    ens_init: bool,

    /// Interpolation start `a_{k-1}`, `(da,)`.
    from: Vec<f32>,
    /// Current base action `a_k`, `(da,)`.
    target: Vec<f32>,
    has_target: bool,
    target_ts: u64,
    /// Sub-ticks already emitted for `target`, `0..M`; 0 = next tick starts a
    /// new group (consumes a base action).
    sub: usize,

    /// Last base timestep consumed from the queue (`None` after new/reset).
    last_executed: Option<u64>,

    /// The last [`DELAY_WINDOW`] measured delays (fixed ring, kept across
    /// resets: it measures the inference time, which an episode does not change).
    delays: DelayRing,
    /// Delay of the last pushed chunk (`None` before the first push).
    last_delay: Option<usize>,
}

impl Executor {
    /// Builds an executor for actions of dimension `da`, chunks of
    /// `chunk_len` rows, of which Queue mode executes the first
    /// `n_action_steps`. All buffers are allocated here.
    pub fn new(
        cfg: ExecutorConfig,
        da: usize,
        chunk_len: usize,
        n_action_steps: usize,
    ) -> Result<Self, ExecutorError> {
        if da == 0 {
            return Err(ExecutorError::ZeroDa);
        }
        if chunk_len == 0 {
            return Err(ExecutorError::ZeroChunkLen);
        }
        if n_action_steps == 0 || n_action_steps > chunk_len {
            return Err(ExecutorError::BadNActionSteps {
                n_action_steps,
                chunk_len,
            });
        }
        if cfg.interpolation_multiplier == 0 {
            return Err(ExecutorError::ZeroMultiplier);
        }
        let mut w = vec![0.0f32; chunk_len];
        let mut wc = vec![0.0f32; chunk_len];
        match cfg.mode {
            ExecutorMode::Queue | ExecutorMode::Rtc { .. } => {}
            ExecutorMode::Async { threshold, .. } => {
                if !(0.0..=1.0).contains(&threshold) {
                    return Err(ExecutorError::BadThreshold(threshold));
                }
            }
            ExecutorMode::TemporalEnsemble { coeff } => {
                if !coeff.is_finite() {
                    return Err(ExecutorError::BadCoeff(coeff));
                }
                if n_action_steps != 1 {
                    return Err(ExecutorError::EnsembleNActionSteps(n_action_steps));
                }
                // torch: exp(-coeff * arange(chunk_len)) and cumsum, in f32.
                let mut acc = 0.0f32;
                for (i, (wi, wci)) in w.iter_mut().zip(wc.iter_mut()).enumerate() {
                    *wi = (-coeff * i as f32).exp();
                    acc += *wi;
                    *wci = acc;
                    if !wi.is_finite() || !acc.is_finite() || acc <= 0.0 {
                        return Err(ExecutorError::BadCoeff(coeff));
                    }
                }
            }
        }
        Ok(Self {
            mode: cfg.mode,
            m: cfg.interpolation_multiplier,
            da,
            chunk_len,
            n_action_steps,
            queue: vec![0.0; chunk_len * da],
            scratch: vec![0.0; chunk_len * da],
            head: 0,
            len: 0,
            queue_ts: 0,
            w,
            wc,
            ens: vec![0.0; chunk_len * da],
            ens_count: vec![0; chunk_len],
            ens_len: 0,
            ens_init: false,
            from: vec![0.0; da],
            target: vec![0.0; da],
            has_target: false,
            target_ts: 0,
            sub: 0,
            last_executed: None,
            delays: DelayRing::new(),
            last_delay: None,
        })
    }

    /// Action dimension.
    pub fn da(&self) -> usize {
        self.da
    }

    /// Rows per pushed chunk.
    pub fn chunk_len(&self) -> usize {
        self.chunk_len
    }

    /// Rows of each chunk executed in Queue mode.
    pub fn n_action_steps(&self) -> usize {
        self.n_action_steps
    }

    /// Interpolation multiplier `M`.
    pub fn interpolation_multiplier(&self) -> usize {
        self.m
    }

    /// Configured mode.
    pub fn mode(&self) -> ExecutorMode {
        self.mode
    }

    /// Number of base actions waiting (not yet started).
    pub fn queued(&self) -> usize {
        self.len
    }

    /// `true` when the control loop should request an inference now:
    /// - Queue: the queue is empty;
    /// - TemporalEnsemble: the action of the last push has been consumed (or
    ///   nothing was pushed yet);
    /// - Async: `queued / chunk_len <= threshold`;
    /// - Rtc: `queued <= max(chunk_len - n_action_steps, delay_estimate + 1)`:
    ///   at the latest when `n_action_steps` rows of the last chunk have run,
    ///   earlier when the inference is expected to take longer than what is left.
    pub fn needs_inference(&self) -> bool {
        match self.mode {
            ExecutorMode::Queue | ExecutorMode::TemporalEnsemble { .. } => self.len == 0,
            ExecutorMode::Async { threshold, .. } => {
                (self.len as f32 / self.chunk_len as f32) <= threshold
            }
            ExecutorMode::Rtc { .. } => self.len <= self.rtc_threshold(),
        }
    }

    /// Delivers a chunk `(chunk_len, da)` row-major whose row `i` is the action
    /// for base timestep `start_timestep + i`.
    ///
    /// - Queue: the queue is replaced by rows `0..n_action_steps`.
    /// - TemporalEnsemble: one ensembler update (`start_timestep` is only used
    ///   as the timestep reported for the produced action; like LeRobot, the
    ///   ensembler assumes one push per base step). A previous action that was
    ///   not consumed yet is overwritten.
    /// - Async (LeRobot `_aggregate_action_queues`): rows with
    ///   `timestep <= last executed` are dropped, rows whose timestep is queued
    ///   are merged with the aggregate (`old` = queued, `new` = incoming), other
    ///   rows are appended; the queue becomes exactly these rows (queued
    ///   timesteps absent from the chunk are discarded, as in LeRobot).
    /// - Rtc, `prefix: true`: rows with `timestep <= last executed` are
    ///   dropped and the remaining rows replace the queue exactly (splice).
    /// - Rtc, `prefix: false`: as Async, with the merge of a queued timestep
    ///   `w_i * old + (1 - w_i) * new`, `w_i` = [`rtc_blend_weight`]`(i, d, s, H)`
    ///   for chunk row `i`, `d` the measured delay of this chunk, `s =
    ///   n_action_steps`, `H = chunk_len`.
    ///
    /// Every mode first measures the chunk's delay: the next timestep to execute
    /// minus `start_timestep` (saturating), i.e. how many of its rows were
    /// already executed ([`Executor::last_delay`]); it feeds
    /// [`Executor::delay_estimate`] unless nothing was executed since new/reset
    /// (then it says nothing about the inference time).
    ///
    /// Values are not checked for NaN (that is [`crate::control::safety`]'s job).
    pub fn push_chunk(&mut self, chunk: &[f32], start_timestep: u64) -> Result<(), ExecutorError> {
        let expected = self.chunk_len * self.da;
        if chunk.len() != expected {
            return Err(ExecutorError::ChunkLength {
                expected,
                got: chunk.len(),
            });
        }
        let da = self.da;
        self.measure_delay(start_timestep);
        match self.mode {
            ExecutorMode::Queue => {
                let n = self.n_action_steps * da;
                self.queue[..n].copy_from_slice(&chunk[..n]);
                self.head = 0;
                self.len = self.n_action_steps;
                self.queue_ts = start_timestep;
            }
            ExecutorMode::TemporalEnsemble { .. } => {
                self.ensemble_update(chunk);
                // action = ensembled[0]; ensembled = ensembled[1:]
                self.queue[..da].copy_from_slice(&self.ens[..da]);
                self.head = 0;
                self.len = 1;
                self.queue_ts = start_timestep;
                let rows = self.ens_len;
                self.ens.copy_within(da..rows * da, 0);
                self.ens_count.copy_within(1..rows, 0);
                self.ens_len = rows - 1;
            }
            ExecutorMode::Async { aggregate, .. } => {
                self.merge_into_queue(chunk, start_timestep, |_, old, new, dst| {
                    for ((d, &o), &n) in dst.iter_mut().zip(old).zip(new) {
                        *d = aggregate.apply(o, n);
                    }
                });
            }
            ExecutorMode::Rtc { prefix } => self.push_rtc(chunk, start_timestep, prefix),
        }
        Ok(())
    }

    /// Produces the command for the next control tick into `out` (`(da,)`).
    ///
    /// At the start of each group of `M` sub-ticks a base action `a_k` is
    /// popped (smallest timestep); sub-tick `j = 1..=M` of the group emits
    /// `a_{k-1} + (j / M) * (a_k - a_{k-1})`, the last one exactly `a_k`.
    /// `a_{k-1}` is the previously emitted base action; for the first base
    /// action after new/reset, `a_k` is emitted for all `M` sub-ticks.
    /// Returns [`Tick::Empty`] (nothing consumed, `out` untouched) when a
    /// group would start with an empty queue, or when `out.len() != da`.
    pub fn tick(&mut self, out: &mut [f32]) -> Tick {
        let da = self.da;
        if out.len() != da {
            return Tick::Empty;
        }
        if self.sub == 0 {
            if self.len == 0 {
                return Tick::Empty;
            }
            let row = &self.queue[self.head * da..(self.head + 1) * da];
            if self.has_target {
                self.from.copy_from_slice(&self.target);
            } else {
                self.from.copy_from_slice(row);
            }
            self.target.copy_from_slice(row);
            self.has_target = true;
            self.target_ts = self.queue_ts;
            self.last_executed = Some(self.queue_ts);
            self.head += 1;
            self.len -= 1;
            self.queue_ts = self.queue_ts.saturating_add(1);
            if self.len == 0 {
                self.head = 0;
            }
        }
        self.sub += 1;
        let j = self.sub;
        if j >= self.m {
            out.copy_from_slice(&self.target);
            self.sub = 0;
        } else {
            let frac = j as f32 / self.m as f32;
            for ((o, &f), &t) in out.iter_mut().zip(&self.from).zip(&self.target) {
                *o = f + frac * (t - f);
            }
        }
        Tick::Action {
            timestep: self.target_ts,
            sub_tick: j - 1,
        }
    }

    /// Episode start: clears the queue, the ensembler, the interpolation
    /// state and the timestep counter (no action leaks across episodes).
    pub fn reset(&mut self) {
        self.head = 0;
        self.len = 0;
        self.queue_ts = 0;
        self.ens_len = 0;
        self.ens_init = false;
        self.has_target = false;
        self.target_ts = 0;
        self.sub = 0;
        self.last_executed = None;
    }

    /// Next base timestep to execute: last consumed base timestep + 1, or 0
    /// after new/reset.
    pub fn timestep(&self) -> u64 {
        self.last_executed.map_or(0, |t| t.saturating_add(1))
    }

    /// Last base timestep consumed from the queue (LeRobot `latest_action`;
    /// `None` after new/reset).
    pub fn last_executed(&self) -> Option<u64> {
        self.last_executed
    }
}
