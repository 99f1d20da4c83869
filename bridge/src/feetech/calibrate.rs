//! Calibrating an SO-101 (follower or leader) as LeRobot does
//! (`SOFollower.calibrate`, `set_half_turn_homings`, `record_ranges_of_motion`),
//! with three guards LeRobot lacks: the homing offset is checked against
//! +-2047 before anything is written, a joint that crosses the encoder's
//! 0/4095 seam during the sweep is refused by name, and a cancelled
//! calibration restores what the motors held before (nothing half-written).

use super::bus::{Bus, Failure};
use super::port::Port;
use super::so101::{ArmError, Calibration, MotorCalibration, So101, IDS, MOTORS};
use super::table;

/// The person at the arm (stdin in `maniflow calibrate`, a script in tests).
pub trait Operator {
    /// Say `msg` and wait for ENTER; Err(()) when the person cancelled.
    fn wait_enter(&mut self, msg: &str) -> Result<(), ()>;
    /// Whether ENTER was pressed since the last call (never blocks); Err(()) on cancel.
    fn enter_pressed(&mut self) -> Result<bool, ()>;
    /// The live table while recording: (joint, min, present, max).
    fn show(&mut self, _rows: &[(&str, i32, i32, i32)]) {}
}

/// Why a calibration stopped.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Arm(#[from] ArmError),
    #[error("calibration cancelled; the motors' previous calibration was restored")]
    Cancelled,
    #[error("{joint} (id {id}) reads {raw} in the middle pose: its homing offset {offset} is outside +-2047; turn the horn so the middle pose reads near 2048 and calibrate again")]
    Offset {
        joint: &'static str,
        id: u8,
        raw: i32,
        offset: i32,
    },
    #[error("{joint} (id {id}) crossed the encoder's 0/4095 seam during the sweep ({from} -> {to}); calibrate again from a middle pose nearer its range's centre")]
    Wrapped {
        joint: &'static str,
        id: u8,
        from: i32,
        to: i32,
    },
    #[error("{joint} (id {id}) did not move during the sweep (min = max = {at}); move every joint but wrist_roll through its whole range")]
    NoMotion {
        joint: &'static str,
        id: u8,
        at: i32,
    },
}

fn positions<P: Port>(bus: &mut Bus<P>, retries_left: u8) -> Result<[i32; 6], ArmError> {
    let mut out = [Err(Failure::Timeout); 6];
    let mut attempt = 0;
    loop {
        bus.sync_read(table::PRESENT_POSITION, &IDS, &mut out)?;
        if out.iter().all(Result::is_ok) || attempt >= retries_left {
            break;
        }
        attempt += 1;
    }
    let mut p = [0i32; 6];
    for (i, r) in out.iter().enumerate() {
        p[i] = r
            .map_err(|f| ArmError::Arm {
                port: bus.port_name(),
                message: format!("{} (id {}): {f} to Present_Position", MOTORS[i], IDS[i]),
            })?
            .value;
    }
    Ok(p)
}

/// Run the procedure on `bus`; the new calibration, written to the motors
/// (and nothing changed on the motors if it fails or is cancelled).
pub fn calibrate<P: Port>(
    bus: &mut Bus<P>,
    op: &mut dyn Operator,
    period: std::time::Duration,
) -> Result<Calibration, CalibrateError> {
    So101::handshake(bus)?;
    let before = So101::read_calibration(bus)?;
    let r = run(bus, op, period);
    if r.is_err() {
        // Put back what the motors held (best effort; the error that stopped us wins).
        let _ = So101::write_calibration(bus, &before);
    }
    r
}

fn run<P: Port>(
    bus: &mut Bus<P>,
    op: &mut dyn Operator,
    period: std::time::Duration,
) -> Result<Calibration, CalibrateError> {
    for id in IDS {
        bus.write(id, table::TORQUE_ENABLE, 0)
            .map_err(ArmError::from)?;
        bus.write(id, table::LOCK, 0).map_err(ArmError::from)?;
        bus.write(id, table::OPERATING_MODE, 0)
            .map_err(ArmError::from)?;
    }
    op.wait_enter("Move the arm to the middle of its range of motion and press ENTER")
        .map_err(|()| CalibrateError::Cancelled)?;
    // LeRobot's reset_calibration, then homing = present - 2047.
    for id in IDS {
        bus.write(id, table::HOMING_OFFSET, 0)
            .map_err(ArmError::from)?;
        bus.write(id, table::MIN_POSITION_LIMIT, 0)
            .map_err(ArmError::from)?;
        bus.write(id, table::MAX_POSITION_LIMIT, 4095)
            .map_err(ArmError::from)?;
    }
    let mid = positions(bus, 5)?;
    let mut offsets = [0i32; 6];
    for i in 0..6 {
        offsets[i] = mid[i] - 2047;
        if offsets[i].abs() > 2047 {
            return Err(CalibrateError::Offset {
                joint: MOTORS[i],
                id: IDS[i],
                raw: mid[i],
                offset: offsets[i],
            });
        }
    }
    for (i, id) in IDS.iter().enumerate() {
        bus.write(*id, table::HOMING_OFFSET, offsets[i])
            .map_err(ArmError::from)?;
    }
    // Ranges of every joint but wrist_roll, until ENTER.
    let start = positions(bus, 5)?;
    let (mut min, mut max, mut prev) = (start, start, start);
    loop {
        let t0 = std::time::Instant::now();
        let p = positions(bus, 5)?;
        for i in 0..6 {
            if i != 4 && (p[i] - prev[i]).abs() > 2048 {
                return Err(CalibrateError::Wrapped {
                    joint: MOTORS[i],
                    id: IDS[i],
                    from: prev[i],
                    to: p[i],
                });
            }
            min[i] = min[i].min(p[i]);
            max[i] = max[i].max(p[i]);
        }
        prev = p;
        let rows: Vec<(&str, i32, i32, i32)> = (0..6)
            .filter(|i| *i != 4)
            .map(|i| (MOTORS[i], min[i], p[i], max[i]))
            .collect();
        op.show(&rows);
        if op.enter_pressed().map_err(|()| CalibrateError::Cancelled)? {
            break;
        }
        if let Some(rest) = period.checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let mut cal = [MotorCalibration {
        id: 0,
        drive_mode: 0,
        homing_offset: 0,
        range_min: 0,
        range_max: 0,
    }; 6];
    for i in 0..6 {
        let (lo, hi) = if i == 4 { (0, 4095) } else { (min[i], max[i]) };
        if lo == hi {
            return Err(CalibrateError::NoMotion {
                joint: MOTORS[i],
                id: IDS[i],
                at: lo,
            });
        }
        cal[i] = MotorCalibration {
            id: IDS[i],
            drive_mode: 0,
            homing_offset: offsets[i],
            range_min: lo,
            range_max: hi,
        };
    }
    let cal = Calibration(cal);
    So101::write_calibration(bus, &cal)?;
    Ok(cal)
}
