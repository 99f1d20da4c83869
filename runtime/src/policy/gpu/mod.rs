//! The GPU path, through cudarc with dynamic loading: nothing CUDA is linked
//! at build time, and the driver and NVRTC are found and opened at run time
//! (`probe`), each with a one-line error when missing. Kernels are compiled by
//! NVRTC when a GPU path opens (`kernels`). `preprocess` turns camera frames
//! into the graph's CHW f32 inputs in device memory; `sampler` keeps ManiFlow's
//! few-step sampler on the device around ONNX Runtime's CUDA provider.
//!
//! Part of the policy layer: imports nothing above it.

pub mod kernels;
pub mod preprocess;
pub mod probe;
pub mod sampler;

pub use preprocess::GpuImages;
pub use probe::Gpu;

use thiserror::Error;

/// Why the GPU path cannot be used. Every message is one line.
#[derive(Debug, Clone, Error)]
pub enum GpuError {
    #[error("no CUDA driver (libcuda.so.1) could be loaded (looked at: {looked}); install the NVIDIA driver, or run on the CPU (--device cpu, or allow the fallback with --cpu-fallback / `cpu_fallback = true`)")]
    NoDriver { looked: String },
    #[error("NVRTC (libnvrtc.so.13) could not be loaded (looked at: {looked}); `make bootstrap` installs it with the torch wheel, or set MANIFLOW_NVRTC to libnvrtc.so.13")]
    NoNvrtc { looked: String },
    #[error("cuda:{index}: {} (run on the CPU with --device cpu)", if *count == 0 { "the CUDA driver sees no GPU".to_string() } else { format!("no such GPU; the driver sees {count} (cuda:0..cuda:{})", count - 1) })]
    NoDevice { index: usize, count: usize },
    #[error("{what}: {message}")]
    Driver { what: String, message: String },
    #[error("NVRTC could not compile the kernels: {message}")]
    Compile { message: String },
    #[error("{message}")]
    Unsupported { message: String },
}

/// Open device `index` and load the kernels for its architecture.
pub fn open_with_kernels(
    index: usize,
) -> Result<(Gpu, std::sync::Arc<cudarc::driver::CudaModule>), GpuError> {
    let gpu = Gpu::open(index)?;
    let ptx = kernels::compile(Some(gpu.compute_capability))?;
    let module = gpu.ctx.load_module(ptx).map_err(|e| GpuError::Driver {
        what: format!("cuda:{index}: loading the kernels"),
        message: e.to_string(),
    })?;
    Ok((gpu, module))
}

/// The GPU an engine with `opts` runs on: opened (with its kernels) when the
/// provider is CUDA. When it cannot be opened, a one-line error, or, when the
/// options allow the CPU fallback (`error_on_failure` off), a warning on
/// stderr and CPU options instead.
#[allow(clippy::type_complexity)]
pub fn open_for(
    opts: &crate::policy::options::EngineOptions,
) -> Result<
    (
        crate::policy::options::EngineOptions,
        Option<(Gpu, std::sync::Arc<cudarc::driver::CudaModule>)>,
    ),
    crate::error::EngineError,
> {
    let Some(index) = opts.provider.cuda_device() else {
        return Ok((opts.clone(), None));
    };
    match open_with_kernels(index as usize) {
        Ok(g) => Ok((
            crate::policy::options::EngineOptions {
                // The device path binds device memory: the CUDA provider must
                // be there, never silently replaced by ORT's CPU one.
                error_on_failure: true,
                ..opts.clone()
            },
            Some(g),
        )),
        Err(e) if !opts.error_on_failure => Ok((fallback(opts, &e.to_string()), None)),
        Err(e) => Err(e.into()),
    }
}

/// CPU options after a warning that says why.
pub fn fallback(
    opts: &crate::policy::options::EngineOptions,
    why: &str,
) -> crate::policy::options::EngineOptions {
    eprintln!("maniflow: warning: {why}; running on the CPU instead (CPU fallback enabled)");
    crate::policy::options::EngineOptions {
        provider: crate::policy::options::ExecutionProvider::Cpu,
        ..opts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC (from the bootstrap's torch wheel) compiles every kernel; this
    /// needs no GPU or driver.
    #[test]
    fn nvrtc_compiles_every_kernel() {
        let path = probe::load_nvrtc().expect("NVRTC from the bootstrap's .venv");
        let ptx = kernels::compile(None).expect("kernels compile");
        let src = ptx.to_src();
        for k in kernels::KERNELS {
            assert!(
                src.contains(&format!(".entry {k}(")),
                "PTX from {} lacks kernel {k}",
                path.display()
            );
        }
        // A newer architecture compiles too (the GPU machine's H200: 9.0).
        let ptx90 = kernels::compile(Some((9, 0)))
            .expect("sm_90 compile")
            .to_src();
        assert!(
            ptx90.contains(".target sm_90"),
            "no sm_90 target in the PTX"
        );
        // No fused multiply-add: the rounding must match the CPU path.
        assert!(
            !src.contains("fma.rn.f32"),
            "kernels contain fused multiply-adds"
        );
    }

    /// Without a driver (this machine), opening a GPU is one line naming what
    /// is missing and the way out.
    #[test]
    fn no_driver_is_one_clear_line() {
        if probe::load_driver().is_ok() {
            eprintln!("a CUDA driver is present here: the no-driver path is not exercised");
            return;
        }
        let e = Gpu::open(0).err().expect("no GPU here").to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains("libcuda.so.1") && e.contains("--device cpu"),
            "{e}"
        );
        let e = open_with_kernels(1).err().expect("no GPU here").to_string();
        assert!(e.contains("no CUDA driver"), "{e}");
    }
}
