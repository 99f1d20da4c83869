//! TensorBoard event files written by hand (no TensorFlow, no protobuf crate).
//!
//! A file is a sequence of TFRecords:
//! `u64 len (LE) | u32 masked_crc32c(len bytes) | data | u32 masked_crc32c(data)`,
//! mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (wrapping). Each record's data
//! is a serialized `tensorflow.Event` protobuf:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```
//!
//! The first record carries `file_version = "brain.Event:2"`, as TensorFlow
//! writes it. Each scalar is one Event with one Value (what `tf.summary` and
//! `torch.utils.tensorboard` write), which `tensorboard`'s EventAccumulator and
//! `tbparse` both read. Tags are arbitrary UTF-8 (`gate/mean_activation` keeps
//! its `/`: TensorBoard groups by the prefix).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Writer of one `events.out.tfevents.<unix_ts>.<hostname>` file.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Create `dir` if needed and a new event file in it, and write the
    /// file_version record. If a file of that name already exists (two writers in
    /// the same second) a `.1`, `.2`, ... suffix is added; TensorBoard reads any
    /// file whose name contains `tfevents`.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = format!("events.out.tfevents.{ts}.{}", hostname());
        let mut n = 0u32;
        let (file, path) = loop {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let p = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&p) {
                Ok(f) => break (f, p),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
                Err(e) => return Err(e),
            }
        };
        let mut w = Self {
            path,
            out: BufWriter::new(file),
        };
        let data = encode_event(unix_now(), 0, EventBody::FileVersion("brain.Event:2"));
        w.write_record(&data)?;
        w.flush()?;
        Ok(w)
    }

    /// Path of the event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one scalar summary. `wall_time` is unix seconds.
    pub fn add_scalar(
        &mut self,
        tag: &str,
        value: f32,
        step: u64,
        wall_time: f64,
    ) -> io::Result<()> {
        let data = encode_event(wall_time, step as i64, EventBody::Scalar(tag, value));
        self.write_record(&data)
    }

    /// Push buffered records to the OS.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn write_record(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc32c(data).to_le_bytes())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// Current unix time in seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Host name for the file name, restricted to `[A-Za-z0-9._-]`.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

// ---------------------------------------------------------------- CRC32C

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32C_TABLE: [u32; 256] = crc32c_table();

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8) // ((c >> 15) | (c << 17)) + 0xa282ead8
}

// ---------------------------------------------------------------- protobuf

enum EventBody<'a> {
    FileVersion(&'a str),
    Scalar(&'a str, f32),
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(buf, u64::from((field << 3) | wire_type));
}

fn put_len_delimited(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    put_key(buf, field, 2);
    put_varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

fn encode_event(wall_time: f64, step: i64, body: EventBody<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    put_key(&mut buf, 1, 1); // wall_time: fixed64 double
    buf.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        put_key(&mut buf, 2, 0); // step: varint int64 (proto3 omits the default 0)
        put_varint(&mut buf, step as u64);
    }
    match body {
        EventBody::FileVersion(v) => put_len_delimited(&mut buf, 3, v.as_bytes()),
        EventBody::Scalar(tag, value) => {
            let mut val = Vec::with_capacity(tag.len() + 8);
            put_len_delimited(&mut val, 1, tag.as_bytes()); // Value.tag
            put_key(&mut val, 2, 5); // Value.simple_value: fixed32 float
            val.extend_from_slice(&value.to_le_bytes());
            let mut summary = Vec::with_capacity(val.len() + 4);
            put_len_delimited(&mut summary, 1, &val); // Summary.value
            put_len_delimited(&mut buf, 5, &summary); // Event.summary
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_test_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA); // RFC 3720 B.4
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn varint_encoding() {
        let mut b = Vec::new();
        put_varint(&mut b, 300);
        assert_eq!(b, [0xAC, 0x02]);
        b.clear();
        put_varint(&mut b, 1);
        assert_eq!(b, [1]);
    }

    #[test]
    fn framing_is_self_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::new(dir.path()).unwrap();
        w.add_scalar("a/b", 1.5, 7, 100.0).unwrap();
        w.flush().unwrap();
        let name = w.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let bytes = std::fs::read(w.path()).unwrap();
        let mut off = 0;
        let mut n = 0;
        while off < bytes.len() {
            let len = u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap()) as usize;
            let lcrc = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap());
            assert_eq!(lcrc, masked_crc32c(&bytes[off..off + 8]));
            let data = &bytes[off + 12..off + 12 + len];
            let dcrc =
                u32::from_le_bytes(bytes[off + 12 + len..off + 16 + len].try_into().unwrap());
            assert_eq!(dcrc, masked_crc32c(data));
            off += 16 + len;
            n += 1;
        }
        assert_eq!(off, bytes.len());
        assert_eq!(n, 2);
        // a second writer in the same second gets a distinct file
        let w2 = EventWriter::new(dir.path()).unwrap();
        assert_ne!(w2.path(), w.path());
    }

    /// Python interpreter with tbparse + tensorboard: $MANIFLOW_PYTHON, else the
    /// workspace's `.venv` (found from the crate dir upwards).
    pub(crate) fn find_python() -> Option<PathBuf> {
        if let Ok(p) = std::env::var("MANIFLOW_PYTHON") {
            return Some(PathBuf::from(p));
        }
        let mut dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        while let Some(d) = dir {
            let p = d.join(".venv/bin/python");
            if p.exists() {
                return Some(p);
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        None
    }

    const READ_PY: &str = r#"
import sys, json
from tbparse import SummaryReader
from tensorboard.backend.event_processing import event_accumulator as ea
d = sys.argv[1]
df = SummaryReader(d).scalars
out = {"tbparse": [[r.tag, int(r.step), repr(float(r.value))] for r in df.itertuples()]}
acc = ea.EventAccumulator(d, size_guidance={ea.SCALARS: 0})
acc.Reload()
out["acc"] = [[t, int(e.step), repr(float(e.value))] for t in acc.Tags()["scalars"] for e in acc.Scalars(t)]
print(json.dumps(out))
"#;

    fn parse_py_float(s: &str) -> f64 {
        match s {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            _ => s.parse().unwrap(),
        }
    }

    fn same(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
    }

    #[test]
    fn tensorboard_and_tbparse_read_our_files() {
        let py = find_python().expect("no python with tbparse: run `make bootstrap` or set MANIFLOW_PYTHON");
        let dir = tempfile::tempdir().unwrap();
        let tags = [
            "train_loss",
            "gate/mean_activation",
            "attn/modality_rgb",
            "lr",
            "v/π weird tag",
        ];
        let mut expected: Vec<(String, u64, f32)> = Vec::new();
        {
            let mut w = EventWriter::new(dir.path()).unwrap();
            for step in [0u64, 1, 2, 10, 500, 123_456_789_012] {
                for (i, tag) in tags.iter().enumerate() {
                    let v = match (step, i) {
                        (2, 0) => f32::NAN,
                        (10, 0) => f32::INFINITY,
                        (10, 1) => f32::NEG_INFINITY,
                        _ => 0.1f32 * (i as f32 + 1.0) + 1e-7 * step as f32 - 3.3e-5,
                    };
                    w.add_scalar(tag, v, step, 1.7e9 + step as f64).unwrap();
                    expected.push((tag.to_string(), step, v));
                }
            }
        }
        let out = std::process::Command::new(&py)
            .arg("-c")
            .arg(READ_PY)
            .arg(dir.path())
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for reader in ["tbparse", "acc"] {
            let mut got: Vec<(String, u64, f64)> = v[reader]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r[0].as_str().unwrap().to_string(),
                        r[1].as_u64().unwrap(),
                        parse_py_float(r[2].as_str().unwrap()),
                    )
                })
                .collect();
            got.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            assert_eq!(got.len(), expected.len(), "{reader}: {got:?}");
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g.0, e.0, "{reader}");
                assert_eq!(g.1, e.1, "{reader} {}", e.0);
                assert!(
                    same(g.2, e.2 as f64),
                    "{reader} {} step {}: {} vs {}",
                    e.0,
                    e.1,
                    g.2,
                    e.2
                );
            }
        }
    }
}
