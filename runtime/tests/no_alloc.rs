//! Steady state (observation in -> chunk out -> executor tick -> safety) performs
//! no heap allocation on this thread. A counting global allocator proves it for
//! both fixture packages and every executor mode (real-time chunking included). (ONNX Runtime's own C++
//! allocations happen inside the library and its arena; they are not Rust heap
//! allocations and are not counted here.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use maniflow_runtime::cli::synthetic::SyntheticObservation;
use maniflow_runtime::control::executor::{Aggregate, ExecutorConfig, ExecutorMode};
use maniflow_runtime::control::{so101_safety, Controller};
use maniflow_runtime::policy::engine::Engine;
use maniflow_runtime::policy::options::EngineOptions;

struct Counting;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocations() -> u64 {
    COUNT.with(|c| c.get())
}

fn steady_state_allocations(
    package: &str,
    mode: ExecutorMode,
    frame_size: Option<(usize, usize)>,
) -> u64 {
    maniflow_runtime::policy::ortlib::init().expect("ONNX Runtime (run `make bootstrap`)");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/fixtures")
        .join(package);
    let engine = Engine::load(&dir, &EngineOptions::default()).unwrap();
    let mut obs = SyntheticObservation::new(&engine.package().manifest, frame_size);
    let mut safety = so101_safety(30.0);
    // The fixtures' random actions are far outside real limits: widen the limits so
    // the chunks are accepted and the whole path (push, tick, filter) is exercised.
    safety.joint_min.iter_mut().for_each(|x| *x = -1e4);
    safety.joint_max.iter_mut().for_each(|x| *x = 1e4);
    safety.max_first_jump.iter_mut().for_each(|x| *x = 1e6);
    safety.max_velocity.iter_mut().for_each(|x| *x = 1e9);
    safety.max_jerk.iter_mut().for_each(|x| *x = 1e15);
    let mut ctl = Controller::new(
        engine,
        ExecutorConfig {
            mode,
            interpolation_multiplier: 2,
        },
        safety,
    )
    .unwrap();
    if let ExecutorMode::Rtc { prefix } = mode {
        // A policy without a prefix input gets the blend.
        let takes_prefix = ctl.engine.prefix_max() > 0;
        assert_eq!(
            ctl.executor.mode(),
            ExecutorMode::Rtc {
                prefix: prefix && takes_prefix
            }
        );
    }
    let mut present = [0.0f32; 6];
    let mut cmd = [0.0f32; 6];
    let mut inferences = 0;
    let mut run =
        |ticks: u64, ctl: &mut Controller, present: &mut [f32; 6], inferences: &mut u32| {
            for k in 0..ticks {
                obs.update(k);
                obs.state.copy_from_slice(present);
                let r = ctl.step(|e| obs.apply(e), present, &mut cmd).unwrap();
                if r.inferred {
                    *inferences += 1;
                }
                present.copy_from_slice(&cmd);
            }
        };
    run(40, &mut ctl, &mut present, &mut inferences); // warm-up: ORT plans, resizer buffers
    let before = allocations();
    inferences = 0;
    run(120, &mut ctl, &mut present, &mut inferences);
    let n = allocations() - before;
    assert!(
        inferences >= 5,
        "the measured window must include inferences ({inferences})"
    );
    let c = ctl.safety.counters();
    assert_eq!(
        c.chunk_first_jump + c.chunk_velocity + c.chunk_jerk + c.chunk_nonfinite,
        0,
        "chunks must be accepted: {c:?}"
    );
    n
}

#[test]
fn maniflow_queue_mode_does_not_allocate() {
    assert_eq!(
        steady_state_allocations("tiny-maniflow", ExecutorMode::Queue, None),
        0
    );
}

#[test]
fn maniflow_with_resize_does_not_allocate() {
    assert_eq!(
        steady_state_allocations("tiny-maniflow", ExecutorMode::Queue, Some((160, 120))),
        0
    );
}

#[test]
fn act_temporal_ensembling_does_not_allocate() {
    assert_eq!(
        steady_state_allocations(
            "tiny-act",
            ExecutorMode::TemporalEnsemble { coeff: 0.01 },
            None
        ),
        0
    );
}

#[test]
fn async_overlap_does_not_allocate() {
    let mode = ExecutorMode::Async {
        threshold: 0.5,
        aggregate: Aggregate::WeightedAverage,
    };
    assert_eq!(steady_state_allocations("tiny-maniflow", mode, None), 0);
}

/// Real-time chunking: the policy-side prefix is only given to policies that
/// take one (the fixtures do not: `Rtc { prefix: true }` becomes the blend), and
/// the blend of the old queue into each new chunk allocates nothing either.
#[test]
fn rtc_does_not_allocate() {
    for (package, mode) in [
        ("tiny-maniflow", ExecutorMode::Rtc { prefix: true }),
        ("tiny-act", ExecutorMode::Rtc { prefix: false }),
    ] {
        assert_eq!(
            steady_state_allocations(package, mode, None),
            0,
            "{package} {mode:?}"
        );
    }
}

#[test]
fn the_counter_counts() {
    let before = allocations();
    let v: Vec<u64> = Vec::with_capacity(16);
    std::hint::black_box(&v);
    assert!(allocations() > before);
}

/// The robot node's control thread, in this process, driven by a real
/// `maniflow sim` over zenoh: after warm-up it makes no heap allocation
/// (chunks in, executor, safety, commands out, histograms).
#[test]
fn node_control_thread_makes_no_allocation() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;
    maniflow_runtime::policy::ortlib::init().expect("ONNX Runtime (run `make bootstrap`)");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .args(["sim", "--quiet", "--duration", "20s", "--listen", &ep])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut cfg =
        maniflow_runtime::node::config::NodeConfig::load(&root.join("launch/so101.toml")).unwrap();
    cfg.transport.connect = vec![ep];
    cfg.control.rate_hz = 50.0;
    let engine = Engine::load(&cfg.policy.path, &EngineOptions::default()).unwrap();
    let opts = maniflow_runtime::node::RunOptions {
        duration: Some(Duration::from_secs(6)),
        stop: Arc::new(AtomicBool::new(false)),
        status_line: false,
        node_name: "alloc_test".into(),
        control_alloc_probe: Some(Arc::new(allocations)),
    };
    let stats = maniflow_runtime::node::run_node(&cfg, engine, &opts).unwrap();
    let _ = sim.kill();
    let _ = sim.wait();
    // The loop really ran against live inputs (chunks produced and checked).
    assert!(stats.ticks > 250, "{}", stats.ticks);
    assert!(stats.inputs["joints"].accepted > 100);
    assert!(stats.chunks.produced > 5, "{:?}", stats.chunks);
    assert_eq!(
        stats.control_allocations_after_warmup,
        Some(0),
        "control thread allocated after warm-up"
    );
}

/// The same with `[robot]`: the joints come from, and the goals go to, an
/// SO-101 on the node's own bus thread (the STS3215 emulator on a pty). The
/// bus thread runs beside the control thread; the control thread still makes
/// no allocation. This one runs the `rtc` executor (delay estimate, prefix
/// rows in every request, smoothness records).
#[test]
fn node_control_thread_makes_no_allocation_with_the_bus_thread_running() {
    use maniflow_bridge::feetech::emulator::{Emulator, PtyEmulator};
    use maniflow_bridge::feetech::so101::{self, Calibration, MotorCalibration, So101};
    use maniflow_bridge::feetech::{Bus, BusConfig, SerialPortIo};
    use maniflow_runtime::node::robot::RobotSection;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;
    maniflow_runtime::policy::ortlib::init().expect("ONNX Runtime (run `make bootstrap`)");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let d = tempfile::tempdir().unwrap();
    let mut cal = [MotorCalibration {
        id: 0,
        drive_mode: 0,
        homing_offset: 0,
        range_min: 500,
        range_max: 3600,
    }; 6];
    for (i, c) in cal.iter_mut().enumerate() {
        c.id = i as u8 + 1;
    }
    cal[4] = MotorCalibration {
        id: 5,
        range_min: 0,
        range_max: 4095,
        ..cal[4]
    };
    let cal = Calibration(cal);
    let home: Vec<f64> = (0..6)
        .map(|i| {
            f64::from(so101::unnormalize(
                f64::from(maniflow_bridge::sim::HOME_LEROBOT[i]),
                &cal.0[i],
                so101::norm_mode(i, true),
            ))
        })
        .collect();
    let emu = PtyEmulator::start(Emulator::new(&home), Some(Duration::from_millis(5))).unwrap();
    let mut bus = Bus::new(
        SerialPortIo::open(&emu.path, 1_000_000).unwrap(),
        BusConfig::default(),
    );
    So101::write_calibration(&mut bus, &cal).unwrap();
    drop(bus);
    cal.save(&d.path().join("arm.json")).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .args(["sim", "--quiet", "--duration", "20s", "--listen", &ep])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut cfg =
        maniflow_runtime::node::config::NodeConfig::load(&root.join("launch/so101.toml")).unwrap();
    cfg.transport.connect = vec![ep];
    cfg.control.rate_hz = 50.0;
    cfg.control.executor = maniflow_runtime::node::config::ExecutorKind::Rtc;
    cfg.streams.remove("joints");
    cfg.robot = Some(RobotSection {
        kind: "so101".into(),
        port: emu.path.clone(),
        calibration_id: "arm".into(),
        calibration_dir: Some(d.path().to_path_buf()),
        baud: 1_000_000,
        rate_hz: None,
        max_age_ms: 100.0,
        telemetry_every: 15,
        max_temperature_c: 60,
        lost_after_ms: 500.0,
        torque_off_at_exit: true,
        p: 16,
        i: 0,
        d: 32,
    });
    cfg.check().unwrap();
    let engine = Engine::load(&cfg.policy.path, &EngineOptions::default()).unwrap();
    let opts = maniflow_runtime::node::RunOptions {
        duration: Some(Duration::from_secs(6)),
        stop: Arc::new(AtomicBool::new(false)),
        status_line: false,
        node_name: "alloc_test_robot".into(),
        control_alloc_probe: Some(Arc::new(allocations)),
    };
    let stats = maniflow_runtime::node::run_node(&cfg, engine, &opts).unwrap();
    let _ = sim.kill();
    let _ = sim.wait();
    let robot = stats.robot.as_ref().expect("robot report");
    assert!(stats.ticks > 250, "{}", stats.ticks);
    assert!(
        stats.inputs["joints"].accepted > 100,
        "{:?}",
        stats.inputs["joints"]
    );
    assert!(
        robot.goals_written > 100 && robot.reads_ok > 100,
        "{robot:?}"
    );
    assert!(stats.executor.starts_with("rtc-"), "{}", stats.executor);
    assert!(
        stats.smoothness.overall.requests > 5,
        "{:?}",
        stats.smoothness.overall
    );
    assert!(stats.chunks.produced > 5, "{:?}", stats.chunks);
    assert_eq!(
        stats.control_allocations_after_warmup,
        Some(0),
        "control thread allocated after warm-up"
    );
}
