//! Real-time chunking (Black et al. 2025, "Real-Time Execution of Action
//! Chunking Flow Policies"): the live delay estimate, the prefix handed to a
//! policy that continues given actions, and the soft-masked blend for policies
//! that do not.
//!
//! Notation (the paper's): `H` = chunk length, `s` = execution horizon (the
//! policy's `n_action_steps`), `d` = delay, the number of the new chunk's rows
//! that were already executed when it arrived (the inference time in base
//! ticks, as the executor saw it).

use super::{Executor, ExecutorMode};

/// Delays remembered by the estimate: it is the largest of the last
/// `DELAY_WINDOW` measured delays, so it follows a slowdown at once and
/// relaxes after `DELAY_WINDOW` chunks.
pub const DELAY_WINDOW: usize = 8;

/// The estimate before any delay was measured: the control loop requests at
/// one tick and receives at a later one, so at least one action runs meanwhile.
pub const INITIAL_DELAY_ESTIMATE: usize = 1;

/// The last [`DELAY_WINDOW`] delays in a fixed ring (no allocation).
#[derive(Debug, Clone)]
pub(super) struct DelayRing {
    buf: [usize; DELAY_WINDOW],
    /// Valid entries (`buf[..len]`; the ring fills from index 0).
    len: usize,
    /// Where the next delay goes.
    pos: usize,
}

impl DelayRing {
    pub(super) fn new() -> Self {
        DelayRing {
            buf: [0; DELAY_WINDOW],
            len: 0,
            pos: 0,
        }
    }

    pub(super) fn push(&mut self, d: usize) {
        self.buf[self.pos] = d;
        self.pos = (self.pos + 1) % DELAY_WINDOW;
        self.len = (self.len + 1).min(DELAY_WINDOW);
    }

    pub(super) fn estimate(&self) -> usize {
        self.buf[..self.len]
            .iter()
            .copied()
            .max()
            .unwrap_or(INITIAL_DELAY_ESTIMATE)
    }
}

/// RTC's soft-mask weight of the *old* queue for row `i` of a new chunk
/// (`i` counted from the chunk's start), eq. 5 of Black et al. 2025 with `d` =
/// delay, `s` = execution horizon, `h` = chunk length:
///
/// ```text
/// w_i = 1                                   i < d           (already executed: frozen)
/// w_i = c_i (e^{c_i} - 1) / (e - 1),        d <= i < h - s  (overlap: decays from ~1 to ~0)
///       c_i = (h - s - i) / (h - s - d + 1)
/// w_i = 0                                   i >= h - s      (beyond the old plan: new only)
/// ```
///
/// The merged action is `w_i * old + (1 - w_i) * new`. RTC uses these weights
/// to guide the flow sampler towards the old chunk; without guidance (a 1-2
/// step ONNX policy cannot afford the gradients) the executor applies them to
/// the actions themselves.
pub fn rtc_blend_weight(i: usize, d: usize, s: usize, h: usize) -> f32 {
    if i < d {
        return 1.0;
    }
    let overlap_end = h.saturating_sub(s);
    if i >= overlap_end {
        return 0.0;
    }
    // Here d <= i < h - s, so the denominator h - s - d + 1 >= 2.
    let c = (overlap_end - i) as f64 / (overlap_end - d + 1) as f64;
    (c * c.exp_m1() / (std::f64::consts::E - 1.0)) as f32
}

impl Executor {
    /// Measures the delay of a chunk that starts at `start_timestep` (see
    /// [`Executor::push_chunk`]).
    pub(super) fn measure_delay(&mut self, start_timestep: u64) {
        let d = self.timestep().saturating_sub(start_timestep);
        let d = usize::try_from(d).unwrap_or(usize::MAX);
        self.last_delay = Some(d);
        if self.last_executed.is_some() {
            self.delays.push(d);
        }
    }

    /// Expected delay of the next chunk in base ticks: the largest of the last
    /// [`DELAY_WINDOW`] measured delays ([`INITIAL_DELAY_ESTIMATE`] before any).
    pub fn delay_estimate(&self) -> usize {
        self.delays.estimate()
    }

    /// Delay of the last pushed chunk: how many of its rows had already been
    /// executed when it arrived (`None` before the first push).
    pub fn last_delay(&self) -> Option<usize> {
        self.last_delay
    }

    /// Rtc: request the next chunk when at most this many actions are queued.
    pub(super) fn rtc_threshold(&self) -> usize {
        let overlap = self.chunk_len - self.n_action_steps;
        overlap.max(self.delay_estimate().saturating_add(1))
    }

    /// Copies the next `d` queued base actions (those that will execute while
    /// an inference requested now runs, when `d` is the delay) into `out`,
    /// `(d, da)` row-major. When fewer are queued, the last queued row is
    /// repeated. Returns how many distinct queued rows were available (0 when
    /// the queue is empty: `out` is untouched). Writes at most
    /// `out.len() / da` rows. No allocation.
    pub fn prefix_rows(&self, d: usize, out: &mut [f32]) -> usize {
        let da = self.da;
        let rows = d.min(out.len() / da);
        if self.len == 0 || rows == 0 {
            return 0;
        }
        let avail = self.len.min(rows);
        for (r, dst) in out.chunks_exact_mut(da).take(rows).enumerate() {
            let q = self.head + r.min(avail - 1);
            dst.copy_from_slice(&self.queue[q * da..(q + 1) * da]);
        }
        avail
    }

    /// The Rtc push (the delay is already measured; see [`Executor::push_chunk`]).
    pub(super) fn push_rtc(&mut self, chunk: &[f32], start_timestep: u64, prefix: bool) {
        debug_assert!(matches!(self.mode, ExecutorMode::Rtc { .. }));
        if prefix {
            self.merge_into_queue(chunk, start_timestep, |_, _, new, dst| {
                dst.copy_from_slice(new)
            });
            return;
        }
        let d = self.last_delay.unwrap_or(0);
        let (s, h) = (self.n_action_steps, self.chunk_len);
        self.merge_into_queue(chunk, start_timestep, |i, old, new, dst| {
            let w = rtc_blend_weight(i, d, s, h);
            for ((x, &o), &n) in dst.iter_mut().zip(old).zip(new) {
                *x = w * o + (1.0 - w) * n;
            }
        });
    }
}
