//! A benchmark peer process: commands in on its stdin, one JSON object per line
//! out on its stdout (`tests/bench/transport_peer.py` documents the protocol;
//! [`super::rust_peer`] speaks the same one).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Peer {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    /// Every line received so far (waits look here first).
    seen: Vec<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    /// Starts `cmd` with piped stdio.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Peer> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
        let (tx, lines) = channel();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("{name}: no stdout"))?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let keep = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut k) = keep.lock() {
                        k.push(line);
                        let n = k.len();
                        if n > 40 {
                            k.drain(..n - 40);
                        }
                    }
                }
            });
        }
        Ok(Peer {
            name: name.into(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        })
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let Some(w) = self.stdin.as_mut() else {
            anyhow::bail!("{}: stdin already closed", self.name);
        };
        if let Err(e) = writeln!(w, "{line}").and_then(|_| w.flush()) {
            let why = self.why();
            anyhow::bail!("{}: {e}{why}", self.name);
        }
        Ok(())
    }

    /// The first line (seen before or arriving within `timeout`) for which
    /// `pred` holds; an `{"error": ...}` line or the peer's exit fails.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Ok(v.clone());
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    if let Some(e) = v.get("error").and_then(Value::as_str) {
                        anyhow::bail!("{}: {e}", self.name);
                    }
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return Ok(v);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let why = self.why();
                    anyhow::bail!(
                        "{}: no {what} within {:.0} s{why}",
                        self.name,
                        timeout.as_secs_f64(),
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                    let why = self.why();
                    anyhow::bail!("{}: exited before {what}{why}", self.name)
                }
            }
        }
    }

    /// Closes stdin (the peer then reports) and returns its `results` line.
    pub fn finish(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        self.stdin = None;
        let v = self.wait_for("results", timeout, |v| v.get("results").is_some())?;
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(v)
    }

    /// The last lines of the peer's stderr, for error messages.
    fn why(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!(" ({s})"),
            _ => String::new(),
        };
        let tail = self
            .stderr
            .lock()
            .map(|k| {
                k.iter()
                    .rev()
                    .take(3)
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default();
        if tail.is_empty() {
            status
        } else {
            format!("{status}; stderr: {tail}")
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
