//! The control thread: absolute deadlines, executor, whole-chunk checks,
//! safety filter, hold on stale joints. It never blocks and never allocates.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TrySendError};
use maniflow_bridge::so101::N_JOINTS;

use super::messages::{Live, OutMsg, Ready, Request, MAX_PREFIX};
use super::rt;
use super::smoothness::Smoothness;
use super::streams::Inputs;
use super::AllocProbe;
use crate::control::executor::{Executor, Tick};
use crate::control::safety::{ChunkVerdict, CommandVerdict, Safety, SafetyCounters};
use crate::stats::Latency;

pub(super) struct ControlOut {
    pub(super) ticks: u64,
    pub(super) misses: u64,
    pub(super) elapsed_s: f64,
    pub(super) lateness: Latency,
    pub(super) compute: Latency,
    pub(super) accepted: u64,
    pub(super) rejected: u64,
    pub(super) dropped_stale: u64,
    pub(super) requested: u64,
    pub(super) queue_full: u64,
    pub(super) held_stale: u64,
    pub(super) held_empty: u64,
    pub(super) episode_resets: u64,
    pub(super) safety: SafetyCounters,
    pub(super) allocations: Option<u64>,
    pub(super) smoothness: Smoothness,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn control_loop(
    executor: &mut Executor,
    safety: &mut Safety,
    inputs: &Inputs,
    tick_hz: f64,
    stop_ramp_ticks: u32,
    deadline_at: Option<Instant>,
    stop: &AtomicBool,
    done: &AtomicBool,
    prefix_max: usize,
    smoothness: Smoothness,
    req_tx: &Sender<Request>,
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
        smoothness,
    };
    // Rows of the action prefix a request may carry (0 = the policy gets none).
    let prefix_max = prefix_max.min(MAX_PREFIX);
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
        let starts = inputs.episode_starts.load(Ordering::Acquire);
        if starts != episode_starts {
            // A new episode (LeRobot's policy.reset()): forget queued actions.
            episode_starts = starts;
            executor.reset();
            discard_in_flight = in_flight;
            o.episode_resets += 1;
            let id = inputs.episode_id.load(Ordering::Acquire);
            o.smoothness
                .start_episode((id != u64::MAX).then_some(id), safety.counters());
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
                                o.smoothness.chunk_accepted(executor.last_delay());
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
                                o.smoothness.chunk_rejected();
                                let _ = pool_tx.try_send(c.buf);
                            }
                        }
                        ChunkVerdict::Rejected(_) => {
                            o.rejected += 1;
                            o.smoothness.chunk_rejected();
                            live.chunks_rejected.fetch_add(1, Ordering::Relaxed);
                            let _ = pool_tx.try_send(c.buf);
                        }
                    }
                }
            }
        }
        if stopping.is_none() && fresh.is_some() && !in_flight && executor.needs_inference() {
            // Rtc with a prefix policy: the actions that will run while the
            // inference does (as many as the delay estimate says) go with the request.
            let mut req = Request::new(executor.timestep());
            let estimate = executor.delay_estimate();
            let d = estimate.min(prefix_max);
            if d > 0 && executor.prefix_rows(d, &mut req.rows[..d * N_JOINTS]) > 0 {
                req.d = d;
            }
            if req_tx.try_send(req).is_ok() {
                in_flight = true;
                o.requested += 1;
                o.smoothness.requested(estimate, req.d);
            }
        }
        let (verdict, from_chunk) = if stopping.is_some() || fresh.is_none() {
            if fresh.is_none() {
                o.held_stale += 1;
                live.held_stale.fetch_add(1, Ordering::Relaxed);
            }
            if have_present {
                (safety.hold(&mut cmd, &present), false)
            } else {
                // No joint state yet (e.g. DDS discovery still running): nothing
                // to hold. Holding here would latch the placeholder zeros as the
                // last safe command, and every later hold would drive the arm there.
                (CommandVerdict::Blocked, false)
            }
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
            o.smoothness.tick(Some(&cmd), first);
            let msg = OutMsg::Command {
                pos: cmd,
                obs_stamp_ns: if from_chunk { obs_stamp } else { 0 },
                first_of_chunk: first,
            };
            if out_tx.try_send(msg).is_err() {
                o.queue_full += 1;
            }
        } else {
            o.smoothness.tick(None, false);
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
