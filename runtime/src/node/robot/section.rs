//! `[robot]` in the node config (also built from `maniflow robot`'s flags):
//! where the arm is, its calibration, the bus rate, telemetry thresholds and
//! position gains; `connect` runs LeRobot's connect sequence on the port.

use std::path::PathBuf;

use maniflow_bridge::feetech::so101::{self, ArmConfig, Calibration, Role, So101};
use maniflow_bridge::feetech::{Bus, BusConfig, SerialPortIo};
use serde::{Deserialize, Serialize};

/// `[robot]` in the node config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotSection {
    /// Only "so101".
    pub kind: String,
    /// Serial port of the bus adapter, e.g. /dev/ttyACM0.
    pub port: String,
    /// The calibration id (LeRobot's `--robot.id`).
    #[serde(default = "default_id")]
    pub calibration_id: String,
    /// Directory of `<calibration_id>.json` (default: LeRobot's).
    pub calibration_dir: Option<PathBuf>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Bus cycles per second (default: the control tick rate).
    pub rate_hz: Option<f64>,
    /// Joint readings older than this are stale (the control thread holds).
    #[serde(default = "default_max_age")]
    pub max_age_ms: f64,
    /// Read the servos' temperature every this many cycles.
    #[serde(default = "default_telemetry")]
    pub telemetry_every: u32,
    /// Hold the arm when a servo is hotter than this (deg C).
    #[serde(default = "default_max_temp")]
    pub max_temperature_c: i32,
    /// With no complete reading for this long, the bus is lost (a pulled
    /// cable, a powered-off arm): drop it and reconnect by reopening the port.
    #[serde(default = "default_lost_after")]
    pub lost_after_ms: f64,
    /// Turn torque off when the node exits.
    #[serde(default = "yes")]
    pub torque_off_at_exit: bool,
    /// Position loop gains (LeRobot: 16 / 0 / 32).
    #[serde(default = "p16")]
    pub p: i32,
    #[serde(default)]
    pub i: i32,
    #[serde(default = "d32")]
    pub d: i32,
}

fn default_id() -> String {
    "so101".into()
}
fn default_baud() -> u32 {
    1_000_000
}
fn default_max_age() -> f64 {
    100.0
}
fn default_lost_after() -> f64 {
    500.0
}
fn default_telemetry() -> u32 {
    15
}
fn default_max_temp() -> i32 {
    60
}
fn yes() -> bool {
    true
}
fn p16() -> i32 {
    16
}
fn d32() -> i32 {
    32
}

impl RobotSection {
    /// An SO-101 on `port` with every other field at its default.
    pub fn so101(port: &str) -> RobotSection {
        RobotSection {
            kind: "so101".into(),
            port: port.into(),
            calibration_id: default_id(),
            calibration_dir: None,
            baud: default_baud(),
            rate_hz: None,
            max_age_ms: default_max_age(),
            telemetry_every: default_telemetry(),
            max_temperature_c: default_max_temp(),
            lost_after_ms: default_lost_after(),
            torque_off_at_exit: true,
            p: p16(),
            i: 0,
            d: d32(),
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if self.kind != "so101" {
            return Err(format!(
                "robot.kind = \"{}\": only \"so101\" is supported",
                self.kind
            ));
        }
        if let Some(r) = self.rate_hz {
            if !(r.is_finite() && r > 0.0 && r <= 1000.0) {
                return Err(format!("robot.rate_hz = {r} must be in (0, 1000]"));
            }
        }
        if !(self.max_age_ms.is_finite() && self.max_age_ms > 0.0) {
            return Err(format!(
                "robot.max_age_ms = {} must be > 0",
                self.max_age_ms
            ));
        }
        for (k, v) in [("p", self.p), ("i", self.i), ("d", self.d)] {
            if !(0..=255).contains(&v) {
                return Err(format!("robot.{k} = {v} must be in 0..=255"));
            }
        }
        Ok(())
    }

    pub(super) fn calibration(&self) -> anyhow::Result<Calibration> {
        Ok(match &self.calibration_dir {
            Some(d) => Calibration::load(&d.join(format!("{}.json", self.calibration_id)))?,
            None => {
                Calibration::find(
                    &so101::calibration_root(),
                    Role::Follower,
                    &self.calibration_id,
                )?
                .0
            }
        })
    }

    fn arm_config(&self) -> ArmConfig {
        ArmConfig {
            p: self.p,
            i: self.i,
            d: self.d,
            ..ArmConfig::lerobot(Role::Follower)
        }
    }

    pub(super) fn connect(&self, cal: Calibration) -> anyhow::Result<So101<SerialPortIo>> {
        let port = SerialPortIo::open(&self.port, self.baud)?;
        let bus = Bus::new(port, BusConfig::default());
        Ok(So101::connect(bus, cal, self.arm_config(), false)?)
    }
}
