//! Finding the CUDA driver and NVRTC, and opening a device, before cudarc
//! touches either: cudarc's dynamic loader panics when a library is missing,
//! so every path into it goes through here first and gets a one-line error.
//!
//! Both libraries are opened by full path once per process and kept open;
//! cudarc then opens them by soname (`libcuda.so.1`, `libnvrtc.so.13`), which
//! the dynamic linker resolves to the copy already loaded.
//!
//! NVRTC search order: `MANIFLOW_NVRTC` (exactly that file), the linker's own
//! search (`LD_LIBRARY_PATH`, `ld.so.cache`), the `nvidia-cuda-nvrtc` wheel in
//! a `.venv` beside the executable or the source tree (the torch wheel the
//! bootstrap installs brings it), then `/usr/local/cuda*/lib64`. The driver
//! (`libcuda.so.1`) comes with the NVIDIA driver: the linker's search, then
//! the usual driver folders (containers, WSL, Jetson).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaStream};

use super::GpuError;

/// Libraries opened by full path, kept for the life of the process.
static NVRTC: OnceLock<Result<PathBuf, GpuError>> = OnceLock::new();
static DRIVER: OnceLock<Result<PathBuf, GpuError>> = OnceLock::new();

/// Where NVRTC may be, in search order (bare names go through the linker).
pub fn nvrtc_candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("MANIFLOW_NVRTC").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out: Vec<PathBuf> = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
        .iter()
        .map(PathBuf::from)
        .collect();
    for site in venv_site_packages() {
        out.push(site.join("nvidia/cu13/lib/libnvrtc.so.13"));
        out.push(site.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12"));
    }
    for cuda in [
        "/usr/local/cuda",
        "/usr/local/cuda-13",
        "/usr/local/cuda-12",
    ] {
        out.push(Path::new(cuda).join("lib64/libnvrtc.so"));
    }
    out
}

/// Where the CUDA driver library may be, in search order.
pub fn driver_candidates() -> Vec<PathBuf> {
    [
        "libcuda.so.1",
        "libcuda.so",
        "/usr/local/nvidia/lib64/libcuda.so.1",
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib/aarch64-linux-gnu/libcuda.so.1",
        "/usr/lib/aarch64-linux-gnu/tegra/libcuda.so.1",
        "/usr/lib/wsl/lib/libcuda.so.1",
        "/usr/lib64/libcuda.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// `site-packages` folders of every `.venv` above the executable and the
/// source tree this crate was built from.
fn venv_site_packages() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            roots.extend(dir.ancestors().map(Path::to_path_buf));
        }
    }
    roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let mut out = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root.join(".venv/lib")) else {
            continue;
        };
        let mut pys: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python3"))
            })
            .map(|p| p.join("site-packages"))
            .collect();
        pys.sort();
        out.extend(pys);
    }
    out
}

/// Open the first candidate that loads; keep it open for good.
fn open_first(candidates: &[PathBuf]) -> Result<PathBuf, Vec<String>> {
    let mut tried = Vec::new();
    for c in candidates {
        // SAFETY: loading a CUDA library runs its initialisers, which is what
        // every CUDA program does; the handle is leaked so it is never unloaded.
        match unsafe { libloading::Library::new(c) } {
            Ok(lib) => {
                std::mem::forget(lib);
                return Ok(c.clone());
            }
            Err(e) => {
                // libloading's message is "dlopen failed"; the loader's is its source.
                let why = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
                tried.push(format!("{} ({})", c.display(), short(&why)))
            }
        }
    }
    Err(tried)
}

/// The first clause of a loader message (the rest repeats the path).
fn short(msg: &str) -> String {
    let m = msg.rsplit(": ").next().unwrap_or(msg);
    m.trim().to_string()
}

/// Load NVRTC (once per process); the path it came from.
pub fn load_nvrtc() -> Result<&'static Path, GpuError> {
    let r = NVRTC.get_or_init(|| {
        let found = open_first(&nvrtc_candidates()).map_err(|tried| GpuError::NoNvrtc {
            looked: tried.join(", "),
        })?;
        preload_builtins(&found);
        // SAFETY: only checks that cudarc can now resolve the library by name.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(GpuError::NoNvrtc {
                looked: format!(
                    "{} loaded, but not under a name cudarc resolves (libnvrtc.so.13)",
                    found.display()
                ),
            });
        }
        Ok(found)
    });
    r.as_ref().map(PathBuf::as_path).map_err(Clone::clone)
}

/// NVRTC opens `libnvrtc-builtins.so.<major>.<minor>` by name when it
/// compiles; when NVRTC itself came from a folder the linker does not search
/// (a wheel), open the builtins from that folder first so the name resolves.
fn preload_builtins(nvrtc: &Path) {
    let Some(dir) = nvrtc.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut libs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc-builtins.so"))
        })
        .collect();
    libs.sort();
    for lib in libs {
        // SAFETY: as in `open_first`; a failure here surfaces as NVRTC's own
        // message when it compiles.
        if let Ok(l) = unsafe { libloading::Library::new(&lib) } {
            std::mem::forget(l);
        }
    }
}

/// Load the CUDA driver library (once per process); the path it came from.
pub fn load_driver() -> Result<&'static Path, GpuError> {
    let r = DRIVER.get_or_init(|| {
        let found = open_first(&driver_candidates()).map_err(|tried| GpuError::NoDriver {
            looked: tried.join(", "),
        })?;
        // SAFETY: as in `load_nvrtc`.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(GpuError::NoDriver {
                looked: format!("{} loaded, but not as libcuda.so.1", found.display()),
            });
        }
        Ok(found)
    });
    r.as_ref().map(PathBuf::as_path).map_err(Clone::clone)
}

/// One CUDA device, its primary context and the stream all our work runs on.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub index: usize,
    pub name: String,
    /// (major, minor)
    pub compute_capability: (i32, i32),
}

impl Gpu {
    /// Open device `index`: the driver library, then the device, each with a
    /// one-line error that says what is missing.
    pub fn open(index: usize) -> Result<Gpu, GpuError> {
        load_driver()?;
        let count = CudaContext::device_count().map_err(|e| GpuError::Driver {
            what: "initialising the CUDA driver (is an NVIDIA GPU present and its driver loaded?)"
                .into(),
            message: e.to_string(),
        })?;
        if count <= 0 {
            return Err(GpuError::NoDevice { index, count: 0 });
        }
        if index >= count as usize {
            return Err(GpuError::NoDevice {
                index,
                count: count as usize,
            });
        }
        let drv = |what: &str| {
            let what = format!("cuda:{index}: {what}");
            move |e: cudarc::driver::DriverError| GpuError::Driver {
                what,
                message: e.to_string(),
            }
        };
        let ctx = CudaContext::new(index).map_err(drv("creating the context"))?;
        // One stream, used in order by everything here (and by ONNX Runtime's
        // CUDA provider): cudarc's cross-stream event tracking is not needed.
        // SAFETY: no slice of this context is used on two streams.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv("creating a stream"))?;
        let name = ctx.name().map_err(drv("reading the device name"))?;
        let compute_capability = ctx
            .compute_capability()
            .map_err(drv("reading the compute capability"))?;
        Ok(Gpu {
            ctx,
            stream,
            index,
            name,
            compute_capability,
        })
    }

    /// Wait for everything queued on the stream.
    pub fn sync(&self) -> Result<(), GpuError> {
        self.stream.synchronize().map_err(|e| GpuError::Driver {
            what: format!("cuda:{}: synchronising the stream", self.index),
            message: e.to_string(),
        })
    }
}
