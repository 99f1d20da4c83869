//! ONNX Runtime's CUDA provider with the observation, the encoder context and
//! the sample all in device memory.
//!
//! ORT runs on our stream (`user_compute_stream`), so the preprocessing kernel,
//! the graphs, the Euler update and the copies are ordered on one stream with
//! no synchronisation between them. Per chunk: the observation's vectors
//! (state, taxels) and the initial noise go up, the encoder writes the context
//! into a device buffer bound as its output, each velocity step reads that
//! context and the sample `x` in place (its `t` and `target_t` come from a
//! pinned table uploaded once per step count), `euler_step` updates `x` on the
//! device, and one copy brings the chunk back.
//!
//! Inputs are bound through the C API (`BindInput`) rather than
//! `IoBinding::bind_input`, which for a tensor wrapping memory it does not own
//! binds a copy made at bind time; here the kernels rewrite the bound memory
//! for every observation.

use std::ffi::{c_void, CString};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{result, CudaFunction, CudaModule, CudaSlice, DevicePtr, PinnedHostSlice};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::TensorRefMut;
use ort::AsPointer;

use super::preprocess::GpuImages;
use super::probe::Gpu;
use super::GpuError;
use crate::error::EngineError;

/// What feeds one graph input on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceInput {
    /// Image input `i` of `GpuImages`.
    Image(usize),
    /// A normalised vector (state, taxels) written on the host: index into
    /// the vectors given to `infer`.
    Vector(usize),
}

/// A device tensor ORT reads or writes, kept alive as long as its binding.
struct Bound {
    _value: TensorRefMut<'static, f32>,
}

fn drv(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> EngineError {
    move |e| EngineError::Config {
        what: "cuda".into(),
        message: format!("{what}: {e}"),
    }
}

fn ort_e(stage: &'static str) -> impl Fn(ort::Error) -> EngineError {
    move |source| EngineError::Ort { stage, source }
}

/// The ORT memory description of device memory on `gpu`.
fn cuda_memory(gpu: &Gpu) -> Result<MemoryInfo<'static>, EngineError> {
    MemoryInfo::new(
        AllocationDevice::CUDA,
        gpu.index as i32,
        AllocatorType::Device,
        MemoryType::Default,
    )
    .map_err(ort_e("describing CUDA memory"))
}

/// Wrap `len` f32 of device memory at `ptr` as an ORT tensor of `shape`.
fn device_tensor(
    gpu: &Gpu,
    ptr: CUdeviceptr,
    shape: &[usize],
) -> Result<TensorRefMut<'static, f32>, EngineError> {
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    // SAFETY: `ptr` is live device memory of at least `shape`'s size on
    // `gpu`, owned by the `DeviceSampler` that also owns this tensor and drops
    // the binding and the tensor before the memory.
    unsafe {
        TensorRefMut::from_raw(
            cuda_memory(gpu)?,
            ptr as *mut c_void,
            ort::value::Shape::new(dims),
        )
    }
    .map_err(ort_e("wrapping device memory"))
}

/// `BindInput` without the copy `IoBinding::bind_input` makes of borrowed tensors.
fn bind_in_place(
    binding: &mut IoBinding,
    name: &str,
    value: &TensorRefMut<'static, f32>,
) -> Result<(), EngineError> {
    let c = CString::new(name).map_err(|_| EngineError::Config {
        what: "graph input".into(),
        message: format!("name `{name}` contains a NUL byte"),
    })?;
    let api = ort::api();
    // SAFETY: both pointers are live ORT objects; `value` outlives the binding
    // (see `Bound`).
    let status = unsafe { (api.BindInput)(binding.ptr_mut(), c.as_ptr(), value.ptr()) };
    if status.0.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null status carries a message and is released once.
    let msg = unsafe {
        let m = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0))
            .to_string_lossy()
            .into_owned();
        (api.ReleaseStatus)(status.0);
        m
    };
    Err(EngineError::Config {
        what: format!("binding input `{name}` to device memory"),
        message: msg,
    })
}

/// The engine's GPU side: bindings, device buffers, the Euler kernel.
pub struct DeviceSampler {
    // Bindings and wrapping tensors drop before the memory below.
    obs_binding: IoBinding,
    vel_binding: Option<IoBinding>,
    _bound: Vec<Bound>,
    pub images: GpuImages,
    /// Device buffers of the vector inputs, in `Vector(i)` order.
    vectors: Vec<CudaSlice<f32>>,
    obs_out: CudaSlice<f32>,
    x: CudaSlice<f32>,
    v: CudaSlice<f32>,
    t: CudaSlice<f32>,
    target: CudaSlice<f32>,
    /// [t_0, target_0, t_1, target_1, ...] for `ts_steps` steps, pinned.
    ts: Option<PinnedHostSlice<f32>>,
    ts_key: (usize, bool),
    /// Noise in, chunk out.
    host_x: PinnedHostSlice<f32>,
    euler: CudaFunction,
    _module: Arc<CudaModule>,
    pub gpu: Gpu,
}

/// How the engine describes its graphs to the sampler.
pub struct GraphSpec<'a> {
    pub session: &'a Session,
    /// (input name, shape with batch 1, source), in any order.
    pub inputs: Vec<(String, Vec<usize>, DeviceInput)>,
    pub output: (&'a str, Vec<usize>),
}

impl DeviceSampler {
    /// Bind the observation graph (encoder or act) and, for ManiFlow, the
    /// velocity graph (`x_t`, `t`, `target_t`, `context` -> `velocity`).
    pub fn new(
        gpu: Gpu,
        module: Arc<CudaModule>,
        images: GpuImages,
        vector_lens: &[usize],
        obs: GraphSpec<'_>,
        velocity: Option<&Session>,
        sample_len: usize,
    ) -> Result<DeviceSampler, EngineError> {
        let s = gpu.stream.clone();
        let alloc = |n: usize| {
            s.alloc_zeros::<f32>(n.max(1))
                .map_err(drv("allocating device memory"))
        };
        let vectors = vector_lens
            .iter()
            .map(|&n| alloc(n))
            .collect::<Result<Vec<_>, _>>()?;
        let out_len: usize = obs.output.1.iter().product();
        let obs_out = alloc(out_len)?;
        let (x, v, t, target) = (alloc(sample_len)?, alloc(sample_len)?, alloc(1)?, alloc(1)?);
        let p = |c: &CudaSlice<f32>| c.device_ptr(&s).0;
        let mut bound = Vec::new();
        let mut obs_binding = obs
            .session
            .create_binding()
            .map_err(ort_e("creating an IoBinding"))?;
        for (name, shape, src) in &obs.inputs {
            let ptr = match *src {
                DeviceInput::Image(i) => p(images.output(i)),
                DeviceInput::Vector(i) => p(&vectors[i]),
            };
            let value = device_tensor(&gpu, ptr, shape)?;
            bind_in_place(&mut obs_binding, name, &value)?;
            bound.push(Bound { _value: value });
        }
        obs_binding
            .bind_output(
                obs.output.0,
                device_tensor(&gpu, p(&obs_out), &obs.output.1)?,
            )
            .map_err(ort_e("binding the observation graph's output"))?;
        let vel_binding = match velocity {
            None => None,
            Some(vs) => {
                let mut b = vs
                    .create_binding()
                    .map_err(ort_e("creating an IoBinding"))?;
                for input in vs.inputs() {
                    let (ptr, shape) = match input.name() {
                        "x_t" => (p(&x), vec![1, sample_len]),
                        "t" => (p(&t), vec![1]),
                        "target_t" => (p(&target), vec![1]),
                        "context" => (p(&obs_out), obs.output.1.clone()),
                        other => {
                            return Err(EngineError::Config {
                                what: "graph velocity".into(),
                                message: format!("unexpected input `{other}`"),
                            })
                        }
                    };
                    let shape = graph_shape(input.dtype()).unwrap_or(shape);
                    let value = device_tensor(&gpu, ptr, &shape)?;
                    bind_in_place(&mut b, input.name(), &value)?;
                    bound.push(Bound { _value: value });
                }
                let vshape = vs
                    .outputs()
                    .iter()
                    .find(|o| o.name() == "velocity")
                    .and_then(|o| graph_shape(o.dtype()))
                    .unwrap_or(vec![1, sample_len]);
                b.bind_output("velocity", device_tensor(&gpu, p(&v), &vshape)?)
                    .map_err(ort_e("binding `velocity`"))?;
                Some(b)
            }
        };
        let euler = module
            .load_function("euler_step")
            .map_err(drv("loading kernel `euler_step`"))?;
        // SAFETY: pinned f32 memory, fully written before each upload.
        let host_x = unsafe { gpu.ctx.alloc_pinned::<f32>(sample_len.max(1)) }
            .map_err(drv("allocating pinned memory"))?;
        Ok(DeviceSampler {
            obs_binding,
            vel_binding,
            _bound: bound,
            images,
            vectors,
            obs_out,
            x,
            v,
            t,
            target,
            ts: None,
            ts_key: (0, false),
            host_x,
            euler,
            _module: module,
            gpu,
        })
    }

    /// Run the observation graph and (ManiFlow) `steps` Euler steps from the
    /// noise in `x`; `x` receives the final sample (or ACT's action).
    /// `vectors[i]` feeds `DeviceInput::Vector(i)`. Returns (encoder, velocity) times.
    #[allow(clippy::too_many_arguments)]
    pub fn infer(
        &mut self,
        obs_session: &mut Session,
        vel_session: Option<&mut Session>,
        vectors: &[&[f32]],
        steps: usize,
        absolute_target: bool,
        x: &mut [f32],
    ) -> Result<(Duration, Duration), EngineError> {
        let cs = self.gpu.stream.cu_stream();
        self.gpu
            .ctx
            .bind_to_thread()
            .map_err(drv("binding the context"))?;
        for (dev, host) in self.vectors.iter().zip(vectors) {
            let ptr = dev.device_ptr(&self.gpu.stream).0;
            // SAFETY: `dev` holds exactly the vector's length (checked by the
            // engine's shapes); a pageable copy completes before returning.
            unsafe { result::memcpy_htod_async(ptr, &host[..dev.len().min(host.len())], cs) }
                .map_err(drv("copying a vector input"))?;
        }
        let t0 = Instant::now();
        obs_session
            .run_binding(&self.obs_binding)
            .map_err(ort_e("observation graph (cuda)"))?;
        let enc = t0.elapsed();
        let mut vel = Duration::ZERO;
        let Some(vs) = vel_session.filter(|_| self.vel_binding.is_some()) else {
            // ACT: the action chunk is the observation graph's output.
            download(&self.gpu, &mut self.host_x, &self.obs_out, x)?;
            return Ok((enc, vel));
        };
        self.write_times(steps, absolute_target)?;
        let host = self
            .host_x
            .as_mut_slice()
            .map_err(drv("mapping pinned memory"))?;
        host.copy_from_slice(x);
        let xp = self.x.device_ptr(&self.gpu.stream).0;
        // SAFETY: pinned source of the sample's length, ordered on our stream;
        // it is not rewritten before the stream is synchronised in `download`.
        unsafe { result::memcpy_htod_async(xp, &host[..], cs) }.map_err(drv("uploading noise"))?;
        let (tp, gp) = (
            self.t.device_ptr(&self.gpu.stream).0,
            self.target.device_ptr(&self.gpu.stream).0,
        );
        let dt = 1.0 / steps as f32;
        for i in 0..steps {
            let ts = match self.ts.as_ref() {
                Some(t) => t.as_slice().map_err(drv("mapping pinned memory"))?,
                None => &[],
            };
            if ts.len() < 2 * steps {
                return Err(EngineError::Config {
                    what: "cuda".into(),
                    message: "internal: time table missing".into(),
                });
            }
            // SAFETY: one f32 each from the pinned table, which lives until
            // the next `write_times` (which synchronises first).
            unsafe {
                result::memcpy_htod_async(tp, &ts[2 * i..2 * i + 1], cs)
                    .map_err(drv("uploading t"))?;
                result::memcpy_htod_async(gp, &ts[2 * i + 1..2 * i + 2], cs)
                    .map_err(drv("uploading target_t"))?;
            }
            let v0 = Instant::now();
            if let Some(vb) = self.vel_binding.as_ref() {
                vs.run_binding(vb).map_err(ort_e("velocity (cuda)"))?;
            }
            vel += v0.elapsed();
            self.launch_euler(dt)?;
        }
        download(&self.gpu, &mut self.host_x, &self.x, x)?;
        Ok((enc, vel))
    }

    /// The pinned table of (t, target_t) per step, rebuilt when N changes.
    fn write_times(&mut self, steps: usize, absolute: bool) -> Result<(), EngineError> {
        if self.ts.is_some() && self.ts_key == (steps, absolute) {
            return Ok(());
        }
        self.gpu.sync().map_err(|e| EngineError::Config {
            what: "cuda".into(),
            message: e.to_string(),
        })?;
        // SAFETY: pinned f32 memory, written right below.
        let mut ts = unsafe { self.gpu.ctx.alloc_pinned::<f32>(2 * steps) }
            .map_err(drv("allocating pinned memory"))?;
        let out = ts.as_mut_slice().map_err(drv("mapping pinned memory"))?;
        let dt = 1.0 / steps as f32;
        for i in 0..steps {
            let t = i as f32 / steps as f32;
            out[2 * i] = t;
            out[2 * i + 1] = if absolute { t + dt } else { dt };
        }
        self.ts = Some(ts);
        self.ts_key = (steps, absolute);
        Ok(())
    }

    fn launch_euler(&self, dt: f32) -> Result<(), EngineError> {
        let mut xp = self.x.device_ptr(&self.gpu.stream).0;
        let mut vp = self.v.device_ptr(&self.gpu.stream).0;
        let mut dt = dt;
        let mut n = self.x.len() as i32;
        let mut params: [*mut c_void; 4] = [
            (&mut xp as *mut CUdeviceptr).cast(),
            (&mut vp as *mut CUdeviceptr).cast(),
            (&mut dt as *mut f32).cast(),
            (&mut n as *mut i32).cast(),
        ];
        let block = 256u32;
        // SAFETY: arguments match `euler_step(float*, const float*, float, int)`.
        unsafe {
            result::launch_kernel(
                self.euler.cu_function(),
                ((n as u32).div_ceil(block), 1, 1),
                (block, 1, 1),
                0,
                self.gpu.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(drv("launching `euler_step`"))
    }
}

/// One copy out, through the pinned buffer; waits for the stream.
fn download(
    gpu: &Gpu,
    host: &mut PinnedHostSlice<f32>,
    src: &CudaSlice<f32>,
    out: &mut [f32],
) -> Result<(), EngineError> {
    let n = out.len().min(src.len()).min(host.len());
    let sp = src.device_ptr(&gpu.stream).0;
    let h = host.as_mut_slice().map_err(drv("mapping pinned memory"))?;
    // SAFETY: `h` is pinned and holds `n` values; the stream is synchronised
    // before `h` is read.
    unsafe { result::memcpy_dtoh_async(&mut h[..n], sp, gpu.stream.cu_stream()) }
        .map_err(drv("copying the chunk back"))?;
    gpu.sync()?;
    out[..n].copy_from_slice(&h[..n]);
    Ok(())
}

/// A graph tensor's shape with symbolic dimensions set to 1.
pub fn graph_shape(vt: &ort::value::ValueType) -> Option<Vec<usize>> {
    match vt {
        ort::value::ValueType::Tensor { shape, .. } => Some(
            shape
                .iter()
                .map(|d| usize::try_from(*d).unwrap_or(1))
                .collect(),
        ),
        _ => None,
    }
}

impl std::fmt::Debug for DeviceSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceSampler(cuda:{} {})",
            self.gpu.index, self.gpu.name
        )
    }
}

impl From<GpuError> for EngineError {
    fn from(e: GpuError) -> Self {
        EngineError::Config {
            what: "cuda".into(),
            message: e.to_string(),
        }
    }
}
