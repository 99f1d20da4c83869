//! `meta/stats.json` and the per-episode `stats/<feature>/<stat>` columns.
//!
//! A port of LeRobot 0.6.1 `compute_stats.py`: per-dimension min, max, mean, std
//! (population), count, and the quantiles q01, q10, q50, q90, q99 estimated from a
//! 5000-bin histogram with linear interpolation inside the bin
//! (`RunningQuantileStats`); episodes are merged with `aggregate_stats` (count-
//! weighted mean, parallel variance, count-weighted quantiles).
//!
//! Cameras: per-channel statistics of pixel values / 255 with shape (3, 1, 1).
//! LeRobot samples at most ~100 frames per episode (and strides frames >= 300 px);
//! we accumulate exact 256-bin histograms over every pixel of every frame, so the
//! values are the same statistics over more data and `count` is the frame count.

use std::collections::BTreeMap;
use std::path::Path;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::error::{DatasetError, Result};
use super::meta::{write_json_atomic, STATS_PATH};

pub const QUANTILES: [(&str, f64); 5] = [
    ("q01", 0.01),
    ("q10", 0.10),
    ("q50", 0.50),
    ("q90", 0.90),
    ("q99", 0.99),
];
const NUM_QUANTILE_BINS: usize = 5000;

/// Statistics of one feature. Every per-dimension vector has `shape.iter().product()`
/// values (`[D]` for vectors, `[1]` for scalars, `[3, 1, 1]` for cameras).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    pub shape: Vec<usize>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub count: u64,
    /// `q01`, `q10`, `q50`, `q90`, `q99` when present.
    pub quantiles: BTreeMap<String, Vec<f64>>,
}

impl FeatureStats {
    /// `(name, values)` for every stat except count, in LeRobot's order.
    pub fn named(&self) -> Vec<(&str, &[f64])> {
        let mut v: Vec<(&str, &[f64])> = vec![
            ("min", &self.min),
            ("max", &self.max),
            ("mean", &self.mean),
            ("std", &self.std),
        ];
        for (k, q) in &self.quantiles {
            v.push((k.as_str(), q));
        }
        v
    }
}

/// The whole of `meta/stats.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub features: BTreeMap<String, FeatureStats>,
}

impl Stats {
    pub fn get(&self, key: &str) -> Option<&FeatureStats> {
        self.features.get(key)
    }

    /// Reads `root/meta/stats.json`; `Ok(None)` when absent (LeRobot allows that).
    pub fn load(root: &Path) -> Result<Option<Stats>> {
        let path = root.join(STATS_PATH);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| DatasetError::io(&path, e))?;
        let raw: Value = serde_json::from_str(&text).map_err(|e| DatasetError::Json {
            path: path.clone(),
            source: e,
        })?;
        Stats::from_json(&raw)
            .map(Some)
            .map_err(|(field, msg)| DatasetError::invalid(&path, field, msg))
    }

    pub(crate) fn from_json(raw: &Value) -> std::result::Result<Stats, (String, String)> {
        let Value::Object(feats) = raw else {
            return Err(("<root>".into(), "expected an object of features".into()));
        };
        let mut out = Stats::default();
        for (key, v) in feats {
            let Value::Object(stats) = v else {
                return Err((key.clone(), "expected an object of stats".into()));
            };
            let mut fs = FeatureStats {
                shape: vec![],
                min: vec![],
                max: vec![],
                mean: vec![],
                std: vec![],
                count: 0,
                quantiles: BTreeMap::new(),
            };
            for (name, value) in stats {
                let field = format!("{key}.{name}");
                let (shape, data) = flatten_nested(value).ok_or_else(|| {
                    (
                        field.clone(),
                        "not a number or nested list of numbers".to_string(),
                    )
                })?;
                if name == "count" {
                    fs.count = data.first().copied().unwrap_or(0.0).max(0.0) as u64;
                    continue;
                }
                if let Some(bad) = data.iter().find(|x| !x.is_finite()) {
                    return Err((field, format!("non-finite value {bad}")));
                }
                match name.as_str() {
                    "min" => fs.min = data,
                    "max" => fs.max = data,
                    "mean" => fs.mean = data,
                    "std" => fs.std = data,
                    q if q.starts_with('q') && q[1..].chars().all(|c| c.is_ascii_digit()) => {
                        fs.quantiles.insert(q.to_string(), data);
                    }
                    _ => continue,
                }
                fs.shape = shape;
            }
            out.features.insert(key.clone(), fs);
        }
        Ok(out)
    }

    /// Writes `root/meta/stats.json` atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        write_json_atomic(&root.join(STATS_PATH), self)
    }

    /// LeRobot's `aggregate_stats`: merges per-episode stats into dataset stats.
    pub fn aggregate(list: &[&Stats]) -> Stats {
        let mut keys: Vec<&String> = list.iter().flat_map(|s| s.features.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut out = Stats::default();
        for key in keys {
            let parts: Vec<&FeatureStats> =
                list.iter().filter_map(|s| s.features.get(key)).collect();
            if let Some(agg) = aggregate_feature(&parts) {
                out.features.insert(key.clone(), agg);
            }
        }
        out
    }
}

fn aggregate_feature(parts: &[&FeatureStats]) -> Option<FeatureStats> {
    let first = parts.first()?;
    let d = first.mean.len();
    if parts
        .iter()
        .any(|p| p.mean.len() != d || p.std.len() != d || p.min.len() != d || p.max.len() != d)
    {
        return None;
    }
    let total: u64 = parts.iter().map(|p| p.count).sum();
    if total == 0 {
        return Some((*first).clone());
    }
    let tot = total as f64;
    let mut mean = vec![0.0; d];
    for p in parts {
        for (m, pm) in mean.iter_mut().zip(&p.mean) {
            *m += pm * p.count as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= tot);
    let mut var = vec![0.0; d];
    for p in parts {
        for i in 0..d {
            let dm = p.mean[i] - mean[i];
            var[i] += (p.std[i] * p.std[i] + dm * dm) * p.count as f64;
        }
    }
    let std = var.iter().map(|v| (v / tot).max(0.0).sqrt()).collect();
    let fold = |f: fn(f64, f64) -> f64, get: fn(&FeatureStats) -> &Vec<f64>| -> Vec<f64> {
        (0..d)
            .map(|i| parts.iter().map(|p| get(p)[i]).fold(get(first)[i], f))
            .collect()
    };
    let min = fold(f64::min, |p| &p.min);
    let max = fold(f64::max, |p| &p.max);
    let mut quantiles = BTreeMap::new();
    for q in first.quantiles.keys() {
        if parts
            .iter()
            .all(|p| p.quantiles.get(q).is_some_and(|v| v.len() == d))
        {
            let mut acc = vec![0.0; d];
            for p in parts {
                for (a, v) in acc.iter_mut().zip(&p.quantiles[q]) {
                    *a += v * p.count as f64;
                }
            }
            acc.iter_mut().for_each(|a| *a /= tot);
            quantiles.insert(q.clone(), acc);
        }
    }
    Some(FeatureStats {
        shape: first.shape.clone(),
        min,
        max,
        mean,
        std,
        count: total,
        quantiles,
    })
}

/// Nested JSON list -> (shape, row-major values). A bare number is shape [1].
fn flatten_nested(v: &Value) -> Option<(Vec<usize>, Vec<f64>)> {
    fn shape_of(v: &Value) -> Vec<usize> {
        match v {
            Value::Array(a) => {
                let mut s = vec![a.len()];
                if let Some(first) = a.first() {
                    s.extend(shape_of(first));
                }
                s
            }
            _ => vec![],
        }
    }
    fn walk(v: &Value, out: &mut Vec<f64>) -> bool {
        match v {
            Value::Array(a) => a.iter().all(|x| walk(x, out)),
            Value::Number(n) => n.as_f64().map(|x| out.push(x)).is_some(),
            _ => false,
        }
    }
    let mut data = Vec::new();
    if !walk(v, &mut data) {
        return None;
    }
    let mut shape = shape_of(v);
    if shape.is_empty() {
        shape = vec![1];
    }
    (shape.iter().product::<usize>() == data.len()).then_some((shape, data))
}

/// Row-major values -> nested JSON list of `shape`.
pub(crate) fn nest(shape: &[usize], data: &[f64]) -> Value {
    match shape {
        [] | [_] => Value::from(data.to_vec()),
        [n, rest @ ..] => {
            let inner: usize = rest.iter().product();
            Value::Array(
                (0..*n)
                    .map(|i| nest(rest, &data[i * inner..(i + 1) * inner]))
                    .collect(),
            )
        }
    }
}

impl Serialize for FeatureStats {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("min", &nest(&self.shape, &self.min))?;
        m.serialize_entry("max", &nest(&self.shape, &self.max))?;
        m.serialize_entry("mean", &nest(&self.shape, &self.mean))?;
        m.serialize_entry("std", &nest(&self.shape, &self.std))?;
        m.serialize_entry("count", &[self.count])?;
        for (k, q) in &self.quantiles {
            m.serialize_entry(k, &nest(&self.shape, q))?;
        }
        m.end()
    }
}

impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.features.len()))?;
        for (k, v) in &self.features {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// LeRobot's `RunningQuantileStats` for ONE batch (`update` called once), which is
/// how `compute_episode_stats` uses it.
fn histogram_stats(rows: usize, dims: usize, value: impl Fn(usize, usize) -> f64) -> FeatureStats {
    let n = rows as f64;
    let mut mean = vec![0.0; dims];
    let mut mean_sq = vec![0.0; dims];
    let mut min = vec![f64::INFINITY; dims];
    let mut max = vec![f64::NEG_INFINITY; dims];
    for r in 0..rows {
        for d in 0..dims {
            let x = value(r, d);
            mean[d] += x;
            mean_sq[d] += x * x;
            min[d] = min[d].min(x);
            max[d] = max[d].max(x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    mean_sq.iter_mut().for_each(|m| *m /= n);
    let std: Vec<f64> = (0..dims)
        .map(|d| (mean_sq[d] - mean[d] * mean[d]).max(0.0).sqrt())
        .collect();
    let mut quantiles: BTreeMap<String, Vec<f64>> = QUANTILES
        .iter()
        .map(|(k, _)| (k.to_string(), vec![0.0; dims]))
        .collect();
    for d in 0..dims {
        let edges = linspace(min[d] - 1e-10, max[d] + 1e-10, NUM_QUANTILE_BINS + 1);
        let mut hist = vec![0.0f64; NUM_QUANTILE_BINS];
        for r in 0..rows {
            if let Some(b) = bin_of(&edges, value(r, d)) {
                hist[b] += 1.0;
            }
        }
        fill_quantiles(&mut quantiles, d, &hist, &edges, n);
    }
    FeatureStats {
        shape: vec![dims],
        min,
        max,
        mean,
        std,
        count: rows as u64,
        quantiles,
    }
}

fn fill_quantiles(
    q: &mut BTreeMap<String, Vec<f64>>,
    d: usize,
    hist: &[f64],
    edges: &[f64],
    count: f64,
) {
    let mut cumsum = Vec::with_capacity(hist.len());
    let mut acc = 0.0;
    for h in hist {
        acc += h;
        cumsum.push(acc);
    }
    for (name, p) in QUANTILES {
        let target = p * count;
        // np.searchsorted(cumsum, target) (side="left")
        let idx = cumsum.partition_point(|&c| c < target);
        let v = if idx == 0 {
            edges[0]
        } else if idx >= cumsum.len() {
            edges[edges.len() - 1]
        } else {
            let before = cumsum[idx - 1];
            let in_bin = cumsum[idx] - before;
            if in_bin == 0.0 {
                edges[idx]
            } else {
                edges[idx] + (target - before) / in_bin * (edges[idx + 1] - edges[idx])
            }
        };
        if let Some(slot) = q.get_mut(name) {
            slot[d] = v;
        }
    }
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    let step = (b - a) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| a + i as f64 * step).collect();
    v[n - 1] = b;
    v
}

/// np.histogram bin of `x` (right edge of the last bin inclusive), None if outside.
fn bin_of(edges: &[f64], x: f64) -> Option<usize> {
    let (first, last) = (edges[0], edges[edges.len() - 1]);
    if !(x >= first && x <= last) {
        return None;
    }
    let nb = edges.len() - 1;
    Some(
        edges
            .partition_point(|&e| e <= x)
            .saturating_sub(1)
            .min(nb - 1),
    )
}

/// Stats of one episode of a numeric feature: `rows` frames of `dims` values each.
/// Scalar features (`dims == 1`) get shape `[1]` like LeRobot's `keepdims` path.
pub(crate) fn vector_stats(values: &[f64], rows: usize, dims: usize) -> FeatureStats {
    if rows < 2 {
        // LeRobot `_compute_basic_stats`: quantiles set to the mean.
        let mean: Vec<f64> = (0..dims)
            .map(|d| values.get(d).copied().unwrap_or(0.0))
            .collect();
        let quantiles = QUANTILES
            .iter()
            .map(|(k, _)| (k.to_string(), mean.clone()))
            .collect();
        return FeatureStats {
            shape: vec![dims],
            min: mean.clone(),
            max: mean.clone(),
            std: vec![0.0; dims],
            mean,
            count: rows as u64,
            quantiles,
        };
    }
    histogram_stats(rows, dims, |r, d| values[r * dims + d])
}

/// Exact per-channel histograms of u8 RGB frames, accumulated frame by frame.
#[derive(Debug, Clone)]
pub(crate) struct ImageStatsAcc {
    counts: [[u64; 256]; 3],
    frames: u64,
}

impl Default for ImageStatsAcc {
    fn default() -> Self {
        ImageStatsAcc {
            counts: [[0; 256]; 3],
            frames: 0,
        }
    }
}

impl ImageStatsAcc {
    /// Adds one HWC RGB frame.
    pub fn add_frame(&mut self, rgb: &[u8]) {
        for px in rgb.chunks_exact(3) {
            self.counts[0][px[0] as usize] += 1;
            self.counts[1][px[1] as usize] += 1;
            self.counts[2][px[2] as usize] += 1;
        }
        self.frames += 1;
    }

    /// Per-channel stats / 255 with shape (3, 1, 1), as LeRobot stores them.
    pub fn finish(&self) -> FeatureStats {
        let mut fs = FeatureStats {
            shape: vec![3, 1, 1],
            min: vec![0.0; 3],
            max: vec![0.0; 3],
            mean: vec![0.0; 3],
            std: vec![0.0; 3],
            count: self.frames,
            quantiles: QUANTILES
                .iter()
                .map(|(k, _)| (k.to_string(), vec![0.0; 3]))
                .collect(),
        };
        for c in 0..3 {
            let h = &self.counts[c];
            let n: u64 = h.iter().sum();
            if n == 0 {
                continue;
            }
            let lo = h.iter().position(|&k| k > 0).unwrap_or(0) as f64;
            let hi = h.iter().rposition(|&k| k > 0).unwrap_or(0) as f64;
            let (mut s, mut s2) = (0.0, 0.0);
            for (v, &k) in h.iter().enumerate() {
                s += v as f64 * k as f64;
                s2 += (v * v) as f64 * k as f64;
            }
            let mean = s / n as f64;
            let var = (s2 / n as f64 - mean * mean).max(0.0);
            let edges = linspace(lo - 1e-10, hi + 1e-10, NUM_QUANTILE_BINS + 1);
            let mut hist = vec![0.0f64; NUM_QUANTILE_BINS];
            for (v, &k) in h.iter().enumerate() {
                if k > 0 {
                    if let Some(b) = bin_of(&edges, v as f64) {
                        hist[b] += k as f64;
                    }
                }
            }
            let mut q = BTreeMap::new();
            for (name, _) in QUANTILES {
                q.insert(name.to_string(), vec![0.0]);
            }
            fill_quantiles(&mut q, 0, &hist, &edges, n as f64);
            fs.min[c] = lo / 255.0;
            fs.max[c] = hi / 255.0;
            fs.mean[c] = mean / 255.0;
            fs.std[c] = var.sqrt() / 255.0;
            for (name, v) in q {
                if let Some(slot) = fs.quantiles.get_mut(&name) {
                    slot[c] = v[0] / 255.0;
                }
            }
        }
        fs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_stats_match_numpy_reference() {
        // 0..=99 in one dimension, 2x in the other.
        let rows = 100;
        let vals: Vec<f64> = (0..rows).flat_map(|i| [i as f64, 2.0 * i as f64]).collect();
        let s = vector_stats(&vals, rows, 2);
        assert_eq!(s.min, vec![0.0, 0.0]);
        assert_eq!(s.max, vec![99.0, 198.0]);
        assert!((s.mean[0] - 49.5).abs() < 1e-12);
        assert!((s.std[0] - 28.866_070_047_722_12).abs() < 1e-9);
        // Values printed by LeRobot 0.6.1's RunningQuantileStats on the same data.
        let q = |k: &str, d: usize| s.quantiles[k][d];
        assert!((q("q01", 0) + 1e-10).abs() < 1e-12, "{:?}", s.quantiles);
        assert!((q("q10", 0) - 9.009).abs() < 1e-6 && (q("q10", 1) - 18.018).abs() < 1e-6);
        assert!((q("q50", 0) - 49.005).abs() < 1e-6 && (q("q90", 0) - 89.001).abs() < 1e-6);
        assert!((q("q99", 1) - 196.02).abs() < 1e-6);
        assert_eq!(s.count, 100);
        let s16 = vector_stats(&(0..16).map(|i| i as f64).collect::<Vec<_>>(), 16, 1);
        assert!(
            (s16.quantiles["q10"][0] - 1.0008).abs() < 1e-9,
            "{:?}",
            s16.quantiles
        );
        assert!((s16.quantiles["q50"][0] - 7.002).abs() < 1e-9);
        assert!((s16.quantiles["q99"][0] - 14.99952).abs() < 1e-9);
        assert!((s16.std[0] - 4.60977223).abs() < 1e-8);
    }

    #[test]
    fn aggregate_equals_stats_of_concatenation() {
        let a: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let b: Vec<f64> = (50..80).map(|i| (i * i) as f64 / 10.0).collect();
        let all: Vec<f64> = a.iter().chain(&b).copied().collect();
        let sa = Stats {
            features: [("x".to_string(), vector_stats(&a, 50, 1))].into(),
        };
        let sb = Stats {
            features: [("x".to_string(), vector_stats(&b, 30, 1))].into(),
        };
        let agg = Stats::aggregate(&[&sa, &sb]);
        let full = vector_stats(&all, 80, 1);
        let x = &agg.features["x"];
        assert_eq!(x.count, 80);
        assert!((x.mean[0] - full.mean[0]).abs() < 1e-9);
        assert!((x.std[0] - full.std[0]).abs() < 1e-9);
        assert_eq!(x.min, full.min);
        assert_eq!(x.max, full.max);
    }

    #[test]
    fn image_stats_are_per_channel_in_unit_range() {
        let mut acc = ImageStatsAcc::default();
        let frame: Vec<u8> = (0..64).flat_map(|i| [0u8, 255, (i * 4) as u8]).collect();
        acc.add_frame(&frame);
        acc.add_frame(&frame);
        let s = acc.finish();
        assert_eq!(s.shape, vec![3, 1, 1]);
        assert_eq!(s.count, 2);
        assert_eq!(s.mean[0], 0.0);
        assert_eq!(s.mean[1], 1.0);
        assert!((s.mean[2] - 126.0 / 255.0).abs() < 1e-9);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["mean"],
            serde_json::json!([[[0.0]], [[1.0]], [[126.0 / 255.0]]])
        );
        let back = Stats::from_json(&serde_json::json!({"cam": json})).unwrap();
        assert_eq!(back.features["cam"], s);
    }
}
