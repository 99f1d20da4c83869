//! Staged schedules (`[[train.stages]]`, seed 004's warm-up / transition / fine-tune):
//! which parameters a stage keeps fixed, checked against the model when a run starts.

use crate::config::{Config, Stage};
use anyhow::{bail, Result};

/// Whether `prefix` names variable `name`: the name itself or a dotted path below it
/// (`model.blocks.1` is `model.blocks.1.*`, not `model.blocks.10.*`).
pub fn names(prefix: &str, name: &str) -> bool {
    name == prefix || name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'))
}

/// Whether `stage` keeps variable `name` fixed.
pub fn frozen_by(stage: &Stage, name: &str) -> bool {
    stage.frozen.iter().any(|p| names(p, name))
}

/// Every `frozen` prefix of every stage must name at least one of the model's variables
/// (a typo would otherwise train what the user meant to keep fixed).
pub fn check_frozen_prefixes(cfg: &Config, variables: &[String]) -> Result<()> {
    for (i, stage) in cfg.train.stages.iter().enumerate() {
        for p in &stage.frozen {
            if !variables.iter().any(|n| names(p, n)) {
                let mut tops: Vec<String> = variables.iter().map(|n| n.split('.').take(2).collect::<Vec<_>>().join(".")).collect();
                tops.dedup();
                bail!(
                    "field `train.stages[{i}].frozen` (stage \"{}\"): {p:?} names no parameter of this model; prefixes start with one of: {}",
                    stage.name,
                    tops.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// The line logged when a stage starts.
pub fn describe(cfg: &Config, index: usize, stage: &Stage, step: u64, frozen_tensors: usize) -> String {
    let end = stage.until.map_or("the end".to_string(), |u| format!("step {u}"));
    let frozen = if stage.frozen.is_empty() { "nothing".to_string() } else { format!("{} ({frozen_tensors} tensors)", stage.frozen.join(", ")) };
    let router = if cfg.model.experts > 0 { format!(", router temperature {}", cfg.router_temperature_at(step)) } else { String::new() };
    format!("stage {index} \"{}\" from step {step} to {end}: base lr {:e}, frozen {frozen}{router}", stage.name, cfg.lr_base_at(step))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(extra: &str) -> anyhow::Result<Config> {
        let mut text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/so101-cpu.toml")).unwrap();
        text.push_str(extra);
        Config::from_toml_str(&text, "staged.toml")
    }

    const THREE: &str = r#"
[[train.stages]]
name = "warm-up"
until = 100
lr = 1e-4
frozen = ["obs_encoder"]
[[train.stages]]
name = "transition"
until = 300
[[train.stages]]
name = "fine-tune"
lr = 1e-5
frozen = ["model.blocks.0", "obs_encoder.rgb"]
"#;

    #[test]
    fn stages_cover_the_steps_in_order() {
        let c = staged(THREE).unwrap();
        let name = |s: u64| c.stage_at(s).map(|(i, st)| (i, st.name.clone())).unwrap();
        assert_eq!(name(1), (0, "warm-up".into()));
        assert_eq!(name(100), (0, "warm-up".into()));
        assert_eq!(name(101), (1, "transition".into()));
        assert_eq!(name(300), (1, "transition".into()));
        assert_eq!(name(301), (2, "fine-tune".into()));
        assert_eq!(name(1_000_000), (2, "fine-tune".into()));
        assert_eq!(c.lr_base_at(50), 1e-4);
        assert_eq!(c.lr_base_at(200), c.train.lr, "a stage without lr keeps train.lr");
        assert_eq!(c.lr_base_at(400), 1e-5);
        // The config round-trips through the run directory's config.toml.
        assert_eq!(Config::from_toml_str(&c.to_toml(), "rt").unwrap(), c);
        let none = staged("").unwrap();
        assert!(none.stage_at(5).is_none());
        assert_eq!(none.lr_base_at(5), none.train.lr);
    }

    #[test]
    fn bad_stages_are_refused_by_field() {
        let cases = [
            ("[[train.stages]]\nname = \"a\"\nuntil = 10\n", "leave `until` out"),
            ("[[train.stages]]\nname = \"a\"\n[[train.stages]]\nname = \"b\"\n", "train.stages[0].until` (stage \"a\") is missing"),
            ("[[train.stages]]\nname = \"a\"\nuntil = 10\n[[train.stages]]\nname = \"b\"\nuntil = 10\n[[train.stages]]\nname = \"c\"\n", "must be after the previous stage's end (10)"),
            ("[[train.stages]]\nname = \"a\"\nuntil = 10\n[[train.stages]]\nname = \"a\"\n", "two stages have this name"),
            ("[[train.stages]]\nname = \"a\"\nrouter_temperature = 2.0\n", "needs model.experts"),
            ("[[train.stages]]\nname = \"a\"\nlr = -1.0\n", "train.stages[0].lr"),
            ("[[train.stages]]\nname = \"\"\n", "train.stages[0].name"),
            ("[[train.stages]]\nname = \"a\"\nfrobnicate = 1\n", "frobnicate"),
        ];
        for (extra, want) in cases {
            let e = format!("{:#}", staged(extra).unwrap_err());
            assert!(e.contains(want) && e.starts_with("staged.toml"), "{extra:?}: error {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn frozen_prefixes_name_whole_path_segments() {
        assert!(names("model.blocks.1", "model.blocks.1.mlp.fc1.weight"));
        assert!(!names("model.blocks.1", "model.blocks.10.mlp.fc1.weight"));
        assert!(names("obs_encoder", "obs_encoder.rgb.head.conv1.weight"));
        assert!(!names("obs", "obs_encoder.rgb.head.conv1.weight"));
        let c = staged(THREE).unwrap();
        let vars: Vec<String> = ["obs_encoder.rgb.head.w", "model.blocks.0.mlp.fc1.weight", "model.blocks.1.mlp.fc1.weight"].map(String::from).to_vec();
        check_frozen_prefixes(&c, &vars).unwrap();
        let bad = staged("[[train.stages]]\nname = \"only\"\nfrozen = [\"obs_encodr\"]\n").unwrap();
        let e = check_frozen_prefixes(&bad, &vars).unwrap_err().to_string();
        assert!(e.contains("\"obs_encodr\" names no parameter") && e.contains("obs_encoder.rgb") && e.contains("stage \"only\""), "{e}");
    }
}
