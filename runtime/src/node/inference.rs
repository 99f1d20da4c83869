//! The inference thread: keeps the `n_obs_steps` history at the policy's base
//! rate and, on request from the control thread, runs the engine on the newest
//! complete fresh observation and hands back the chunk in a pooled buffer. A
//! policy that takes an action prefix gets the request's (none unless the
//! executor is `rtc`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};

use super::messages::{ChunkMsg, Live, Ready, Request};
use super::report::ChunkCounts;
use super::streams::{Inputs, ObsBuffers};
use crate::policy::engine::{Engine, ObservationStep, TactileReading};
use crate::policy::preprocess::Frame;
use crate::stats::Latency;

pub(super) struct InferOut {
    pub(super) policy: String,
    pub(super) latency: Latency,
    pub(super) counts: ChunkCounts,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn inference_loop(
    engine: &mut Engine,
    inputs: &Inputs,
    rate_hz: f64,
    req_rx: &Receiver<Request>,
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
            Ok(req) => {
                let start_ts = req.start;
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
                if set.is_ok() && engine.prefix_max() > 0 {
                    // Stays set until the next request: d = 0 clears it.
                    let d = req.d.min(engine.prefix_max());
                    let all = req.prefix();
                    // (da is N_JOINTS, checked at start; a mismatch is the engine's error.)
                    let rows = all.get(..d * engine.action_dim()).unwrap_or(all);
                    set = engine.set_prefix(rows, d);
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
            order: c.order.unwrap_or(crate::policy::manifest::ColorOrder::Rgb),
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
            order: t.order.unwrap_or(crate::policy::manifest::ColorOrder::Rgb),
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
