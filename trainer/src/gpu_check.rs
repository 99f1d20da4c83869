//! `maniflow-train gpu-check`: the trainer's part of `make gpu-check`.
//!
//! 1. One training step of a config on the GPU against the same step on the
//!    CPU: the same initial weights, the same batch and the same random draws
//!    (drawn on the CPU generator for both, `rng::with_host_draws`), then the
//!    largest differences in the loss, the gradient norm, the updated weights
//!    and the EMA weights.
//! 2. The same step with bf16 autocast on the GPU, against the f32 GPU step.
//! 3. Steps/s on the GPU (device-side draws, as in training) next to the
//!    PyTorch reference in eager mode on the same GPU, in this run.

use crate::bench::{autocast_name, reference_bench, BenchModel};
use crate::cuda::Autocast;
use anyhow::Result;
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Device, Kind};

/// Options of `maniflow-train gpu-check`.
#[derive(Debug, Clone)]
pub struct GpuCheckOptions {
    pub config: String,
    pub batch: Option<usize>,
    pub device: String,
    pub steps: usize,
    pub reference: bool,
    /// Relative tolerance of the loss and of 1 - gradient cosine (10x for the
    /// gradient norm), GPU f32 vs CPU.
    pub tol: f64,
}

/// Largest |a - b| over all variables of two stores with the same names.
fn max_abs_diff(a: &VarStore, b: &VarStore) -> f64 {
    let bv = b.variables();
    let mut worst = 0f64;
    for (name, x) in a.variables() {
        if let Some(y) = bv.get(&name) {
            let d = (x.to_device(Device::Cpu) - y.to_device(Device::Cpu))
                .abs()
                .max()
                .to_kind(Kind::Double)
                .double_value(&[]);
            worst = worst.max(d);
        }
    }
    worst
}

/// Agreement of two models' gradients (same variable names): cosine of the
/// whole gradient vectors, and the largest |difference| over the largest |g|.
fn grad_agreement(a: &VarStore, b: &VarStore) -> (f64, f64) {
    let bv = b.variables();
    let (mut dot, mut na, mut nb, mut dmax, mut gmax) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (name, x) in a.variables() {
        let (Some(y), gx) = (bv.get(&name), x.grad()) else {
            continue;
        };
        let gy = y.grad();
        if !gx.defined() || !gy.defined() {
            continue;
        }
        let gx = gx.to_device(Device::Cpu).to_kind(Kind::Double);
        let gy = gy.to_device(Device::Cpu).to_kind(Kind::Double);
        dot += (&gx * &gy).sum(Kind::Double).double_value(&[]);
        na += gx.square().sum(Kind::Double).double_value(&[]);
        nb += gy.square().sum(Kind::Double).double_value(&[]);
        dmax = dmax.max((&gx - &gy).abs().max().double_value(&[]));
        gmax = gmax.max(gx.abs().max().double_value(&[]));
    }
    (
        dot / (na.sqrt() * nb.sqrt()).max(1e-300),
        dmax / gmax.max(1e-300),
    )
}

/// One step from the same state on both models with the same host draws.
fn step_pair(
    a: &mut BenchModel,
    b: &mut BenchModel,
    ac_a: Autocast,
    ac_b: Autocast,
) -> ((f64, f64), (f64, f64)) {
    let seed = 1234;
    tch::manual_seed(seed);
    let ra = crate::rng::with_host_draws(|| a.step(ac_a));
    tch::manual_seed(seed);
    let rb = crate::rng::with_host_draws(|| b.step(ac_b));
    (ra, rb)
}

pub fn run(o: &GpuCheckOptions) -> Result<bool> {
    let mut cfg = crate::presets::load(&o.config)?;
    if let Some(bs) = o.batch {
        cfg.train.batch_size = bs;
    }
    let dev = crate::train::parse_device(&o.device)?;
    if dev == Device::Cpu {
        anyhow::bail!("gpu-check needs a CUDA device (--device cuda:N)");
    }
    let name = crate::bench::device_name(dev);
    println!(
        "trainer gpu-check: config {} batch {} on {name} (libtorch sees {} GPU(s))",
        cfg.name,
        cfg.train.batch_size,
        tch::Cuda::device_count()
    );

    // 1. GPU f32 vs CPU f32, one step.
    let mut cpu = BenchModel::new(&cfg, Device::Cpu)?;
    let mut gpu = BenchModel::new(&cfg, dev)?;
    let init = max_abs_diff(&cpu.vs, &gpu.vs);
    let ((lc, gc), (lg, gg)) = step_pair(&mut cpu, &mut gpu, Autocast::Off, Autocast::Off);
    let dw = max_abs_diff(&cpu.vs, &gpu.vs);
    let de = max_abs_diff(&cpu.ema_vs, &gpu.ema_vs);
    let (cos, gdiff) = grad_agreement(&cpu.vs, &gpu.vs);
    let lr = cfg.train.lr;
    let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(1e-12);
    println!("step parity (one {} step, same weights, batch and random draws; initial weights differ by {init:.1e}):", cfg.name);
    println!(
        "  loss       cpu {lc:.8} gpu {lg:.8} rel diff {:.3e}",
        rel(lc, lg)
    );
    println!(
        "  grad_norm  cpu {gc:.6} gpu {gg:.6} rel diff {:.3e}",
        rel(gc, gg)
    );
    println!("  gradients  cosine {cos:.8}; max |diff| / max |g| {gdiff:.3e}");
    println!("  weights after AdamW: max |diff| {dw:.3e} (= {:.2} lr; AdamW's first step moves each weight by about lr, so a gradient near 0 whose sign differs moves it by up to 2 lr); EMA weights max |diff| {de:.3e}", dw / lr);
    let ok = lg.is_finite()
        && rel(lc, lg) <= o.tol
        && rel(gc, gg) <= 10.0 * o.tol
        && cos >= 1.0 - o.tol
        && dw <= 2.0 * lr * 1.01;
    println!("  tolerance: loss rel <= {:.0e}, grad_norm rel <= {:.0e}, gradient cosine >= 1 - {:.0e}, weights <= 2 lr: {}", o.tol, 10.0 * o.tol, o.tol, if ok { "PASS" } else { "FAIL" });

    // 2. bf16 autocast vs f32 on the GPU, one step from the same state.
    let mut f32m = BenchModel::new(&cfg, dev)?;
    let mut bf16 = BenchModel::new(&cfg, dev)?;
    let ((l32, g32), (l16, g16)) = step_pair(&mut f32m, &mut bf16, Autocast::Off, Autocast::Bf16);
    let dwb = max_abs_diff(&f32m.vs, &bf16.vs);
    println!("bf16 autocast vs f32 on {name} (one step, same state and draws):");
    println!("  loss f32 {l32:.9} bf16 {l16:.9} (rel {:.3e}); grad_norm f32 {g32:.4} bf16 {g16:.4} (rel {:.3e}); weights max |diff| {dwb:.3e}",
        (l32 - l16).abs() / l32.abs().max(1e-12), (g32 - g16).abs() / g32.abs().max(1e-12));

    // What autocast does to our ops: the dtype a matmul, the encoder and the
    // velocity net return under it.
    let probe = crate::cuda::run(Autocast::Bf16, dev, || {
        let x = tch::Tensor::ones([4, 4], (Kind::Float, dev));
        let ctx = bf16.net.encode(&bf16.obs);
        let b = bf16.x1.size()[0];
        let t = tch::Tensor::zeros([b], (Kind::Float, dev));
        let v = bf16.net.velocity(&bf16.x1, &t, &t, &ctx, false, None);
        (x.matmul(&x).kind(), ctx.kind(), v.kind())
    });
    println!(
        "  under bf16 autocast: matmul -> {:?}, encoder context -> {:?}, velocity -> {:?}",
        probe.0, probe.1, probe.2
    );

    // 3. Throughput on the GPU, ours then PyTorch eager, f32 and bf16.
    for ac in [Autocast::Off, Autocast::Bf16] {
        let mut m = BenchModel::new(&cfg, dev)?;
        for _ in 0..3 {
            m.step(ac);
        }
        m.sync();
        let t0 = Instant::now();
        for _ in 0..o.steps {
            m.step(ac);
        }
        m.sync();
        let ours = o.steps as f64 / t0.elapsed().as_secs_f64();
        let line = format!(
            "throughput {} batch {} on {name}, autocast {}: maniflow-train {ours:.2} steps/s",
            cfg.name,
            cfg.train.batch_size,
            autocast_name(ac)
        );
        if o.reference {
            match reference_bench(
                &cfg,
                cfg.train.batch_size,
                o.steps,
                tch::get_num_threads() as usize,
                &name,
                ac,
                false,
            ) {
                Ok(v) => {
                    let theirs = v["steps_per_s"].as_f64().unwrap_or(f64::NAN);
                    println!(
                        "{line}, PyTorch eager {theirs:.2} steps/s, ratio {:.2}x",
                        ours / theirs
                    );
                }
                Err(e) => println!("{line}; PyTorch eager reference failed: {e:#}"),
            }
        } else {
            println!("{line}");
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parity machinery on the CPU alone: two models built for the check
    /// start equal, and one step with the same host draws (dropout and
    /// augmentation included) leaves them bit-identical, with gradients whose
    /// cosine is 1; a different seed gives a different step.
    #[test]
    fn the_same_step_twice_is_identical_and_a_different_draw_is_not() {
        let _rng = crate::tch_rng_lock();
        let mut cfg = crate::presets::load("so101-cpu").unwrap();
        cfg.train.batch_size = 4;
        let mut a = BenchModel::new(&cfg, Device::Cpu).unwrap();
        let mut b = BenchModel::new(&cfg, Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&a.vs, &b.vs), 0.0);
        let ((la, ga), (lb, gb)) = step_pair(&mut a, &mut b, Autocast::Off, Autocast::Bf16);
        assert!(la.is_finite() && ga > 0.0);
        assert_eq!(
            (la, ga),
            (lb, gb),
            "bf16 autocast must be a no-op on the CPU"
        );
        assert_eq!(max_abs_diff(&a.vs, &b.vs), 0.0);
        assert_eq!(max_abs_diff(&a.ema_vs, &b.ema_vs), 0.0);
        let (cos, d) = grad_agreement(&a.vs, &b.vs);
        assert!((cos - 1.0).abs() < 1e-12 && d == 0.0, "cos {cos} diff {d}");
        // Another draw: the next step of `a` alone differs from `b`'s.
        tch::manual_seed(99);
        let _ = crate::rng::with_host_draws(|| a.step(Autocast::Off));
        tch::manual_seed(1234);
        let _ = crate::rng::with_host_draws(|| b.step(Autocast::Off));
        assert!(max_abs_diff(&a.vs, &b.vs) > 0.0);
    }
}
