//! Real-time chunking on hand-computed sequences.

use super::tests::{alloc_count, cfg, close, tick1};
use super::*;

fn rtc(prefix: bool, h: usize, s: usize, da: usize) -> Executor {
    Executor::new(cfg(ExecutorMode::Rtc { prefix }, 1), da, h, s).unwrap()
}

#[test]
fn rtc_blend_weights_by_hand() {
    // H = 8, s = 3, d = 2: rows 0, 1 executed (w = 1); overlap rows 2..5 with
    // c_i = (5 - i) / (5 - 2 + 1) = 0.75, 0.5, 0.25 and
    // w = c (e^c - 1) / (e - 1), e - 1 = 1.718281828:
    //   c = 0.75: 0.75 * 1.117000017 / 1.718281828 = 0.487550993
    //   c = 0.5:  0.5  * 0.648721271 / 1.718281828 = 0.188770334
    //   c = 0.25: 0.25 * 0.284025417 / 1.718281828 = 0.041324044
    // rows 5, 6, 7 are beyond the old plan (i >= H - s): w = 0.
    let want = [
        1.0,
        1.0,
        0.487_551,
        0.188_770_3,
        0.041_324_04,
        0.0,
        0.0,
        0.0,
    ];
    for (i, w) in want.iter().enumerate() {
        let got = rtc_blend_weight(i, 2, 3, 8);
        assert!(close(got, *w), "i = {i}: {got} vs {w}");
    }
    // d = 0 (H = 4, s = 1): c_i = (3 - i) / 4, the same three values from row 0.
    let want = [0.487_551, 0.188_770_3, 0.041_324_04, 0.0];
    for (i, w) in want.iter().enumerate() {
        assert!(close(rtc_blend_weight(i, 0, 1, 4), *w), "d = 0, i = {i}");
    }
    // The weights fall strictly inside the overlap and stay in [0, 1].
    for i in 1..12 {
        let (a, b) = (
            rtc_blend_weight(i - 1, 1, 4, 16),
            rtc_blend_weight(i, 1, 4, 16),
        );
        assert!((0.0..=1.0).contains(&b) && b < a, "i = {i}: {a} -> {b}");
    }
    // A delay past the overlap (d > H - s) and s = H: no blended row at all.
    assert_eq!(rtc_blend_weight(2, 3, 2, 4), 1.0);
    assert_eq!(rtc_blend_weight(3, 3, 2, 4), 0.0);
    assert_eq!(rtc_blend_weight(0, 0, 4, 4), 0.0);
    assert_eq!(rtc_blend_weight(0, 1, 4, 4), 1.0);
}

/// H = 6, s = 2, da = 1: push A = [0..5]@0, run t0, request at t1 (start 1),
/// run t1, then push B = [10..15]@1: the delay is 1.
fn two_chunks(prefix: bool) -> Executor {
    let mut ex = rtc(prefix, 6, 2, 1);
    assert!(ex.needs_inference());
    ex.push_chunk(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 0).unwrap();
    // Nothing ran before this chunk: its delay is 0 and says nothing about
    // the inference time, so the estimate keeps its initial value.
    assert_eq!(ex.last_delay(), Some(0));
    assert_eq!(ex.delay_estimate(), INITIAL_DELAY_ESTIMATE);
    // Threshold max(H - s, estimate + 1) = max(4, 2) = 4: 6 queued, not yet.
    assert!(!ex.needs_inference());
    assert_eq!(tick1(&mut ex), (0.0, 0));
    assert!(!ex.needs_inference()); // 5 queued
    let start = ex.timestep();
    assert_eq!(start, 1);
    assert_eq!(tick1(&mut ex), (1.0, 1));
    assert!(ex.needs_inference()); // 4 queued
    ex.push_chunk(&[10.0, 11.0, 12.0, 13.0, 14.0, 15.0], start)
        .unwrap();
    assert_eq!(ex.last_delay(), Some(1));
    assert_eq!(ex.delay_estimate(), 1);
    ex
}

fn drain(ex: &mut Executor) -> Vec<(f32, u64)> {
    let mut v = Vec::new();
    while ex.queued() > 0 {
        v.push(tick1(ex));
    }
    v
}

#[test]
fn rtc_blend_on_two_hand_computed_chunks() {
    let mut ex = two_chunks(false);
    // d = 1, s = 2, H = 6: row 0 (t1) was executed -> dropped. Rows 1..3 are
    // in the overlap, c_i = (4 - i) / 4 = 0.75, 0.5, 0.25 -> w = 0.487550993,
    // 0.188770334, 0.041324044 (see rtc_blend_weights_by_hand):
    //   t2: 0.487550993 * 2 + 0.512449007 * 11 = 0.975101986 + 5.636939077 = 6.612041063
    //   t3: 0.188770334 * 3 + 0.811229666 * 12 = 0.566311002 + 9.734755992 = 10.301066994
    //   t4: 0.041324044 * 4 + 0.958675956 * 13 = 0.165296176 + 12.462787428 = 12.628083604
    // Row 4 (t5) is queued but i = 4 >= H - s: w = 0 -> 14. Row 5 (t6) is new -> 15.
    assert_eq!(ex.queued(), 5);
    let got = drain(&mut ex);
    let want = [
        (6.612_041, 2),
        (10.301_067, 3),
        (12.628_084, 4),
        (14.0, 5),
        (15.0, 6),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(close(g.0, w.0) && g.1 == w.1, "{got:?} vs {want:?}");
    }
}

#[test]
fn rtc_prefix_splices_the_new_chunk_exactly() {
    let mut ex = two_chunks(true);
    // The executed row (t1) is dropped; the rest replace the queue untouched.
    assert_eq!(
        drain(&mut ex),
        [(11.0, 2), (12.0, 3), (13.0, 4), (14.0, 5), (15.0, 6)]
    );
    // A slower chunk: started at t7, arrives after t7, t8, t9 ran -> delay 3,
    // its rows 0..2 are dropped, the queued t10 is replaced.
    ex.push_chunk(&[20.0, 21.0, 22.0, 23.0, 24.0, 25.0], 7)
        .unwrap();
    assert_eq!(ex.last_delay(), Some(0)); // t7 had not run yet
    let start = ex.timestep();
    for t in 7..10 {
        assert_eq!(tick1(&mut ex), ((13 + t) as f32, t));
    }
    ex.push_chunk(&[30.0, 31.0, 32.0, 33.0, 34.0, 35.0], start)
        .unwrap();
    assert_eq!(ex.last_delay(), Some(3));
    assert_eq!(ex.delay_estimate(), 3);
    assert_eq!(drain(&mut ex), [(33.0, 10), (34.0, 11), (35.0, 12)]);
    // A chunk wholly in the past leaves nothing (like Async).
    ex.push_chunk(&[40.0; 6], 0).unwrap();
    assert_eq!(ex.queued(), 0);
}

#[test]
fn rtc_prefix_rows_are_the_actions_that_run_next() {
    let mut ex = rtc(true, 4, 2, 2);
    let mut out = [-1.0f32; 10];
    // Empty queue: nothing available, out untouched.
    assert_eq!(ex.prefix_rows(3, &mut out), 0);
    assert_eq!(out, [-1.0; 10]);
    ex.push_chunk(&[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], 0)
        .unwrap();
    let mut a = [0.0f32; 2];
    assert!(matches!(ex.tick(&mut a), Tick::Action { timestep: 0, .. }));
    // Queued: t1 (1, 1.5), t2 (2, 2.5), t3 (3, 3.5).
    assert_eq!(ex.prefix_rows(2, &mut out[..4]), 2);
    assert_eq!(out[..4], [1.0, 1.5, 2.0, 2.5]);
    // Only d rows written.
    assert_eq!(out[4..], [-1.0; 6]);
    // More rows than queued: padded with the last one, 3 available.
    assert_eq!(ex.prefix_rows(5, &mut out), 3);
    assert_eq!(out, [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 3.0, 3.5, 3.0, 3.5]);
    // `out` shorter than d rows: what fits.
    let mut short = [0.0f32; 2];
    assert_eq!(ex.prefix_rows(3, &mut short), 1);
    assert_eq!(short, [1.0, 1.5]);
    assert_eq!(ex.prefix_rows(0, &mut out), 0);
    // Reading the prefix does not consume anything.
    assert_eq!(ex.queued(), 3);
}

/// H = 16, s = 12: the next inference is requested at queued <= max(4,
/// estimate + 1). Each cycle runs the queue down to that threshold (recorded),
/// requests at the next timestep, runs `delay` actions, and pushes.
#[test]
fn rtc_delay_estimate_follows_an_injected_slowdown() {
    let mut ex = rtc(true, 16, 12, 1);
    assert_eq!(ex.delay_estimate(), 1);
    assert_eq!(ex.last_delay(), None);
    let chunk = |start: u64| -> Vec<f32> { (0..16).map(|i| (start + i) as f32).collect() };
    ex.push_chunk(&chunk(0), 0).unwrap();
    assert_eq!(ex.delay_estimate(), 1);
    //            delays:  1  1  4  4  1  1  1  1  1  1  1  1  1
    let delays = [1usize, 1, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1];
    // The two 4s stay in the window of 8 until 8 later chunks have pushed
    // them out: the 4 of chunk 3 leaves with chunk 11.
    let estimates = [1usize, 1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 1, 1];
    let mut estimate = 1;
    for (k, (&d, &e)) in delays.iter().zip(&estimates).enumerate() {
        let mut steps = 0;
        while !ex.needs_inference() {
            let (v, t) = tick1(&mut ex);
            assert_eq!(v, t as f32, "the splice keeps the timeline");
            steps += 1;
            assert!(steps < 16);
        }
        // Requested as soon as queued <= max(4, estimate + 1).
        assert_eq!(ex.queued(), 4.max(estimate + 1), "chunk {k}");
        let start = ex.timestep();
        for _ in 0..d {
            tick1(&mut ex);
        }
        ex.push_chunk(&chunk(start), start).unwrap();
        assert_eq!(ex.last_delay(), Some(d), "chunk {k}");
        assert_eq!(ex.delay_estimate(), e, "chunk {k}");
        assert_eq!(ex.queued(), 16 - d);
        estimate = e;
    }
    // An episode reset clears the queue but keeps the measured inference time;
    // the first chunk after it (nothing ran while it was computed) is not a measurement.
    ex.push_chunk(&chunk(ex.timestep()), ex.timestep()).unwrap();
    tick1(&mut ex);
    let before = ex.delay_estimate();
    ex.reset();
    assert_eq!(ex.delay_estimate(), before);
    ex.push_chunk(&chunk(0), 0).unwrap();
    assert_eq!(ex.last_delay(), Some(0));
    assert_eq!(ex.delay_estimate(), before);
}

#[test]
fn rtc_zero_allocations_with_delayed_chunks() {
    let (da, h, s) = (6, 50, 25);
    for prefix in [true, false] {
        let mut ex = Executor::new(cfg(ExecutorMode::Rtc { prefix }, 2), da, h, s).unwrap();
        let mut chunk = vec![0.0f32; h * da];
        let mut out = vec![0.0f32; da];
        let mut rows = [0.0f32; 16 * 6];
        // (start timestep, control tick at which it arrives)
        let mut pending: Option<(u64, u64)> = None;
        let before = alloc_count();
        let (mut actions, mut requests) = (0u64, 0usize);
        let mut prefix_seen = 0usize;
        for it in 0..6000u64 {
            if let Some((start, at)) = pending {
                if it >= at {
                    for (i, v) in chunk.iter_mut().enumerate() {
                        *v = (it as f32) * 0.01 + i as f32;
                    }
                    ex.push_chunk(&chunk, start).unwrap();
                    pending = None;
                }
            }
            if pending.is_none() && ex.needs_inference() {
                let d = ex.delay_estimate().min(16);
                prefix_seen += ex.prefix_rows(d, &mut rows[..d * da]);
                // A slowdown in the middle: 3 base ticks instead of 1 (M = 2).
                let delay = if (2000..3000).contains(&it) { 3 } else { 1 };
                pending = Some((ex.timestep(), it + 2 * delay));
                requests += 1;
            }
            if let Tick::Action { .. } = ex.tick(&mut out) {
                actions += 1;
            }
            if it % 2000 == 1999 {
                ex.reset();
                pending = None;
            }
        }
        let after = alloc_count();
        assert_eq!(after - before, 0, "prefix {prefix} allocated");
        // Only the first chunk of each of the 3 episodes is waited for.
        assert!(actions > 5950, "prefix {prefix}: {actions}");
        // Every request but the first of each episode finds queued actions
        // and the estimate (>= 1) asks for at least one; 3 during the slowdown.
        assert!(requests > 100, "prefix {prefix}: {requests} requests");
        assert!(
            prefix_seen >= requests - 3,
            "prefix {prefix}: {prefix_seen} rows for {requests} requests"
        );
        assert_eq!(ex.delay_estimate(), 1, "the slowdown has left the window");
    }
}
