//! Action-chunk executor with LeRobot semantics.
//!
//! A policy inference produces a *chunk*: `(chunk_len, da)` row-major `f32`
//! unnormalised actions, row 0 being the action for the base control step at
//! which the chunk starts (`start_timestep`). The executor turns a stream of
//! chunks into one command per control tick, following one of three LeRobot
//! execution schemes ([`ExecutorMode`]), optionally with linear interpolation
//! between consecutive base actions ([`ExecutorConfig::interpolation_multiplier`]).
//!
//! Hot path: after [`Executor::new`], [`Executor::push_chunk`],
//! [`Executor::tick`], [`Executor::needs_inference`] and [`Executor::reset`]
//! perform no heap allocation (every buffer is preallocated with its final
//! size and never grows).

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
            ExecutorMode::Queue => {}
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
    /// - Async: `queued / chunk_len <= threshold`.
    pub fn needs_inference(&self) -> bool {
        match self.mode {
            ExecutorMode::Queue | ExecutorMode::TemporalEnsemble { .. } => self.len == 0,
            ExecutorMode::Async { threshold, .. } => {
                (self.len as f32 / self.chunk_len as f32) <= threshold
            }
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
                let mut new_len = 0usize;
                let mut new_ts = 0u64;
                for (i, row) in chunk.chunks_exact(da).enumerate() {
                    let Some(t) = start_timestep.checked_add(i as u64) else {
                        break;
                    };
                    if self.last_executed.is_some_and(|le| t <= le) {
                        continue;
                    }
                    let dst = &mut self.scratch[new_len * da..(new_len + 1) * da];
                    let queued_idx = t
                        .checked_sub(self.queue_ts)
                        .filter(|&off| off < self.len as u64)
                        .map(|off| self.head + off as usize);
                    match queued_idx {
                        Some(q) => {
                            let old = &self.queue[q * da..(q + 1) * da];
                            for ((d, &o), &n) in dst.iter_mut().zip(old).zip(row) {
                                *d = aggregate.apply(o, n);
                            }
                        }
                        None => dst.copy_from_slice(row),
                    }
                    if new_len == 0 {
                        new_ts = t;
                    }
                    new_len += 1;
                }
                std::mem::swap(&mut self.queue, &mut self.scratch);
                self.head = 0;
                self.len = new_len;
                self.queue_ts = new_ts;
            }
        }
        Ok(())
    }

    /// LeRobot `ACTTemporalEnsembler.update` without the final pop.
    /// `chunk` is `(chunk_len, da)` row-major (length already checked).
    fn ensemble_update(&mut self, chunk: &[f32]) {
        let da = self.da;
        let n = self.chunk_len;
        if !self.ens_init {
            self.ens.copy_from_slice(chunk);
            self.ens_count.fill(1);
            self.ens_len = n;
            self.ens_init = true;
            return;
        }
        // Invariant: ens_len == n - 1 here (one row popped per update).
        let rows = self.ens_len.min(n - 1);
        let last_w = n - 1;
        for i in 0..rows {
            let c = self.ens_count[i].clamp(1, last_w.max(1));
            // wc[c-1], w[c], wc[c]; c <= n-1 by the LeRobot invariant
            // (count + position == n - 1), indices clamped defensively.
            let (wc_prev, w_c, wc_c) = (
                self.wc[c - 1],
                self.w[c.min(last_w)],
                self.wc[c.min(last_w)],
            );
            let e = &mut self.ens[i * da..(i + 1) * da];
            let a = &chunk[i * da..(i + 1) * da];
            for (ev, &av) in e.iter_mut().zip(a) {
                let mut v = *ev * wc_prev;
                v += av * w_c;
                v /= wc_c;
                *ev = v;
            }
            self.ens_count[i] = (c + 1).min(n);
        }
        // Append the last row of the new chunk with count 1.
        self.ens[rows * da..(rows + 1) * da].copy_from_slice(&chunk[(n - 1) * da..n * da]);
        self.ens_count[rows] = 1;
        self.ens_len = rows + 1;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// Crate-wide counting allocator (test builds only); counts allocations
    /// (alloc, alloc_zeroed, realloc) per thread, so parallel tests do not
    /// disturb each other.
    struct CountingAlloc;

    thread_local! {
        static ALLOCS: Cell<u64> = const { Cell::new(0) };
    }

    fn bump() {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    }

    unsafe impl GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            bump();
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            bump();
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            bump();
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: CountingAlloc = CountingAlloc;

    /// Allocations performed so far by the current thread.
    pub(crate) fn alloc_count() -> u64 {
        ALLOCS.with(|c| c.get())
    }

    #[test]
    fn counting_allocator_counts() {
        let before = alloc_count();
        let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(16));
        std::hint::black_box(&v);
        assert_eq!(alloc_count() - before, 1);
    }

    fn cfg(mode: ExecutorMode, m: usize) -> ExecutorConfig {
        ExecutorConfig {
            mode,
            interpolation_multiplier: m,
        }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-5 * (1.0 + b.abs())
    }

    /// Ticks once and returns (value of joint 0, timestep), panicking on Empty.
    fn tick1(ex: &mut Executor) -> (f32, u64) {
        let mut out = [0.0f32; 1];
        match ex.tick(&mut out) {
            Tick::Action { timestep, .. } => (out[0], timestep),
            Tick::Empty => panic!("unexpected Tick::Empty"),
        }
    }

    #[test]
    fn constructor_errors() {
        let q = cfg(ExecutorMode::Queue, 1);
        assert_eq!(Executor::new(q, 0, 4, 1).err(), Some(ExecutorError::ZeroDa));
        assert_eq!(
            Executor::new(q, 2, 0, 1).err(),
            Some(ExecutorError::ZeroChunkLen)
        );
        assert_eq!(
            Executor::new(q, 2, 4, 0).err(),
            Some(ExecutorError::BadNActionSteps {
                n_action_steps: 0,
                chunk_len: 4
            })
        );
        assert_eq!(
            Executor::new(q, 2, 4, 5).err(),
            Some(ExecutorError::BadNActionSteps {
                n_action_steps: 5,
                chunk_len: 4
            })
        );
        assert_eq!(
            Executor::new(cfg(ExecutorMode::Queue, 0), 2, 4, 1).err(),
            Some(ExecutorError::ZeroMultiplier)
        );
        for t in [-0.1f32, 1.5, f32::NAN] {
            let e = Executor::new(
                cfg(
                    ExecutorMode::Async {
                        threshold: t,
                        aggregate: Aggregate::Average,
                    },
                    1,
                ),
                2,
                4,
                4,
            );
            assert!(matches!(e, Err(ExecutorError::BadThreshold(_))));
        }
        assert!(Executor::new(
            cfg(
                ExecutorMode::Async {
                    threshold: 1.0,
                    aggregate: Aggregate::Average
                },
                1
            ),
            2,
            4,
            4
        )
        .is_ok());
        for c in [f32::NAN, f32::INFINITY, -1.0e4] {
            let e = Executor::new(
                cfg(ExecutorMode::TemporalEnsemble { coeff: c }, 1),
                2,
                100,
                1,
            );
            assert!(matches!(e, Err(ExecutorError::BadCoeff(_))), "coeff {c}");
        }
        assert_eq!(
            Executor::new(
                cfg(ExecutorMode::TemporalEnsemble { coeff: 0.01 }, 1),
                2,
                4,
                2
            )
            .err(),
            Some(ExecutorError::EnsembleNActionSteps(2))
        );
        let mut ex = Executor::new(q, 2, 4, 2).unwrap();
        assert_eq!(
            ex.push_chunk(&[0.0; 7], 0),
            Err(ExecutorError::ChunkLength {
                expected: 8,
                got: 7
            })
        );
        // Message names the parameter.
        assert!(ExecutorError::ZeroMultiplier
            .to_string()
            .contains("interpolation_multiplier"));
    }

    #[test]
    fn queue_order_and_refill() {
        // chunk_len 4, n_action_steps 2, da 2: only rows 0 and 1 are executed.
        let mut ex = Executor::new(cfg(ExecutorMode::Queue, 1), 2, 4, 2).unwrap();
        assert!(ex.needs_inference());
        let mut out = [0.0f32; 2];
        assert_eq!(ex.tick(&mut out), Tick::Empty);
        ex.push_chunk(&[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], 0)
            .unwrap();
        assert!(!ex.needs_inference());
        assert_eq!(ex.queued(), 2);
        assert_eq!(
            ex.tick(&mut out),
            Tick::Action {
                timestep: 0,
                sub_tick: 0
            }
        );
        assert_eq!(out, [0.0, 0.5]);
        assert!(!ex.needs_inference());
        assert_eq!(
            ex.tick(&mut out),
            Tick::Action {
                timestep: 1,
                sub_tick: 0
            }
        );
        assert_eq!(out, [1.0, 1.5]);
        assert!(ex.needs_inference());
        assert_eq!(ex.timestep(), 2);
        // Rows 2, 3 of the chunk are never executed.
        assert_eq!(ex.tick(&mut out), Tick::Empty);
        assert_eq!(out, [1.0, 1.5]); // untouched
        ex.push_chunk(&[10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0, 13.5], 2)
            .unwrap();
        assert_eq!(
            ex.tick(&mut out),
            Tick::Action {
                timestep: 2,
                sub_tick: 0
            }
        );
        assert_eq!(out, [10.0, 10.5]);
        // A push while rows remain replaces the queue.
        ex.push_chunk(&[20.0, 20.5, 21.0, 21.5, 22.0, 22.5, 23.0, 23.5], 3)
            .unwrap();
        assert_eq!(
            ex.tick(&mut out),
            Tick::Action {
                timestep: 3,
                sub_tick: 0
            }
        );
        assert_eq!(out, [20.0, 20.5]);
        assert_eq!(
            ex.tick(&mut out),
            Tick::Action {
                timestep: 4,
                sub_tick: 0
            }
        );
        assert_eq!(out, [21.0, 21.5]);
        assert_eq!(ex.tick(&mut out), Tick::Empty);
        // Wrong out length: Empty, nothing consumed.
        ex.push_chunk(&[30.0, 30.5, 31.0, 31.5, 32.0, 32.5, 33.0, 33.5], 5)
            .unwrap();
        assert_eq!(ex.tick(&mut [0.0; 3]), Tick::Empty);
        assert_eq!(ex.queued(), 2);
    }

    /// Pushes A, B, C, D (chunk_len 3, da 1) one per tick and returns the 4
    /// executed actions with their timesteps.
    fn run_ensemble(coeff: f32) -> Vec<(f32, u64)> {
        let mut ex =
            Executor::new(cfg(ExecutorMode::TemporalEnsemble { coeff }, 1), 1, 3, 1).unwrap();
        let chunks: [[f32; 3]; 4] = [
            [1.0, 2.0, 3.0],
            [10.0, 20.0, 30.0],
            [100.0, 200.0, 300.0],
            [1000.0, 2000.0, 3000.0],
        ];
        let mut res = Vec::new();
        for (t, c) in chunks.iter().enumerate() {
            assert!(ex.needs_inference());
            ex.push_chunk(c, t as u64).unwrap();
            assert!(!ex.needs_inference());
            res.push(tick1(&mut ex));
            assert!(ex.needs_inference());
        }
        let mut out = [0.0f32; 1];
        assert_eq!(ex.tick(&mut out), Tick::Empty);
        res
    }

    #[test]
    fn temporal_ensemble_coeff_zero_is_plain_average() {
        // coeff 0: w = [1, 1, 1], wc = [1, 2, 3]; the action for timestep t is
        // the plain mean of every prediction made for t.
        // t0: A[0] = 1                                  -> 1
        // t1: A[1] = 2, B[0] = 10        -> (2+10)/2    -> 6
        // t2: A[2] = 3, B[1] = 20, C[0] = 100 -> 123/3  -> 41
        // t3: B[2] = 30, C[1] = 200, D[0] = 1000 -> 1230/3 -> 410
        let r = run_ensemble(0.0);
        let expected = [(1.0, 0), (6.0, 1), (41.0, 2), (410.0, 3)];
        for (got, exp) in r.iter().zip(expected.iter()) {
            assert!(close(got.0, exp.0), "{got:?} vs {exp:?}");
            assert_eq!(got.1, exp.1);
        }
    }

    #[test]
    fn temporal_ensemble_coeff_001() {
        // coeff 0.01: w0 = 1, w1 = e^-0.01 = 0.99004983, w2 = e^-0.02 = 0.98019867,
        // wc = [1, 1.99004983, 2.97024851]; i = 0 is the OLDEST prediction.
        // t0: 1
        // t1: (1*2 + w1*10) / (1 + w1) = 11.9004983 / 1.99004983 = 5.98000017
        // t2: (3 + w1*20 + w2*100) / wc2 = (3 + 19.8009967 + 98.0198673) / 2.97024851
        //     = 120.820864 / 2.97024851 = 40.6770220
        // t3: (30 + w1*200 + w2*1000) / wc2 = 1208.20864 / 2.97024851 = 406.770220
        let r = run_ensemble(0.01);
        let expected = [(1.0, 0), (5.98, 1), (40.677_02, 2), (406.770_2, 3)];
        for (got, exp) in r.iter().zip(expected.iter()) {
            assert!(close(got.0, exp.0), "{got:?} vs {exp:?}");
            assert_eq!(got.1, exp.1);
        }
    }

    #[test]
    fn temporal_ensemble_chunk_len_one_passes_through() {
        let mut ex = Executor::new(
            cfg(ExecutorMode::TemporalEnsemble { coeff: 0.01 }, 1),
            1,
            1,
            1,
        )
        .unwrap();
        for (t, v) in [5.0f32, 7.0, -1.0].iter().enumerate() {
            ex.push_chunk(&[*v], t as u64).unwrap();
            assert_eq!(tick1(&mut ex), (*v, t as u64));
        }
    }

    /// Async, chunk_len 4, da 1, threshold 0.5: push [0,1,2,3]@0, execute t0
    /// and t1, then push [10,11,12,13]@1 and drain the queue.
    fn run_async(aggregate: Aggregate) -> Vec<(f32, u64)> {
        let mut ex = Executor::new(
            cfg(
                ExecutorMode::Async {
                    threshold: 0.5,
                    aggregate,
                },
                1,
            ),
            1,
            4,
            4,
        )
        .unwrap();
        assert!(ex.needs_inference()); // 0/4 <= 0.5
        ex.push_chunk(&[0.0, 1.0, 2.0, 3.0], 0).unwrap();
        assert!(!ex.needs_inference()); // 4/4 > 0.5
        assert_eq!(tick1(&mut ex), (0.0, 0));
        assert!(!ex.needs_inference()); // 3/4 > 0.5
        assert_eq!(tick1(&mut ex), (1.0, 1));
        assert!(ex.needs_inference()); // 2/4 <= 0.5
                                       // Row for t1 is dropped (t1 <= last executed 1); t2, t3 merged; t4 new.
        ex.push_chunk(&[10.0, 11.0, 12.0, 13.0], 1).unwrap();
        assert_eq!(ex.queued(), 3);
        let mut res = Vec::new();
        while ex.queued() > 0 {
            res.push(tick1(&mut ex));
        }
        res
    }

    fn assert_seq(got: &[(f32, u64)], exp: &[(f32, u64)]) {
        assert_eq!(got.len(), exp.len(), "{got:?} vs {exp:?}");
        for (g, e) in got.iter().zip(exp) {
            assert!(close(g.0, e.0) && g.1 == e.1, "{got:?} vs {exp:?}");
        }
    }

    #[test]
    fn async_weighted_average() {
        // t2: 0.3*2 + 0.7*11 = 0.6 + 7.7 = 8.3; t3: 0.3*3 + 0.7*12 = 0.9 + 8.4 = 9.3; t4: 13
        assert_seq(
            &run_async(Aggregate::WeightedAverage),
            &[(8.3, 2), (9.3, 3), (13.0, 4)],
        );
    }

    #[test]
    fn async_latest_only() {
        assert_seq(
            &run_async(Aggregate::LatestOnly),
            &[(11.0, 2), (12.0, 3), (13.0, 4)],
        );
    }

    #[test]
    fn async_average() {
        // t2: (2 + 11)/2 = 6.5; t3: (3 + 12)/2 = 7.5; t4: 13
        assert_seq(
            &run_async(Aggregate::Average),
            &[(6.5, 2), (7.5, 3), (13.0, 4)],
        );
    }

    #[test]
    fn async_conservative() {
        // t2: 0.7*2 + 0.3*11 = 1.4 + 3.3 = 4.7; t3: 0.7*3 + 0.3*12 = 2.1 + 3.6 = 5.7; t4: 13
        assert_seq(
            &run_async(Aggregate::Conservative),
            &[(4.7, 2), (5.7, 3), (13.0, 4)],
        );
    }

    #[test]
    fn async_drops_past_and_stale_chunks() {
        let mut ex = Executor::new(
            cfg(
                ExecutorMode::Async {
                    threshold: 0.5,
                    aggregate: Aggregate::LatestOnly,
                },
                1,
            ),
            1,
            4,
            4,
        )
        .unwrap();
        ex.push_chunk(&[0.0, 1.0, 2.0, 3.0], 0).unwrap();
        assert_eq!(tick1(&mut ex), (0.0, 0));
        assert_eq!(tick1(&mut ex), (1.0, 1));
        assert_eq!(tick1(&mut ex), (2.0, 2));
        // Chunk for t0..t3: t0, t1, t2 already executed -> dropped; only t3 kept.
        ex.push_chunk(&[50.0, 51.0, 52.0, 53.0], 0).unwrap();
        assert_eq!(ex.queued(), 1);
        assert_eq!(tick1(&mut ex), (53.0, 3));
        // Entirely stale chunk: nothing survives, queue empty (LeRobot).
        ex.push_chunk(&[60.0, 61.0, 62.0, 63.0], 0).unwrap();
        assert_eq!(ex.queued(), 0);
        let mut out = [0.0f32; 1];
        assert_eq!(ex.tick(&mut out), Tick::Empty);
        // Before anything executes nothing is dropped (latest_action = -1).
        ex.reset();
        ex.push_chunk(&[7.0, 8.0, 9.0, 10.0], 0).unwrap();
        assert_eq!(ex.queued(), 4);
        assert_eq!(tick1(&mut ex), (7.0, 0));
        // A chunk that starts in the future is appended as-is, replacing the queue.
        ex.push_chunk(&[20.0, 21.0, 22.0, 23.0], 5).unwrap();
        assert_eq!(tick1(&mut ex), (20.0, 5));
        assert_eq!(ex.timestep(), 6);
    }

    #[test]
    fn interpolation_m3() {
        // Queue, chunk_len 2 = n_action_steps, da 2, M = 3.
        let mut ex = Executor::new(cfg(ExecutorMode::Queue, 3), 2, 2, 2).unwrap();
        ex.push_chunk(&[0.0, 10.0, 3.0, 4.0], 0).unwrap();
        let mut out = [0.0f32; 2];
        // a0 = (0, 10): first action after new -> emitted flat for 3 sub-ticks.
        // a1 = (3, 4):  from a0: a0 + j/3 (a1 - a0) = (1, 8), (2, 6), (3, 4).
        // a2 = (6, 7):  from a1: (4, 5), (5, 6), (6, 7).
        let expected: [([f32; 2], u64, usize); 9] = [
            ([0.0, 10.0], 0, 0),
            ([0.0, 10.0], 0, 1),
            ([0.0, 10.0], 0, 2),
            ([1.0, 8.0], 1, 0),
            ([2.0, 6.0], 1, 1),
            ([3.0, 4.0], 1, 2),
            ([4.0, 5.0], 2, 0),
            ([5.0, 6.0], 2, 1),
            ([6.0, 7.0], 2, 2),
        ];
        for (k, (v, ts, sub)) in expected.iter().enumerate() {
            if k == 6 {
                // Queue empty at a group start -> Empty, nothing consumed.
                assert_eq!(ex.tick(&mut out), Tick::Empty);
                ex.push_chunk(&[6.0, 7.0, 9.0, 9.0], 2).unwrap();
            }
            let t = ex.tick(&mut out);
            assert_eq!(
                t,
                Tick::Action {
                    timestep: *ts,
                    sub_tick: *sub
                },
                "k={k}"
            );
            assert!(
                close(out[0], v[0]) && close(out[1], v[1]),
                "k={k}: {out:?} vs {v:?}"
            );
            if k == 3 {
                // a1 (last queued row) consumed at the group start: the queue
                // is empty, inference requested while the group plays out.
                assert!(ex.needs_inference());
            }
        }
        // The last sub-tick equals the base action exactly.
        assert_eq!(out, [6.0, 7.0]);
    }

    #[test]
    fn reset_clears_everything() {
        // Queue + interpolation.
        let mut ex = Executor::new(cfg(ExecutorMode::Queue, 2), 1, 3, 3).unwrap();
        ex.push_chunk(&[1.0, 2.0, 3.0], 10).unwrap();
        assert_eq!(tick1(&mut ex), (1.0, 10));
        assert_eq!(tick1(&mut ex), (1.0, 10));
        assert_eq!(tick1(&mut ex), (1.5, 11)); // mid-group
        ex.reset();
        assert!(ex.needs_inference());
        assert_eq!(ex.timestep(), 0);
        assert_eq!(ex.last_executed(), None);
        let mut out = [42.0f32; 1];
        assert_eq!(ex.tick(&mut out), Tick::Empty);
        assert_eq!(out, [42.0]);
        // No interpolation from the previous episode's action: flat start.
        ex.push_chunk(&[100.0, 200.0, 300.0], 0).unwrap();
        assert_eq!(tick1(&mut ex), (100.0, 0));
        assert_eq!(tick1(&mut ex), (100.0, 0));
        assert_eq!(tick1(&mut ex), (150.0, 1));

        // Temporal ensemble: after reset the first push is used raw.
        let mut te = Executor::new(
            cfg(ExecutorMode::TemporalEnsemble { coeff: 0.0 }, 1),
            1,
            3,
            1,
        )
        .unwrap();
        te.push_chunk(&[1.0, 2.0, 3.0], 0).unwrap();
        assert_eq!(tick1(&mut te), (1.0, 0));
        te.push_chunk(&[10.0, 20.0, 30.0], 1).unwrap();
        te.reset();
        assert!(te.needs_inference());
        assert_eq!(te.tick(&mut out), Tick::Empty);
        te.push_chunk(&[50.0, 60.0, 70.0], 0).unwrap();
        assert_eq!(tick1(&mut te), (50.0, 0));
        te.push_chunk(&[80.0, 90.0, 100.0], 1).unwrap();
        assert_eq!(tick1(&mut te), (70.0, 1)); // (60 + 80) / 2, no old data

        // Async: last executed forgotten, so t0 is accepted again.
        let mut a = Executor::new(
            cfg(
                ExecutorMode::Async {
                    threshold: 0.5,
                    aggregate: Aggregate::Average,
                },
                1,
            ),
            1,
            2,
            2,
        )
        .unwrap();
        a.push_chunk(&[1.0, 2.0], 0).unwrap();
        assert_eq!(tick1(&mut a), (1.0, 0));
        a.reset();
        assert_eq!(a.queued(), 0);
        a.push_chunk(&[5.0, 6.0], 0).unwrap();
        assert_eq!(a.queued(), 2);
        assert_eq!(tick1(&mut a), (5.0, 0)); // not averaged with the old 2.0 or 1.0
        assert_eq!(tick1(&mut a), (6.0, 1));
    }

    #[test]
    fn zero_allocations_in_steady_state() {
        let da = 6;
        let n = 50;
        let modes = [
            (ExecutorMode::Queue, 25),
            (ExecutorMode::TemporalEnsemble { coeff: 0.01 }, 1),
            (
                ExecutorMode::Async {
                    threshold: 0.5,
                    aggregate: Aggregate::WeightedAverage,
                },
                n,
            ),
        ];
        for (mode, steps) in modes {
            let mut ex = Executor::new(cfg(mode, 3), da, n, steps).unwrap();
            let mut chunk = vec![0.0f32; n * da];
            let mut out = vec![0.0f32; da];
            let before = alloc_count();
            let mut actions = 0u64;
            for it in 0..3000u64 {
                if ex.needs_inference() {
                    for (i, v) in chunk.iter_mut().enumerate() {
                        *v = (it as f32) * 0.01 + i as f32;
                    }
                    ex.push_chunk(&chunk, ex.timestep()).unwrap();
                }
                if let Tick::Action { .. } = ex.tick(&mut out) {
                    actions += 1;
                }
                if it % 1000 == 999 {
                    ex.reset();
                }
            }
            let after = alloc_count();
            assert_eq!(after - before, 0, "mode {mode:?} allocated");
            assert!(actions > 2900, "mode {mode:?}: {actions}");
        }
    }
}
