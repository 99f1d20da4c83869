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

pub(super) fn cfg(mode: ExecutorMode, m: usize) -> ExecutorConfig {
    ExecutorConfig {
        mode,
        interpolation_multiplier: m,
    }
}

pub(super) fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + b.abs())
}

/// Ticks once and returns (value of joint 0, timestep), panicking on Empty.
pub(super) fn tick1(ex: &mut Executor) -> (f32, u64) {
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
    let mut ex = Executor::new(cfg(ExecutorMode::TemporalEnsemble { coeff }, 1), 1, 3, 1).unwrap();
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
        (ExecutorMode::Rtc { prefix: true }, 25),
        (ExecutorMode::Rtc { prefix: false }, 25),
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
