//! `policy.toml`, the policy package manifest (format v1, `models/README.md`).
//!
//! The structs mirror the TOML one to one and refuse unknown keys. `validate`
//! checks everything that can be checked without opening the graphs; the graphs
//! themselves are checked against the manifest in `package`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::PackageError;

/// The only manifest format this runtime reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Consistency-flow DiTX: `encoder.onnx` once, `velocity.onnx` N times.
    Maniflow,
    /// LeRobot ACT: `act.onnx` once.
    Act,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub kind: PolicyKind,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// To: observation steps the graphs take.
    pub n_obs_steps: usize,
    pub inputs: Inputs,
    pub outputs: Outputs,
    /// Per feature key.
    #[serde(default)]
    pub normalization: BTreeMap<String, Normalization>,
    #[serde(default)]
    pub sampler: Option<Sampler>,
    #[serde(default)]
    pub modality_map: Vec<ModalityRange>,
    pub graphs: Graphs,
    pub producer: Producer,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    #[serde(default)]
    pub cameras: Vec<ImageInput>,
    #[serde(default)]
    pub state: Option<StateInput>,
    #[serde(default)]
    pub tactile: Option<TactileInput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeRule {
    /// Frames must arrive at the declared size.
    None,
    Bilinear,
    Nearest,
}

/// A camera (or a tactile sensor read as an image).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    pub key: String,
    pub height: usize,
    pub width: usize,
    #[serde(default = "three")]
    pub channels: usize,
    pub color_order: ColorOrder,
    pub resize: ResizeRule,
}

fn three() -> usize {
    3
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateInput {
    pub key: String,
    pub names: Vec<String>,
    pub units: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TactileInput {
    /// A float vector of `size` taxel readings per observation step.
    Taxels { key: String, size: usize },
    /// A tactile image, handled like a camera.
    Image {
        key: String,
        height: usize,
        width: usize,
        #[serde(default = "three")]
        channels: usize,
        color_order: ColorOrder,
        resize: ResizeRule,
    },
}

impl TactileInput {
    pub fn key(&self) -> &str {
        match self {
            TactileInput::Taxels { key, .. } | TactileInput::Image { key, .. } => key,
        }
    }

    /// The image view of an `image` tactile input.
    pub fn as_image(&self) -> Option<ImageInput> {
        match self {
            TactileInput::Taxels { .. } => None,
            TactileInput::Image {
                key,
                height,
                width,
                channels,
                color_order,
                resize,
            } => Some(ImageInput {
                key: key.clone(),
                height: *height,
                width: *width,
                channels: *channels,
                color_order: *color_order,
                resize: *resize,
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    pub action: ActionOutput,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionOutput {
    pub key: String,
    pub names: Vec<String>,
    pub units: Vec<String>,
    /// T: rows the graph produces.
    pub horizon: usize,
    /// Rows executed per inference in queue mode.
    pub n_action_steps: usize,
    /// First executed row.
    pub start_index: usize,
    /// ManiFlow trained with action prefixes (training-time real-time chunking): the
    /// velocity graph takes `prefix` (B, T, Da) and `prefix_mask` (B, T), and the policy
    /// continues up to this many given actions (chunk rows `0..d`). 0 = no prefix inputs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_d_max: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl ActionOutput {
    pub fn dim(&self) -> usize {
        self.names.len()
    }
}

/// Normalisation of one feature; formulas in `models/README.md` and `normalize.rs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalization {
    Identity,
    MeanStd {
        mean: Vec<f32>,
        std: Vec<f32>,
        #[serde(default = "default_eps")]
        eps: f32,
    },
    MinMax {
        min: Vec<f32>,
        max: Vec<f32>,
        #[serde(default = "default_eps")]
        eps: f32,
    },
    Limits {
        min: Vec<f32>,
        max: Vec<f32>,
    },
    Quantiles {
        q01: Vec<f32>,
        q99: Vec<f32>,
        #[serde(default = "default_eps")]
        eps: f32,
    },
    Quantile10 {
        q10: Vec<f32>,
        q90: Vec<f32>,
        #[serde(default = "default_eps")]
        eps: f32,
    },
}

fn default_eps() -> f32 {
    1e-8
}

impl Normalization {
    pub fn mode_name(&self) -> &'static str {
        match self {
            Normalization::Identity => "identity",
            Normalization::MeanStd { .. } => "mean_std",
            Normalization::MinMax { .. } => "min_max",
            Normalization::Limits { .. } => "limits",
            Normalization::Quantiles { .. } => "quantiles",
            Normalization::Quantile10 { .. } => "quantile10",
        }
    }

    /// Named statistic vectors, for validation and display.
    pub fn stats(&self) -> Vec<(&'static str, &[f32])> {
        match self {
            Normalization::Identity => vec![],
            Normalization::MeanStd { mean, std, .. } => vec![("mean", mean), ("std", std)],
            Normalization::MinMax { min, max, .. } | Normalization::Limits { min, max } => {
                vec![("min", min), ("max", max)]
            }
            Normalization::Quantiles { q01, q99, .. } => vec![("q01", q01), ("q99", q99)],
            Normalization::Quantile10 { q10, q90, .. } => vec![("q10", q10), ("q90", q90)],
        }
    }

    fn eps(&self) -> Option<f32> {
        match self {
            Normalization::MeanStd { eps, .. }
            | Normalization::MinMax { eps, .. }
            | Normalization::Quantiles { eps, .. }
            | Normalization::Quantile10 { eps, .. } => Some(*eps),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetT {
    /// target_t = dt (upstream default).
    Relative,
    /// target_t = t + dt.
    Absolute,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampler {
    pub steps: usize,
    pub target_t: TargetT,
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalityRange {
    pub modality: String,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graphs {
    #[serde(default)]
    pub encoder: Option<GraphFile>,
    #[serde(default)]
    pub velocity: Option<GraphFile>,
    #[serde(default)]
    pub act: Option<GraphFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFile {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Producer {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub parity_max_abs_err: Option<f64>,
}

/// A feature the policy reads or writes, with its length (for normalisation stats).
#[derive(Debug, Clone)]
pub struct Feature {
    pub key: String,
    /// Length of the normalisation statistics (channels for images).
    pub stat_len: usize,
}

impl Manifest {
    /// Parse `policy.toml` text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Manifest, PackageError> {
        toml::from_str::<Manifest>(text).map_err(|e| PackageError::Manifest {
            file: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }

    /// Every image input (cameras, then an image tactile input) in graph order.
    pub fn image_inputs(&self) -> Vec<ImageInput> {
        let mut v = self.inputs.cameras.clone();
        if let Some(t) = self.inputs.tactile.as_ref().and_then(|t| t.as_image()) {
            v.push(t);
        }
        v
    }

    pub fn features(&self) -> Vec<Feature> {
        let mut out = Vec::new();
        for c in &self.inputs.cameras {
            out.push(Feature {
                key: c.key.clone(),
                stat_len: c.channels,
            });
        }
        if let Some(s) = &self.inputs.state {
            out.push(Feature {
                key: s.key.clone(),
                stat_len: s.names.len(),
            });
        }
        match &self.inputs.tactile {
            Some(TactileInput::Taxels { key, size }) => out.push(Feature {
                key: key.clone(),
                stat_len: *size,
            }),
            Some(TactileInput::Image { key, channels, .. }) => out.push(Feature {
                key: key.clone(),
                stat_len: *channels,
            }),
            None => {}
        }
        out.push(Feature {
            key: self.outputs.action.key.clone(),
            stat_len: self.outputs.action.dim(),
        });
        out
    }

    /// Everything that can be checked without the graphs. `origin` names the file.
    pub fn validate(&self, origin: &str) -> Result<(), PackageError> {
        let bad = |field: &str, message: String| PackageError::Field {
            file: origin.to_string(),
            field: field.to_string(),
            message,
        };
        if self.format_version != FORMAT_VERSION {
            return Err(bad(
                "format_version",
                format!(
                    "is {}, this runtime reads format {FORMAT_VERSION}",
                    self.format_version
                ),
            ));
        }
        if self.n_obs_steps == 0 {
            return Err(bad("n_obs_steps", "must be >= 1".into()));
        }
        if self.kind == PolicyKind::Act && self.n_obs_steps != 1 {
            return Err(bad(
                "n_obs_steps",
                format!("is {}, ACT packages take exactly 1", self.n_obs_steps),
            ));
        }
        for (i, cam) in self.image_inputs().iter().enumerate() {
            let f = format!("inputs.cameras[{i}] ({})", cam.key);
            if cam.channels != 3 {
                return Err(bad(
                    &format!("{f}.channels"),
                    format!("is {}, only 3 is supported", cam.channels),
                ));
            }
            if cam.height == 0 || cam.width == 0 {
                return Err(bad(&f, "height and width must be >= 1".into()));
            }
        }
        if let Some(s) = &self.inputs.state {
            if s.names.is_empty() {
                return Err(bad("inputs.state.names", "is empty".into()));
            }
            if s.units.len() != s.names.len() {
                return Err(bad(
                    "inputs.state.units",
                    format!("has {} entries, names has {}", s.units.len(), s.names.len()),
                ));
            }
        }
        if let Some(TactileInput::Taxels { size, .. }) = &self.inputs.tactile {
            if *size == 0 {
                return Err(bad("inputs.tactile.size", "must be >= 1".into()));
            }
        }
        if self.inputs.cameras.is_empty()
            && self.inputs.state.is_none()
            && self.inputs.tactile.is_none()
        {
            return Err(bad("inputs", "declares no input".into()));
        }
        let a = &self.outputs.action;
        if a.names.is_empty() {
            return Err(bad("outputs.action.names", "is empty".into()));
        }
        if a.units.len() != a.names.len() {
            return Err(bad(
                "outputs.action.units",
                format!("has {} entries, names has {}", a.units.len(), a.names.len()),
            ));
        }
        if a.horizon == 0 {
            return Err(bad("outputs.action.horizon", "must be >= 1".into()));
        }
        if a.n_action_steps == 0 {
            return Err(bad("outputs.action.n_action_steps", "must be >= 1".into()));
        }
        if a.start_index + a.n_action_steps > a.horizon {
            return Err(bad(
                "outputs.action",
                format!(
                    "start_index {} + n_action_steps {} exceeds horizon {}",
                    a.start_index, a.n_action_steps, a.horizon
                ),
            ));
        }
        if a.prefix_d_max > 0 {
            if self.kind != PolicyKind::Maniflow {
                return Err(bad(
                    "outputs.action.prefix_d_max",
                    "only ManiFlow policies take an action prefix".into(),
                ));
            }
            if a.start_index + a.prefix_d_max >= a.horizon {
                return Err(bad(
                    "outputs.action.prefix_d_max",
                    format!(
                        "{} leaves no row to generate (start_index {}, horizon {})",
                        a.prefix_d_max, a.start_index, a.horizon
                    ),
                ));
            }
        }
        // Normalisation: every feature has an entry of the right length with finite stats.
        let features = self.features();
        for f in &features {
            let field = format!("normalization.\"{}\"", f.key);
            let Some(norm) = self.normalization.get(&f.key) else {
                return Err(bad(
                    &field,
                    "is missing (use mode = \"identity\" to say none)".into(),
                ));
            };
            for (name, v) in norm.stats() {
                if v.len() != f.stat_len {
                    return Err(bad(
                        &format!("{field}.{name}"),
                        format!("has {} values, the feature has {}", v.len(), f.stat_len),
                    ));
                }
                if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                    return Err(bad(
                        &format!("{field}.{name}[{j}]"),
                        format!("is {}, stats must be finite", v[j]),
                    ));
                }
            }
            if let Some(eps) = norm.eps() {
                if !(eps.is_finite() && eps >= 0.0) {
                    return Err(bad(
                        &format!("{field}.eps"),
                        format!("is {eps}, must be finite and >= 0"),
                    ));
                }
            }
            match norm {
                Normalization::MeanStd { std, .. } => {
                    if let Some(j) = std.iter().position(|s| *s < 0.0) {
                        return Err(bad(
                            &format!("{field}.std[{j}]"),
                            format!("is {}, must be >= 0", std[j]),
                        ));
                    }
                }
                Normalization::MinMax {
                    min: lo, max: hi, ..
                }
                | Normalization::Limits { min: lo, max: hi }
                | Normalization::Quantiles {
                    q01: lo, q99: hi, ..
                }
                | Normalization::Quantile10 {
                    q10: lo, q90: hi, ..
                } => {
                    if let Some(j) = lo.iter().zip(hi).position(|(l, h)| h < l) {
                        return Err(bad(
                            &format!("{field}[{j}]"),
                            format!("upper bound {} is below lower bound {}", hi[j], lo[j]),
                        ));
                    }
                }
                Normalization::Identity => {}
            }
        }
        if let Some(k) = self
            .normalization
            .keys()
            .find(|k| !features.iter().any(|f| &f.key == *k))
        {
            return Err(bad(
                &format!("normalization.\"{k}\""),
                "names no input or output of this policy".into(),
            ));
        }
        match self.kind {
            PolicyKind::Maniflow => {
                let Some(s) = &self.sampler else {
                    return Err(bad("sampler", "is required for kind = \"maniflow\"".into()));
                };
                if s.steps == 0 {
                    return Err(bad("sampler.steps", "must be >= 1".into()));
                }
                if self.graphs.encoder.is_none() {
                    return Err(bad(
                        "graphs.encoder",
                        "is required for kind = \"maniflow\"".into(),
                    ));
                }
                if self.graphs.velocity.is_none() {
                    return Err(bad(
                        "graphs.velocity",
                        "is required for kind = \"maniflow\"".into(),
                    ));
                }
                if self.graphs.act.is_some() {
                    return Err(bad("graphs.act", "belongs to kind = \"act\"".into()));
                }
            }
            PolicyKind::Act => {
                if self.sampler.is_some() {
                    return Err(bad("sampler", "belongs to kind = \"maniflow\"".into()));
                }
                if self.graphs.act.is_none() {
                    return Err(bad("graphs.act", "is required for kind = \"act\"".into()));
                }
                if self.graphs.encoder.is_some() || self.graphs.velocity.is_some() {
                    return Err(bad("graphs", "kind = \"act\" takes only graphs.act".into()));
                }
            }
        }
        let mut prev_end = 0;
        for (i, m) in self.modality_map.iter().enumerate() {
            if m.start >= m.end || m.start < prev_end {
                return Err(bad(
                    &format!("modality_map[{i}] ({})", m.modality),
                    format!(
                        "range [{}, {}) is empty, reversed or overlaps the previous one",
                        m.start, m.end
                    ),
                ));
            }
            prev_end = m.end;
        }
        for (name, g) in self.graph_files() {
            if g.sha256.len() != 64 || !g.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(
                    &format!("graphs.{name}.sha256"),
                    "must be 64 hex digits".into(),
                ));
            }
            if g.file.contains('/') || g.file.contains('\\') || g.file.is_empty() {
                return Err(bad(
                    &format!("graphs.{name}.file"),
                    format!("`{}` must be a plain file name", g.file),
                ));
            }
        }
        Ok(())
    }

    /// (table name, file) for each declared graph.
    pub fn graph_files(&self) -> Vec<(&'static str, &GraphFile)> {
        let mut v = Vec::new();
        if let Some(g) = &self.graphs.encoder {
            v.push(("encoder", g));
        }
        if let Some(g) = &self.graphs.velocity {
            v.push(("velocity", g));
        }
        if let Some(g) = &self.graphs.act {
            v.push(("act", g));
        }
        v
    }
}
