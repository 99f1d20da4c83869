//! The policy engine: preallocated input tensors, ONNX Runtime sessions, the
//! few-step ManiFlow sampler (MANIFLOW.md section 5) and ACT's single call.
//!
//! Steady state (`set_observation` for each obs step, then `infer`) performs no
//! heap allocation on the Rust side: every tensor, the noise buffer and the
//! chunk are allocated in `Engine::new`, outputs are preallocated through
//! `RunOptions`, and the encoder's context tensor is handed to every velocity
//! step without a copy.

use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use ort::session::{HasSelectedOutputs, OutputSelector};
use ort::session::{RunOptions, SessionInputValue};
use ort::value::{DynValue, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::EngineError;
use crate::policy::gpu::sampler::{DeviceInput, DeviceSampler, GraphSpec};
use crate::policy::gpu::GpuImages;
use crate::policy::manifest::{PolicyKind, TactileInput, TargetT};
use crate::policy::normalize::Normalizer;
use crate::policy::options::EngineOptions;
use crate::policy::package::{CudaStreamPtr, PolicyPackage};
use crate::policy::preprocess::{normalize_vector, Frame, ImagePreprocessor};

/// A tactile reading of one observation step.
#[derive(Debug, Clone, Copy)]
pub enum TactileReading<'a> {
    Taxels(&'a [f32]),
    Image(Frame<'a>),
}

/// One observation step in raw sensor units.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObservationStep<'a> {
    /// One frame per manifest camera, in manifest order.
    pub cameras: &'a [Frame<'a>],
    pub state: Option<&'a [f32]>,
    pub tactile: Option<TactileReading<'a>>,
}

/// Durations of the last `infer` call.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub encoder: Duration,
    /// Sum over the velocity steps.
    pub velocity: Duration,
}

/// What feeds a graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Image(usize),
    State,
    Taxels,
    XT,
    T,
    TargetT,
    Context,
    Prefix,
    PrefixMask,
}

/// The given first rows of the next chunk (training-time real-time chunking):
/// `d` rows, unnormalised (copied back exactly) and normalised (fed to the graph).
struct Prefix {
    d_max: usize,
    d: usize,
    /// (d_max, Da) unnormalised.
    raw: Vec<f32>,
    /// (T, Da) normalised, rows `start_index..start_index + d` set, zeros elsewhere.
    norm: Vec<f32>,
    /// (T,) 1 on the prefix rows.
    mask: Vec<f32>,
}

/// Input tensors of one graph, in the session's input order.
struct GraphInputs {
    roles: Vec<Role>,
    values: Vec<Tensor<f32>>,
}

pub struct Engine {
    pkg: PolicyPackage,
    kind: PolicyKind,
    to: usize,
    images: Vec<ImagePreprocessor>,
    state_norm: Option<Normalizer>,
    tactile_norm: Option<Normalizer>,
    action_norm: Normalizer,
    /// "encoder" (maniflow) or "act", and its index in `pkg.graphs`.
    obs_graph: &'static str,
    obs_graph_index: usize,
    /// maniflow: encoder inputs; act: act inputs.
    obs_inputs: GraphInputs,
    obs_run: RunOptions<HasSelectedOutputs>,
    obs_output_name: &'static str,
    /// maniflow: encoder output handle (shares memory with the preallocated output); act: action output.
    obs_output: DynValue,
    /// Index of `velocity` in `pkg.graphs` (maniflow only).
    vel_graph_index: usize,
    vel_inputs: Option<GraphInputs>,
    vel_run: Option<RunOptions<HasSelectedOutputs>>,
    vel_output: Option<DynValue>,
    steps: usize,
    target_t: TargetT,
    rng: ChaCha8Rng,
    /// (T, Da) the sample, normalised action space.
    x: Vec<f32>,
    /// (T - start_index, Da) unnormalised actions.
    chunk: Vec<f32>,
    da: usize,
    horizon: usize,
    start_index: usize,
    times: StageTimes,
    /// `NoiseMode::Fixed`: the stream restarts from this seed before every chunk.
    fixed_noise_seed: Option<u64>,
    prefix: Prefix,
    /// The GPU path (`--device cuda`): preprocessing, bindings and the sampler
    /// on the device; None on the CPU.
    device: Option<Box<DeviceSampler>>,
}

fn ort_err(stage: &'static str) -> impl Fn(ort::Error) -> EngineError {
    move |source| EngineError::Ort { stage, source }
}

/// The shape of a graph tensor with its symbolic batch set to 1 (the package
/// check has already matched every other dimension against the manifest).
fn batch_of_one(vt: &ort::value::ValueType) -> Vec<usize> {
    match vt {
        ort::value::ValueType::Tensor { shape, .. } => shape
            .iter()
            .map(|d| usize::try_from(*d).unwrap_or(1))
            .collect(),
        _ => vec![1],
    }
}

fn zeros(shape: Vec<usize>) -> Result<Tensor<f32>, EngineError> {
    let n: usize = shape.iter().product();
    Tensor::from_array((shape, vec![0.0f32; n])).map_err(ort_err("allocating an input tensor"))
}

impl Engine {
    /// Load `dir` and preallocate everything. With a CUDA provider, the GPU is
    /// opened first (a one-line error without a driver or GPU, or, when
    /// `error_on_failure` is off, a warning and the CPU path instead).
    pub fn load(dir: &std::path::Path, opts: &EngineOptions) -> Result<Engine, EngineError> {
        let (run_opts, gpu) = crate::policy::gpu::open_for(opts)?;
        let stream = gpu
            .as_ref()
            .map(|(g, _)| CudaStreamPtr(g.stream.cu_stream().cast()));
        let pkg = match PolicyPackage::load_on(dir, &run_opts, stream) {
            Ok(p) => p,
            // The GPU opened but ONNX Runtime's CUDA provider did not start.
            Err(e @ EngineError::Config { .. }) if gpu.is_some() && !opts.error_on_failure => {
                let cpu = crate::policy::gpu::fallback(opts, &e.to_string());
                return Engine::new(PolicyPackage::load(dir, &cpu)?, &cpu);
            }
            Err(e) => return Err(e),
        };
        let mut engine = Engine::new(pkg, &run_opts)?;
        if let Some((gpu, module)) = gpu {
            engine.attach_device(gpu, module)?;
        }
        Ok(engine)
    }

    pub fn new(pkg: PolicyPackage, opts: &EngineOptions) -> Result<Engine, EngineError> {
        let m = pkg.manifest.clone();
        let to = m.n_obs_steps;
        let norm_of = |key: &str, len: usize| -> Result<Normalizer, EngineError> {
            let n = m
                .normalization
                .get(key)
                .ok_or_else(|| EngineError::Config {
                    what: format!("policy.toml normalization.\"{key}\""),
                    message: "is missing".into(),
                })?;
            Ok(Normalizer::new(n, len))
        };
        let mut images = Vec::new();
        for spec in m.image_inputs() {
            images.push(ImagePreprocessor::new(&spec, &norm_of(&spec.key, 3)?));
        }
        let state_norm = match &m.inputs.state {
            Some(s) => Some(norm_of(&s.key, s.names.len())?),
            None => None,
        };
        let tactile_norm = match &m.inputs.tactile {
            Some(TactileInput::Taxels { key, size }) => Some(norm_of(key, *size)?),
            _ => None,
        };
        let a = &m.outputs.action;
        let (da, horizon, start_index) = (a.dim(), a.horizon, a.start_index);
        let action_norm = norm_of(&a.key, da)?;

        let obs_graph = if m.kind == PolicyKind::Maniflow {
            "encoder"
        } else {
            "act"
        };
        // Observation-side inputs in the session's order.
        let obs_graph_index = graph_index(&pkg, obs_graph)?;
        let graph = &pkg.graphs[obs_graph_index];
        let mut roles = Vec::new();
        let mut values = Vec::new();
        for input in graph.session.inputs() {
            let name = input.name();
            let role = if let Some(i) = images.iter().position(|p| p.spec().key == name) {
                Role::Image(i)
            } else if m.inputs.state.as_ref().is_some_and(|s| s.key == name) {
                Role::State
            } else if m.inputs.tactile.as_ref().is_some_and(|t| t.key() == name) {
                Role::Taxels
            } else {
                return Err(EngineError::Config {
                    what: format!("graph {obs_graph}"),
                    message: format!("input `{name}` is not declared in policy.toml"),
                });
            };
            roles.push(role);
            values.push(zeros(batch_of_one(input.dtype()))?);
        }
        let obs_inputs = GraphInputs { roles, values };

        let (obs_output_name, obs_out_shape): (&'static str, Vec<usize>) = match m.kind {
            PolicyKind::Maniflow => ("context", vec![1, pkg.context.tokens, pkg.context.width]),
            PolicyKind::Act => ("action", vec![1, horizon, da]),
        };
        let obs_run = RunOptions::new()
            .map_err(ort_err("creating run options"))?
            .with_outputs(
                OutputSelector::default().preallocate(obs_output_name, zeros(obs_out_shape)?),
            );

        let (vel_graph_index, vel_inputs, vel_run) = if m.kind == PolicyKind::Maniflow {
            let vel_graph_index = graph_index(&pkg, "velocity")?;
            let vg = &pkg.graphs[vel_graph_index];
            let mut roles = Vec::new();
            let mut values = Vec::new();
            for input in vg.session.inputs() {
                let (role, shape) = match input.name() {
                    "x_t" => (Role::XT, vec![1, horizon, da]),
                    "t" => (Role::T, vec![1]),
                    "target_t" => (Role::TargetT, vec![1]),
                    // placeholder slot; the encoder's output handle is passed instead
                    "context" => (Role::Context, vec![1]),
                    "prefix" => (Role::Prefix, vec![1, horizon, da]),
                    "prefix_mask" => (Role::PrefixMask, vec![1, horizon]),
                    other => {
                        return Err(EngineError::Config {
                            what: "graph velocity".into(),
                            message: format!("unexpected input `{other}`"),
                        })
                    }
                };
                roles.push(role);
                values.push(zeros(shape)?);
            }
            let run = RunOptions::new()
                .map_err(ort_err("creating run options"))?
                .with_outputs(
                    OutputSelector::default().preallocate("velocity", zeros(vec![1, horizon, da])?),
                );
            (
                vel_graph_index,
                Some(GraphInputs { roles, values }),
                Some(run),
            )
        } else {
            (usize::MAX, None, None)
        };

        let sampler = m.sampler.clone();
        let steps = opts
            .steps
            .or(sampler.as_ref().map(|s| s.steps))
            .unwrap_or(1);
        if steps == 0 {
            return Err(EngineError::Config {
                what: "--steps".into(),
                message: "must be >= 1".into(),
            });
        }
        let seed = opts.seed.or(sampler.as_ref().map(|s| s.seed)).unwrap_or(0);
        let target_t = sampler.as_ref().map_or(TargetT::Relative, |s| s.target_t);

        let mut engine = Engine {
            kind: m.kind,
            to,
            images,
            state_norm,
            tactile_norm,
            action_norm,
            obs_graph,
            obs_graph_index,
            obs_inputs,
            obs_run,
            obs_output_name,
            obs_output: zeros(vec![1])?.into_dyn(),
            vel_graph_index,
            vel_inputs,
            vel_run,
            vel_output: None,
            steps,
            target_t,
            rng: ChaCha8Rng::seed_from_u64(seed),
            x: vec![0.0; horizon * da],
            chunk: vec![0.0; (horizon - start_index) * da],
            da,
            horizon,
            start_index,
            times: StageTimes::default(),
            fixed_noise_seed: (opts.noise == crate::policy::options::NoiseMode::Fixed)
                .then_some(seed),
            prefix: Prefix {
                d_max: a.prefix_d_max,
                d: 0,
                raw: vec![0.0; a.prefix_d_max * da],
                norm: vec![0.0; horizon * da],
                mask: vec![0.0; horizon],
            },
            device: None,
            pkg,
        };
        // Warm-up run: takes the handles of the preallocated outputs, so later
        // runs are read and chained without copies, and lets ORT plan its memory.
        engine.obs_output = engine.run_obs_graph_taking_output()?;
        if engine.kind == PolicyKind::Maniflow {
            engine.vel_output = Some(engine.run_velocity_taking_output()?);
        }
        Ok(engine)
    }

    pub fn package(&self) -> &PolicyPackage {
        &self.pkg
    }

    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    pub fn n_obs_steps(&self) -> usize {
        self.to
    }

    pub fn action_dim(&self) -> usize {
        self.da
    }

    /// Rows of the chunk `infer` returns: horizon - start_index.
    pub fn chunk_len(&self) -> usize {
        self.horizon - self.start_index
    }

    pub fn n_action_steps(&self) -> usize {
        self.pkg.manifest.outputs.action.n_action_steps
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Change the number of sampling steps (ManiFlow).
    pub fn set_steps(&mut self, steps: usize) -> Result<(), EngineError> {
        if steps == 0 {
            return Err(EngineError::Config {
                what: "steps".into(),
                message: "must be >= 1".into(),
            });
        }
        self.steps = steps;
        Ok(())
    }

    /// Restart the noise stream.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
        if self.fixed_noise_seed.is_some() {
            self.fixed_noise_seed = Some(seed);
        }
    }

    pub fn last_times(&self) -> StageTimes {
        self.times
    }

    /// Preprocess one observation step into the input tensors. `step` counts
    /// from 0 = oldest to n_obs_steps - 1 = newest.
    pub fn set_observation(
        &mut self,
        step: usize,
        obs: &ObservationStep<'_>,
    ) -> Result<(), EngineError> {
        if step >= self.to {
            return Err(EngineError::input(
                "observation",
                format!("step {step} >= n_obs_steps {}", self.to),
            ));
        }
        let n_cams = self.pkg.manifest.inputs.cameras.len();
        if obs.cameras.len() != n_cams {
            return Err(EngineError::input(
                "observation.images",
                format!(
                    "{} frames given, the policy has {n_cams} cameras",
                    obs.cameras.len()
                ),
            ));
        }
        for (role, value) in self
            .obs_inputs
            .roles
            .iter()
            .zip(self.obs_inputs.values.iter_mut())
        {
            let (_, data) = value.extract_tensor_mut();
            let per_step = data.len() / self.to;
            let slot = &mut data[step * per_step..(step + 1) * per_step];
            match *role {
                Role::Image(i) => {
                    if self.device.is_none() {
                        let frame = frame_of(&self.images, i, n_cams, obs)?;
                        self.images[i].process(&frame, slot)?;
                    }
                }
                Role::State => {
                    let key = self
                        .pkg
                        .manifest
                        .inputs
                        .state
                        .as_ref()
                        .map_or("observation.state", |s| s.key.as_str());
                    let (Some(x), Some(n)) = (obs.state, self.state_norm.as_ref()) else {
                        return Err(EngineError::input(
                            key,
                            "is required by the policy but missing",
                        ));
                    };
                    normalize_vector(key, n, x, slot)?;
                }
                Role::Taxels => {
                    let key = self
                        .pkg
                        .manifest
                        .inputs
                        .tactile
                        .as_ref()
                        .map_or("tactile", |t| t.key());
                    let (Some(TactileReading::Taxels(x)), Some(n)) =
                        (obs.tactile, self.tactile_norm.as_ref())
                    else {
                        return Err(EngineError::input(
                            key,
                            "taxels are required by the policy but missing",
                        ));
                    };
                    normalize_vector(key, n, x, slot)?;
                }
                _ => {}
            }
        }
        if let Some(dev) = self.device.as_deref_mut() {
            let mut frames: ArrayVec<Frame<'_>, 32> = ArrayVec::new();
            for i in 0..self.images.len().min(32) {
                frames.push(frame_of(&self.images, i, n_cams, obs)?);
            }
            dev.images.process(&dev.gpu, step, &frames)?;
        }
        Ok(())
    }

    /// Put preprocessing, the graphs' inputs and outputs and the sampler on
    /// the GPU (the sessions were built on its stream by `load`).
    fn attach_device(
        &mut self,
        gpu: crate::policy::gpu::Gpu,
        module: std::sync::Arc<cudarc::driver::CudaModule>,
    ) -> Result<(), EngineError> {
        let m = &self.pkg.manifest;
        if self.prefix.d_max > 0 {
            return Err(EngineError::Config {
                what: "--device cuda".into(),
                message: format!(
                    "policy `{}` takes an action prefix (outputs.action.prefix_d_max = {}), which the GPU sampler does not feed yet; run it with --device cpu",
                    m.name, self.prefix.d_max
                ),
            });
        }
        let mut specs = Vec::new();
        for spec in m.image_inputs() {
            let n = m
                .normalization
                .get(&spec.key)
                .ok_or_else(|| EngineError::Config {
                    what: format!("policy.toml normalization.\"{}\"", spec.key),
                    message: "is missing".into(),
                })?;
            specs.push((spec.clone(), Normalizer::new(n, 3)));
        }
        let images = GpuImages::new(&gpu, module.clone(), &specs, self.to)?;
        let obs_session = &self.pkg.graphs[self.obs_graph_index].session;
        let mut inputs = Vec::new();
        let mut vector_lens = Vec::new();
        for ((input, role), value) in obs_session
            .inputs()
            .iter()
            .zip(&self.obs_inputs.roles)
            .zip(&self.obs_inputs.values)
        {
            let shape = batch_of_one(input.dtype());
            let src = match *role {
                Role::Image(i) => DeviceInput::Image(i),
                _ => {
                    vector_lens.push(value.shape().iter().product::<i64>() as usize);
                    DeviceInput::Vector(vector_lens.len() - 1)
                }
            };
            inputs.push((input.name().to_string(), shape, src));
        }
        let out_shape = match self.kind {
            PolicyKind::Maniflow => vec![1, self.pkg.context.tokens, self.pkg.context.width],
            PolicyKind::Act => vec![1, self.horizon, self.da],
        };
        let vel_session = (self.kind == PolicyKind::Maniflow)
            .then(|| &self.pkg.graphs[self.vel_graph_index].session);
        let sampler = DeviceSampler::new(
            gpu,
            module,
            images,
            &vector_lens,
            GraphSpec {
                session: obs_session,
                inputs,
                output: (self.obs_output_name, out_shape),
            },
            vel_session,
            self.horizon * self.da,
        )?;
        self.device = Some(Box::new(sampler));
        Ok(())
    }

    /// The GPU this engine runs on (name, index), if any.
    pub fn gpu(&self) -> Option<(&str, usize)> {
        self.device
            .as_deref()
            .map(|d| (d.gpu.name.as_str(), d.gpu.index))
    }

    /// How many given first actions the policy continues (`outputs.action.prefix_d_max`);
    /// 0 = it takes no prefix.
    pub fn prefix_max(&self) -> usize {
        self.prefix.d_max
    }

    /// The first `d` actions of the next chunk, given (`rows`: `d * Da` unnormalised
    /// actions for the chunk's rows `0..d`): the policy continues them, and the returned
    /// chunk's rows `0..d` are exactly `rows`. Stays until changed; `d = 0` clears it.
    /// No allocation.
    pub fn set_prefix(&mut self, rows: &[f32], d: usize) -> Result<(), EngineError> {
        let p = &mut self.prefix;
        if d > p.d_max {
            return Err(EngineError::input(
                "prefix",
                format!(
                    "has {d} rows, the policy continues at most {} (outputs.action.prefix_d_max)",
                    p.d_max
                ),
            ));
        }
        if rows.len() != d * self.da {
            return Err(EngineError::input(
                "prefix",
                format!(
                    "has {} values, expected {d} rows x {} = {}",
                    rows.len(),
                    self.da,
                    d * self.da
                ),
            ));
        }
        if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
            return Err(EngineError::input(
                "prefix",
                format!("row {} joint {} is not finite", i / self.da, i % self.da),
            ));
        }
        let da = self.da;
        p.d = d;
        p.raw[..d * da].copy_from_slice(rows);
        p.norm.fill(0.0);
        p.mask.fill(0.0);
        for (r, row) in rows.chunks_exact(da).enumerate() {
            let at = self.start_index + r;
            self.action_norm
                .normalize(row, &mut p.norm[at * da..(at + 1) * da]);
            p.mask[at] = 1.0;
        }
        Ok(())
    }

    /// Run the policy on the current observation tensors, drawing fresh noise.
    /// Returns the unnormalised chunk `(horizon - start_index, Da)`.
    pub fn infer(&mut self) -> Result<&[f32], EngineError> {
        if self.kind == PolicyKind::Maniflow {
            if let Some(seed) = self.fixed_noise_seed {
                self.rng = ChaCha8Rng::seed_from_u64(seed);
            }
            for v in self.x.iter_mut() {
                *v = StandardNormal.sample(&mut self.rng);
            }
        }
        self.run_current()
    }

    /// As `infer`, with the initial sample `x0` `(horizon, Da)` given (parity tests).
    pub fn infer_with_noise(&mut self, x0: &[f32]) -> Result<&[f32], EngineError> {
        if x0.len() != self.x.len() {
            return Err(EngineError::input(
                "noise",
                format!("has {} values, expected {}", x0.len(), self.x.len()),
            ));
        }
        self.x.copy_from_slice(x0);
        self.run_current()
    }

    fn run_current(&mut self) -> Result<&[f32], EngineError> {
        if self.device.is_some() {
            self.run_on_device()?;
            return Ok(self.unnormalize_chunk());
        }
        let t0 = Instant::now();
        self.run_obs_graph()?;
        let t1 = Instant::now();
        self.times.encoder = t1 - t0;
        match self.kind {
            PolicyKind::Act => {
                let (_, y) = self
                    .obs_output
                    .try_extract_tensor::<f32>()
                    .map_err(ort_err("reading act output"))?;
                self.x.copy_from_slice(y);
                self.times.velocity = Duration::ZERO;
            }
            PolicyKind::Maniflow => {
                let n = self.steps;
                let dt = 1.0 / n as f32;
                let mut vel_time = Duration::ZERO;
                for i in 0..n {
                    let t = i as f32 / n as f32;
                    let target = match self.target_t {
                        TargetT::Relative => dt,
                        TargetT::Absolute => t + dt,
                    };
                    self.write_velocity_inputs(t, target);
                    let v0 = Instant::now();
                    self.run_velocity()?;
                    vel_time += v0.elapsed();
                    let out = self
                        .vel_output
                        .as_ref()
                        .ok_or_else(|| EngineError::Config {
                            what: "engine".into(),
                            message: "velocity output missing".into(),
                        })?;
                    let (_, v) = out
                        .try_extract_tensor::<f32>()
                        .map_err(ort_err("reading velocity"))?;
                    // x = x + dt * v  (explicit Euler)
                    for (xi, vi) in self.x.iter_mut().zip(v) {
                        *xi += dt * vi;
                    }
                }
                self.times.velocity = vel_time;
            }
        }
        Ok(self.unnormalize_chunk())
    }

    /// The given prefix rows replace the sample's (the graph ignores x there).
    fn apply_prefix(&mut self) {
        let (da, d) = (self.da, self.prefix.d);
        let lo = self.start_index * da;
        self.x[lo..lo + d * da].copy_from_slice(&self.prefix.norm[lo..lo + d * da]);
    }

    /// The sample's executed rows, unnormalised, into `chunk`.
    fn unnormalize_chunk(&mut self) -> &[f32] {
        let da = self.da;
        if self.prefix.d > 0 {
            self.apply_prefix();
        }
        for (r, row) in self.chunk.chunks_exact_mut(da).enumerate() {
            let src = &self.x[(self.start_index + r) * da..(self.start_index + r + 1) * da];
            self.action_norm.unnormalize(src, row);
        }
        // Exactly the given actions (no normalisation round trip).
        let d = self.prefix.d;
        self.chunk[..d * da].copy_from_slice(&self.prefix.raw[..d * da]);
        &self.chunk
    }

    /// The whole chunk on the GPU: vectors and noise up, graphs and Euler
    /// steps on the device, the sample back in one copy.
    fn run_on_device(&mut self) -> Result<(), EngineError> {
        let Some(dev) = self.device.as_deref_mut() else {
            return Ok(());
        };
        let mut vectors: ArrayVec<&[f32], 8> = ArrayVec::new();
        for (role, value) in self.obs_inputs.roles.iter().zip(&self.obs_inputs.values) {
            if !matches!(role, Role::Image(_)) {
                let (_, data) = value.extract_tensor();
                vectors.push(data);
            }
        }
        let (obs_i, vel_i) = (self.obs_graph_index, self.vel_graph_index);
        let graphs = &mut self.pkg.graphs;
        let (obs_s, vel_s) = if self.kind == PolicyKind::Maniflow {
            let (lo, hi) = graphs.split_at_mut(obs_i.max(vel_i));
            let (a, b) = (&mut lo[obs_i.min(vel_i)].session, &mut hi[0].session);
            if obs_i < vel_i {
                (a, Some(b))
            } else {
                (b, Some(a))
            }
        } else {
            (&mut graphs[obs_i].session, None)
        };
        let absolute = self.target_t == TargetT::Absolute;
        let (enc, vel) = dev.infer(obs_s, vel_s, &vectors, self.steps, absolute, &mut self.x)?;
        self.times = StageTimes {
            encoder: enc,
            velocity: vel,
        };
        Ok(())
    }

    fn write_velocity_inputs(&mut self, t: f32, target: f32) {
        let Some(vi) = self.vel_inputs.as_mut() else {
            return;
        };
        for (role, value) in vi.roles.iter().zip(vi.values.iter_mut()) {
            let (_, data) = value.extract_tensor_mut();
            match role {
                Role::XT => data.copy_from_slice(&self.x),
                Role::T => data[0] = t,
                Role::TargetT => data[0] = target,
                Role::Prefix => data.copy_from_slice(&self.prefix.norm),
                Role::PrefixMask => data.copy_from_slice(&self.prefix.mask),
                _ => {}
            }
        }
    }

    /// Run the observation graph (encoder or act) once with the current inputs.
    pub fn run_obs_graph(&mut self) -> Result<(), EngineError> {
        self.run_obs_graph_inner().map(drop)
    }

    fn run_obs_graph_taking_output(&mut self) -> Result<DynValue, EngineError> {
        self.run_obs_graph_inner()?
            .ok_or_else(|| EngineError::Config {
                what: "observation graph".into(),
                message: format!("produced no `{}`", self.obs_output_name),
            })
    }

    /// Returns a handle on the (preallocated) output; dropping it frees nothing.
    fn run_obs_graph_inner(&mut self) -> Result<Option<DynValue>, EngineError> {
        let inputs: ArrayVec<SessionInputValue<'_>, 8> = self
            .obs_inputs
            .values
            .iter()
            .map(SessionInputValue::from)
            .collect();
        let session = &mut self.pkg.graphs[self.obs_graph_index].session;
        let mut out = session
            .run_with_options(&inputs[..], &self.obs_run)
            .map_err(ort_err(self.obs_graph))?;
        Ok(out.remove(self.obs_output_name))
    }

    /// Run one velocity step with the current inputs (x_t, t, target_t) and the encoder's context.
    pub fn run_velocity(&mut self) -> Result<(), EngineError> {
        self.run_velocity_inner().map(drop)
    }

    fn run_velocity_taking_output(&mut self) -> Result<DynValue, EngineError> {
        let mut out = self.run_velocity_inner()?;
        out.take().ok_or_else(|| EngineError::Config {
            what: "graph velocity".into(),
            message: "produced no `velocity`".into(),
        })
    }

    fn run_velocity_inner(&mut self) -> Result<Option<DynValue>, EngineError> {
        let (Some(vi), Some(run)) = (self.vel_inputs.as_ref(), self.vel_run.as_ref()) else {
            return Err(EngineError::Config {
                what: "engine".into(),
                message: "not a ManiFlow policy".into(),
            });
        };
        let inputs: ArrayVec<SessionInputValue<'_>, 8> = vi
            .roles
            .iter()
            .zip(vi.values.iter())
            .map(|(role, v)| {
                if *role == Role::Context {
                    SessionInputValue::from(&self.obs_output)
                } else {
                    SessionInputValue::from(v)
                }
            })
            .collect();
        let session = &mut self.pkg.graphs[self.vel_graph_index].session;
        let mut out = session
            .run_with_options(&inputs[..], run)
            .map_err(ort_err("velocity"))?;
        Ok(out.remove("velocity"))
    }
}

/// The frame feeding image input `i`: camera `i`, or the tactile image after
/// the cameras.
fn frame_of<'a>(
    images: &[ImagePreprocessor],
    i: usize,
    n_cams: usize,
    obs: &ObservationStep<'a>,
) -> Result<Frame<'a>, EngineError> {
    if i < n_cams {
        return Ok(obs.cameras[i]);
    }
    match obs.tactile {
        Some(TactileReading::Image(f)) => Ok(f),
        _ => Err(EngineError::input(
            images[i].spec().key.as_str(),
            "the policy takes a tactile image; none (or taxels) given",
        )),
    }
}

fn graph_index(pkg: &PolicyPackage, name: &str) -> Result<usize, EngineError> {
    pkg.graphs
        .iter()
        .position(|g| g.name == name)
        .ok_or_else(|| EngineError::Config {
            what: "policy package".into(),
            message: format!("graph `{name}` is missing"),
        })
}
