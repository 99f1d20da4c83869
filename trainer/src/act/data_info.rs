//! What an ACT run records about its data (`RUN_DIR/data.json`): camera keys and
//! sizes, state and action names, normalisation. Written by training, read by
//! the LeRobot config writer and by export.

use anyhow::{Context, Result};
use maniflow_runtime::policy::manifest::Normalization;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What an ACT run records about its data (`RUN_DIR/data.json`), for export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActDataInfo {
    pub dataset: String,
    /// (key, H, W) per camera, in token order.
    pub cameras: Vec<(String, usize, usize)>,
    pub state_key: String,
    pub state_names: Vec<String>,
    pub action_key: String,
    pub action_names: Vec<String>,
    pub normalization: BTreeMap<String, Normalization>,
}

impl ActDataInfo {
    pub fn load(run: &Path) -> Result<ActDataInfo> {
        let p = run.join("data.json");
        let text = std::fs::read(&p).with_context(|| {
            format!(
                "read {} (is {} an ACT run directory?)",
                p.display(),
                run.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("parse {}", p.display()))
    }
    pub fn state_dim(&self) -> usize {
        self.state_names.len()
    }
    pub fn action_dim(&self) -> usize {
        self.action_names.len()
    }
}
