//! The runtime against known outputs: the fixture packages' `expected.npz` were
//! computed by an independent Python pipeline (onnxruntime + numpy, see
//! `models/fixtures/README.md`). Real ONNX Runtime, real graphs.

use std::path::{Path, PathBuf};

use maniflow_runtime::cli::npz::ObservationFile;
use maniflow_runtime::policy::engine::{Engine, ObservationStep, TactileReading};
use maniflow_runtime::policy::manifest::ColorOrder;
use maniflow_runtime::policy::options::EngineOptions;
use maniflow_runtime::policy::preprocess::Frame;
use ndarray::ArrayD;
use ndarray_npy::NpzReader;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/fixtures")
        .join(name)
}

fn read(npz: &Path, name: &str) -> Vec<f32> {
    let mut r = NpzReader::new(std::fs::File::open(npz).unwrap()).unwrap();
    let a: ArrayD<f32> = r.by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    a.iter().copied().collect()
}

fn read_u8(npz: &Path, name: &str) -> (Vec<usize>, Vec<u8>) {
    let mut r = NpzReader::new(std::fs::File::open(npz).unwrap()).unwrap();
    let a: ArrayD<u8> = r.by_name(name).unwrap();
    (a.shape().to_vec(), a.iter().copied().collect())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn load(name: &str, steps: Option<usize>) -> Engine {
    maniflow_runtime::policy::ortlib::init().expect("ONNX Runtime (run `make bootstrap`)");
    let opts = EngineOptions {
        steps,
        ..EngineOptions::default()
    };
    Engine::load(&fixture(name), &opts).unwrap()
}

#[test]
fn maniflow_chunks_match_the_reference_for_1_2_and_10_steps() {
    let dir = fixture("tiny-maniflow");
    let expected = dir.join("expected.npz");
    let noise = read(&expected, "noise");
    for n in [1usize, 2, 10] {
        let mut engine = load("tiny-maniflow", Some(n));
        let obs = ObservationFile::load(&expected, &engine.package().manifest).unwrap();
        obs.apply(&mut engine).unwrap();
        let chunk = engine.infer_with_noise(&noise).unwrap().to_vec();
        let want = read(&expected, &format!("action_n{n}"));
        assert_eq!(chunk.len(), 15 * 6);
        let err = max_abs_diff(&chunk, &want);
        // Actions are in degrees / percent with magnitudes up to ~200: 1e-3 is ~1e-5 relative.
        assert!(err <= 1e-3, "N={n}: max abs err {err}");
        // And the steps matter: N=1 and N=10 differ.
        if n == 1 {
            let other = read(&expected, "action_n10");
            assert!(
                max_abs_diff(&chunk, &other) > 1e-2,
                "N must change the result"
            );
        }
    }
}

#[test]
fn act_chunk_matches_the_reference() {
    let expected = fixture("tiny-act").join("expected.npz");
    let mut engine = load("tiny-act", None);
    let obs = ObservationFile::load(&expected, &engine.package().manifest).unwrap();
    obs.apply(&mut engine).unwrap();
    let chunk = engine.infer().unwrap().to_vec();
    let want = read(&expected, "action");
    let err = max_abs_diff(&chunk, &want);
    assert!(err <= 1e-3, "max abs err {err}");
}

#[test]
fn bgr_frames_are_swapped_to_the_graphs_order() {
    let expected = fixture("tiny-maniflow").join("expected.npz");
    let noise = read(&expected, "noise");
    let want = read(&expected, "action_n2");
    let mut engine = load("tiny-maniflow", Some(2));
    let (shape, head) = read_u8(&expected, "observation.images.head");
    let (_, wrist) = read_u8(&expected, "observation.images.wrist");
    let state = read(&expected, "observation.state");
    let taxels = read(&expected, "observation.tactile");
    let swap =
        |v: &[u8]| -> Vec<u8> { v.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect() };
    let (head_bgr, wrist_bgr) = (swap(&head), swap(&wrist));
    let (h, w) = (shape[1], shape[2]);
    let n = h * w * 3;
    // Feed the BGR bytes, declared with `order`, for both history steps.
    let feed = |engine: &mut Engine, order: ColorOrder| {
        for step in 0..2 {
            let (hb, wb) = (
                &head_bgr[step * n..(step + 1) * n],
                &wrist_bgr[step * n..(step + 1) * n],
            );
            let frames = [
                Frame {
                    data: hb,
                    width: w,
                    height: h,
                    order,
                },
                Frame {
                    data: wb,
                    width: w,
                    height: h,
                    order,
                },
            ];
            let obs = ObservationStep {
                cameras: &frames,
                state: Some(&state[step * 6..(step + 1) * 6]),
                tactile: Some(TactileReading::Taxels(&taxels[step * 32..(step + 1) * 32])),
            };
            engine.set_observation(step, &obs).unwrap();
        }
    };
    feed(&mut engine, ColorOrder::Bgr);
    let chunk = engine.infer_with_noise(&noise).unwrap();
    assert!(max_abs_diff(chunk, &want) <= 1e-3);
    // Declaring the BGR bytes as RGB must change the answer (the fixture is colour sensitive).
    feed(&mut engine, ColorOrder::Rgb);
    let wrong = engine.infer_with_noise(&noise).unwrap();
    assert!(max_abs_diff(wrong, &want) > 1e-2);
}

#[test]
fn seeded_noise_is_reproducible_and_seeds_differ() {
    let expected = fixture("tiny-maniflow").join("expected.npz");
    let run = |seed: u64| {
        let mut e = load("tiny-maniflow", Some(2));
        let obs = ObservationFile::load(&expected, &e.package().manifest).unwrap();
        obs.apply(&mut e).unwrap();
        e.reseed(seed);
        let a = e.infer().unwrap().to_vec();
        let b = e.infer().unwrap().to_vec();
        (a, b)
    };
    let (a1, b1) = run(7);
    let (a2, _) = run(7);
    let (a3, _) = run(8);
    assert_eq!(a1, a2, "same seed, same chunk");
    assert_ne!(a1, b1, "the stream advances between chunks");
    assert_ne!(a1, a3, "another seed, another chunk");
}

#[test]
fn nan_state_is_refused_with_the_input_named() {
    let mut engine = load("tiny-act", None);
    let frame = vec![0u8; 96 * 96 * 3];
    let frames = [
        Frame {
            data: &frame,
            width: 96,
            height: 96,
            order: ColorOrder::Rgb,
        },
        Frame {
            data: &frame,
            width: 96,
            height: 96,
            order: ColorOrder::Rgb,
        },
    ];
    let state = [0.0, f32::NAN, 0.0, 0.0, 0.0, 0.0];
    let obs = ObservationStep {
        cameras: &frames,
        state: Some(&state),
        tactile: None,
    };
    let e = engine.set_observation(0, &obs).unwrap_err().to_string();
    assert!(e.contains("observation.state") && e.contains("NaN"), "{e}");
    // Wrong frame size on a resize = "none" camera.
    let small = vec![0u8; 32 * 32 * 3];
    let frames = [
        Frame {
            data: &small,
            width: 32,
            height: 32,
            order: ColorOrder::Rgb,
        },
        Frame {
            data: &frame,
            width: 96,
            height: 96,
            order: ColorOrder::Rgb,
        },
    ];
    let obs = ObservationStep {
        cameras: &frames,
        state: Some(&[0.0; 6]),
        tactile: None,
    };
    let e = engine.set_observation(0, &obs).unwrap_err().to_string();
    assert!(e.contains("observation.images.head"), "{e}");
}

#[test]
fn fixed_noise_repeats_the_chunk_and_fresh_noise_does_not() {
    use maniflow_runtime::policy::options::NoiseMode;
    maniflow_runtime::policy::ortlib::init().expect("ONNX Runtime (run `make bootstrap`)");
    let chunks = |noise: NoiseMode| -> (Vec<f32>, Vec<f32>) {
        let opts = EngineOptions {
            steps: Some(1),
            noise,
            ..EngineOptions::default()
        };
        let mut e = Engine::load(&fixture("tiny-maniflow"), &opts).unwrap();
        let a = e.infer().unwrap().to_vec();
        let b = e.infer().unwrap().to_vec();
        (a, b)
    };
    let (a, b) = chunks(NoiseMode::Fixed);
    assert_eq!(
        a, b,
        "fixed noise: the same observation must give the same chunk"
    );
    let (c, d) = chunks(NoiseMode::Fresh);
    assert_ne!(c, d, "fresh noise: successive chunks must differ");
    assert_eq!(a, c, "both modes start from the seed's first draw");
}
