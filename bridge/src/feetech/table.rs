//! The STS3215 control table entries LeRobot's SO-101 path touches (LeRobot
//! `tables.py`, `STS_SMS_SERIES_CONTROL_TABLE` and its encodings table), by name.

/// One register: address, size in bytes, and the sign bit of LeRobot's
/// sign-magnitude encoding (None: unsigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    pub name: &'static str,
    pub addr: u8,
    pub size: u8,
    pub sign_bit: Option<u8>,
}

const fn r(name: &'static str, addr: u8, size: u8) -> Register {
    Register {
        name,
        addr,
        size,
        sign_bit: None,
    }
}
const fn s(name: &'static str, addr: u8, size: u8, bit: u8) -> Register {
    Register {
        name,
        addr,
        size,
        sign_bit: Some(bit),
    }
}

pub const FIRMWARE_MAJOR: Register = r("Firmware_Major_Version", 0, 1);
pub const FIRMWARE_MINOR: Register = r("Firmware_Minor_Version", 1, 1);
pub const MODEL_NUMBER: Register = r("Model_Number", 3, 2);
pub const ID: Register = r("ID", 5, 1);
pub const BAUD_RATE: Register = r("Baud_Rate", 6, 1);
pub const RETURN_DELAY_TIME: Register = r("Return_Delay_Time", 7, 1);
pub const RESPONSE_STATUS_LEVEL: Register = r("Response_Status_Level", 8, 1);
pub const MIN_POSITION_LIMIT: Register = r("Min_Position_Limit", 9, 2);
pub const MAX_POSITION_LIMIT: Register = r("Max_Position_Limit", 11, 2);
pub const MAX_TEMPERATURE_LIMIT: Register = r("Max_Temperature_Limit", 13, 1);
pub const MAX_VOLTAGE_LIMIT: Register = r("Max_Voltage_Limit", 14, 1);
pub const MIN_VOLTAGE_LIMIT: Register = r("Min_Voltage_Limit", 15, 1);
pub const MAX_TORQUE_LIMIT: Register = r("Max_Torque_Limit", 16, 2);
pub const PHASE: Register = r("Phase", 18, 1);
pub const UNLOADING_CONDITION: Register = r("Unloading_Condition", 19, 1);
pub const LED_ALARM_CONDITION: Register = r("LED_Alarm_Condition", 20, 1);
pub const P_COEFFICIENT: Register = r("P_Coefficient", 21, 1);
pub const D_COEFFICIENT: Register = r("D_Coefficient", 22, 1);
pub const I_COEFFICIENT: Register = r("I_Coefficient", 23, 1);
pub const PROTECTION_CURRENT: Register = r("Protection_Current", 28, 2);
pub const HOMING_OFFSET: Register = s("Homing_Offset", 31, 2, 11);
pub const OPERATING_MODE: Register = r("Operating_Mode", 33, 1);
pub const PROTECTIVE_TORQUE: Register = r("Protective_Torque", 34, 1);
pub const PROTECTION_TIME: Register = r("Protection_Time", 35, 1);
pub const OVERLOAD_TORQUE: Register = r("Overload_Torque", 36, 1);
pub const TORQUE_ENABLE: Register = r("Torque_Enable", 40, 1);
pub const ACCELERATION: Register = r("Acceleration", 41, 1);
pub const GOAL_POSITION: Register = s("Goal_Position", 42, 2, 15);
pub const GOAL_TIME: Register = r("Goal_Time", 44, 2);
pub const GOAL_VELOCITY: Register = s("Goal_Velocity", 46, 2, 15);
pub const TORQUE_LIMIT: Register = r("Torque_Limit", 48, 2);
pub const LOCK: Register = r("Lock", 55, 1);
pub const PRESENT_POSITION: Register = s("Present_Position", 56, 2, 15);
pub const PRESENT_VELOCITY: Register = s("Present_Velocity", 58, 2, 15);
pub const PRESENT_LOAD: Register = s("Present_Load", 60, 2, 10);
pub const PRESENT_VOLTAGE: Register = r("Present_Voltage", 62, 1);
pub const PRESENT_TEMPERATURE: Register = r("Present_Temperature", 63, 1);
pub const STATUS: Register = r("Status", 65, 1);
pub const MOVING: Register = r("Moving", 66, 1);
pub const PRESENT_CURRENT: Register = r("Present_Current", 69, 2);
pub const MAXIMUM_ACCELERATION: Register = r("Maximum_Acceleration", 85, 1);

/// Every register above, for lookups by name.
pub const ALL: [Register; 41] = [
    FIRMWARE_MAJOR,
    FIRMWARE_MINOR,
    MODEL_NUMBER,
    ID,
    BAUD_RATE,
    RETURN_DELAY_TIME,
    RESPONSE_STATUS_LEVEL,
    MIN_POSITION_LIMIT,
    MAX_POSITION_LIMIT,
    MAX_TEMPERATURE_LIMIT,
    MAX_VOLTAGE_LIMIT,
    MIN_VOLTAGE_LIMIT,
    MAX_TORQUE_LIMIT,
    PHASE,
    UNLOADING_CONDITION,
    LED_ALARM_CONDITION,
    P_COEFFICIENT,
    D_COEFFICIENT,
    I_COEFFICIENT,
    PROTECTION_CURRENT,
    HOMING_OFFSET,
    OPERATING_MODE,
    PROTECTIVE_TORQUE,
    PROTECTION_TIME,
    OVERLOAD_TORQUE,
    TORQUE_ENABLE,
    ACCELERATION,
    GOAL_POSITION,
    GOAL_TIME,
    GOAL_VELOCITY,
    TORQUE_LIMIT,
    LOCK,
    PRESENT_POSITION,
    PRESENT_VELOCITY,
    PRESENT_LOAD,
    PRESENT_VOLTAGE,
    PRESENT_TEMPERATURE,
    STATUS,
    MOVING,
    PRESENT_CURRENT,
    MAXIMUM_ACCELERATION,
];

/// STS3215 model number (register 3).
pub const STS3215_MODEL: u16 = 777;
/// Encoder resolution.
pub const RESOLUTION: u32 = 4096;

pub fn by_name(name: &str) -> Option<Register> {
    ALL.iter().copied().find(|r| r.name == name)
}

impl Register {
    /// Encode a signed value into the register's raw little-endian bytes
    /// (sign-magnitude where LeRobot uses it); None when it does not fit.
    pub fn encode(&self, v: i32, out: &mut [u8]) -> Option<()> {
        let raw = match self.sign_bit {
            Some(b) => super::protocol::encode_sign_magnitude(v, b)?,
            None => u32::try_from(v).ok()?,
        };
        let size = self.size as usize;
        if size < 4 && raw >> (8 * size) != 0 {
            return None;
        }
        for (i, o) in out.iter_mut().take(size).enumerate() {
            *o = (raw >> (8 * i)) as u8;
        }
        Some(())
    }

    /// Decode the register's raw little-endian bytes.
    pub fn decode(&self, bytes: &[u8]) -> i32 {
        let raw = bytes
            .iter()
            .take(self.size as usize)
            .enumerate()
            .fold(0u32, |a, (i, b)| a | (u32::from(*b) << (8 * i)));
        match self.sign_bit {
            Some(b) => super::protocol::decode_sign_magnitude(raw, b),
            None => raw as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_encodings_round_trip() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(
                ALL[i + 1..]
                    .iter()
                    .all(|b| b.name != a.name && b.addr != a.addr),
                "{}",
                a.name
            );
            assert_eq!(by_name(a.name), Some(*a));
        }
        let mut b = [0u8; 2];
        HOMING_OFFSET.encode(-596, &mut b).unwrap();
        assert_eq!(b, [0x54, 0x0A]);
        assert_eq!(HOMING_OFFSET.decode(&b), -596);
        assert!(
            HOMING_OFFSET.encode(2114, &mut b).is_none(),
            "LeRobot's 'Magnitude 2114 exceeds 2047'"
        );
        GOAL_POSITION.encode(2048, &mut b).unwrap();
        assert_eq!(b, [0x00, 0x08]);
        assert!(MIN_POSITION_LIMIT.encode(-1, &mut b).is_none());
        assert!(TORQUE_ENABLE.encode(256, &mut b[..1]).is_none());
        assert_eq!(PRESENT_LOAD.decode(&[0x10, 0x04]), -16);
    }
}
