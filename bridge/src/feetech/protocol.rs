//! Feetech SCS/STS protocol 0 framing, as `scservo_sdk` (and so LeRobot)
//! speaks it: `FF FF ID LEN INSTR PARAMS.. CHK`, LEN = params + 2, CHK =
//! `!(ID + LEN + INSTR + params) & 0xFF`, little-endian words. Encoding writes
//! into a caller's fixed buffer; decoding scans a byte buffer for status
//! packets and resynchronises on `FF FF` after garbage. Nothing allocates.

/// Largest packet the SDK accepts.
pub const MAX_PACKET: usize = 250;
/// Broadcast id (PING, SYNC_READ, SYNC_WRITE).
pub const BROADCAST: u8 = 0xFE;

/// The instructions LeRobot uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Instruction {
    Ping = 0x01,
    Read = 0x02,
    Write = 0x03,
    SyncRead = 0x82,
    SyncWrite = 0x83,
}

/// Encoding a packet that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("packet of {0} bytes exceeds the protocol's {MAX_PACKET}")]
    TooLong(usize),
    #[error("{0} ids with {1} bytes each do not fit one packet")]
    TooManyIds(usize, usize),
}

fn checksum(body: &[u8]) -> u8 {
    !body.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// Write `FF FF id len instr params chk` into `out`; the packet's length.
fn frame(
    out: &mut [u8; MAX_PACKET],
    id: u8,
    instr: u8,
    params: &[&[u8]],
) -> Result<usize, EncodeError> {
    let n: usize = params.iter().map(|p| p.len()).sum();
    let total = n + 6;
    if total > MAX_PACKET {
        return Err(EncodeError::TooLong(total));
    }
    out[0] = 0xFF;
    out[1] = 0xFF;
    out[2] = id;
    out[3] = (n + 2) as u8;
    out[4] = instr;
    let mut i = 5;
    for p in params {
        out[i..i + p.len()].copy_from_slice(p);
        i += p.len();
    }
    out[i] = checksum(&out[2..i]);
    Ok(total)
}

pub fn ping(out: &mut [u8; MAX_PACKET], id: u8) -> usize {
    // Cannot fail: 6 bytes.
    frame(out, id, Instruction::Ping as u8, &[]).unwrap_or(0)
}

pub fn read(out: &mut [u8; MAX_PACKET], id: u8, addr: u8, len: u8) -> usize {
    frame(out, id, Instruction::Read as u8, &[&[addr, len]]).unwrap_or(0)
}

pub fn write(
    out: &mut [u8; MAX_PACKET],
    id: u8,
    addr: u8,
    data: &[u8],
) -> Result<usize, EncodeError> {
    frame(out, id, Instruction::Write as u8, &[&[addr], data])
}

pub fn sync_read(
    out: &mut [u8; MAX_PACKET],
    addr: u8,
    len: u8,
    ids: &[u8],
) -> Result<usize, EncodeError> {
    if ids.len() + 8 > MAX_PACKET {
        return Err(EncodeError::TooManyIds(ids.len(), len as usize));
    }
    frame(
        out,
        BROADCAST,
        Instruction::SyncRead as u8,
        &[&[addr, len], ids],
    )
}

/// SYNC_WRITE of `len` bytes at `addr`: `data` holds `len` bytes per id, in `ids` order.
pub fn sync_write(
    out: &mut [u8; MAX_PACKET],
    addr: u8,
    len: u8,
    ids: &[u8],
    data: &[u8],
) -> Result<usize, EncodeError> {
    let l = len as usize;
    let total = 8 + ids.len() * (l + 1);
    if data.len() != ids.len() * l || total > MAX_PACKET {
        return Err(EncodeError::TooManyIds(ids.len(), l));
    }
    out[0] = 0xFF;
    out[1] = 0xFF;
    out[2] = BROADCAST;
    out[3] = (total - 4) as u8;
    out[4] = Instruction::SyncWrite as u8;
    out[5] = addr;
    out[6] = len;
    let mut i = 7;
    for (k, id) in ids.iter().enumerate() {
        out[i] = *id;
        out[i + 1..i + 1 + l].copy_from_slice(&data[k * l..(k + 1) * l]);
        i += 1 + l;
    }
    out[i] = checksum(&out[2..i]);
    Ok(total)
}

/// The alarm bits of a status packet's error byte (and of the Status register).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Alarms(pub u8);

impl Alarms {
    pub const VOLTAGE: u8 = 1;
    pub const ANGLE_SENSOR: u8 = 2;
    pub const OVERHEAT: u8 = 4;
    pub const OVERCURRENT: u8 = 8;
    pub const OVERLOAD: u8 = 32;
    /// (bit, name) of every alarm, in bit order.
    pub const NAMES: [(u8, &'static str); 5] = [
        (Self::VOLTAGE, "input voltage"),
        (Self::ANGLE_SENSOR, "angle sensor"),
        (Self::OVERHEAT, "overheat"),
        (Self::OVERCURRENT, "over-current"),
        (Self::OVERLOAD, "overload"),
    ];

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// Names of the alarms set (unknown bits as "bit N").
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        const UNKNOWN: [&str; 8] = [
            "bit 0", "bit 1", "bit 2", "bit 3", "bit 4", "bit 5", "bit 6", "bit 7",
        ];
        (0..8u8).filter(move |b| self.0 & (1 << b) != 0).map(|b| {
            Self::NAMES
                .iter()
                .find(|(bit, _)| *bit == 1 << b)
                .map_or(UNKNOWN[b as usize], |(_, n)| *n)
        })
    }
}

impl std::fmt::Display for Alarms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return write!(f, "none");
        }
        for (i, n) in self.names().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// A status packet found in a byte buffer (borrowing its data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status<'a> {
    pub id: u8,
    pub alarms: Alarms,
    pub data: &'a [u8],
}

/// What the scanner found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan<'a> {
    /// A valid packet; `consumed` bytes (garbage before it included) are done.
    Packet { status: Status<'a>, consumed: usize },
    /// A packet-shaped frame with a bad checksum from `id`; `consumed` bytes
    /// (up to and including its header) can be dropped to resynchronise.
    Corrupt { id: u8, consumed: usize },
    /// No complete packet yet; `garbage` leading bytes can never start one.
    Incomplete { garbage: usize },
}

/// Scan `buf` for the first status packet, as `scservo_sdk`'s `rxPacket`
/// does (header `FF FF`, id <= 0xFD, LEN <= 250, error <= 0x7F, checksum), but
/// resynchronising past a corrupt frame instead of giving up.
pub fn scan(buf: &[u8]) -> Scan<'_> {
    let mut i = 0;
    loop {
        // Next header candidate.
        let Some(off) = buf[i..].windows(2).position(|w| w == [0xFF, 0xFF]) else {
            // Keep a trailing 0xFF: it may be the first byte of a header.
            let keep = usize::from(buf.last() == Some(&0xFF));
            return Scan::Incomplete {
                garbage: buf.len() - keep,
            };
        };
        let h = i + off;
        if buf.len() < h + 5 {
            return Scan::Incomplete { garbage: h };
        }
        let (id, len, err) = (buf[h + 2], buf[h + 3] as usize, buf[h + 4]);
        if id > 0xFD || len < 2 || len > MAX_PACKET - 4 || err > 0x7F {
            // Not a status header (an FF in data, or FF FF FF): slide one byte.
            i = h + 1;
            continue;
        }
        let total = len + 4;
        if buf.len() < h + total {
            return Scan::Incomplete { garbage: h };
        }
        let chk = buf[h + total - 1];
        if checksum(&buf[h + 2..h + total - 1]) != chk {
            return Scan::Corrupt {
                id,
                consumed: h + 2,
            };
        }
        return Scan::Packet {
            status: Status {
                id,
                alarms: Alarms(err),
                data: &buf[h + 5..h + total - 1],
            },
            consumed: h + total,
        };
    }
}

/// A status packet into `out` (the emulator's side); its length.
pub fn status(
    out: &mut [u8; MAX_PACKET],
    id: u8,
    error: u8,
    data: &[u8],
) -> Result<usize, EncodeError> {
    frame(out, id, error, &[data])
}

/// An instruction packet found in a byte buffer (the emulator's side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub id: u8,
    pub instruction: u8,
    pub params: &'a [u8],
}

/// Scan `buf` for the first instruction packet: like [`scan`], with the
/// instruction byte in place of the error byte (any value).
pub fn scan_request(buf: &[u8]) -> (Option<Request<'_>>, usize) {
    let mut i = 0;
    loop {
        let Some(off) = buf[i..].windows(2).position(|w| w == [0xFF, 0xFF]) else {
            let keep = usize::from(buf.last() == Some(&0xFF));
            return (None, buf.len() - keep);
        };
        let h = i + off;
        if buf.len() < h + 5 {
            return (None, h);
        }
        let (id, len) = (buf[h + 2], buf[h + 3] as usize);
        if id == 0xFF || len < 2 || len > MAX_PACKET - 4 {
            i = h + 1;
            continue;
        }
        let total = len + 4;
        if buf.len() < h + total {
            return (None, h);
        }
        if checksum(&buf[h + 2..h + total - 1]) != buf[h + total - 1] {
            i = h + 2;
            continue;
        }
        return (
            Some(Request {
                id,
                instruction: buf[h + 4],
                params: &buf[h + 5..h + total - 1],
            }),
            h + total,
        );
    }
}

/// LeRobot's sign-magnitude encoding with the sign at bit `bit`
/// (`encoding_utils.py`): None when |v| does not fit below the sign bit.
pub fn encode_sign_magnitude(v: i32, bit: u8) -> Option<u32> {
    let max = (1u32 << bit) - 1;
    let m = v.unsigned_abs();
    (m <= max).then_some(if v < 0 { (1 << bit) | m } else { m })
}

pub fn decode_sign_magnitude(x: u32, bit: u8) -> i32 {
    let m = (x & ((1 << bit) - 1)) as i32;
    if x & (1 << bit) != 0 {
        -m
    } else {
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:02X}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The example packets of FEETECH.md 1.1.
    #[test]
    fn packets_match_the_documented_bytes() {
        let mut b = [0u8; MAX_PACKET];
        let n = ping(&mut b, 1);
        assert_eq!(hex(&b[..n]), "FF FF 01 02 01 FB");
        let n = read(&mut b, 1, 56, 2);
        assert_eq!(hex(&b[..n]), "FF FF 01 04 02 38 02 BE");
        let n = sync_read(&mut b, 56, 2, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(hex(&b[..n]), "FF FF FE 0A 82 38 02 01 02 03 04 05 06 26");
        let data: Vec<u8> = (0..6).flat_map(|_| [0x00, 0x08]).collect();
        let n = sync_write(&mut b, 42, 2, &[1, 2, 3, 4, 5, 6], &data).unwrap();
        let s = hex(&b[..n]);
        assert!(
            s.starts_with("FF FF FE 16 83 2A 02 01 00 08 02 00 08") && s.ends_with("06 00 08 F7"),
            "{s}"
        );
        let n = status(&mut b, 1, 0, &[0x00, 0x08]).unwrap();
        assert_eq!(hex(&b[..n]), "FF FF 01 04 00 00 08 F2");
        let n = status(&mut b, 1, 0, &[]).unwrap();
        assert_eq!(hex(&b[..n]), "FF FF 01 02 00 FC");
    }

    #[test]
    fn scan_resynchronises_after_garbage_and_corruption() {
        let mut b = [0u8; MAX_PACKET];
        let n = status(&mut b, 3, Alarms::OVERLOAD, &[0x34, 0x12]).unwrap();
        let good = b[..n].to_vec();
        // Garbage (including lone FFs and an FF FF with an impossible id) first.
        let mut buf = vec![0x00, 0xFF, 0x13, 0xFF, 0xFF, 0xFF, 0x77];
        buf.extend_from_slice(&good);
        match scan(&buf) {
            Scan::Packet { status, consumed } => {
                assert_eq!((status.id, status.data), (3, &[0x34, 0x12][..]));
                assert!(status.alarms.has(Alarms::OVERLOAD));
                assert_eq!(status.alarms.to_string(), "overload");
                assert_eq!(consumed, buf.len());
            }
            other => panic!("{other:?}"),
        }
        // A corrupt frame, then a good one: the corrupt one is reported and skipped.
        let mut bad = good.clone();
        bad[5] ^= 0x40;
        let mut buf = bad.clone();
        buf.extend_from_slice(&good);
        let Scan::Corrupt { id: 3, consumed } = scan(&buf) else {
            panic!("{:?}", scan(&buf))
        };
        assert!(matches!(scan(&buf[consumed..]), Scan::Packet { .. }));
        // Partial packets wait for more bytes; pure garbage is dropped.
        assert_eq!(scan(&good[..4]), Scan::Incomplete { garbage: 0 });
        assert_eq!(scan(&[1, 2, 3, 0xFF]), Scan::Incomplete { garbage: 3 });
        // Any byte string: never a panic.
        let mut x: u32 = 1;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32) & 0xFF) as u8 | if i % 3 == 0 { 0xFF } else { 0 })
                .collect();
            let _ = scan(&bytes);
            let _ = scan_request(&bytes);
        }
    }

    #[test]
    fn requests_round_trip_and_sign_magnitude_matches_lerobot() {
        let mut b = [0u8; MAX_PACKET];
        let n = write(&mut b, 4, 40, &[1]).unwrap();
        let (r, used) = scan_request(&b[..n]);
        assert_eq!(used, n);
        assert_eq!(
            r,
            Some(Request {
                id: 4,
                instruction: 3,
                params: &[40, 1][..]
            })
        );
        assert_eq!(encode_sign_magnitude(-596, 11), Some(0x800 | 596));
        assert_eq!(decode_sign_magnitude(0x800 | 596, 11), -596);
        assert_eq!(encode_sign_magnitude(2047, 11), Some(2047));
        assert_eq!(encode_sign_magnitude(-2048, 11), None);
        assert_eq!(decode_sign_magnitude(0x8000 | 5, 15), -5);
        assert_eq!(
            Alarms(1 | 4 | 64).to_string(),
            "input voltage, overheat, bit 6"
        );
    }
}
