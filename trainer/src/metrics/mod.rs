//! Training metrics: JSONL + TensorBoard + console, with names exactly as in
//! `shared/design/METRICS.md`.
//!
//! Files in a run directory:
//! - `metrics.jsonl`: one JSON object per [`MetricsLogger::log`] call:
//!   `{"step":S,"epoch":E,"wall_time":T,"<name>":value,...}` (wall_time in unix
//!   seconds). JSON has no NaN/Inf, so non-finite values are written as the
//!   strings `"NaN"`, `"Infinity"`, `"-Infinity"`; [`read_jsonl`] reads them back
//!   as f64 (as do `pandas.read_json(lines=True)`-style readers after a replace).
//!   Several calls may share a step (e.g. train scalars, then `val_loss`);
//!   [`merge_by_step`] folds them.
//! - `events.jsonl`: `{"step":S,"wall_time":T,"event":"..."}` per
//!   [`MetricsLogger::event`] (spike / non-finite warnings).
//! - `tb/events.out.tfevents.*`: the same scalars for TensorBoard / tbparse.
//!
//! Resume: both JSONL files are opened in append mode. A last line left partial
//! by a crash is cut off when the file is reopened (so the next record starts on
//! its own line), and [`read_jsonl`] ignores a malformed *last* line.

pub mod stats;
pub mod tfevents;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use tfevents::{unix_now, EventWriter};

/// Keys every metrics.jsonl object carries besides the scalars.
pub const RESERVED_KEYS: [&str; 3] = ["step", "epoch", "wall_time"];

/// Numbers shown on the progress line, in this order, when logged.
const KEY_NUMBERS: [(&str, &str); 9] = [
    ("train_loss", "loss"),
    ("loss_flow", "flow"),
    ("loss_ct", "ct"),
    ("batch/loss_total", "loss"),
    ("batch/loss_static", "static"),
    ("batch/loss_dynamic", "dynamic"),
    ("grad_norm", "gn"),
    ("lr", "lr"),
    ("batch/lr", "lr"),
];

/// Options of [`MetricsLogger`].
#[derive(Debug, Clone)]
pub struct LoggerOptions {
    /// No progress bar; print a compact line every `print_every` steps instead.
    /// The bar is also off when stdout is not a terminal.
    pub quiet: bool,
    /// Step interval of the compact line in quiet mode.
    pub print_every: u64,
    /// Also write TensorBoard event files under `run_dir/tb/`.
    pub tensorboard: bool,
    /// First step of this process (resume): the bar starts there and steps/s and
    /// ETA count from it.
    pub start_step: u64,
}

impl Default for LoggerOptions {
    fn default() -> Self {
        Self {
            quiet: false,
            print_every: 100,
            tensorboard: true,
            start_step: 0,
        }
    }
}

/// Writes metrics to `metrics.jsonl`, TensorBoard and the console.
pub struct MetricsLogger {
    run_dir: PathBuf,
    jsonl: BufWriter<File>,
    events: Option<BufWriter<File>>,
    tb: Option<EventWriter>,
    bar: Option<ProgressBar>,
    total_steps: u64,
    opts: LoggerOptions,
    latest: BTreeMap<&'static str, f64>,
    last_step: u64,
    last_print: Option<(Instant, u64)>,
    last_tb_flush: Instant,
    io_errors: u64,
}

impl MetricsLogger {
    pub fn new(run_dir: impl AsRef<Path>, total_steps: u64, opts: LoggerOptions) -> Result<Self> {
        let run_dir = run_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating run directory {}", run_dir.display()))?;
        let jsonl = open_append_repaired(&run_dir.join("metrics.jsonl"))?;
        let tb = if opts.tensorboard {
            let dir = run_dir.join("tb");
            Some(
                EventWriter::new(&dir)
                    .with_context(|| format!("creating event file in {}", dir.display()))?,
            )
        } else {
            None
        };
        let bar = if !opts.quiet && std::io::stdout().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {rate} ETA {eta} {msg}",
                )
                .expect("valid template")
                .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.2} it/s", s.per_sec());
                })
                .progress_chars("=> "),
            );
            bar.set_position(opts.start_step.min(total_steps));
            bar.reset_eta();
            Some(bar)
        } else {
            None
        };
        Ok(Self {
            run_dir,
            jsonl: BufWriter::new(jsonl),
            events: None,
            tb,
            bar,
            total_steps,
            last_step: opts.start_step,
            opts,
            latest: BTreeMap::new(),
            last_print: None,
            last_tb_flush: Instant::now(),
            io_errors: 0,
        })
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Log scalars at `step`: one JSONL line (flushed at once), TensorBoard
    /// scalars (tag = name; the `epoch` argument also goes to TensorBoard as tag
    /// `epoch` unless `scalars` has one), and the console line. Names equal to
    /// `step`/`epoch`/`wall_time` are not repeated in the JSON object.
    ///
    /// Never fails: a write error (disk full, ...) must not stop training; it is
    /// printed (the first of each kind) and counted in [`Self::io_errors`].
    pub fn log(&mut self, step: u64, epoch: u64, scalars: &[(&str, f64)]) {
        let wall_time = unix_now();
        let mut line = format!(
            "{{\"step\":{step},\"epoch\":{epoch},\"wall_time\":{}",
            json_number(wall_time)
        );
        for (name, v) in scalars {
            if RESERVED_KEYS.contains(name) {
                continue;
            }
            line.push(',');
            line.push_str(&serde_json::to_string(name).expect("a str serialises"));
            line.push(':');
            line.push_str(&json_number(*v));
        }
        line.push_str("}\n");
        let r = self
            .jsonl
            .write_all(line.as_bytes())
            .and_then(|_| self.jsonl.flush());
        self.io_result("metrics.jsonl", r);

        if let Some(tb) = &mut self.tb {
            let mut r = scalars
                .iter()
                .try_for_each(|(name, v)| tb.add_scalar(name, *v as f32, step, wall_time));
            if r.is_ok() && !scalars.iter().any(|(n, _)| *n == "epoch") {
                r = tb.add_scalar("epoch", epoch as f32, step, wall_time);
            }
            if r.is_ok() && self.last_tb_flush.elapsed() > Duration::from_secs(2) {
                r = tb.flush();
                self.last_tb_flush = Instant::now();
            }
            self.io_result("tensorboard event file", r);
        }

        for (name, v) in scalars {
            if let Some((k, _)) = KEY_NUMBERS.iter().find(|(k, _)| k == name) {
                self.latest.insert(*k, *v);
            }
        }
        self.last_step = step;
        let summary = self.key_numbers();
        if let Some(bar) = &self.bar {
            bar.set_position(step.min(self.total_steps));
            bar.set_message(summary);
        } else {
            let due = match self.last_print {
                None => true,
                Some((_, s)) => {
                    step >= s + self.opts.print_every.max(1) || step + 1 >= self.total_steps
                }
            };
            if due && self.last_print.map(|(_, s)| s) != Some(step) {
                let now = Instant::now();
                let rate = self.last_print.and_then(|(t, s)| {
                    let dt = now.duration_since(t).as_secs_f64();
                    (dt > 0.0 && step > s).then(|| (step - s) as f64 / dt)
                });
                let pct = if self.total_steps > 0 {
                    100.0 * step as f64 / self.total_steps as f64
                } else {
                    0.0
                };
                let mut msg = format!("step {step}/{} ({pct:.1}%)", self.total_steps);
                if let Some(r) = rate {
                    let eta = self.total_steps.saturating_sub(step) as f64 / r;
                    msg.push_str(&format!(" | {r:.2} it/s | ETA {}", fmt_duration(eta)));
                }
                if !summary.is_empty() {
                    msg.push_str(" | ");
                    msg.push_str(&summary);
                }
                println!("{msg}");
                self.last_print = Some((now, step));
            }
        }
    }

    /// Print `msg` above the bar (or as a line) and append
    /// `{"step":S,"wall_time":T,"event":msg}` to `events.jsonl` (flushed at once).
    /// Health reports list events starting with `spike` or `nonfinite`.
    /// Never fails (see [`Self::log`]).
    pub fn event(&mut self, step: u64, msg: impl AsRef<str>) {
        let msg = msg.as_ref();
        let line = format!("[step {step}] {msg}");
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
        if self.events.is_none() {
            match open_append_repaired(&self.run_dir.join("events.jsonl")) {
                Ok(f) => self.events = Some(BufWriter::new(f)),
                Err(e) => {
                    self.io_result("events.jsonl", Err(std::io::Error::other(format!("{e:#}"))));
                    return;
                }
            }
        }
        let w = self.events.as_mut().expect("opened above");
        let rec = format!(
            "{{\"step\":{step},\"wall_time\":{},\"event\":{}}}\n",
            json_number(unix_now()),
            serde_json::to_string(msg).expect("a str serialises")
        );
        let r = w.write_all(rec.as_bytes()).and_then(|_| w.flush());
        self.io_result("events.jsonl", r);
    }

    /// Flush JSONL and TensorBoard files (errors as in [`Self::log`]).
    pub fn flush(&mut self) {
        let r = self.jsonl.flush();
        self.io_result("metrics.jsonl", r);
        if let Some(e) = &mut self.events {
            let r = e.flush();
            self.io_result("events.jsonl", r);
        }
        if let Some(tb) = &mut self.tb {
            let r = tb.flush();
            self.io_result("tensorboard event file", r);
        }
    }

    /// Number of failed writes so far (each kind is printed the first time).
    pub fn io_errors(&self) -> u64 {
        self.io_errors
    }

    fn io_result(&mut self, what: &str, r: std::io::Result<()>) {
        if let Err(e) = r {
            self.io_errors += 1;
            if self.io_errors == 1 || self.io_errors.is_multiple_of(1000) {
                let msg = format!(
                    "warning: writing {what} in {} failed: {e} ({} write error(s) so far; training continues)",
                    self.run_dir.display(),
                    self.io_errors
                );
                match &self.bar {
                    Some(bar) => bar.println(msg),
                    None => eprintln!("{msg}"),
                }
            }
        }
    }

    fn key_numbers(&self) -> String {
        KEY_NUMBERS
            .iter()
            .filter_map(|(k, short)| {
                self.latest
                    .get(k)
                    .map(|v| format!("{short} {}", fmt_num(*v)))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for MetricsLogger {
    fn drop(&mut self) {
        self.flush();
        if let Some(bar) = &self.bar {
            bar.abandon(); // leave the last state on screen
        }
    }
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() || a == 0.0 || (1e-3..1e4).contains(&a) {
        format!("{v:.4}")
    } else {
        format!("{v:.2e}")
    }
}

fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".into();
    }
    let s = secs.round() as u64;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// A JSON number, or "NaN" / "Infinity" / "-Infinity" as a string.
pub fn json_number(v: f64) -> String {
    if v.is_nan() {
        "\"NaN\"".into()
    } else if v == f64::INFINITY {
        "\"Infinity\"".into()
    } else if v == f64::NEG_INFINITY {
        "\"-Infinity\"".into()
    } else {
        serde_json::to_string(&v).expect("finite f64 serialises")
    }
}

/// Open `path` for appending; if it ends in a partial line (crash mid-write),
/// cut that line off first so the next record starts on a fresh line.
fn open_append_repaired(path: &Path) -> Result<File> {
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            // find the last newline, reading backwards in chunks
            let mut end = len;
            let mut keep = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            'outer: while end > 0 {
                let start = end.saturating_sub(buf.len() as u64);
                let n = (end - start) as usize;
                f.seek(SeekFrom::Start(start))?;
                f.read_exact(&mut buf[..n])?;
                for i in (0..n).rev() {
                    if buf[i] == b'\n' {
                        keep = start + i as u64 + 1;
                        break 'outer;
                    }
                }
                end = start;
            }
            eprintln!(
                "note: {}: dropping a partial last line ({} bytes) left by an interrupted write",
                path.display(),
                len - keep
            );
            f.set_len(keep)?;
        }
    }
    f.seek(SeekFrom::End(0))?;
    Ok(f)
}

/// One line of metrics.jsonl.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub step: u64,
    pub epoch: u64,
    pub wall_time: f64,
    pub scalars: BTreeMap<String, f64>,
}

impl Record {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.scalars.get(name).copied()
    }
}

/// A scalar value from JSON: a number, or one of the non-finite strings
/// (`NaN`, `Infinity`, `-Infinity`, also `inf`/`-inf`/`nan` in any case).
fn json_to_f64(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "nan" | "-nan" => Some(f64::NAN),
            "infinity" | "inf" | "+infinity" | "+inf" => Some(f64::INFINITY),
            "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Parse JSONL lines into objects, tolerating a malformed last non-empty line
/// (a write cut by a crash). Any other malformed line is an error naming file
/// and line (1-based).
pub(crate) fn read_json_lines(
    path: &Path,
) -> Result<Vec<(usize, serde_json::Map<String, serde_json::Value>)>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<(usize, &str)> = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let mut out = Vec::with_capacity(lines.len());
    for (k, (lineno, line)) in lines.iter().enumerate() {
        let is_last = k + 1 == lines.len();
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(map)) => out.push((*lineno, map)),
            Ok(_) if is_last => {}
            Ok(_) => bail!("{}:{lineno}: not a JSON object", path.display()),
            Err(_) if is_last => {}
            Err(e) => bail!("{}:{lineno}: invalid JSON: {e}", path.display()),
        }
    }
    Ok(out)
}

/// Read metrics.jsonl. Each object needs an integer `step`; `epoch` and
/// `wall_time` default to 0. Other keys with numeric (or non-finite string)
/// values become scalars; keys with other values (strings, bools, null) are
/// ignored. A truncated last line is skipped; other bad lines are errors.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<Record>> {
    let path = path.as_ref();
    let mut out = Vec::new();
    for (lineno, map) in read_json_lines(path)? {
        let step = match map.get("step").and_then(json_to_f64) {
            Some(s) if s >= 0.0 && s.fract() == 0.0 && s.is_finite() => s as u64,
            _ => bail!("{}:{lineno}: missing or invalid \"step\"", path.display()),
        };
        let epoch = match map.get("epoch") {
            None => 0,
            Some(v) => match json_to_f64(v) {
                Some(e) if e >= 0.0 && e.is_finite() => e as u64,
                _ => bail!("{}:{lineno}: invalid \"epoch\"", path.display()),
            },
        };
        let wall_time = map.get("wall_time").and_then(json_to_f64).unwrap_or(0.0);
        let scalars = map
            .iter()
            .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
            .filter_map(|(k, v)| json_to_f64(v).map(|x| (k.clone(), x)))
            .collect();
        out.push(Record {
            step,
            epoch,
            wall_time,
            scalars,
        });
    }
    Ok(out)
}

/// Fold records with the same step into one (later values win, so a resumed
/// run's re-logged steps replace the pre-crash ones), sorted by step.
pub fn merge_by_step(records: &[Record]) -> Vec<Record> {
    let mut by_step: BTreeMap<u64, Record> = BTreeMap::new();
    for r in records {
        match by_step.get_mut(&r.step) {
            Some(m) => {
                m.epoch = r.epoch;
                m.wall_time = r.wall_time;
                for (k, v) in &r.scalars {
                    m.scalars.insert(k.clone(), *v);
                }
            }
            None => {
                by_step.insert(r.step, r.clone());
            }
        }
    }
    by_step.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> LoggerOptions {
        LoggerOptions {
            quiet: true,
            print_every: 2,
            tensorboard: true,
            start_step: 0,
        }
    }

    #[test]
    fn jsonl_roundtrip_with_non_finite() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut lg = MetricsLogger::new(dir.path(), 10, quiet()).unwrap();
            lg.log(
                0,
                0,
                &[
                    ("train_loss", 1.25),
                    ("gate/mean_activation", 0.5),
                    ("lr", 1e-4),
                ],
            );
            lg.log(
                1,
                0,
                &[
                    ("train_loss", f64::NAN),
                    ("grad_norm", f64::INFINITY),
                    ("x", f64::NEG_INFINITY),
                ],
            );
            lg.log(2, 1, &[("val_loss", 0.75), ("step", 99.0)]);
            lg.event(1, "nonfinite loss at step 1");
        }
        let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert!(text.contains("\"train_loss\":\"NaN\""), "{text}");
        assert!(text.contains("\"grad_norm\":\"Infinity\""), "{text}");
        assert!(text.contains("\"x\":\"-Infinity\""), "{text}");
        let recs = read_jsonl(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].step, 0);
        assert_eq!(recs[0].get("train_loss"), Some(1.25));
        assert_eq!(recs[0].get("lr"), Some(1e-4));
        assert_eq!(recs[0].get("gate/mean_activation"), Some(0.5));
        assert!(recs[1].get("train_loss").unwrap().is_nan());
        assert_eq!(recs[1].get("grad_norm"), Some(f64::INFINITY));
        assert_eq!(recs[1].get("x"), Some(f64::NEG_INFINITY));
        assert_eq!((recs[2].step, recs[2].epoch), (2, 1));
        assert_eq!(recs[2].get("step"), None);
        assert!(recs[2].wall_time > 1.6e9);
        let ev = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        let v: serde_json::Value = serde_json::from_str(ev.lines().next().unwrap()).unwrap();
        assert_eq!(v["step"], 1);
        assert_eq!(v["event"], "nonfinite loss at step 1");
        let tb: Vec<_> = std::fs::read_dir(dir.path().join("tb")).unwrap().collect();
        assert_eq!(tb.len(), 1);
    }

    #[test]
    fn resume_appends_and_tolerates_truncated_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        {
            let mut lg = MetricsLogger::new(dir.path(), 10, quiet()).unwrap();
            lg.log(0, 0, &[("train_loss", 1.0)]);
            lg.log(1, 0, &[("train_loss", 0.9)]);
        }
        // simulate a crash in the middle of writing step 2
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"step\":2,\"epoch\":0,\"train_lo").unwrap();
        drop(f);
        let recs = read_jsonl(&path).unwrap();
        assert_eq!(recs.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 1]);
        // resume from step 1: the partial line is cut, records append
        {
            let opts = LoggerOptions {
                start_step: 2,
                ..quiet()
            };
            let mut lg = MetricsLogger::new(dir.path(), 10, opts).unwrap();
            lg.log(2, 0, &[("train_loss", 0.8)]);
            lg.log(3, 0, &[("train_loss", 0.7)]);
        }
        let recs = read_jsonl(&path).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.step).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(recs[3].get("train_loss"), Some(0.7));
        // two event files now (one per process)
        assert_eq!(std::fs::read_dir(dir.path().join("tb")).unwrap().count(), 2);
    }

    #[test]
    fn reader_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            "{\"step\":0,\"a\":1}\n{\"step\":1,\"a\":\n{\"step\":2,\"a\":3}\n",
        )
        .unwrap();
        let err = read_jsonl(&path).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl:2"), "{err}");
        std::fs::write(&path, "{\"epoch\":0,\"a\":1}\n{\"step\":1}\n").unwrap();
        let err = read_jsonl(&path).unwrap_err().to_string();
        assert!(
            err.contains("metrics.jsonl:1") && err.contains("step"),
            "{err}"
        );
        // blank lines and a truncated last line with trailing newline are fine
        std::fs::write(
            &path,
            "\n{\"step\":0,\"a\":1,\"s\":\"text\"}\n\n{\"step\":1,\"a\n",
        )
        .unwrap();
        let recs = read_jsonl(&path).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].scalars.len(), 1);
    }

    #[test]
    fn write_errors_do_not_stop_training() {
        let dir = tempfile::tempdir().unwrap();
        let mut lg = MetricsLogger::new(dir.path(), 10, quiet()).unwrap();
        lg.jsonl = BufWriter::new(OpenOptions::new().write(true).open("/dev/full").unwrap());
        lg.log(0, 0, &[("train_loss", 1.0)]);
        lg.log(1, 0, &[("train_loss", 1.0)]);
        assert_eq!(lg.io_errors(), 2);
        lg.event(1, "still alive");
        assert_eq!(lg.io_errors(), 2);
    }

    #[test]
    fn merge_folds_same_step() {
        let mk = |step, k: &str, v| Record {
            step,
            epoch: 0,
            wall_time: 0.0,
            scalars: [(k.to_string(), v)].into_iter().collect(),
        };
        let recs = vec![
            mk(5, "a", 1.0),
            mk(3, "a", 2.0),
            mk(5, "b", 3.0),
            mk(5, "a", 4.0),
        ];
        let m = merge_by_step(&recs);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].step, 3);
        assert_eq!((m[1].get("a"), m[1].get("b")), (Some(4.0), Some(3.0)));
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(json_number(0.5), "0.5");
        assert_eq!(json_number(f64::NAN), "\"NaN\"");
        assert_eq!(fmt_duration(3725.0), "1h02m");
        assert_eq!(fmt_duration(65.0), "1m05s");
        assert_eq!(fmt_num(1e-4), "1.00e-4");
        assert_eq!(fmt_num(0.12345), "0.1235");
    }
}
