//! Camera preprocessing on the GPU: the frames of one observation step go
//! through one pinned staging buffer and one host-to-device copy, then one
//! kernel launch writes every camera's CHW f32 tensor in device memory, in the
//! slot of that step (`(n_obs_steps, 3, H, W)` per camera), where ONNX Runtime's
//! CUDA provider reads it.
//!
//! The resize plan (taps per output row and column) and the per-channel tables
//! are the CPU path's own (`preprocess::ResizePlan::taps`, `channel_lut`),
//! uploaded once per source resolution. Steady state allocates nothing: the
//! descriptors, staging buffer and device buffers are reused until a camera's
//! resolution changes, and kernels are launched with arguments on the stack.

use std::ffi::c_void;

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{
    result, CudaFunction, CudaModule, CudaSlice, DevicePtr, DeviceRepr, PinnedHostSlice,
    ValidAsZeroBits,
};

use super::probe::Gpu;
use super::GpuError;
use crate::error::EngineError;
use crate::policy::manifest::{ImageInput, ResizeRule};
use crate::policy::normalize::Normalizer;
use crate::policy::preprocess::{channel_lut, Frame, ResizePlan, Tap};

/// One camera, as the kernel reads it (layout of `CamDesc` in `kernels::SOURCE`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CamDesc {
    src: CUdeviceptr,
    dst: CUdeviceptr,
    xa: CUdeviceptr,
    xb: CUdeviceptr,
    xw: CUdeviceptr,
    ya: CUdeviceptr,
    yb: CUdeviceptr,
    yw: CUdeviceptr,
    lut: CUdeviceptr,
    src_w: i32,
    src_h: i32,
    dst_w: i32,
    dst_h: i32,
    resize: i32,
    pad: i32,
}

// SAFETY: plain old data with the C layout the kernel declares; all-zero
// bytes are a valid value (null pointers, zero sizes).
unsafe impl DeviceRepr for CamDesc {}
unsafe impl ValidAsZeroBits for CamDesc {}

/// The device side of one camera's resize plan.
struct DevicePlan {
    src_w: usize,
    src_h: usize,
    xa: CudaSlice<i32>,
    xb: CudaSlice<i32>,
    xw: CudaSlice<f32>,
    ya: CudaSlice<i32>,
    yb: CudaSlice<i32>,
    yw: CudaSlice<f32>,
}

struct Camera {
    spec: ImageInput,
    lut: CudaSlice<f32>,
    plan: Option<DevicePlan>,
    /// (n_obs_steps, 3, H, W) f32: the graph input.
    out: CudaSlice<f32>,
    /// Byte offset of this camera's frame in the staging buffers.
    offset: usize,
}

/// GPU preprocessing of all image inputs of a policy.
pub struct GpuImages {
    cams: Vec<Camera>,
    to: usize,
    _module: std::sync::Arc<CudaModule>,
    func: CudaFunction,
    descs_host: Vec<CamDesc>,
    descs: CudaSlice<CamDesc>,
    /// Source sizes the descriptors and staging buffers were built for.
    layout: Vec<(usize, usize)>,
    staging: Option<PinnedHostSlice<u8>>,
    frames_dev: Option<CudaSlice<u8>>,
    max_plane: usize,
}

fn drv(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> GpuError {
    move |e| GpuError::Driver {
        what: what.into(),
        message: e.to_string(),
    }
}

fn ptr<T>(gpu: &Gpu, s: &CudaSlice<T>) -> CUdeviceptr {
    s.device_ptr(&gpu.stream).0
}

impl GpuImages {
    /// Device buffers for `specs` (with their normalisers), `to` steps each.
    pub fn new(
        gpu: &Gpu,
        module: std::sync::Arc<CudaModule>,
        specs: &[(ImageInput, Normalizer)],
        to: usize,
    ) -> Result<GpuImages, GpuError> {
        if specs.len() > 32 {
            return Err(GpuError::Unsupported {
                message: format!("{} image inputs (the kernel takes up to 32)", specs.len()),
            });
        }
        let func = module
            .load_function("preprocess")
            .map_err(drv("loading kernel `preprocess`"))?;
        let s = &gpu.stream;
        let mut cams = Vec::new();
        let mut max_plane = 1;
        for (spec, norm) in specs {
            let lut = channel_lut(norm);
            let flat: Vec<f32> = lut.iter().flatten().copied().collect();
            let plane = spec.height * spec.width;
            max_plane = max_plane.max(plane);
            cams.push(Camera {
                spec: spec.clone(),
                lut: s
                    .clone_htod(&flat)
                    .map_err(drv("uploading a lookup table"))?,
                plan: None,
                out: s
                    .alloc_zeros::<f32>(to.max(1) * 3 * plane)
                    .map_err(drv("allocating an image input"))?,
                offset: 0,
            });
        }
        let n = cams.len().max(1);
        Ok(GpuImages {
            descs_host: vec![CamDesc::default(); n],
            descs: s
                .alloc_zeros::<CamDesc>(n)
                .map_err(drv("allocating camera descriptors"))?,
            layout: vec![(0, 0); cams.len()],
            cams,
            to: to.max(1),
            _module: module,
            func,
            staging: None,
            frames_dev: None,
            max_plane,
        })
    }

    pub fn len(&self) -> usize {
        self.cams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cams.is_empty()
    }

    /// The device tensor of input `i`: (n_obs_steps, 3, H, W) f32.
    pub fn output(&self, i: usize) -> &CudaSlice<f32> {
        &self.cams[i].out
    }

    /// The manifest entry of input `i`.
    pub fn spec(&self, i: usize) -> &ImageInput {
        &self.cams[i].spec
    }

    /// Check a frame against input `i` the way the CPU path does.
    fn check(&self, i: usize, f: &Frame<'_>) -> Result<(), EngineError> {
        let spec = &self.cams[i].spec;
        if f.width == 0 || f.height == 0 || f.data.len() != f.width * f.height * 3 {
            return Err(EngineError::input(
                spec.key.as_str(),
                "frame buffer length is not width * height * 3 (uint8 HWC with 3 channels expected)",
            ));
        }
        let same = f.width == spec.width && f.height == spec.height;
        if !same && spec.resize == ResizeRule::None {
            return Err(EngineError::input(
                spec.key.as_str(),
                "frame size differs from the manifest's height x width and resize = \"none\"",
            ));
        }
        Ok(())
    }

    /// Preprocess one frame per image input into slot `step` (0 = oldest) of
    /// the device tensors. Queued on the GPU's stream: whatever runs next on
    /// that stream (ONNX Runtime, a download) sees the result.
    pub fn process(
        &mut self,
        gpu: &Gpu,
        step: usize,
        frames: &[Frame<'_>],
    ) -> Result<(), EngineError> {
        let e = |e: GpuError| EngineError::Config {
            what: format!("cuda:{} preprocessing", gpu.index),
            message: e.to_string(),
        };
        if frames.len() != self.cams.len() {
            return Err(EngineError::input(
                "observation.images",
                format!(
                    "{} frames given, the GPU path has {} image inputs",
                    frames.len(),
                    self.cams.len()
                ),
            ));
        }
        if step >= self.to {
            return Err(EngineError::input(
                "observation",
                format!("step {step} >= n_obs_steps {}", self.to),
            ));
        }
        for (i, f) in frames.iter().enumerate() {
            self.check(i, f)?;
        }
        gpu.ctx
            .bind_to_thread()
            .map_err(drv("binding the context"))
            .map_err(e)?;
        if frames
            .iter()
            .zip(&self.layout)
            .any(|(f, l)| (f.width, f.height) != *l)
        {
            self.relayout(gpu, frames).map_err(e)?;
        }
        self.upload(gpu, frames).map_err(e)?;
        self.launch(gpu, step, frames).map_err(e)
    }

    /// A camera's source size changed: new plans, staging and descriptors
    /// (allocates, like the CPU path's first frame of a new size).
    fn relayout(&mut self, gpu: &Gpu, frames: &[Frame<'_>]) -> Result<(), GpuError> {
        let s = &gpu.stream;
        s.synchronize().map_err(drv("waiting for the stream"))?;
        let mut total = 0usize;
        for (cam, f) in self.cams.iter_mut().zip(frames) {
            cam.offset = total;
            total += f.data.len();
            let (w, h) = (cam.spec.width, cam.spec.height);
            let resize = (f.width, f.height) != (w, h);
            let stale = cam
                .plan
                .as_ref()
                .is_none_or(|p| (p.src_w, p.src_h) != (f.width, f.height));
            if resize && stale {
                cam.plan = Some(upload_plan(gpu, f.width, f.height, &cam.spec)?);
            }
        }
        // SAFETY: pinned host memory of u8, written before every upload.
        let staging = unsafe { gpu.ctx.alloc_pinned::<u8>(total.max(1)) }
            .map_err(drv("allocating pinned staging memory"))?;
        let frames_dev = s
            .alloc_zeros::<u8>(total.max(1))
            .map_err(drv("allocating device frame memory"))?;
        let base = ptr(gpu, &frames_dev);
        for (i, (cam, f)) in self.cams.iter().zip(frames).enumerate() {
            let resize = (f.width, f.height) != (cam.spec.width, cam.spec.height);
            let plan = cam.plan.as_ref().filter(|_| resize);
            let p = |x: Option<CUdeviceptr>| x.unwrap_or(0);
            self.descs_host[i] = CamDesc {
                src: base + cam.offset as u64,
                dst: ptr(gpu, &cam.out),
                xa: p(plan.map(|q| ptr(gpu, &q.xa))),
                xb: p(plan.map(|q| ptr(gpu, &q.xb))),
                xw: p(plan.map(|q| ptr(gpu, &q.xw))),
                ya: p(plan.map(|q| ptr(gpu, &q.ya))),
                yb: p(plan.map(|q| ptr(gpu, &q.yb))),
                yw: p(plan.map(|q| ptr(gpu, &q.yw))),
                lut: ptr(gpu, &cam.lut),
                src_w: f.width as i32,
                src_h: f.height as i32,
                dst_w: cam.spec.width as i32,
                dst_h: cam.spec.height as i32,
                resize: i32::from(plan.is_some()),
                pad: 0,
            };
            self.layout[i] = (f.width, f.height);
        }
        s.memcpy_htod(&self.descs_host, &mut self.descs)
            .map_err(drv("uploading camera descriptors"))?;
        self.staging = Some(staging);
        self.frames_dev = Some(frames_dev);
        Ok(())
    }

    /// All frames into the pinned buffer, then one asynchronous copy.
    fn upload(&mut self, gpu: &Gpu, frames: &[Frame<'_>]) -> Result<(), GpuError> {
        let (Some(staging), Some(dev)) = (self.staging.as_mut(), self.frames_dev.as_ref()) else {
            return Err(GpuError::Unsupported {
                message: "internal: staging buffers missing".into(),
            });
        };
        // The previous upload from this buffer must be done before it is
        // rewritten (it is, once the previous observation's work finished).
        gpu.stream
            .synchronize()
            .map_err(drv("waiting for the stream"))?;
        let host = staging
            .as_mut_slice()
            .map_err(drv("mapping pinned staging memory"))?;
        for (cam, f) in self.cams.iter().zip(frames) {
            host[cam.offset..cam.offset + f.data.len()].copy_from_slice(f.data);
        }
        // SAFETY: `dev` holds `host.len()` bytes; the copy is ordered on our
        // stream before the kernel that reads it, and `host` is not touched
        // again until the stream is synchronised above.
        unsafe { result::memcpy_htod_async(ptr(gpu, dev), &host[..], gpu.stream.cu_stream()) }
            .map_err(drv("copying frames to the device"))
    }

    fn launch(&mut self, gpu: &Gpu, step: usize, frames: &[Frame<'_>]) -> Result<(), GpuError> {
        let mut swap_mask: u32 = 0;
        for (i, (cam, f)) in self.cams.iter().zip(frames).enumerate() {
            if f.order != cam.spec.color_order {
                swap_mask |= 1 << i;
            }
        }
        let mut descs = ptr(gpu, &self.descs);
        let mut step = step as i32;
        let block = 256u32;
        let grid_x = self.max_plane.div_ceil(block as usize) as u32;
        let mut params: [*mut c_void; 3] = [
            (&mut descs as *mut CUdeviceptr).cast(),
            (&mut step as *mut i32).cast(),
            (&mut swap_mask as *mut u32).cast(),
        ];
        // SAFETY: the arguments match `preprocess(const CamDesc*, int, unsigned)`
        // and every pointer in the descriptors is live device memory we own.
        unsafe {
            result::launch_kernel(
                self.func.cu_function(),
                (grid_x, self.cams.len() as u32, 1),
                (block, 1, 1),
                0,
                gpu.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(drv("launching `preprocess`"))
    }

    /// Copy input `i` back to the host (checks and tests; waits for the stream).
    pub fn download(&self, gpu: &Gpu, i: usize, out: &mut [f32]) -> Result<(), GpuError> {
        gpu.stream
            .memcpy_dtoh(&self.cams[i].out, out)
            .map_err(drv("copying an image input back"))?;
        gpu.sync()
    }
}

fn upload_plan(
    gpu: &Gpu,
    src_w: usize,
    src_h: usize,
    spec: &ImageInput,
) -> Result<DevicePlan, GpuError> {
    let s = &gpu.stream;
    let split = |taps: Vec<Tap>, scale: usize| {
        let a: Vec<i32> = taps.iter().map(|t| (t.a * scale) as i32).collect();
        let b: Vec<i32> = taps.iter().map(|t| (t.b * scale) as i32).collect();
        let w: Vec<f32> = taps.iter().map(|t| t.w).collect();
        (a, b, w)
    };
    let (xa, xb, xw) = split(ResizePlan::taps(src_w, spec.width, spec.resize), 3);
    let (ya, yb, yw) = split(ResizePlan::taps(src_h, spec.height, spec.resize), 1);
    let up_i = |v: &Vec<i32>| s.clone_htod(v).map_err(drv("uploading a resize plan"));
    let up_f = |v: &Vec<f32>| s.clone_htod(v).map_err(drv("uploading a resize plan"));
    Ok(DevicePlan {
        src_w,
        src_h,
        xa: up_i(&xa)?,
        xb: up_i(&xb)?,
        xw: up_f(&xw)?,
        ya: up_i(&ya)?,
        yb: up_i(&yb)?,
        yw: up_f(&yw)?,
    })
}
