//! Latency statistics (HDR histograms, nanoseconds) and process memory figures.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// A latency recorder with a fixed footprint (no allocation per record).
pub struct Latency {
    h: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// 1 ns .. 100 s at 3 significant digits.
    pub fn new() -> Latency {
        // Bounds are constants, so construction cannot fail.
        let h =
            Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap_or_else(|_| unreachable!());
        Latency { h }
    }

    pub fn record(&mut self, d: std::time::Duration) {
        let ns = (d.as_nanos() as u64).clamp(1, 100_000_000_000);
        // Values are clamped into the histogram's range, so this cannot fail.
        let _ = self.h.record(ns);
    }

    pub fn percentiles(&self) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: self.h.len(),
            mean_us: self.h.mean() / 1000.0,
            p50_us: us(self.h.value_at_quantile(0.50)),
            p99_us: us(self.h.value_at_quantile(0.99)),
            p999_us: us(self.h.value_at_quantile(0.999)),
            max_us: us(self.h.max()),
        }
    }
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
