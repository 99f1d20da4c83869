//! `maniflow infer POLICY_DIR --input OBS.npz --output OUT.npz`.

use std::path::PathBuf;

use crate::cli::npz::{write_arrays, ObservationFile};

use super::RunOpts;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Policy package directory.
    pub policy: PathBuf,
    /// Observation .npz: arrays named by the manifest's input keys, raw units
    /// (images uint8 (To,H,W,3) or (H,W,3) RGB; state/taxels float32 (To,N) or (N,)).
    #[arg(long)]
    pub input: PathBuf,
    /// Output .npz: `action` (n_action_steps, Da) and `action_chunk` (horizon - start_index, Da), unnormalised.
    #[arg(long)]
    pub output: PathBuf,
    /// Initial noise (1, T, Da) as array `noise` in this .npz instead of the seeded stream (parity checks).
    #[arg(long)]
    pub noise: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunOpts,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut engine = super::load_engine(&a.policy, &a.run)?;
    let obs = ObservationFile::load(&a.input, &engine.package().manifest)?;
    obs.apply(&mut engine)?;
    let chunk = match &a.noise {
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            let mut npz = ndarray_npy::NpzReader::new(f)
                .map_err(|e| anyhow::anyhow!("{}: not an .npz: {e}", p.display()))?;
            let noise: ndarray::ArrayD<f32> = npz
                .by_name("noise")
                .map_err(|e| anyhow::anyhow!("{}: array `noise`: {e}", p.display()))?;
            let noise: Vec<f32> = noise.iter().copied().collect();
            engine.infer_with_noise(&noise)?.to_vec()
        }
        None => engine.infer()?.to_vec(),
    };
    let da = engine.action_dim();
    let n_exec = engine.n_action_steps();
    let rows = engine.chunk_len();
    write_arrays(
        &a.output,
        &[
            ("action", vec![n_exec, da], &chunk[..n_exec * da]),
            ("action_chunk", vec![rows, da], &chunk),
        ],
    )?;
    let t = engine.last_times();
    println!(
        "wrote {} (action {}x{}, chunk {}x{}); encoder {:.3} ms, velocity {:.3} ms over {} step(s)",
        a.output.display(),
        n_exec,
        da,
        rows,
        da,
        t.encoder.as_secs_f64() * 1e3,
        t.velocity.as_secs_f64() * 1e3,
        engine.steps()
    );
    Ok(())
}
