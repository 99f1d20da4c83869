//! The control step over real graphs: executed base timesteps advance one by one,
//! with interpolation and async overlap too (a chunk labelled with the wrong
//! timestep would make the executor skip or repeat actions).

use std::path::Path;

use maniflow_runtime::cli::synthetic::SyntheticObservation;
use maniflow_runtime::control::executor::{Aggregate, ExecutorConfig, ExecutorMode};
use maniflow_runtime::control::{so101_safety, Controller};
use maniflow_runtime::policy::engine::Engine;
use maniflow_runtime::policy::options::EngineOptions;

fn executed_timesteps(mode: ExecutorMode, multiplier: usize, ticks: u64) -> Vec<Option<u64>> {
    maniflow_runtime::policy::ortlib::init().expect("ONNX Runtime (run `make bootstrap`)");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/tiny-maniflow");
    let engine = Engine::load(&dir, &EngineOptions::default()).unwrap();
    let mut obs = SyntheticObservation::new(&engine.package().manifest, None);
    // The fixture's random actions exceed real limits: widen them so chunks are accepted.
    let mut safety = so101_safety(30.0);
    safety.joint_min.iter_mut().for_each(|x| *x = -1e4);
    safety.joint_max.iter_mut().for_each(|x| *x = 1e4);
    safety.max_first_jump.iter_mut().for_each(|x| *x = 1e6);
    safety.max_velocity.iter_mut().for_each(|x| *x = 1e9);
    safety.max_jerk.iter_mut().for_each(|x| *x = 1e15);
    let cfg = ExecutorConfig {
        mode,
        interpolation_multiplier: multiplier,
    };
    let mut ctl = Controller::new(engine, cfg, safety).unwrap();
    let (mut present, mut cmd) = ([0.0f32; 6], [0.0f32; 6]);
    (0..ticks)
        .map(|k| {
            obs.update(k);
            obs.state.copy_from_slice(&present);
            let r = ctl.step(|e| obs.apply(e), &present, &mut cmd).unwrap();
            assert!(!r.chunk_rejected, "tick {k}: chunk rejected");
            present = cmd;
            r.timestep
        })
        .collect()
}

/// Every tick executes an action, each base timestep exactly `multiplier` ticks in a row, from 0 up.
fn assert_consecutive(ts: &[Option<u64>], multiplier: usize) {
    for (k, t) in ts.iter().enumerate() {
        assert_eq!(
            *t,
            Some((k / multiplier) as u64),
            "tick {k}: {:?}",
            &ts[..=k]
        );
    }
}

#[test]
fn queue_mode_executes_every_base_step_in_order() {
    assert_consecutive(&executed_timesteps(ExecutorMode::Queue, 1, 60), 1);
}

#[test]
fn async_overlap_with_interpolation_executes_every_base_step_in_order() {
    let mode = ExecutorMode::Async {
        threshold: 0.5,
        aggregate: Aggregate::WeightedAverage,
    };
    assert_consecutive(&executed_timesteps(mode, 2, 120), 2);
    assert_consecutive(&executed_timesteps(mode, 1, 60), 1);
}
