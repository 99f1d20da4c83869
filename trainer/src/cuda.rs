//! libtorch on a CUDA device: making sure the CUDA half of libtorch is loaded
//! (the binary links `libtorch_cpu` only; `libtorch_cuda.so` registers itself
//! when loaded), one-line errors when the device cannot be used, and bf16
//! autocast.
//!
//! `libtorch_cuda.so` is looked up like every libtorch library: the binary's
//! rpath (the bootstrap's `.venv` torch), then `LD_LIBRARY_PATH` (on a machine
//! with its own PyTorch 2.11: `$(python3 -c 'import torch, os;
//! print(os.path.dirname(torch.__file__))')/lib`).

use anyhow::{bail, Result};
use std::ffi::CString;
use tch::Device;

/// Load `libtorch_cuda.so` (a no-op when it is loaded already); the loader's
/// message on failure.
fn load_torch_cuda() -> Result<(), String> {
    let name = CString::new("libtorch_cuda.so").map_err(|e| e.to_string())?;
    // SAFETY: dlopen with a valid C string; the handle is kept for the process.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a C string owned by libc, read at once.
        let e = unsafe { libc::dlerror() };
        let msg = if e.is_null() {
            "unknown error".to_string()
        } else {
            unsafe { std::ffi::CStr::from_ptr(e) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(msg);
    }
    Ok(())
}

/// Check that `device` can be used, loading libtorch's CUDA half when needed.
pub fn require(device: Device) -> Result<()> {
    let Device::Cuda(index) = device else {
        return Ok(());
    };
    // Before the first question to libtorch about CUDA: libtorch caches its
    // CUDA hooks on first use, so loading libtorch_cuda afterwards is too late.
    if let Err(e) = load_torch_cuda() {
        bail!("cuda:{index}: libtorch's CUDA library could not be loaded ({e}); this libtorch has no CUDA support, or LD_LIBRARY_PATH misses its lib folder (see README, GPU)");
    }
    let n = tch::Cuda::device_count();
    if !tch::Cuda::is_available() || n == 0 {
        bail!("cuda:{index}: libtorch sees no CUDA GPU (no NVIDIA driver, or no GPU on this machine); train with device = \"cpu\"");
    }
    if index as i64 >= n {
        bail!(
            "cuda:{index}: no such GPU; libtorch sees {n} (cuda:0..cuda:{})",
            n - 1
        );
    }
    Ok(())
}

/// Mixed precision for a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Autocast {
    /// Everything in f32.
    #[default]
    Off,
    /// CUDA autocast with bfloat16 (matmuls, convolutions and attention in
    /// bf16; reductions, norms and the loss in f32; parameters, gradients and
    /// optimiser state stay f32).
    Bf16,
}

// at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType) in
// libtorch_cpu (both enums are int8_t; Itanium C++ ABI passes them as integers).
#[link(name = "torch_cpu")]
extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device: i8, dtype: i8);
}
const DEVICE_CUDA: i8 = 1;
const SCALAR_BFLOAT16: i8 = 15;
const SCALAR_HALF: i8 = 5;

/// Run `f` under `mode` on `device` (autocast applies on CUDA only; on the
/// CPU `f` runs in f32 whatever the mode).
pub fn run<T>(mode: Autocast, device: Device, f: impl FnOnce() -> T) -> T {
    if mode == Autocast::Off || device == Device::Cpu {
        return f();
    }
    // SAFETY: a plain setter of a thread-local autocast setting.
    unsafe { at_set_autocast_dtype(DEVICE_CUDA, SCALAR_BFLOAT16) };
    let out = tch::autocast(true, f);
    // Back to libtorch's default for CUDA autocast.
    unsafe { at_set_autocast_dtype(DEVICE_CUDA, SCALAR_HALF) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without a GPU, asking for one is one line that says why.
    #[test]
    fn cuda_without_a_gpu_is_one_clear_line() {
        if require(Device::Cuda(0)).is_ok() {
            eprintln!("a CUDA GPU is usable here: the refusal is not exercised");
            return;
        }
        let e = crate::train::parse_device("cuda:0")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.starts_with("cuda:0: "), "{e}");
        assert!(
            e.contains("no CUDA GPU") || e.contains("could not be loaded"),
            "{e}"
        );
        // The CPU is always fine, and autocast is a no-op there.
        assert_eq!(crate::train::parse_device("cpu").unwrap(), Device::Cpu);
        let x = tch::Tensor::from_slice(&[1.5f32, 2.0]);
        let y = run(Autocast::Bf16, Device::Cpu, || &x * &x);
        assert_eq!(y.kind(), tch::Kind::Float);
        assert_eq!(Vec::<f32>::try_from(y).unwrap(), vec![2.25, 4.0]);
    }
}
