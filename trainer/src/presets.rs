//! Config presets (`trainer/configs/*.toml`), embedded in the binary.

use crate::config::Config;
use anyhow::{bail, Result};
use std::path::Path;

pub const PRESETS: &[(&str, &str)] = &[
    ("so101-cpu", include_str!("../configs/so101-cpu.toml")),
    ("upstream-image", include_str!("../configs/upstream-image.toml")),
    ("act-so101", include_str!("../configs/act-so101.toml")),
    ("act-so101-sim", include_str!("../configs/act-so101-sim.toml")),
];

pub fn get(name: &str) -> Result<&'static str> {
    match PRESETS.iter().find(|(n, _)| *n == name) {
        Some((_, t)) => Ok(t),
        None => bail!(
            "unknown preset `{name}` (presets: {})",
            PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A config file path, or a preset name.
pub fn load(spec: &str) -> Result<Config> {
    let p = Path::new(spec);
    if p.exists() {
        return Config::load(p);
    }
    if spec.ends_with(".toml") || spec.contains('/') {
        bail!("config file {spec} does not exist");
    }
    Config::from_toml_str(get(spec)?, &format!("preset {spec}"))
}
