//! The Feetech STS3215 servo bus (the SO-101's), as LeRobot drives it but
//! more robust: `protocol` (framing, checksums, a resynchronising decoder,
//! alarms), `table` (the control table by name, LeRobot's sign-magnitude
//! bits), `port` (the byte pipe: a serial port, or a pty in tests), `bus`
//! (transactions with drained input, wire-time timeouts, per-id results,
//! bounded retries of only the missing ids, per-id counters).
//! `../shared/design/FEETECH.md` has the sources of every fact used here.

pub mod bus;
pub mod calibrate;
pub mod emulator;
pub mod port;
pub mod protocol;
pub mod so101;
pub mod table;

pub use bus::{Bus, BusConfig, BusError, Failure, Reading};
pub use port::{Port, SerialPortIo};
pub use protocol::Alarms;
