//! `maniflow gpu-check`: the runtime's part of `make gpu-check`, run on a GPU
//! machine. Prints, for each preprocessing case, the GPU path against the CPU
//! path (max abs error, goal <= 1e-5) and the time per observation of both;
//! then, when ONNX Runtime's CUDA provider loads, a package run on the GPU
//! against the CPU (same observation and noise) and its latency at N = 1, 2.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::policy::engine::Engine;
use crate::policy::gpu::{self, GpuImages};
use crate::policy::manifest::{ColorOrder, ImageInput, Normalization, ResizeRule};
use crate::policy::normalize::Normalizer;
use crate::policy::options::{EngineOptions, ExecutionProvider};
use crate::policy::preprocess::{Frame, ImagePreprocessor};
use crate::stats::Latency;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// CUDA device index.
    #[arg(long, default_value_t = 0)]
    pub device: u32,
    /// Timed observations per preprocessing case.
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
    /// A policy package to run on the GPU against the CPU and to time at N = 1, 2.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Timed chunks per N for the package.
    #[arg(long, default_value_t = 100)]
    pub chunks: usize,
}

/// One preprocessing case: cameras (source size, order) -> the input spec.
struct Case {
    name: &'static str,
    cams: Vec<(usize, usize, ColorOrder)>,
    out: (usize, usize),
    resize: ResizeRule,
}

fn cases() -> Vec<Case> {
    use ColorOrder::{Bgr, Rgb};
    vec![
        Case {
            name: "2 cams 640x480 RGB -> 224x224 bilinear",
            cams: vec![(640, 480, Rgb), (640, 480, Rgb)],
            out: (224, 224),
            resize: ResizeRule::Bilinear,
        },
        Case {
            name: "2 cams 1280x720 BGR -> 96x96 bilinear",
            cams: vec![(1280, 720, Bgr), (1280, 720, Bgr)],
            out: (96, 96),
            resize: ResizeRule::Bilinear,
        },
        Case {
            name: "1 cam 320x240 RGB -> 84x84 nearest",
            cams: vec![(320, 240, Rgb)],
            out: (84, 84),
            resize: ResizeRule::Nearest,
        },
        Case {
            name: "3 cams 224x224 RGB, no resize",
            cams: vec![(224, 224, Rgb); 3],
            out: (224, 224),
            resize: ResizeRule::Bilinear,
        },
        Case {
            name: "1 cam 96x72 RGB -> 224x224 bilinear (upscale)",
            cams: vec![(96, 72, Rgb)],
            out: (224, 224),
            resize: ResizeRule::Bilinear,
        },
    ]
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (g, module) = gpu::open_with_kernels(a.device as usize)?;
    println!(
        "runtime gpu-check: cuda:{} {} (compute capability {}.{}); driver {}, NVRTC {}",
        g.index,
        g.name,
        g.compute_capability.0,
        g.compute_capability.1,
        gpu::probe::load_driver()?.display(),
        gpu::probe::load_nvrtc()?.display()
    );
    let mut worst = 0f32;
    for case in cases() {
        worst = worst.max(preprocess_case(&g, &module, &case, a.iters)?);
    }
    println!(
        "preprocessing: max abs error over all cases {worst:.3e} (goal <= 1e-5): {}",
        if worst <= 1e-5 { "PASS" } else { "FAIL" }
    );
    if let Some(dir) = &a.policy {
        engine_check(dir, a.device, a.chunks)?;
    }
    if worst > 1e-5 {
        anyhow::bail!("GPU preprocessing differs from the CPU path by {worst:e}");
    }
    Ok(())
}

fn preprocess_case(
    g: &gpu::Gpu,
    module: &std::sync::Arc<cudarc::driver::CudaModule>,
    case: &Case,
    iters: usize,
) -> anyhow::Result<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let norm = Normalization::MeanStd {
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        eps: 1e-8,
    };
    let specs: Vec<(ImageInput, Normalizer)> = (0..case.cams.len())
        .map(|i| {
            let spec = ImageInput {
                key: format!("observation.images.cam{i}"),
                height: case.out.1,
                width: case.out.0,
                channels: 3,
                color_order: ColorOrder::Rgb,
                resize: case.resize,
            };
            (spec, Normalizer::new(&norm, 3))
        })
        .collect();
    let frames_data: Vec<Vec<u8>> = case
        .cams
        .iter()
        .map(|&(w, h, _)| (0..w * h * 3).map(|_| rng.random::<u8>()).collect())
        .collect();
    let frames: Vec<Frame<'_>> = case
        .cams
        .iter()
        .zip(&frames_data)
        .map(|(&(w, h, order), d)| Frame {
            data: d,
            width: w,
            height: h,
            order,
        })
        .collect();
    let mut gpu_pre = GpuImages::new(g, module.clone(), &specs, 1)?;
    let mut cpu_pre: Vec<ImagePreprocessor> = specs
        .iter()
        .map(|(s, n)| ImagePreprocessor::new(s, n))
        .collect();
    let plane = 3 * case.out.0 * case.out.1;
    let mut cpu_out = vec![0f32; plane];
    let mut gpu_out = vec![0f32; plane];
    gpu_pre.process(g, 0, &frames)?;
    let mut worst = 0f32;
    for (i, f) in frames.iter().enumerate() {
        cpu_pre[i].process(f, &mut cpu_out)?;
        gpu_pre.download(g, i, &mut gpu_out)?;
        let e = cpu_out
            .iter()
            .zip(&gpu_out)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(e);
    }
    let mut t_gpu = Latency::new();
    let mut t_cpu = Latency::new();
    for _ in 0..iters {
        let t0 = Instant::now();
        gpu_pre.process(g, 0, &frames)?;
        g.sync()?;
        t_gpu.record(t0.elapsed());
        let t0 = Instant::now();
        for (i, f) in frames.iter().enumerate() {
            cpu_pre[i].process(f, &mut cpu_out)?;
        }
        t_cpu.record(t0.elapsed());
    }
    let (pg, pc) = (t_gpu.percentiles(), t_cpu.percentiles());
    println!(
        "  {:<48} max abs err {worst:.3e} | per observation: GPU p50 {:.1} us p99 {:.1} us (upload + kernel + sync), CPU p50 {:.1} us p99 {:.1} us (1 thread)",
        case.name, pg.p50_us, pg.p99_us, pc.p50_us, pc.p99_us
    );
    Ok(worst)
}

/// The package on the GPU against the CPU, then its latency at N = 1 and 2.
fn engine_check(dir: &std::path::Path, device: u32, chunks: usize) -> anyhow::Result<()> {
    crate::policy::ortlib::init()?;
    let cpu_opts = EngineOptions {
        intra_threads: 4,
        ..Default::default()
    };
    let gpu_opts = EngineOptions {
        provider: format!("cuda:{device}")
            .parse::<ExecutionProvider>()
            .map_err(|e| anyhow::anyhow!(e))?,
        ..cpu_opts.clone()
    };
    let mut gpu_engine = match Engine::load(dir, &gpu_opts) {
        Ok(e) => e,
        Err(e) => {
            println!("ONNX Runtime CUDA provider: not usable here: {e}");
            return Ok(());
        }
    };
    let mut cpu_engine = Engine::load(dir, &cpu_opts)
        .with_context(|| format!("loading {} on the CPU", dir.display()))?;
    let mut obs =
        crate::cli::synthetic::SyntheticObservation::new(&cpu_engine.package().manifest, None);
    obs.update(11);
    let x0: Vec<f32> = {
        let mut r = ChaCha8Rng::seed_from_u64(3);
        (0..horizon(&cpu_engine) * cpu_engine.action_dim())
            .map(|_| r.sample::<f32, _>(rand_distr::StandardNormal))
            .collect()
    };
    for n in [1usize, 2] {
        cpu_engine.set_steps(n)?;
        gpu_engine.set_steps(n)?;
        obs.apply(&mut cpu_engine)?;
        obs.apply(&mut gpu_engine)?;
        let a = cpu_engine.infer_with_noise(&x0)?.to_vec();
        let b = gpu_engine.infer_with_noise(&x0)?.to_vec();
        let err = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        println!("engine N={n}: GPU (CUDA provider, device-side I/O) vs CPU chunk max abs error {err:.3e}");
        let mut lat = Latency::new();
        for _ in 0..chunks {
            let t0 = Instant::now();
            obs.apply(&mut gpu_engine)?;
            gpu_engine.infer()?;
            lat.record(t0.elapsed());
        }
        let p = lat.percentiles();
        println!(
            "maniflow bench-equivalent {} N={n} on cuda:{device}: preprocess + infer per chunk p50 {:.3} ms p99 {:.3} ms ({} chunks)",
            dir.display(),
            p.p50_us / 1e3,
            p.p99_us / 1e3,
            chunks
        );
    }
    Ok(())
}

fn horizon(e: &Engine) -> usize {
    e.package().manifest.outputs.action.horizon
}
