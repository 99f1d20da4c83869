//! The robot node end to end over real zenoh sessions: `maniflow sim` and
//! `maniflow run` as separate processes on loopback, with the fixture policy.
//! - the node receives every stream, infers, publishes commands the sim receives;
//! - garbage bytes on every input key (a Python eclipse-zenoh peer) are counted,
//!   never crash the node;
//! - the sim killed mid-run: the node holds and reports stale inputs, and infers
//!   again when a new sim comes back on the same endpoint.
//! Timing figures are printed, not asserted (benchmarks: `maniflow run --stats-json`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// These tests start several processes on a 2-core machine: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Proc {
    child: Child,
    err: Arc<Mutex<Vec<(f64, String)>>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let t0 = Instant::now();
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().unwrap();
        let err = Arc::new(Mutex::new(Vec::new()));
        let e2 = err.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                e2.lock().unwrap().push((t0.elapsed().as_secs_f64(), line));
            }
        });
        Proc { child, err }
    }
    fn wait(mut self, limit: Duration) -> (bool, Vec<(f64, String)>) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (st.success(), self.err.lock().unwrap().clone());
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "process did not finish in {limit:?}: {:?}",
                    self.err.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn maniflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_maniflow"));
    c.current_dir(root());
    c
}

fn sim(port: u16, secs: &str, stats: &Path) -> Proc {
    Proc::spawn(maniflow().args([
        "sim",
        "--listen",
        &format!("tcp/127.0.0.1:{port}"),
        "--duration",
        secs,
        "--stats-json",
        stats.to_str().unwrap(),
    ]))
}

fn read_json(p: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn venv_python_with(module: &str) -> Option<PathBuf> {
    let py = root().join(".venv/bin/python");
    let ok = py.is_file()
        && Command::new(&py)
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !ok {
        eprintln!(
            "SKIP garbage peer: {} lacks {module:?} (run `make bootstrap`)",
            py.display()
        );
    }
    ok.then_some(py)
}

#[test]
fn sim_and_node_over_zenoh_with_garbage_on_every_input() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let (port, node_port) = (free_port(), free_port());
    let sim_json = d.path().join("sim.json");
    let run_json = d.path().join("run.json");
    let s = sim(port, "14s", &sim_json);
    let node = Proc::spawn(maniflow().args([
        "run",
        "--config",
        "launch/so101.toml",
        "--connect",
        &format!("tcp/127.0.0.1:{port}"),
        "--listen",
        &format!("tcp/127.0.0.1:{node_port}"),
        "--duration",
        "9s",
        "--stats-json",
        run_json.to_str().unwrap(),
    ]));
    // Garbage from t = 2 s for 4 s, straight into the node's session.
    std::thread::sleep(Duration::from_secs(2));
    let garbage = venv_python_with("zenoh").map(|py| {
        Command::new(py)
            .arg(root().join("tests/peers/peer.py"))
            .args([
                "garbage",
                "--connect",
                &format!("tcp/127.0.0.1:{node_port}"),
                "--seconds",
                "4",
                "--rate",
                "50",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .unwrap()
    });
    let (ok, err) = node.wait(Duration::from_secs(40));
    assert!(ok, "node failed: {err:?}");
    let (sok, serr) = s.wait(Duration::from_secs(30));
    assert!(sok, "sim failed: {serr:?}");
    let r = read_json(&run_json);
    let sj = read_json(&sim_json);
    eprintln!("node stats: {}", serde_json::to_string_pretty(&r).unwrap());
    // Every stream came in and was accepted.
    for stream in ["joints", "head", "wrist", "tactile"] {
        let acc = r["inputs"][stream]["accepted"].as_u64().unwrap();
        assert!(acc > 30, "{stream}: only {acc} accepted");
    }
    assert!(
        r["chunks"]["produced"].as_u64().unwrap() > 5,
        "{}",
        r["chunks"]
    );
    assert!(r["commands"]["published"].as_u64().unwrap() > 100);
    assert!(r["ticks"].as_u64().unwrap() > 200);
    // The sim received the node's commands.
    assert!(sj["commands_received"].as_u64().unwrap() > 100, "{sj}");
    // A status line was printed while running.
    assert!(
        err.iter().any(|(_, l)| l.contains("Hz | late p99")),
        "{err:?}"
    );
    if let Some(g) = garbage {
        let out = String::from_utf8_lossy(&g.stdout);
        assert!(out.contains("garbage_sent"), "{out}");
        // Garbage reached every input: malformed (undecodable) or invalid (decodes, unusable).
        for stream in ["joints", "head", "wrist", "tactile"] {
            let c = &r["inputs"][stream];
            let bad = c["malformed"].as_u64().unwrap() + c["invalid"].as_u64().unwrap();
            assert!(bad > 10, "{stream}: garbage not counted: {c}");
            assert!(!c["last_reject_reason"].as_str().unwrap().is_empty());
        }
    }
}

/// Parses "chunks ok A rej B skip C" and "held(stale) N" from a status line.
fn status_numbers(line: &str) -> Option<(u64, u64)> {
    let num_after = |key: &str| -> Option<u64> {
        let i = line.find(key)? + key.len();
        line[i..].split_whitespace().next()?.parse().ok()
    };
    let ok = num_after("chunks ok ")?;
    let rej = num_after(" rej ")?;
    let held = num_after("held(stale) ")?;
    Some((ok + rej, held))
}

#[test]
fn node_holds_when_the_sim_dies_and_resumes_when_it_returns() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let run_json = d.path().join("run.json");
    let s1 = sim(port, "30s", &d.path().join("sim1.json"));
    let node = Proc::spawn(maniflow().args([
        "run",
        "--config",
        "launch/so101.toml",
        "--connect",
        &format!("tcp/127.0.0.1:{port}"),
        "--duration",
        "14s",
        "--stats-json",
        run_json.to_str().unwrap(),
    ]));
    std::thread::sleep(Duration::from_secs(4));
    s1.kill(); // the robot disappears at t ~ 4 s
    std::thread::sleep(Duration::from_secs(4));
    let sim2_json = d.path().join("sim2.json");
    let s2 = sim(port, "30s", &sim2_json); // and comes back at t ~ 8 s
    let (ok, err) = node.wait(Duration::from_secs(40));
    s2.kill();
    assert!(ok, "node failed: {err:?}");
    let r = read_json(&run_json);
    eprintln!("node stats: {}", serde_json::to_string_pretty(&r).unwrap());
    // Stale inputs were reported and the arm was held.
    assert!(
        r["inputs"]["joints"]["stale"].as_u64().unwrap() > 10,
        "{}",
        r["inputs"]
    );
    assert!(
        r["commands"]["held_stale_joints"].as_u64().unwrap() > 30,
        "{}",
        r["commands"]
    );
    // Status lines over time: (chunks ok + rejected, held(stale)).
    let series: Vec<(f64, u64, u64)> = err
        .iter()
        .filter_map(|(t, l)| status_numbers(l).map(|(c, h)| (*t, c, h)))
        .collect();
    assert!(series.len() >= 8, "status lines: {err:?}");
    let at = |t: f64| -> (u64, u64) {
        let v = series.iter().filter(|(x, _, _)| *x <= t).last().unwrap();
        (v.1, v.2)
    };
    let (chunks_dead_start, held_dead_start) = at(5.5);
    let (chunks_dead_end, held_dead_end) = at(8.0);
    let (chunks_end, held_end) = at(14.5);
    // While the sim is gone: holding grows, no new chunks are used.
    assert!(held_dead_end > held_dead_start, "{series:?}");
    assert_eq!(chunks_dead_end, chunks_dead_start, "{series:?}");
    // After it returns: chunks flow again and holding for staleness stops.
    assert!(
        chunks_end > chunks_dead_end,
        "no inference after the sim returned: {series:?}"
    );
    let (_, held_late) = at(11.5);
    assert_eq!(
        held_end, held_late,
        "still holding for stale joints at the end: {series:?}"
    );
}

#[test]
fn run_reports_config_errors_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[policy]\npath = \"x\"\n[streams.joints]\ntopic = \"joint_states\"\ntype = \"image\"\n",
    )
    .unwrap();
    for (cfg, want) in [
        (d.path().join("missing.toml"), "missing.toml"),
        (bad.clone(), "streams.joints.type"),
    ] {
        let o = maniflow()
            .args(["run", "--config", cfg.to_str().unwrap(), "--duration", "1s"])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(
            e.starts_with("maniflow: error: ") && e.contains(want),
            "{e}"
        );
    }
    // A policy that does not exist: named in the error.
    let o = maniflow()
        .args([
            "run",
            "--config",
            "launch/so101.toml",
            "--policy",
            "/nonexistent/pkg",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("/nonexistent/pkg"), "{e}");
}

#[test]
fn sigint_ramps_to_hold_and_writes_the_stats() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let run_json = d.path().join("run.json");
    let s = sim(port, "20s", &d.path().join("sim.json"));
    let node = Proc::spawn(maniflow().args([
        "run",
        "--config",
        "launch/so101.toml",
        "--connect",
        &format!("tcp/127.0.0.1:{port}"),
        "--stats-json",
        run_json.to_str().unwrap(),
    ]));
    std::thread::sleep(Duration::from_secs(4));
    let pid = node.child.id().to_string();
    let k = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(k.success());
    let (ok, err) = node.wait(Duration::from_secs(20));
    s.kill();
    assert!(ok, "node did not exit cleanly on SIGINT: {err:?}");
    assert!(
        err.iter().any(|(_, l)| l.contains("ramping to hold")),
        "{err:?}"
    );
    let r = read_json(&run_json);
    // The stop ramp held for stop_ramp_ticks (15) after the last inference.
    assert!(
        r["safety"]["held"].as_u64().unwrap() >= 15,
        "{}",
        r["safety"]
    );
    assert!(r["ticks"].as_u64().unwrap() > 60);
}

/// A calibrated SO-101 (EEPROM and `<dir>/cal/arm.json` agree) at the
/// simulator's start pose, as the STS3215 emulator on a pty behind `link`.
/// Returns the emulator and the home pose in raw steps.
fn calibrated_arm_on_a_pty(
    dir: &Path,
    link: &Path,
) -> (maniflow_bridge::feetech::emulator::PtyEmulator, Vec<f64>) {
    use maniflow_bridge::feetech::emulator::Emulator;
    use maniflow_bridge::feetech::so101::{Calibration, MotorCalibration, So101};
    use maniflow_bridge::feetech::{Bus, BusConfig, SerialPortIo};
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
    cal[4].range_min = 0;
    cal[4].range_max = 4095;
    let cal = Calibration(cal);
    let home: Vec<f64> = (0..6)
        .map(|i| {
            let v = f64::from(maniflow_bridge::sim::HOME_LEROBOT[i]);
            f64::from(maniflow_bridge::feetech::so101::unnormalize(
                v,
                &cal.0[i],
                maniflow_bridge::feetech::so101::norm_mode(i, true),
            ))
        })
        .collect();
    let e = start_pty(Emulator::new(&home), link);
    let mut bus = Bus::new(
        SerialPortIo::open(&e.path, 1_000_000).unwrap(),
        BusConfig::default(),
    );
    So101::write_calibration(&mut bus, &cal).unwrap();
    drop(bus);
    cal.save(&dir.join("cal/arm.json")).unwrap();
    (e, home)
}

/// Serve `emu` on a new pty (physics every 5 ms) behind the symlink `link`.
fn start_pty(
    emu: maniflow_bridge::feetech::emulator::Emulator,
    link: &Path,
) -> maniflow_bridge::feetech::emulator::PtyEmulator {
    let e =
        maniflow_bridge::feetech::emulator::PtyEmulator::start(emu, Some(Duration::from_millis(5)))
            .unwrap();
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&e.path, link).unwrap();
    e
}

/// `maniflow run` with `[robot]`: joints from, and goals to, an SO-101 on a
/// serial port (the STS3215 emulator on a pty behind a symlink), cameras and
/// taxels from `maniflow sim` over zenoh. Midway the pty disappears (a pulled
/// cable): the node holds on stale joints, reconnects when the port returns,
/// and drives the arm again.
#[test]
fn node_drives_an_arm_on_its_bus_and_survives_a_pulled_cable() {
    use maniflow_bridge::feetech::table;

    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let link = d.path().join("ttyARM");
    let start_emu = |emu| start_pty(emu, &link);
    let (e, home) = calibrated_arm_on_a_pty(d.path(), &link);

    let base = std::fs::read_to_string(root().join("launch/so101.toml")).unwrap();
    let joints = base.find("[streams.joints]").unwrap();
    let head = base.find("[streams.head]").unwrap();
    let mut cfg = format!("{}{}", &base[..joints], &base[head..]);
    cfg = cfg.replace(
        "path = \"../models/so101-sim-pick\"",
        &format!("path = {:?}", root().join("models/so101-sim-pick")),
    );
    cfg += &format!(
        "\n[robot]\nkind = \"so101\"\nport = {:?}\ncalibration_id = \"arm\"\ncalibration_dir = {:?}\n",
        link,
        d.path().join("cal")
    );
    let cfg_path = d.path().join("robot.toml");
    std::fs::write(&cfg_path, cfg).unwrap();

    let port = free_port();
    let run_json = d.path().join("run.json");
    let s = sim(port, "40s", &d.path().join("sim.json"));
    let node = Proc::spawn(maniflow().args([
        "run",
        "--config",
        cfg_path.to_str().unwrap(),
        "--connect",
        &format!("tcp/127.0.0.1:{port}"),
        "--duration",
        "13s",
        "--stats-json",
        run_json.to_str().unwrap(),
    ]));
    std::thread::sleep(Duration::from_secs(5));
    let state = e.emu.lock().unwrap().clone();
    let goals_before: Vec<i32> = state
        .servos
        .iter()
        .map(|s| s.get(table::GOAL_POSITION))
        .collect();
    let moved = |g: &[i32]| {
        g.iter()
            .zip(&home)
            .any(|(a, h)| (f64::from(*a) - h).abs() > 20.0)
    };
    drop(e); // the cable is pulled
    std::thread::sleep(Duration::from_secs(3));
    let e2 = start_emu(state); // and plugged back in (same servos, same EEPROM)
    std::thread::sleep(Duration::from_millis(2500));
    let goals_reconnected: Vec<i32> = e2
        .emu
        .lock()
        .unwrap()
        .servos
        .iter()
        .map(|s| s.get(table::GOAL_POSITION))
        .collect();
    e2.emu.lock().unwrap().servo_mut(6).unwrap().overload(); // the gripper stalls
    let (ok, err) = node.wait(Duration::from_secs(60));
    s.kill();
    assert!(ok, "node failed: {err:?}");
    let r = read_json(&run_json);
    eprintln!(
        "node stats: chunks {} commands {} safety {} robot {}",
        r["chunks"], r["commands"], r["safety"], r["robot"]
    );
    let rob = &r["robot"];
    assert!(rob["connects"].as_u64().unwrap() >= 2, "{rob}");
    assert!(rob["disconnects"].as_u64().unwrap() >= 1, "{rob}");
    assert!(rob["goals_written"].as_u64().unwrap() > 50, "{rob}");
    assert!(
        r["inputs"]["joints"]["accepted"].as_u64().unwrap() > 100,
        "{}",
        r["inputs"]
    );
    assert!(
        r["commands"]["held_stale_joints"].as_u64().unwrap() > 10,
        "{}",
        r["commands"]
    );
    assert!(
        r["chunks"]["produced"].as_u64().unwrap() > 5,
        "{}",
        r["chunks"]
    );
    assert!(
        err.iter().any(|(_, l)| l.contains("robot bus lost")),
        "{err:?}"
    );
    assert!(
        err.iter().any(|(_, l)| l.contains("robot bus back")),
        "{err:?}"
    );
    // The policy moved the arm before the pull, and again after.
    let after = goals_reconnected;
    assert!(
        r["chunks"]["accepted"].as_u64().unwrap() > 3,
        "{}",
        r["chunks"]
    );
    assert!(
        moved(&goals_before),
        "the policy's goals never reached the servos: {goals_before:?} vs home {home:?}"
    );
    assert_ne!(after, goals_before, "no goals after the reconnect");
    // The overload: one hold, naming the joint, the arm held, the gripper released.
    let holds = rob["holds"].as_array().unwrap();
    assert_eq!(holds.len(), 1, "{rob}");
    assert!(
        holds[0]
            .as_str()
            .unwrap()
            .contains("gripper (id 6): overload"),
        "{holds:?}"
    );
    assert!(
        err.iter()
            .any(|(_, l)| l.contains("SAFETY HOLD: gripper (id 6)")),
        "{err:?}"
    );
    assert!(
        rob["joints"][5]["alarms_by_bit"][5].as_u64().unwrap() > 0,
        "{rob}"
    );
    // Torque off at exit (robot.torque_off_at_exit defaults to true).
    assert_eq!(
        e2.emu
            .lock()
            .unwrap()
            .servo(1)
            .unwrap()
            .get(table::TORQUE_ENABLE),
        0
    );
}

/// Wait for `cond` (polled every 20 ms) up to `limit`; whether it held.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// `maniflow robot`: the bus driver as a process bridged to zenoh. A zenoh
/// session (ours) sees `joint_states` with the arm's pose, sends a target on
/// `joint_command` that the arm reaches through the safety filter's step
/// limit (clamped goals counted), a malformed command is counted and ignored,
/// an overload shows up on `diagnostics` as an ERROR naming the gripper, and
/// SIGINT turns torque off and writes the stats.
#[test]
fn robot_process_bridges_the_bus_to_zenoh() {
    use maniflow_bridge::feetech::table;
    use maniflow_bridge::msg::{DiagnosticArray, DiagnosticStatus, Float64MultiArray, JointState};
    use maniflow_bridge::transport::{AnyTransport, Qos, Transport, TransportConfig};

    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let link = d.path().join("ttyARM");
    let (e, _home) = calibrated_arm_on_a_pty(d.path(), &link);
    let port = free_port();
    let stats = d.path().join("robot.json");
    // A camera on the arm's computer, published beside the joints (an ffmpeg
    // test source stands in for a USB camera; the cameras' own tests are in
    // tests/cameras.rs).
    let cameras = d.path().join("cameras.toml");
    std::fs::write(
        &cameras,
        "[streams.wrist]\ntype = \"image\"\ntopic = \"wrist/image_raw\"\n\
         source = { ffmpeg = \"testsrc2=size=160x120:rate=15\", input_args = [\"-re\", \"-f\", \"lavfi\"] }\n",
    )
    .unwrap();
    let robot = Proc::spawn(maniflow().args([
        "robot",
        "--port",
        link.to_str().unwrap(),
        "--id",
        "arm",
        "--calibration-dir",
        d.path().join("cal").to_str().unwrap(),
        "--listen",
        &format!("tcp/127.0.0.1:{port}"),
        "--stats-json",
        stats.to_str().unwrap(),
        "--cameras",
        cameras.to_str().unwrap(),
    ]));
    let tc = TransportConfig {
        connect: vec![format!("tcp/127.0.0.1:{port}")],
        ..TransportConfig::default()
    };
    let t = AnyTransport::open(&tc, "robot_test").unwrap();
    let js: Arc<Mutex<(u64, Option<JointState>)>> = Arc::new(Mutex::new((0, None)));
    let diag: Arc<Mutex<Option<DiagnosticArray>>> = Arc::new(Mutex::new(None));
    let j2 = js.clone();
    let _js_sub = t
        .subscribe::<JointState>(
            "joint_states",
            Qos::Sensor,
            Box::new(move |r| {
                if let Ok(m) = r {
                    let mut g = j2.lock().unwrap();
                    g.0 += 1;
                    g.1 = Some(m.msg);
                }
            }),
        )
        .unwrap();
    let d2 = diag.clone();
    let _diag_sub = t
        .subscribe::<DiagnosticArray>(
            "diagnostics",
            Qos::Command,
            Box::new(move |r| {
                if let Ok(m) = r {
                    *d2.lock().unwrap() = Some(m.msg);
                }
            }),
        )
        .unwrap();
    let img: Arc<Mutex<Option<maniflow_bridge::msg::Image>>> = Arc::new(Mutex::new(None));
    let i2 = img.clone();
    let _img_sub = t
        .subscribe::<maniflow_bridge::msg::Image>(
            "wrist/image_raw",
            Qos::Sensor,
            Box::new(move |r| {
                if let Ok(m) = r {
                    *i2.lock().unwrap() = Some(m.msg);
                }
            }),
        )
        .unwrap();
    let cmd_pub = t
        .publisher::<Float64MultiArray>("joint_command", Qos::Command)
        .unwrap();
    let got = wait_until(Duration::from_secs(30), || js.lock().unwrap().0 >= 20);
    assert!(got, "no joint_states: {:?}", robot.err.lock().unwrap());
    let got = wait_until(Duration::from_secs(30), || img.lock().unwrap().is_some());
    assert!(got, "no camera image: {:?}", robot.err.lock().unwrap());
    let im = img.lock().unwrap().clone().unwrap();
    assert_eq!(
        (im.width, im.height, im.encoding.as_str()),
        (160, 120, "rgb8")
    );
    let first = js.lock().unwrap().1.clone().unwrap();
    assert_eq!(first.name, maniflow_bridge::so101::JOINT_NAMES);
    for (p, h) in first
        .position
        .iter()
        .zip(maniflow_bridge::sim::HOME_LEROBOT)
    {
        assert!((p - f64::from(h)).abs() < 0.2, "{:?}", first.position);
    }
    // A malformed command (five values), then a target 20 degrees of
    // shoulder_pan away: more than one cycle's step, so the filter clamps.
    cmd_pub
        .publish(&Float64MultiArray::vector("joint_command", vec![0.0; 5]))
        .unwrap();
    let mut target: Vec<f64> = first.position.clone();
    target[0] += 20.0;
    let pan = || js.lock().unwrap().1.as_ref().unwrap().position[0];
    let reached = wait_until(Duration::from_secs(15), || {
        let _ = cmd_pub.publish(&Float64MultiArray::vector("joint_command", target.clone()));
        (pan() - target[0]).abs() < 0.5
    });
    assert!(
        reached,
        "shoulder_pan at {} never reached {}",
        pan(),
        target[0]
    );
    // The gripper stalls: diagnostics name it.
    e.emu.lock().unwrap().servo_mut(6).unwrap().overload();
    let gripper_error = || {
        diag.lock().unwrap().as_ref().is_some_and(|a| {
            a.status
                .iter()
                .any(|s| s.name == "so101/gripper" && s.level == DiagnosticStatus::ERROR)
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), gripper_error),
        "diagnostics: {:?}",
        diag.lock().unwrap()
    );
    let a = diag.lock().unwrap().clone().unwrap();
    assert_eq!(a.status.len(), 7, "{a:?}");
    assert!(
        a.status[0].message.contains("gripper (id 6): overload"),
        "{a:?}"
    );
    let pid = robot.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let (ok, err) = robot.wait(Duration::from_secs(20));
    assert!(ok, "robot did not exit cleanly: {err:?}");
    let r = read_json(&stats);
    eprintln!("robot stats: {r}");
    assert!(r["commands_malformed"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["commands_received"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["joint_states_published"].as_u64().unwrap() >= 20, "{r}");
    assert!(r["bus"]["goals_clamped"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["bus"]["goals_written"].as_u64().unwrap() >= 5, "{r}");
    assert!(
        r["cameras"]["wrist/image_raw"]["published"]
            .as_u64()
            .unwrap()
            >= 1,
        "{r}"
    );
    assert_eq!(r["bus"]["holds"].as_array().unwrap().len(), 1, "{r}");
    let torque = e
        .emu
        .lock()
        .unwrap()
        .servo(1)
        .unwrap()
        .get(table::TORQUE_ENABLE);
    assert_eq!(torque, 0, "torque left on at exit");
}

/// The official REP-2016 hash of `pkg/msg/T` from the Jazzy wheel's JSON
/// (`make bootstrap` puts them in .cache/ros-msgs), not from our code.
fn official_hash(ros_type: &str) -> Option<String> {
    let p = root().join(format!(".cache/ros-msgs/jazzy/{ros_type}.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    Some(v["type_hashes"][0]["hash_string"].as_str()?.to_string())
}

/// One entity as an rmw_zenoh node declares it (TRANSPORT.md):
/// data key `<domain>/<topic>/<pkg>::msg::dds_::<Type>_/<hash>` and token
/// `@ros2_lv/<domain>/<zid>/<nid>/<id>/<KIND>/<enclave>/<ns>/<node>/<topic>/<type>/<hash>/<qos>`.
struct Entity {
    node: &'static str,
    kind: &'static str,
    topic: &'static str,
    ros_type: &'static str,
    qos: &'static str,
}

impl Entity {
    fn dds_type(&self) -> String {
        let (pkg, name) = self.ros_type.split_once("/msg/").unwrap();
        format!("{pkg}::msg::dds_::{name}_")
    }
    fn data_key(&self, domain: u16, hash: &str) -> String {
        format!("{domain}/so101/{}/{}/{hash}", self.topic, self.dds_type())
    }
    /// The token with zid/nid/id left out (they are per-session random ids).
    fn token_tail(&self, hash: &str) -> String {
        let mangled = format!("/so101/{}", self.topic).replace('/', "%");
        format!(
            "{}/%/%so101/{}/{mangled}/{}/{hash}/{}",
            self.kind,
            self.node,
            self.dds_type(),
            self.qos
        )
    }
}

#[test]
fn rmw_zenoh_keys_and_liveliness_tokens_of_sim_and_node() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(py) = venv_python_with("zenoh") else {
        return;
    };
    if official_hash("sensor_msgs/msg/JointState").is_none() {
        eprintln!("SKIP: no official message JSON in .cache/ros-msgs (run `make bootstrap`)");
        return;
    }
    // rmw_zenoh's compact QoS: reliability:durability:history,depth:deadline:lifespan:liveliness,
    // defaults (reliable, volatile, keep-last, infinite) left empty, depth always written.
    const SENSOR: &str = "2::,1:,:,:,,";
    const COMMAND: &str = "::,10:,:,:,,";
    let (sim_n, node_n) = ("so101_sim", "maniflow_policy");
    #[rustfmt::skip]
    let entities = [
        Entity { node: sim_n, kind: "MP", topic: "joint_states", ros_type: "sensor_msgs/msg/JointState", qos: SENSOR },
        Entity { node: sim_n, kind: "MP", topic: "head/image_raw", ros_type: "sensor_msgs/msg/Image", qos: SENSOR },
        Entity { node: sim_n, kind: "MP", topic: "wrist/image_raw", ros_type: "sensor_msgs/msg/Image", qos: SENSOR },
        Entity { node: sim_n, kind: "MP", topic: "tactile", ros_type: "std_msgs/msg/Float32MultiArray", qos: SENSOR },
        Entity { node: sim_n, kind: "MP", topic: "tactile/image", ros_type: "sensor_msgs/msg/Image", qos: SENSOR },
        Entity { node: sim_n, kind: "MP", topic: "episode", ros_type: "std_msgs/msg/Float64MultiArray", qos: COMMAND },
        Entity { node: sim_n, kind: "MS", topic: "episode_control", ros_type: "std_msgs/msg/Float64MultiArray", qos: COMMAND },
        Entity { node: sim_n, kind: "MS", topic: "joint_command", ros_type: "std_msgs/msg/Float64MultiArray", qos: COMMAND },
        Entity { node: node_n, kind: "MS", topic: "joint_states", ros_type: "sensor_msgs/msg/JointState", qos: SENSOR },
        Entity { node: node_n, kind: "MS", topic: "head/image_raw", ros_type: "sensor_msgs/msg/Image", qos: SENSOR },
        Entity { node: node_n, kind: "MS", topic: "wrist/image_raw", ros_type: "sensor_msgs/msg/Image", qos: SENSOR },
        Entity { node: node_n, kind: "MS", topic: "tactile", ros_type: "std_msgs/msg/Float32MultiArray", qos: SENSOR },
        Entity { node: node_n, kind: "MS", topic: "episode", ros_type: "std_msgs/msg/Float64MultiArray", qos: COMMAND },
        Entity { node: node_n, kind: "MP", topic: "action_chunk", ros_type: "trajectory_msgs/msg/JointTrajectory", qos: COMMAND },
        Entity { node: node_n, kind: "MP", topic: "joint_command", ros_type: "std_msgs/msg/Float64MultiArray", qos: COMMAND },
    ];
    let domain = 43u16;
    let (port, node_port) = (free_port(), free_port());
    let ep = format!("tcp/127.0.0.1:{port}");
    let node_ep = format!("tcp/127.0.0.1:{node_port}");
    let d = tempfile::tempdir().unwrap();
    let sim_json = d.path().join("sim.json");
    let s = Proc::spawn(
        maniflow()
            .args(["sim", "--transport", "ros2-zenoh", "--listen", &ep])
            .args(["--domain-id", &domain.to_string(), "--duration", "16s"])
            // Short episodes: the `episode` topic (volatile) then carries events every few
            // seconds while the peer listens, whether or not the policy succeeds in time.
            .args(["--episode-s", "3"])
            .args(["--stats-json", sim_json.to_str().unwrap()]),
    );
    let node = Proc::spawn(
        maniflow()
            .args(["run", "--config", "launch/so101.toml"])
            .args([
                "--transport",
                "ros2-zenoh",
                "--connect",
                &ep,
                "--listen",
                &node_ep,
            ])
            .args(["--duration", "11s"])
            .env("ROS_DOMAIN_ID", domain.to_string()),
    );
    // The peer subscribes on the exact keys of every publication, hash included.
    let mut peer = Command::new(py);
    // Zenoh peers do not forward for each other: the watcher connects to both.
    peer.arg(root().join("tests/peers/peer.py")).args([
        "graph",
        "--connect",
        &format!("{ep},{node_ep}"),
        "--domain",
        &domain.to_string(),
        "--seconds",
        "9",
    ]);
    for e in entities.iter().filter(|e| e.kind == "MP") {
        let h = official_hash(e.ros_type).unwrap();
        peer.args(["--key", &e.data_key(domain, &h)]);
    }
    std::thread::sleep(Duration::from_secs(1));
    let out = peer.stderr(Stdio::inherit()).output().unwrap();
    let (ok, err) = node.wait(Duration::from_secs(40));
    assert!(ok, "node failed: {err:?}");
    let (sok, serr) = s.wait(Duration::from_secs(30));
    assert!(sok, "sim failed: {serr:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("summary").cloned())
        .unwrap_or_else(|| panic!("no summary from the graph peer: {stdout}"));
    eprintln!(
        "graph peer: {}",
        serde_json::to_string_pretty(&summary).unwrap()
    );
    // Samples arrived on every exact key, each with rmw_zenoh's attachment.
    for e in entities.iter().filter(|e| e.kind == "MP") {
        let key = e.data_key(domain, &official_hash(e.ros_type).unwrap());
        let n = summary["counts"][&key].as_u64().unwrap_or(0);
        assert!(n > 0, "no sample on the exact key {key}");
        assert_eq!(summary["bad_attachment"][&key], 0, "{key}");
    }
    // Every token, field by field (zid/nid/id are random; checked for shape).
    let tokens: Vec<String> = summary["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let tails: Vec<String> = tokens
        .iter()
        .map(|t| {
            let f: Vec<&str> = t.split('/').collect();
            assert_eq!(
                (f[0], f[1]),
                ("@ros2_lv", domain.to_string().as_str()),
                "{t}"
            );
            assert!(f[2].bytes().all(|c| c.is_ascii_hexdigit()), "zid in {t}");
            assert!(
                f[3].parse::<u64>().is_ok() && f[4].parse::<u64>().is_ok(),
                "{t}"
            );
            f[5..].join("/")
        })
        .collect();
    for n in [sim_n, node_n] {
        let want = format!("NN/%/%so101/{n}");
        assert!(tails.contains(&want), "no node token {want} in {tokens:#?}");
    }
    for e in &entities {
        let want = e.token_tail(&official_hash(e.ros_type).unwrap());
        assert!(tails.contains(&want), "no token {want} in {tokens:#?}");
    }
    // Nothing else was declared (no placeholder-hash leftovers, no stray topics).
    assert_eq!(tails.len(), entities.len() + 2, "{tokens:#?}");
}
