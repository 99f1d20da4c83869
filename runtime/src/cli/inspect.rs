//! `maniflow inspect POLICY_DIR`.

use std::path::PathBuf;

use crate::policy::manifest::{Manifest, TactileInput};
use crate::policy::options::EngineOptions;
use crate::policy::package::PolicyPackage;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Policy package directory (holds policy.toml).
    pub policy: PathBuf,
    /// Print the manifest and graph facts as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    crate::policy::ortlib::init()?;
    let pkg = PolicyPackage::load(&a.policy, &EngineOptions::default())?;
    if a.json {
        let graphs: Vec<serde_json::Value> = pkg
            .graphs
            .iter()
            .map(|g| {
                serde_json::json!({
                    "name": g.name, "file": g.path.display().to_string(), "sha256": g.sha256,
                    "parameters": g.parameters,
                    "inputs": g.session.inputs().iter().map(|o| (o.name().to_string(), o.dtype().to_string())).collect::<Vec<_>>(),
                    "outputs": g.session.outputs().iter().map(|o| (o.name().to_string(), o.dtype().to_string())).collect::<Vec<_>>(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "manifest": pkg.manifest,
            "graphs": graphs,
            "parameters": pkg.parameter_count(),
            "context": {"tokens": pkg.context.tokens, "width": pkg.context.width},
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_manifest(&pkg.manifest, &pkg);
    Ok(())
}

fn print_manifest(m: &Manifest, pkg: &PolicyPackage) {
    println!(
        "policy   {} ({:?}), format v{}",
        m.name, m.kind, m.format_version
    );
    if !m.description.is_empty() {
        println!("         {}", m.description);
    }
    println!(
        "producer {} {}{}",
        m.producer.name,
        m.producer.version,
        m.producer
            .parity_max_abs_err
            .map_or(String::new(), |e| format!(
                ", export parity max abs err {e:.2e}"
            ))
    );
    println!("obs      n_obs_steps = {}", m.n_obs_steps);
    println!("inputs");
    for c in &m.inputs.cameras {
        println!(
            "  camera  {:<32} {}x{}x{} {:?}, resize {:?}",
            c.key, c.height, c.width, c.channels, c.color_order, c.resize
        );
    }
    if let Some(s) = &m.inputs.state {
        let named: Vec<String> = s
            .names
            .iter()
            .zip(&s.units)
            .map(|(n, u)| format!("{n} [{u}]"))
            .collect();
        println!("  state   {:<32} {}", s.key, named.join(", "));
    }
    match &m.inputs.tactile {
        Some(TactileInput::Taxels { key, size }) => println!("  tactile {key:<32} {size} taxels"),
        Some(TactileInput::Image {
            key, height, width, ..
        }) => println!("  tactile {key:<32} image {height}x{width}"),
        None => {}
    }
    let a = &m.outputs.action;
    println!("outputs");
    let named: Vec<String> = a
        .names
        .iter()
        .zip(&a.units)
        .map(|(n, u)| format!("{n} [{u}]"))
        .collect();
    println!("  action  {:<32} {}", a.key, named.join(", "));
    println!(
        "          horizon {}, n_action_steps {}, start_index {}",
        a.horizon, a.n_action_steps, a.start_index
    );
    println!("normalization");
    for (k, n) in &m.normalization {
        let stats: Vec<String> = n
            .stats()
            .iter()
            .map(|(name, v)| {
                let shown: Vec<String> = v.iter().take(6).map(|x| format!("{x:.4}")).collect();
                format!(
                    "{name}=[{}{}]",
                    shown.join(", "),
                    if v.len() > 6 { ", ..." } else { "" }
                )
            })
            .collect();
        println!("  {k:<40} {:<10} {}", n.mode_name(), stats.join(" "));
    }
    if let Some(s) = &m.sampler {
        println!(
            "sampler  steps {}, target_t {:?}, seed {}",
            s.steps, s.target_t, s.seed
        );
    }
    if !m.modality_map.is_empty() {
        let mm: Vec<String> = m
            .modality_map
            .iter()
            .map(|r| format!("{} [{}, {})", r.modality, r.start, r.end))
            .collect();
        println!(
            "context  {} tokens x {}: {}",
            pkg.context.tokens,
            pkg.context.width,
            mm.join(", ")
        );
    }
    println!("graphs");
    for g in &pkg.graphs {
        println!(
            "  {:<9} {:<16} sha256 {}  {} parameters",
            g.name,
            g.path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            g.sha256,
            g.parameters.map_or("?".to_string(), |p| p.to_string())
        );
        for o in g.session.inputs() {
            println!("            in  {:<28} {}", o.name(), o.dtype());
        }
        for o in g.session.outputs() {
            println!("            out {:<28} {}", o.name(), o.dtype());
        }
    }
    println!(
        "parameters {}",
        pkg.parameter_count()
            .map_or("?".to_string(), |p| p.to_string())
    );
}
