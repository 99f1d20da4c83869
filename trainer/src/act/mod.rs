//! ACT (LeRobot's Action Chunking Transformer) in the onboard trainer: the model
//! with LeRobot's state-dict names, LeRobot's objective and optimiser defaults,
//! seed 002's attention regulariser and modality dropout, LeRobot checkpoint
//! interop, and export to an `act` policy package through our ONNX writer.

pub mod config;
pub mod data_info;
pub mod export;
pub mod lerobot;
pub mod model;
pub mod train;

/// The config text of `spec` (a file or a preset name) when it is an ACT config.
pub fn act_config_text(spec: &str) -> anyhow::Result<Option<(String, String)>> {
    let p = std::path::Path::new(spec);
    let (origin, text) = if p.exists() {
        (spec.to_string(), crate::config::read_config_text(p)?)
    } else {
        match crate::presets::get(spec) {
            Ok(t) => (format!("preset {spec}"), t.to_string()),
            Err(_) => return Ok(None),
        }
    };
    Ok(config::is_act_toml(&text).then_some((origin, text)))
}
