//! The CUDA kernels, as source compiled by NVRTC when a GPU path is opened.
//!
//! `preprocess` does for every camera of one observation step, in one launch,
//! what `preprocess::ImagePreprocessor` does on the CPU: bilinear (or nearest)
//! resize through the same tap plan, rounding to uint8, colour order, then the
//! per-channel table that folds /255 and the normalisation, into CHW f32. The
//! arithmetic is written with `__fmul_rn`/`__fadd_rn` (and compiled with
//! `--fmad=false`) so no multiply-add is fused: each step rounds exactly as
//! the CPU's, and the two paths agree to the bit.
//!
//! `euler_step` is the sampler's `x += dt * v`, kept on the device between
//! velocity steps (again without fusion, as the CPU loop computes it).

use cudarc::nvrtc::{CompileOptions, Ptx};

use super::GpuError;

/// Kernel entry points in [`SOURCE`].
pub const KERNELS: [&str; 2] = ["preprocess", "euler_step"];

/// Layout shared with [`super::preprocess::CamDesc`] (all 8-byte fields first).
pub const SOURCE: &str = r#"
struct CamDesc {
    const unsigned char* src;   // (src_h, src_w, 3) uint8, staged on the device
    float* dst;                 // (n_obs_steps, 3, dst_h, dst_w) f32
    const int* xa;              // per output column: byte offset of the left tap
    const int* xb;              // ... and of the right tap
    const float* xw;            // ... and the right tap's weight
    const int* ya;              // per output row: source row of the upper tap
    const int* yb;              // ... of the lower tap
    const float* yw;            // ... and the lower tap's weight
    const float* lut;           // [3][256]: normalised value of byte p in graph channel c
    int src_w, src_h, dst_w, dst_h;
    int resize;                 // 0: same size, no taps
    int pad;
};

__device__ __forceinline__ float lerp_rn(float a, float b, float w) {
    // a * (1 - w) + b * w, rounded at every step as the CPU computes it
    return __fadd_rn(__fmul_rn(a, __fsub_rn(1.0f, w)), __fmul_rn(b, w));
}

// grid: (ceil(max_plane / block), n_cams); swap_mask bit c: camera c's frame
// arrives in the other colour order (RGB <-> BGR) than the graph expects.
extern "C" __global__ void preprocess(const CamDesc* cams, int step, unsigned int swap_mask) {
    const CamDesc c = cams[blockIdx.y];
    const int plane = c.dst_w * c.dst_h;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= plane) return;
    unsigned char px[3];
    if (c.resize == 0) {
        const unsigned char* p = c.src + 3 * i;
        px[0] = p[0]; px[1] = p[1]; px[2] = p[2];
    } else {
        const int y = i / c.dst_w;
        const int x = i - y * c.dst_w;
        const int row = 3 * c.src_w;
        const unsigned char* ra = c.src + c.ya[y] * row;
        const unsigned char* rb = c.src + c.yb[y] * row;
        const int a = c.xa[x], b = c.xb[x];
        const float wx = c.xw[x], wy = c.yw[y];
        for (int ch = 0; ch < 3; ++ch) {
            float top = lerp_rn((float)ra[a + ch], (float)ra[b + ch], wx);
            float bot = lerp_rn((float)rb[a + ch], (float)rb[b + ch], wx);
            float v = __fadd_rn(lerp_rn(top, bot, wy), 0.5f);
            v = fminf(fmaxf(v, 0.0f), 255.0f);
            px[ch] = (unsigned char)__float2uint_rz(v);
        }
    }
    const bool swap = (swap_mask >> blockIdx.y) & 1u;
    float* out = c.dst + (size_t)step * 3 * plane;
    out[i]             = c.lut[0 * 256 + px[swap ? 2 : 0]];
    out[plane + i]     = c.lut[1 * 256 + px[1]];
    out[2 * plane + i] = c.lut[2 * 256 + px[swap ? 0 : 2]];
}

// x += dt * v over n values
extern "C" __global__ void euler_step(float* x, const float* v, float dt, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __fadd_rn(x[i], __fmul_rn(dt, v[i]));
}
"#;

/// The virtual architecture to compile for: the device's, or the oldest the
/// CUDA 13 toolchain supports when there is no device (compile-only checks).
pub fn arch_option(cc: Option<(i32, i32)>) -> String {
    let (major, minor) = cc.unwrap_or((7, 5));
    format!("--gpu-architecture=compute_{major}{minor}")
}

/// Compile [`SOURCE`] to PTX with NVRTC (loaded by `probe::load_nvrtc`).
pub fn compile(cc: Option<(i32, i32)>) -> Result<Ptx, GpuError> {
    super::probe::load_nvrtc()?;
    let opts = CompileOptions {
        fmad: Some(false),
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        options: vec![arch_option(cc)],
        name: Some("maniflow_kernels.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, options, .. } => GpuError::Compile {
            message: format!(
                "options {options:?}: {}",
                log.to_string_lossy().trim().replace('\n', " | ")
            ),
        },
        other => GpuError::Compile {
            message: other.to_string(),
        },
    })
}
