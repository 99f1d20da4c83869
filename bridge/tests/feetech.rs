//! The Feetech bus driver against the STS3215 emulator over a real
//! pseudo-terminal: transactions, per-id results, retries of only the missing
//! ids, faults (dropped, corrupted, late replies; a missing id; alarms).

use std::time::Duration;

use maniflow_bridge::feetech::emulator::{Emulator, PtyEmulator};
use maniflow_bridge::feetech::{table, Alarms, Bus, BusConfig, Failure, SerialPortIo};

const IDS: [u8; 6] = [1, 2, 3, 4, 5, 6];

fn emulator() -> PtyEmulator {
    PtyEmulator::start(
        Emulator::new(&[2048.0, 1000.0, 3000.0, 2048.0, 100.0, 2500.0]),
        None,
    )
    .unwrap()
}

fn bus(e: &PtyEmulator, cfg: BusConfig) -> Bus<SerialPortIo> {
    Bus::new(SerialPortIo::open(&e.path, 1_000_000).unwrap(), cfg)
}

#[test]
fn transactions_over_a_pty() {
    let e = emulator();
    let mut b = bus(&e, BusConfig::default());
    for id in IDS {
        assert!(b.ping(id).unwrap().is_empty());
        assert_eq!(b.read(id, table::MODEL_NUMBER).unwrap().value, 777);
    }
    let mut out = [Err(Failure::Timeout); 6];
    b.sync_read(table::PRESENT_POSITION, &IDS, &mut out)
        .unwrap();
    let got: Vec<i32> = out.iter().map(|r| r.unwrap().value).collect();
    assert_eq!(got, vec![2048, 1000, 3000, 2048, 100, 2500]);
    // Homing offset (sign-magnitude) shifts the present position.
    b.write(2, table::HOMING_OFFSET, -596).unwrap();
    assert_eq!(b.read(2, table::HOMING_OFFSET).unwrap().value, -596);
    assert_eq!(b.read(2, table::PRESENT_POSITION).unwrap().value, 1596);
    // Torque on seeds the goal from the present position; goals move the shafts.
    for id in IDS {
        b.write(id, table::TORQUE_ENABLE, 1).unwrap();
    }
    assert_eq!(
        e.emu
            .lock()
            .unwrap()
            .servo(3)
            .unwrap()
            .get(table::GOAL_POSITION),
        3000
    );
    b.sync_write(
        table::GOAL_POSITION,
        &IDS,
        &[2000, 2000, 2000, 2000, 2000, 2000],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    e.emu.lock().unwrap().step(2.0);
    b.sync_read(table::PRESENT_POSITION, &IDS, &mut out)
        .unwrap();
    assert!(out.iter().all(|r| r.unwrap().value == 2000), "{out:?}");
    let c = b.id_counters(1);
    assert_eq!((c.timeouts, c.checksum_errors, c.retries), (0, 0, 0));
}

#[test]
fn dropped_and_corrupted_replies_are_retried_for_the_missing_ids_only() {
    let e = emulator();
    {
        let mut em = e.emu.lock().unwrap();
        em.faults.drop_every = Some(3);
        em.faults.corrupt_every = Some(5);
    }
    let mut b = bus(
        &e,
        BusConfig {
            quiet: Duration::from_millis(5),
            ..Default::default()
        },
    );
    let mut out = [Err(Failure::Timeout); 6];
    for _ in 0..60 {
        b.sync_read(table::PRESENT_POSITION, &IDS, &mut out)
            .unwrap();
        assert!(out.iter().all(Result::is_ok), "{out:?}");
    }
    let c6 = b.id_counters(6);
    let c1 = b.id_counters(1);
    let counts = e.emu.lock().unwrap().counts;
    assert!(counts.dropped > 5 && counts.corrupted > 5, "{counts:?}");
    // The faults hit the last id of a sync read: only it was re-asked.
    assert!(c6.retries >= counts.dropped, "{c6:?}");
    assert!(c6.timeouts >= 1 && c6.checksum_errors >= 1, "{c6:?}");
    assert!(
        c1.retries <= c6.retries / 2,
        "id 1 re-asked {} times vs id 6 {}",
        c1.retries,
        c6.retries
    );
}

/// Every value belongs to its own request: servo 1's position is set to the
/// request number before each read, and one reply in four comes 40 ms late.
#[test]
fn late_replies_never_answer_a_newer_request() {
    let e = emulator();
    {
        let mut em = e.emu.lock().unwrap();
        em.faults.late_every = Some(4);
        em.faults.late_by = Duration::from_millis(40);
    }
    let cfg = BusConfig {
        retries: 0,
        latency_margin: Duration::from_millis(10),
        quiet: Duration::from_millis(60),
        ..Default::default()
    };
    let mut b = bus(&e, cfg);
    let (mut ok, mut failed) = (0, 0);
    for k in 0..40 {
        let pos = 100 + 50 * k;
        e.emu.lock().unwrap().servo_mut(1).unwrap().actual = pos as f64;
        e.emu.lock().unwrap().step(0.0);
        match b.read(1, table::PRESENT_POSITION) {
            Ok(r) => {
                assert_eq!(r.value, pos, "request {k} got another request's reply");
                ok += 1;
            }
            Err(err) => {
                assert!(err.to_string().contains("servo id 1"), "{err}");
                failed += 1;
            }
        }
    }
    assert!(failed >= 8 && ok >= 20, "ok {ok} failed {failed}");
    assert!(
        b.counters.stale_bytes > 0 && b.counters.resyncs + 1 >= failed as u64,
        "{:?}",
        b.counters
    );
}

#[test]
fn a_missing_id_gives_partial_results_and_a_named_error() {
    let e = emulator();
    e.emu.lock().unwrap().faults.missing = vec![4];
    let mut b = bus(
        &e,
        BusConfig {
            retries: 1,
            quiet: Duration::from_millis(2),
            ..Default::default()
        },
    );
    let mut out = [Err(Failure::Timeout); 6];
    b.sync_read(table::PRESENT_POSITION, &IDS, &mut out)
        .unwrap();
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.is_ok(), IDS[i] != 4, "{i}: {r:?}");
    }
    assert_eq!(out[3], Err(Failure::Timeout));
    let err = b.ping(4).unwrap_err().to_string();
    assert!(
        err.contains("servo id 4") && err.contains("no reply") && err.contains(&e.path),
        "{err}"
    );
    assert_eq!(b.id_counters(4).timeouts, 2 + 2);
}

#[test]
fn alarms_surface_by_name_and_are_counted() {
    let e = emulator();
    {
        let mut em = e.emu.lock().unwrap();
        em.servo_mut(6).unwrap().overload();
        em.faults.voltage_alarm = vec![2];
    }
    let mut b = bus(&e, BusConfig::default());
    let mut out = [Err(Failure::Timeout); 6];
    b.sync_read(table::PRESENT_POSITION, &IDS, &mut out)
        .unwrap();
    assert_eq!(out[5].unwrap().alarms.to_string(), "overload");
    assert!(out[1].unwrap().alarms.has(Alarms::VOLTAGE));
    assert!(out[0].unwrap().alarms.is_empty());
    assert_eq!(b.id_counters(6).alarms_by_bit[5], 1);
    // Latched: torque stays off until a power cycle.
    b.write(6, table::TORQUE_ENABLE, 1).unwrap();
    assert_eq!(b.read(6, table::TORQUE_ENABLE).unwrap().value, 0);
    e.emu.lock().unwrap().servo_mut(6).unwrap().power_cycle();
    assert!(b.read(6, table::TORQUE_ENABLE).unwrap().alarms.is_empty());
    // A value that does not fit its register is refused by name before sending.
    let err = b
        .write(1, table::HOMING_OFFSET, 2114)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Homing_Offset") && err.contains("2047"),
        "{err}"
    );
}

#[test]
fn eeprom_persists_across_a_power_cycle_only_while_unlocked() {
    let e = emulator();
    let mut b = bus(&e, BusConfig::default());
    b.write(1, table::MIN_POSITION_LIMIT, 100).unwrap(); // Lock = 1 (factory): RAM only
    b.write(1, table::LOCK, 0).unwrap();
    b.write(1, table::MAX_POSITION_LIMIT, 3900).unwrap(); // persisted
    e.emu.lock().unwrap().servo_mut(1).unwrap().power_cycle();
    assert_eq!(b.read(1, table::MIN_POSITION_LIMIT).unwrap().value, 0);
    assert_eq!(b.read(1, table::MAX_POSITION_LIMIT).unwrap().value, 3900);
}

mod lerobot {
    use super::*;
    use maniflow_bridge::feetech::so101::{self, ArmConfig, Calibration, Role, So101};
    use std::io::{BufRead, BufReader, Write};
    use std::path::PathBuf;
    use std::process::{Command, Stdio};

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn python() -> PathBuf {
        let py = root().join(".venv/bin/python");
        assert!(
            py.exists(),
            "{} missing: run `make bootstrap` (LeRobot, feetech-servo-sdk)",
            py.display()
        );
        py
    }

    /// Our encoder against `scservo_sdk`'s bytes on the wire (captured on a pty).
    #[test]
    fn our_packets_equal_scservo_sdks_byte_for_byte() {
        use maniflow_bridge::feetech::protocol::{self, MAX_PACKET};
        let out = Command::new(python())
            .arg(root().join("tests/lerobot/scservo_packets.py"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let hex = |b: &[u8]| {
            b.iter()
                .map(|x| format!("{x:02X}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut b = [0u8; MAX_PACKET];
        let n = protocol::ping(&mut b, 1);
        assert_eq!(hex(&b[..n]), v["ping_1"]);
        let n = protocol::read(&mut b, 3, 56, 2);
        assert_eq!(hex(&b[..n]), v["read_3_56_2"]);
        let n = protocol::write(&mut b, 5, 40, &[1]).unwrap();
        assert_eq!(hex(&b[..n]), v["write_5_40_1"]);
        let n = protocol::write(&mut b, 2, 31, &[0x54, 0x0A]).unwrap();
        assert_eq!(hex(&b[..n]), v["write_2_31_0A54"]);
        let n = protocol::sync_read(&mut b, 56, 2, &IDS).unwrap();
        assert_eq!(hex(&b[..n]), v["sync_read_56_2_1to6"]);
        let data: Vec<u8> = [2048u16, 100, 4095, 0, 1234, 3000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let n = protocol::sync_write(&mut b, 42, 2, &IDS, &data).unwrap();
        assert_eq!(hex(&b[..n]), v["sync_write_42_2"]);
    }

    /// LeRobot 0.6.1's SO101Leader, unmodified, against our emulator: with a
    /// calibration file that matches the EEPROM it connects without a prompt,
    /// leaves torque off (a leader is moved by hand), and its `get_action()`
    /// equals our driver's leader reading of the same joints bit for bit.
    #[test]
    fn lerobots_so101_leader_reads_what_our_driver_reads() {
        use maniflow_bridge::feetech::so101::MotorCalibration;
        let e = PtyEmulator::start(
            Emulator::new(&[2100.0, 1900.0, 2300.0, 2000.0, 2048.0, 2200.0]),
            None,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cal = [MotorCalibration {
            id: 0,
            drive_mode: 0,
            homing_offset: 0,
            range_min: 0,
            range_max: 0,
        }; 6];
        for (i, c) in cal.iter_mut().enumerate() {
            *c = MotorCalibration {
                id: i as u8 + 1,
                drive_mode: 0,
                homing_offset: 40 * i as i32 - 90,
                range_min: 700 + 13 * i as i32,
                range_max: 3400 - 7 * i as i32,
            };
        }
        cal[4].range_min = 0;
        cal[4].range_max = 4095;
        let cal = Calibration(cal);
        So101::write_calibration(&mut bus(&e, BusConfig::default()), &cal).unwrap();
        cal.save(&dir.path().join("leader.json")).unwrap();
        // A person holds the leader somewhere off-centre (fractional shaft angles).
        {
            let mut em = e.emu.lock().unwrap();
            for (i, s) in em.servos.iter_mut().enumerate() {
                s.actual = 1200.4 + 331.7 * i as f64;
            }
            em.step(0.0);
        }
        let out = Command::new(python())
            .arg(root().join("tests/lerobot/so101_leader.py"))
            .args(["--port", &e.path, "--calibration-dir"])
            .arg(dir.path())
            .args(["--id", "leader"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "LeRobot's SO101Leader failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap())
                .unwrap();
        assert_eq!(v["is_calibrated"], true, "{v}");
        for s in &e.emu.lock().unwrap().servos {
            assert_eq!(
                s.get(table::TORQUE_ENABLE),
                0,
                "LeRobot's leader left torque on"
            );
        }
        let theirs = v["actions"].as_array().unwrap().last().unwrap().clone();
        let mut arm = So101::connect(
            bus(&e, BusConfig::default()),
            cal,
            ArmConfig::lerobot(Role::Leader),
            false,
        )
        .unwrap();
        let mut joints = [Err(Failure::Timeout); 6];
        arm.read_joints(&mut joints).unwrap();
        for (i, m) in so101::MOTORS.iter().enumerate() {
            let t: f64 = theirs[format!("{m}.pos")]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(joints[i].unwrap().0, t, "{m}: ours vs LeRobot's get_action");
        }
        for s in &e.emu.lock().unwrap().servos {
            assert_eq!(
                s.get(table::TORQUE_ENABLE),
                0,
                "our leader turned torque on"
            );
        }
    }

    /// LeRobot 0.6.1's SO101Follower, unmodified, against our emulator over a
    /// pty: its interactive calibration (answered on stdin while the test moves
    /// the joints as a person would), configure, observations, an action and
    /// disconnect. Then our driver on the same emulator and calibration file.
    #[test]
    fn lerobots_so101_follower_drives_the_emulator_and_our_driver_agrees() {
        let mut emu = Emulator::new(&[2100.0, 1900.0, 2300.0, 2000.0, 2048.0, 2200.0]);
        emu.servos[2].regs[table::PHASE.addr as usize] = 0x1C; // angle-feedback bit set (LeRobot clears it)
        let e = PtyEmulator::start(emu, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let action = r#"{"shoulder_pan.pos": 5.0, "shoulder_lift.pos": -3.5, "elbow_flex.pos": 0.0, "wrist_flex.pos": 12.25, "wrist_roll.pos": -20.0, "gripper.pos": 40.0}"#;
        let mut child = Command::new(python())
            .arg(root().join("tests/lerobot/so101_follower.py"))
            .args(["--port", &e.path, "--calibration-dir"])
            .arg(dir.path())
            .args(["--id", "emu", "--action", action])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // "Move to the middle and press ENTER": the arm is there already.
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        // Range recording starts after the homing sync read; then sweep every
        // joint but wrist_roll as a person would, and press ENTER.
        let t0 = std::time::Instant::now();
        while e.emu.lock().unwrap().counts.sync_read < 4 {
            if t0.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "LeRobot never started recording ranges (emulator saw {:?}):\n{}\n{}",
                    e.emu.lock().unwrap().counts,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let home: Vec<f64> = e
            .emu
            .lock()
            .unwrap()
            .servos
            .iter()
            .map(|s| s.actual)
            .collect();
        let sweep = [300.0, 450.0, 500.0, 350.0, 0.0, 400.0];
        for k in 0..=40 {
            let phase = (k as f64 / 40.0) * std::f64::consts::TAU;
            {
                let mut em = e.emu.lock().unwrap();
                for (i, s) in em.servos.iter_mut().enumerate() {
                    s.actual = home[i] + sweep[i] * phase.sin();
                }
                em.step(0.0);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        {
            let mut em = e.emu.lock().unwrap();
            for (i, s) in em.servos.iter_mut().enumerate() {
                s.actual = home[i] + 37.0 * (i as f64 - 2.5);
            }
            em.step(0.0);
        }
        std::thread::sleep(Duration::from_millis(100));
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        let mut lines: Vec<serde_json::Value> = Vec::new();
        for l in BufReader::new(child.stdout.take().unwrap()).lines() {
            lines.push(serde_json::from_str(&l.unwrap()).unwrap());
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "LeRobot failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0]["is_calibrated"], true);

        // The file LeRobot wrote: our reader takes it, and our writer gives its exact text.
        let file = dir.path().join("emu.json");
        let text = std::fs::read_to_string(&file).unwrap();
        let cal = Calibration::load(&file).unwrap();
        assert_eq!(
            cal.to_json(),
            text,
            "our calibration JSON differs from LeRobot's"
        );
        assert_eq!(
            (cal.0[4].range_min, cal.0[4].range_max),
            (0, 4095),
            "wrist_roll full range"
        );
        for (i, c) in cal.0.iter().enumerate() {
            assert_eq!(
                c.homing_offset,
                home[i].round() as i32 - 2047,
                "{}",
                so101::MOTORS[i]
            );
            if i != 4 {
                assert_eq!(
                    c.range_max - c.range_min,
                    2 * sweep[i] as i32,
                    "{}",
                    so101::MOTORS[i]
                );
            }
        }
        // LeRobot's configure and disconnect, seen in the registers.
        {
            let em = e.emu.lock().unwrap();
            let s3 = em.servo(3).unwrap();
            assert_eq!(s3.get(table::PHASE), 0x0C, "Phase bit 4 cleared");
            for s in &em.servos {
                assert_eq!(
                    (
                        s.get(table::P_COEFFICIENT),
                        s.get(table::I_COEFFICIENT),
                        s.get(table::D_COEFFICIENT)
                    ),
                    (16, 0, 32)
                );
                assert_eq!(
                    (
                        s.get(table::TORQUE_ENABLE),
                        s.get(table::LOCK),
                        s.get(table::RETURN_DELAY_TIME)
                    ),
                    (0, 0, 0)
                );
            }
            let g = em.servo(6).unwrap();
            assert_eq!(
                (
                    g.get(table::MAX_TORQUE_LIMIT),
                    g.get(table::PROTECTION_CURRENT),
                    g.get(table::OVERLOAD_TORQUE)
                ),
                (500, 250, 25)
            );
            // The goals LeRobot sent are our unnormalize of its action, bit for bit.
            let sent = &lines[2]["sent"];
            for (i, m) in so101::MOTORS.iter().enumerate() {
                let v: f64 = sent[format!("{m}.pos")].as_str().unwrap().parse().unwrap();
                let raw = so101::unnormalize(v, &cal.0[i], so101::norm_mode(i, true));
                let c = &cal.0[i];
                assert_eq!(
                    em.servos[i].get(table::GOAL_POSITION),
                    raw.clamp(c.range_min, c.range_max),
                    "{m}"
                );
            }
        }
        let theirs = lines[1]["values"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();

        // Our driver, same emulator and file: the same observation.
        let bus = Bus::new(
            SerialPortIo::open(&e.path, 1_000_000).unwrap(),
            BusConfig::default(),
        );
        let mut arm = So101::connect(bus, cal, ArmConfig::lerobot(Role::Follower), false).unwrap();
        let mut joints = [Err(Failure::Timeout); 6];
        arm.read_joints(&mut joints).unwrap();
        for (i, m) in so101::MOTORS.iter().enumerate() {
            let ours = joints[i].unwrap().0;
            let theirs: f64 = theirs[format!("{m}.pos")]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(ours, theirs, "{m}: ours vs LeRobot's get_observation");
        }
        assert_eq!(
            e.emu
                .lock()
                .unwrap()
                .servo(1)
                .unwrap()
                .get(table::TORQUE_ENABLE),
            1
        );
        drop(arm);

        // Our calibration procedure, on a fresh arm in the same state with the
        // same sweep: LeRobot's file, byte for byte.
        let mut emu2 = Emulator::new(&home);
        emu2.servos[2].regs[table::PHASE.addr as usize] = 0x1C;
        let e2 = PtyEmulator::start(emu2, None).unwrap();
        let mut bus2 = Bus::new(
            SerialPortIo::open(&e2.path, 1_000_000).unwrap(),
            BusConfig::default(),
        );
        let mut op = super::calibration::sweeper(&e2, &sweep);
        let ours = maniflow_bridge::feetech::calibrate::calibrate(
            &mut bus2,
            &mut op,
            Duration::from_millis(1),
        )
        .unwrap();
        assert_eq!(
            ours.to_json(),
            text,
            "our calibration differs from LeRobot's for the same arm and motion"
        );
    }
}

mod calibration {
    use super::*;
    use maniflow_bridge::feetech::calibrate::{calibrate, CalibrateError, Operator};
    use maniflow_bridge::feetech::so101::So101;
    use std::sync::{Arc, Mutex};

    /// A person who answers the prompts and sweeps the joints, one step per poll.
    pub struct Sweeper {
        pub emu: Arc<Mutex<Emulator>>,
        pub home: Vec<f64>,
        pub sweep: Vec<f64>,
        pub steps: usize,
        pub k: usize,
        pub cancel_at: Option<usize>,
    }

    impl Operator for Sweeper {
        fn wait_enter(&mut self, _msg: &str) -> Result<(), ()> {
            if self.cancel_at == Some(0) {
                return Err(());
            }
            Ok(())
        }
        fn enter_pressed(&mut self) -> Result<bool, ()> {
            self.k += 1;
            if self.cancel_at == Some(self.k) {
                return Err(());
            }
            let mut em = self.emu.lock().unwrap();
            let phase = (self.k as f64 / self.steps as f64) * std::f64::consts::TAU;
            for (i, s) in em.servos.iter_mut().enumerate() {
                s.actual = (self.home[i] + self.sweep[i] * phase.sin()).rem_euclid(4096.0);
            }
            em.step(0.0);
            Ok(self.k > self.steps)
        }
    }

    pub fn sweeper(e: &PtyEmulator, sweep: &[f64]) -> Sweeper {
        let home = e
            .emu
            .lock()
            .unwrap()
            .servos
            .iter()
            .map(|s| s.actual)
            .collect();
        Sweeper {
            emu: e.emu.clone(),
            home,
            sweep: sweep.to_vec(),
            steps: 40,
            k: 0,
            cancel_at: None,
        }
    }

    fn snapshot(e: &PtyEmulator) -> Vec<(i32, i32, i32)> {
        let em = e.emu.lock().unwrap();
        em.servos
            .iter()
            .map(|s| {
                (
                    s.get(table::HOMING_OFFSET),
                    s.get(table::MIN_POSITION_LIMIT),
                    s.get(table::MAX_POSITION_LIMIT),
                )
            })
            .collect()
    }

    #[test]
    fn cancelling_leaves_the_motors_as_they_were() {
        let e = PtyEmulator::start(
            Emulator::new(&[2100.0, 1900.0, 2300.0, 2000.0, 2048.0, 2200.0]),
            None,
        )
        .unwrap();
        {
            let mut em = e.emu.lock().unwrap();
            for s in em.servos.iter_mut() {
                s.regs[table::MIN_POSITION_LIMIT.addr as usize] = 10;
            }
        }
        let before = snapshot(&e);
        let mut b = Bus::new(
            SerialPortIo::open(&e.path, 1_000_000).unwrap(),
            BusConfig::default(),
        );
        for cancel_at in [0, 7] {
            let mut op = sweeper(&e, &[300.0; 6]);
            op.cancel_at = Some(cancel_at);
            let err = calibrate(&mut b, &mut op, Duration::from_millis(1)).unwrap_err();
            assert!(matches!(err, CalibrateError::Cancelled), "{err}");
            assert_eq!(
                snapshot(&e),
                before,
                "cancel at {cancel_at}: motors changed"
            );
        }
    }

    #[test]
    fn offsets_beyond_2047_and_seam_crossings_are_refused_by_name() {
        let e = PtyEmulator::start(
            Emulator::new(&[2100.0, 1900.0, 4095.0, 2000.0, 2048.0, 2200.0]),
            None,
        )
        .unwrap();
        let mut b = Bus::new(
            SerialPortIo::open(&e.path, 1_000_000).unwrap(),
            BusConfig::default(),
        );
        let err = calibrate(
            &mut b,
            &mut sweeper(&e, &[300.0; 6]),
            Duration::from_millis(1),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("elbow_flex (id 3)") && err.contains("2048") && err.contains("+-2047"),
            "{err}"
        );
        e.emu.lock().unwrap().servos[2].actual = 2300.0;
        let err = calibrate(
            &mut b,
            &mut sweeper(&e, &[2200.0, 300.0, 300.0, 300.0, 0.0, 300.0]),
            Duration::from_millis(1),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("shoulder_pan (id 1) crossed the encoder's 0/4095 seam"),
            "{err}"
        );
        assert_eq!(
            e.emu
                .lock()
                .unwrap()
                .servo(1)
                .unwrap()
                .get(table::HOMING_OFFSET),
            0,
            "restored"
        );
        let _ = So101::<SerialPortIo>::read_calibration(&mut b).unwrap();
    }
}
