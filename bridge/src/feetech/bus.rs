//! Transactions on a Feetech bus, more robust than `scservo_sdk`'s:
//! - the input is drained before every transaction, so a late reply never
//!   shifts later reads; after a transaction that missed a reply, the bus
//!   waits for the line to go quiet before the next one (a reply that comes
//!   late is drained, not taken as the answer to a newer request);
//! - timeouts follow from the baud rate, the packet sizes, the servos' return
//!   delay and a latency margin;
//! - retries are bounded and re-ask only the ids still missing;
//! - a sync read gives each id its own result and alarms, never
//!   all-or-nothing;
//! - every timeout, checksum error, retry and alarm is counted per id.
//! Steady state allocates nothing: fixed transmit and receive buffers.

use std::io;
use std::time::{Duration, Instant};

use super::port::Port;
use super::protocol::{self, Alarms, Scan, MAX_PACKET};
use super::table::Register;

/// Timing and retry settings.
#[derive(Debug, Clone, Copy)]
pub struct BusConfig {
    /// Extra attempts after a failed one (LeRobot's `num_read_retries` is 2).
    pub retries: u8,
    /// Added to the wire time of each transaction: USB latency and the
    /// servos' processing (a real USB adapter adds about 1 ms per direction).
    pub latency_margin: Duration,
    /// The servos' Return_Delay_Time in microseconds (LeRobot configures 0).
    pub return_delay_us: u32,
    /// After a missed reply: the line must be quiet this long before the next
    /// transaction (so a late reply is drained, not misattributed) ...
    pub quiet: Duration,
    /// ... waiting at most this long.
    pub quiet_max: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            retries: 2,
            latency_margin: Duration::from_millis(10),
            return_delay_us: 0,
            quiet: Duration::from_millis(30),
            quiet_max: Duration::from_millis(250),
        }
    }
}

/// Per-servo counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IdCounters {
    /// Replies expected (one per id per attempt).
    pub requests: u64,
    pub replies: u64,
    pub timeouts: u64,
    pub checksum_errors: u64,
    /// Attempts repeated for this id.
    pub retries: u64,
    /// Replies whose error byte was not 0.
    pub alarm_replies: u64,
    /// Replies per alarm bit (bit 0 = voltage ... bit 5 = overload).
    pub alarms_by_bit: [u64; 8],
}

/// Bus-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BusCounters {
    pub transactions: u64,
    /// Bytes found waiting before a transaction (late replies), drained.
    pub stale_bytes: u64,
    /// Valid packets from an id not asked, or of the wrong length.
    pub unexpected_packets: u64,
    /// Waits for a quiet line after a missed reply.
    pub resyncs: u64,
}

/// One id's result of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub value: i32,
    pub alarms: Alarms,
}

/// Why an id has no reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No reply within the window on any attempt.
    Timeout,
    /// Only corrupt replies.
    Corrupt,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::Timeout => "no reply",
            Failure::Corrupt => "corrupt replies only",
        })
    }
}

/// A failed transaction, naming the port and id.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("{port}: {source}")]
    Io { port: String, source: io::Error },
    #[error("{port}: servo id {id}: {failure} to {what} (after {attempts} attempt(s))")]
    NoReply {
        port: String,
        id: u8,
        what: &'static str,
        failure: Failure,
        attempts: u8,
    },
    #[error("{port}: {message}")]
    Invalid { port: String, message: String },
}

const RX_CAP: usize = 1024;
/// Ids a transaction may address at once.
pub const MAX_IDS: usize = 32;

pub struct Bus<P: Port> {
    port: P,
    cfg: BusConfig,
    tx: [u8; MAX_PACKET],
    rx: [u8; RX_CAP],
    ids: Box<[IdCounters; 256]>,
    pub counters: BusCounters,
    /// A reply was missed: wait for quiet before the next transaction.
    dirty: bool,
}

/// Per-id slot while a transaction runs.
#[derive(Clone, Copy)]
enum Slot {
    Pending,
    Corrupt,
    Done(Reading),
}

impl<P: Port> Bus<P> {
    pub fn new(port: P, cfg: BusConfig) -> Bus<P> {
        Bus {
            port,
            cfg,
            tx: [0; MAX_PACKET],
            rx: [0; RX_CAP],
            ids: Box::new([IdCounters::default(); 256]),
            counters: BusCounters::default(),
            dirty: false,
        }
    }

    pub fn port_name(&self) -> String {
        self.port.name()
    }

    pub fn config(&self) -> &BusConfig {
        &self.cfg
    }

    pub fn id_counters(&self, id: u8) -> IdCounters {
        self.ids[id as usize]
    }

    pub fn into_port(self) -> P {
        self.port
    }

    fn io(&self, source: io::Error) -> BusError {
        BusError::Io {
            port: self.port.name(),
            source,
        }
    }

    /// Wire time of `bytes` (10 bits per byte).
    fn wire(&self, bytes: usize) -> Duration {
        Duration::from_nanos(bytes as u64 * 10 * 1_000_000_000 / u64::from(self.port.baud().max(1)))
    }

    /// Wait until the line has been quiet for `cfg.quiet` (bounded by
    /// `cfg.quiet_max`), discarding what arrives.
    fn settle(&mut self) -> io::Result<()> {
        self.counters.resyncs += 1;
        let start = Instant::now();
        let mut quiet_since = Instant::now();
        while start.elapsed() < self.cfg.quiet_max {
            let n = self
                .port
                .read_some(&mut self.rx, Duration::from_millis(2))?;
            if n > 0 {
                self.counters.stale_bytes += n as u64;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= self.cfg.quiet {
                break;
            }
        }
        self.dirty = false;
        Ok(())
    }

    /// Send `tx[..n_tx]` and collect one reply of `data_len` bytes from each
    /// `ids[i]` whose slot is pending, until all came or the window closed.
    fn exchange(
        &mut self,
        n_tx: usize,
        ids: &[u8],
        data_len: usize,
        slots: &mut [Slot],
    ) -> io::Result<()> {
        if self.dirty {
            self.settle()?;
        }
        let stale = self.port.drain_input()?;
        self.counters.stale_bytes += stale as u64;
        self.counters.transactions += 1;
        self.port.write_all(&self.tx[..n_tx])?;
        let n_expect = slots.iter().filter(|s| !matches!(s, Slot::Done(_))).count();
        if n_expect == 0 {
            return Ok(());
        }
        let window = self.wire(n_tx + n_expect * (6 + data_len))
            + Duration::from_micros(u64::from(self.cfg.return_delay_us) * n_expect as u64)
            + self.cfg.latency_margin;
        let deadline = Instant::now() + window;
        let mut fill = 0usize;
        let mut waiting = n_expect;
        while waiting > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if fill == RX_CAP {
                fill = 0; // only garbage can fill the buffer: drop it
            }
            let n = self.port.read_some(&mut self.rx[fill..], deadline - now)?;
            fill += n;
            fill = self.consume(fill, ids, data_len, slots, &mut waiting);
        }
        if waiting > 0 {
            self.dirty = true;
        }
        Ok(())
    }

    /// Take every complete packet from `rx[..fill]`; the bytes left.
    fn consume(
        &mut self,
        mut fill: usize,
        ids: &[u8],
        data_len: usize,
        slots: &mut [Slot],
        waiting: &mut usize,
    ) -> usize {
        loop {
            let (used, done) = match protocol::scan(&self.rx[..fill]) {
                Scan::Packet { status, consumed } => {
                    match ids.iter().position(|&i| i == status.id) {
                        Some(k)
                            if status.data.len() == data_len
                                && !matches!(slots[k], Slot::Done(_)) =>
                        {
                            let value = status
                                .data
                                .iter()
                                .enumerate()
                                .fold(0i32, |a, (i, b)| a | (i32::from(*b) << (8 * i)));
                            let c = &mut self.ids[status.id as usize];
                            c.replies += 1;
                            if !status.alarms.is_empty() {
                                c.alarm_replies += 1;
                                for b in 0..8 {
                                    if status.alarms.0 & (1 << b) != 0 {
                                        c.alarms_by_bit[b] += 1;
                                    }
                                }
                            }
                            slots[k] = Slot::Done(Reading {
                                value,
                                alarms: status.alarms,
                            });
                            *waiting -= 1;
                        }
                        _ => self.counters.unexpected_packets += 1,
                    }
                    (consumed, false)
                }
                Scan::Corrupt { id, consumed } => {
                    if let Some(k) = ids.iter().position(|&i| i == id) {
                        self.ids[id as usize].checksum_errors += 1;
                        if matches!(slots[k], Slot::Pending) {
                            slots[k] = Slot::Corrupt;
                        }
                    }
                    (consumed, false)
                }
                Scan::Incomplete { garbage } => (garbage, true),
            };
            self.rx.copy_within(used..fill, 0);
            fill -= used;
            if done {
                return fill;
            }
        }
    }

    /// Run a transaction for `ids` (unicast: one id) with bounded retries,
    /// re-asking only the ids without a reply. `encode` writes the request for
    /// the given ids into the transmit buffer.
    fn transact(
        &mut self,
        ids: &[u8],
        data_len: usize,
        out: &mut [Result<Reading, Failure>],
        mut encode: impl FnMut(&mut [u8; MAX_PACKET], &[u8]) -> Result<usize, protocol::EncodeError>,
    ) -> Result<(), BusError> {
        if ids.len() > MAX_IDS || out.len() < ids.len() {
            return Err(BusError::Invalid {
                port: self.port.name(),
                message: format!("{} ids in one transaction (at most {MAX_IDS})", ids.len()),
            });
        }
        let mut slots = [Slot::Pending; MAX_IDS];
        let mut ask = [0u8; MAX_IDS];
        for attempt in 0..=self.cfg.retries {
            // The ids still missing, in the caller's order.
            let mut n = 0;
            for (k, id) in ids.iter().enumerate() {
                if !matches!(slots[k], Slot::Done(_)) {
                    ask[n] = *id;
                    n += 1;
                    let c = &mut self.ids[*id as usize];
                    c.requests += 1;
                    if attempt > 0 {
                        c.retries += 1;
                    }
                }
            }
            if n == 0 {
                break;
            }
            let n_tx = encode(&mut self.tx, &ask[..n]).map_err(|e| BusError::Invalid {
                port: self.port.name(),
                message: e.to_string(),
            })?;
            // Slots in `ask` order for this attempt.
            let mut sub = [Slot::Pending; MAX_IDS];
            self.exchange(n_tx, &ask[..n], data_len, &mut sub[..n])
                .map_err(|e| self.io(e))?;
            for (j, id) in ask[..n].iter().enumerate() {
                let k = ids.iter().position(|i| i == id).unwrap_or(0);
                match sub[j] {
                    Slot::Done(r) => slots[k] = Slot::Done(r),
                    Slot::Corrupt => slots[k] = Slot::Corrupt,
                    Slot::Pending => {
                        self.ids[*id as usize].timeouts += 1;
                        if !matches!(slots[k], Slot::Corrupt) {
                            slots[k] = Slot::Pending;
                        }
                    }
                }
            }
        }
        for (k, o) in out.iter_mut().take(ids.len()).enumerate() {
            *o = match slots[k] {
                Slot::Done(r) => Ok(r),
                Slot::Corrupt => Err(Failure::Corrupt),
                Slot::Pending => Err(Failure::Timeout),
            };
        }
        Ok(())
    }

    fn one(
        &mut self,
        id: u8,
        what: &'static str,
        data_len: usize,
        encode: impl FnMut(&mut [u8; MAX_PACKET], &[u8]) -> Result<usize, protocol::EncodeError>,
    ) -> Result<Reading, BusError> {
        let mut out = [Err(Failure::Timeout)];
        self.transact(&[id], data_len, &mut out, encode)?;
        out[0].map_err(|failure| BusError::NoReply {
            port: self.port.name(),
            id,
            what,
            failure,
            attempts: self.cfg.retries + 1,
        })
    }

    /// PING `id`: its alarms.
    pub fn ping(&mut self, id: u8) -> Result<Alarms, BusError> {
        self.one(id, "ping", 0, |b, ids| Ok(protocol::ping(b, ids[0])))
            .map(|r| r.alarms)
    }

    /// READ one register of one servo (decoded, sign-magnitude applied).
    pub fn read(&mut self, id: u8, reg: Register) -> Result<Reading, BusError> {
        let r = self.one(id, reg.name, reg.size as usize, |b, ids| {
            Ok(protocol::read(b, ids[0], reg.addr, reg.size))
        })?;
        Ok(Reading {
            value: decode_raw(reg, r.value),
            alarms: r.alarms,
        })
    }

    /// WRITE one register of one servo; waits for its status reply.
    pub fn write(&mut self, id: u8, reg: Register, value: i32) -> Result<Alarms, BusError> {
        let mut data = [0u8; 4];
        reg.encode(value, &mut data)
            .ok_or_else(|| BusError::Invalid {
                port: self.port.name(),
                message: format!(
                    "servo id {id}: {value} does not fit register {} ({} byte(s){})",
                    reg.name,
                    reg.size,
                    reg.sign_bit.map_or(String::new(), |b| format!(
                        ", |value| <= {}",
                        (1u32 << b) - 1
                    ))
                ),
            })?;
        let size = reg.size as usize;
        self.one(id, reg.name, 0, |b, ids| {
            protocol::write(b, ids[0], reg.addr, &data[..size])
        })
        .map(|r| r.alarms)
    }

    /// SYNC_READ `reg` from `ids`: `out[i]` is id `ids[i]`'s reading or why it has none.
    pub fn sync_read(
        &mut self,
        reg: Register,
        ids: &[u8],
        out: &mut [Result<Reading, Failure>],
    ) -> Result<(), BusError> {
        self.transact(ids, reg.size as usize, out, |b, ask| {
            protocol::sync_read(b, reg.addr, reg.size, ask)
        })?;
        for o in out.iter_mut().take(ids.len()) {
            if let Ok(r) = o {
                r.value = decode_raw(reg, r.value);
            }
        }
        Ok(())
    }

    /// SYNC_WRITE `values[i]` to `reg` of `ids[i]` (no reply).
    pub fn sync_write(
        &mut self,
        reg: Register,
        ids: &[u8],
        values: &[i32],
    ) -> Result<(), BusError> {
        let size = reg.size as usize;
        let mut data = [0u8; MAX_IDS * 4];
        if ids.len() > MAX_IDS || values.len() != ids.len() {
            return Err(BusError::Invalid {
                port: self.port.name(),
                message: format!("{} values for {} ids", values.len(), ids.len()),
            });
        }
        for (k, v) in values.iter().enumerate() {
            reg.encode(*v, &mut data[k * size..(k + 1) * size])
                .ok_or_else(|| BusError::Invalid {
                    port: self.port.name(),
                    message: format!(
                        "servo id {}: {v} does not fit register {}",
                        ids[k], reg.name
                    ),
                })?;
        }
        let n = protocol::sync_write(
            &mut self.tx,
            reg.addr,
            reg.size,
            ids,
            &data[..ids.len() * size],
        )
        .map_err(|e| BusError::Invalid {
            port: self.port.name(),
            message: e.to_string(),
        })?;
        if self.dirty {
            self.settle().map_err(|e| self.io(e))?;
        }
        let stale = self.port.drain_input().map_err(|e| self.io(e))?;
        self.counters.stale_bytes += stale as u64;
        self.counters.transactions += 1;
        let r = self.port.write_all(&self.tx[..n]);
        r.map_err(|e| self.io(e))
    }
}

fn decode_raw(reg: Register, raw: i32) -> i32 {
    let bytes = (raw as u32).to_le_bytes();
    reg.decode(&bytes[..reg.size as usize])
}
