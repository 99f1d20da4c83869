//! An STS3215 bus emulator: a chain of servos with their register maps
//! (EEPROM and RAM), answering protocol-0 instructions as the firmware does,
//! for tests and for `maniflow sim --serial` (LeRobot's own code drives it
//! over a pseudo-terminal).
//!
//! Modelled: Present_Position = (Actual - Homing_Offset) mod 4096 (Phase bit 4
//! clear), Goal_Position clamped to the position limits, a goal := present
//! seed when torque turns on, EEPROM writes kept across a simulated power
//! cycle only while Lock = 0, replies after the wire time at the baud rate
//! plus Return_Delay_Time (2 us units), no reply to SYNC_WRITE or broadcasts
//! (but a broadcast PING, answered by every servo), and faults: dropped,
//! corrupted and late replies, a missing id, an overload that latches (torque
//! off, error bit 5, until a power cycle) and a voltage alarm. Assumptions
//! not checked against a real servo are marked so in FEETECH.md section 5.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::protocol::{self, Alarms, Instruction, BROADCAST, MAX_PACKET};
use super::table::{self, Register};

/// Registers below this address are EEPROM.
const EEPROM_END: usize = 40;
/// Speed of an unloaded servo, ticks per second (about 270 deg/s).
const MAX_SPEED: f64 = 3000.0;

/// One emulated servo.
#[derive(Debug, Clone)]
pub struct Servo {
    pub regs: [u8; 256],
    eeprom: [u8; 256],
    /// The shaft angle in ticks, 0..4096 (continuous).
    pub actual: f64,
    /// Overload latched until `power_cycle`.
    pub overloaded: bool,
}

fn set(regs: &mut [u8; 256], r: Register, v: i32) {
    let _ = r.encode(
        v,
        &mut regs[r.addr as usize..r.addr as usize + r.size as usize],
    );
}
fn get(regs: &[u8; 256], r: Register) -> i32 {
    r.decode(&regs[r.addr as usize..r.addr as usize + r.size as usize])
}

impl Servo {
    /// A factory-fresh STS3215 (model 777, firmware 3.10) with `id`, its shaft at `actual`.
    pub fn new(id: u8, actual: f64) -> Servo {
        let mut regs = [0u8; 256];
        set(&mut regs, table::FIRMWARE_MAJOR, 3);
        set(&mut regs, table::FIRMWARE_MINOR, 10);
        set(
            &mut regs,
            table::MODEL_NUMBER,
            i32::from(table::STS3215_MODEL),
        );
        set(&mut regs, table::ID, i32::from(id));
        set(&mut regs, table::RETURN_DELAY_TIME, 250);
        set(&mut regs, table::RESPONSE_STATUS_LEVEL, 1);
        set(&mut regs, table::MAX_POSITION_LIMIT, 4095);
        set(&mut regs, table::MAX_TEMPERATURE_LIMIT, 70);
        set(&mut regs, table::MAX_VOLTAGE_LIMIT, 140);
        set(&mut regs, table::MIN_VOLTAGE_LIMIT, 40);
        set(&mut regs, table::MAX_TORQUE_LIMIT, 1000);
        set(&mut regs, table::PHASE, 0x0C);
        set(&mut regs, table::P_COEFFICIENT, 32);
        set(&mut regs, table::D_COEFFICIENT, 32);
        set(&mut regs, table::PROTECTION_CURRENT, 500);
        set(&mut regs, table::OVERLOAD_TORQUE, 80);
        set(&mut regs, table::LOCK, 1);
        set(&mut regs, table::PRESENT_VOLTAGE, 120);
        set(&mut regs, table::PRESENT_TEMPERATURE, 30);
        set(&mut regs, table::MAXIMUM_ACCELERATION, 0);
        let mut s = Servo {
            eeprom: regs,
            regs,
            actual: actual.rem_euclid(4096.0),
            overloaded: false,
        };
        s.refresh();
        let p = get(&s.regs, table::PRESENT_POSITION);
        set(&mut s.regs, table::GOAL_POSITION, p);
        s
    }

    pub fn id(&self) -> u8 {
        self.regs[table::ID.addr as usize]
    }

    pub fn get(&self, r: Register) -> i32 {
        get(&self.regs, r)
    }

    pub fn torque(&self) -> bool {
        self.regs[table::TORQUE_ENABLE.addr as usize] == 1
    }

    /// The present position register from the shaft angle and the offset.
    fn present(&self) -> i32 {
        let off = self.get(table::HOMING_OFFSET) as f64;
        (self.actual.round() - off).rem_euclid(4096.0) as i32
    }

    /// Update the read-only registers from the state.
    fn refresh(&mut self) {
        let p = self.present();
        set(&mut self.regs, table::PRESENT_POSITION, p);
        let status = if self.overloaded { Alarms::OVERLOAD } else { 0 };
        set(&mut self.regs, table::STATUS, i32::from(status));
        set(
            &mut self.regs,
            table::PRESENT_LOAD,
            if self.overloaded { 1000 } else { 0 },
        );
    }

    /// Move the shaft for `dt` seconds: toward the goal with torque on,
    /// nowhere otherwise (an outside hand moves it with `actual`).
    pub fn step(&mut self, dt: f64) {
        if self.torque() && !self.overloaded {
            let off = self.get(table::HOMING_OFFSET) as f64;
            let target = (f64::from(self.get(table::GOAL_POSITION)) + off).rem_euclid(4096.0);
            let mut d = target - self.actual;
            if d > 2048.0 {
                d -= 4096.0;
            } else if d < -2048.0 {
                d += 4096.0;
            }
            let max = MAX_SPEED * dt;
            self.actual = (self.actual + d.clamp(-max, max)).rem_euclid(4096.0);
        }
        self.refresh();
    }

    /// Latch an overload: torque drops, error bit 5 on every reply.
    pub fn overload(&mut self) {
        self.overloaded = true;
        self.regs[table::TORQUE_ENABLE.addr as usize] = 0;
        self.refresh();
    }

    /// Power off and on: RAM to defaults, EEPROM as last persisted.
    pub fn power_cycle(&mut self) {
        let fresh = Servo::new(self.id(), self.actual);
        self.regs = fresh.regs;
        self.regs[..EEPROM_END].copy_from_slice(&self.eeprom[..EEPROM_END]);
        self.overloaded = false;
        self.refresh();
        let p = self.present();
        set(&mut self.regs, table::GOAL_POSITION, p);
    }

    /// A WRITE of `data` at `addr`, with the firmware's side effects.
    fn write(&mut self, addr: usize, data: &[u8]) {
        let was_on = self.torque();
        for (i, b) in data.iter().enumerate() {
            let a = addr + i;
            if a >= 256 || (a >= 56 && a < 71) {
                continue; // read-only present values
            }
            self.regs[a] = *b;
            if a < EEPROM_END && self.regs[table::LOCK.addr as usize] == 0 {
                self.eeprom[a] = *b;
            }
        }
        if addr < EEPROM_END {
            // Lock = 0 persists the EEPROM region written so far (the write
            // above already did; a Lock written to 0 later persists later writes).
        }
        let goal = table::GOAL_POSITION.addr as usize;
        if (addr..addr + data.len()).contains(&goal) {
            let min = self.get(table::MIN_POSITION_LIMIT);
            let max = self.get(table::MAX_POSITION_LIMIT);
            let g = self.get(table::GOAL_POSITION);
            if min < max {
                set(&mut self.regs, table::GOAL_POSITION, g.clamp(min, max));
            }
        }
        if !was_on && self.torque() {
            if self.overloaded {
                self.regs[table::TORQUE_ENABLE.addr as usize] = 0;
            } else {
                let p = self.present();
                set(&mut self.regs, table::GOAL_POSITION, p);
            }
        }
        self.refresh();
    }

    fn alarms(&self, extra: u8) -> u8 {
        extra | if self.overloaded { Alarms::OVERLOAD } else { 0 }
    }
}

/// Faults to inject; counters count transactions (requests that expect a reply).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Drop the reply of every Nth transaction (for sync reads: the last id's).
    pub drop_every: Option<u64>,
    /// Corrupt the checksum of every Nth transaction's (last) reply.
    pub corrupt_every: Option<u64>,
    /// Delay every Nth transaction's replies by `late_by`.
    pub late_every: Option<u64>,
    pub late_by: Duration,
    /// Ids that never answer.
    pub missing: Vec<u8>,
    /// Ids reporting an input-voltage alarm in every reply.
    pub voltage_alarm: Vec<u8>,
}

/// What the emulator has seen (for tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmuCounts {
    pub ping: u64,
    pub read: u64,
    pub write: u64,
    pub sync_read: u64,
    pub sync_write: u64,
    pub other: u64,
    pub dropped: u64,
    pub corrupted: u64,
    pub late: u64,
}

/// A bus of servos.
#[derive(Debug, Clone)]
pub struct Emulator {
    pub servos: Vec<Servo>,
    pub faults: Faults,
    pub counts: EmuCounts,
    pub baud: u32,
    transactions: u64,
}

/// Replies of one request, and when to send them.
pub struct Reply {
    pub bytes: Vec<u8>,
    pub delay: Duration,
}

impl Emulator {
    /// Servos with ids 1..=n at the given shaft angles (ticks).
    pub fn new(actual: &[f64]) -> Emulator {
        Emulator {
            servos: actual
                .iter()
                .enumerate()
                .map(|(i, a)| Servo::new(i as u8 + 1, *a))
                .collect(),
            faults: Faults::default(),
            counts: EmuCounts::default(),
            baud: 1_000_000,
            transactions: 0,
        }
    }

    pub fn servo(&self, id: u8) -> Option<&Servo> {
        self.servos.iter().find(|s| s.id() == id)
    }

    pub fn servo_mut(&mut self, id: u8) -> Option<&mut Servo> {
        self.servos.iter_mut().find(|s| s.id() == id)
    }

    pub fn step(&mut self, dt: f64) {
        for s in &mut self.servos {
            s.step(dt);
        }
    }

    fn present(&self, id: u8) -> bool {
        self.servo(id).is_some() && !self.faults.missing.contains(&id)
    }

    fn wire(&self, bytes: usize) -> Duration {
        Duration::from_nanos(bytes as u64 * 10 * 1_000_000_000 / u64::from(self.baud.max(1)))
    }

    fn status_of(&self, id: u8, data: &[u8], out: &mut Vec<u8>) {
        let mut b = [0u8; MAX_PACKET];
        let extra = if self.faults.voltage_alarm.contains(&id) {
            Alarms::VOLTAGE
        } else {
            0
        };
        let err = self.servo(id).map_or(0, |s| s.alarms(extra));
        if let Ok(n) = protocol::status(&mut b, id, err, data) {
            out.extend_from_slice(&b[..n]);
        }
    }

    fn read_regs(&self, id: u8, addr: usize, len: usize) -> Vec<u8> {
        self.servo(id).map_or_else(Vec::new, |s| {
            s.regs[addr.min(256)..(addr + len).min(256)].to_vec()
        })
    }

    /// Answer one request (None: no reply).
    pub fn handle(&mut self, req: &protocol::Request<'_>, req_len: usize) -> Option<Reply> {
        let mut out = Vec::new();
        let p = req.params;
        let mut last_start = 0;
        match req.instruction {
            x if x == Instruction::Ping as u8 => {
                self.counts.ping += 1;
                let ids: Vec<u8> = if req.id == BROADCAST {
                    self.servos.iter().map(Servo::id).collect()
                } else {
                    vec![req.id]
                };
                for id in ids.into_iter().filter(|i| self.present(*i)) {
                    last_start = out.len();
                    self.status_of(id, &[], &mut out);
                }
            }
            x if x == Instruction::Read as u8 && p.len() == 2 => {
                self.counts.read += 1;
                if req.id != BROADCAST && self.present(req.id) {
                    let data = self.read_regs(req.id, p[0] as usize, p[1] as usize);
                    self.status_of(req.id, &data, &mut out);
                }
            }
            x if x == Instruction::Write as u8 && !p.is_empty() => {
                self.counts.write += 1;
                let id = req.id;
                let ids: Vec<u8> = if id == BROADCAST {
                    self.servos.iter().map(Servo::id).collect()
                } else {
                    vec![id]
                };
                for i in &ids {
                    if self.present(*i) {
                        if let Some(s) = self.servo_mut(*i) {
                            s.write(p[0] as usize, &p[1..]);
                        }
                    }
                }
                let level = self
                    .servo(id)
                    .map_or(0, |s| s.get(table::RESPONSE_STATUS_LEVEL));
                if id != BROADCAST && self.present(id) && level >= 1 {
                    self.status_of(id, &[], &mut out);
                }
            }
            x if x == Instruction::SyncRead as u8 && p.len() >= 2 => {
                self.counts.sync_read += 1;
                let (addr, len) = (p[0] as usize, p[1] as usize);
                for id in &p[2..] {
                    if self.present(*id) {
                        last_start = out.len();
                        let data = self.read_regs(*id, addr, len);
                        self.status_of(*id, &data, &mut out);
                    }
                }
            }
            x if x == Instruction::SyncWrite as u8 && p.len() >= 2 => {
                self.counts.sync_write += 1;
                let (addr, len) = (p[0] as usize, p[1] as usize);
                for chunk in p[2..].chunks_exact(len + 1) {
                    if self.present(chunk[0]) {
                        if let Some(s) = self.servo_mut(chunk[0]) {
                            s.write(addr, &chunk[1..]);
                        }
                    }
                }
                return None;
            }
            _ => {
                self.counts.other += 1;
                return None;
            }
        }
        if out.is_empty() {
            return None;
        }
        self.transactions += 1;
        let k = self.transactions;
        let hit = |every: Option<u64>| every.is_some_and(|n| n > 0 && k % n == 0);
        if hit(self.faults.drop_every) {
            self.counts.dropped += 1;
            out.truncate(last_start);
            if out.is_empty() {
                return None;
            }
        } else if hit(self.faults.corrupt_every) {
            self.counts.corrupted += 1;
            if let Some(b) = out.last_mut() {
                *b ^= 0x5A;
            }
        }
        let rd = self
            .servos
            .first()
            .map_or(0, |s| s.get(table::RETURN_DELAY_TIME)) as u64;
        let mut delay = self.wire(req_len + out.len()) + Duration::from_micros(2 * rd);
        if hit(self.faults.late_every) {
            self.counts.late += 1;
            delay += self.faults.late_by;
        }
        Some(Reply { bytes: out, delay })
    }
}

/// The emulator on the master side of a pseudo-terminal, in a thread.
pub struct PtyEmulator {
    pub emu: Arc<Mutex<Emulator>>,
    /// The slave's path: open it as the serial port.
    pub path: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Kept open so the pty stays up while no client is connected.
    _slave: serialport::TTYPort,
}

impl PtyEmulator {
    /// Start serving `emu` on a new pty; physics steps every `dt` (None: only
    /// on requests, for deterministic tests).
    pub fn start(emu: Emulator, dt: Option<Duration>) -> std::io::Result<PtyEmulator> {
        let (mut master, slave) = serialport::TTYPort::pair().map_err(std::io::Error::other)?;
        let path = slave.name().unwrap_or_default();
        let emu = Arc::new(Mutex::new(emu));
        let stop = Arc::new(AtomicBool::new(false));
        let (e2, s2) = (emu.clone(), stop.clone());
        use serialport::SerialPort;
        master
            .set_timeout(Duration::from_millis(2))
            .map_err(std::io::Error::other)?;
        let thread = std::thread::Builder::new()
            .name("feetech-emulator".into())
            .spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut fill = 0;
                let mut last = std::time::Instant::now();
                while !s2.load(Ordering::Relaxed) {
                    match master.read(&mut buf[fill..]) {
                        Ok(n) => fill += n,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                    if let Some(dt) = dt {
                        let el = last.elapsed();
                        if el >= dt {
                            last = std::time::Instant::now();
                            if let Ok(mut e) = e2.lock() {
                                e.step(el.as_secs_f64());
                            }
                        }
                    }
                    loop {
                        let (req, used) = protocol::scan_request(&buf[..fill]);
                        let reply = req.and_then(|r| {
                            let len = r.params.len() + 6;
                            e2.lock().ok().and_then(|mut e| e.handle(&r, len))
                        });
                        buf.copy_within(used..fill, 0);
                        fill -= used;
                        match reply {
                            Some(r) => {
                                std::thread::sleep(r.delay);
                                let _ = master.write_all(&r.bytes);
                                let _ = master.flush();
                            }
                            None if used == 0 => break,
                            None => {}
                        }
                    }
                    if fill == buf.len() {
                        fill = 0;
                    }
                }
            })?;
        Ok(PtyEmulator {
            emu,
            path,
            stop,
            thread: Some(thread),
            _slave: slave,
        })
    }
}

impl Drop for PtyEmulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
