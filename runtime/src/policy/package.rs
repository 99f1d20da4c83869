//! Loading a policy package: manifest, checksums, ONNX sessions, and the check
//! that the graphs' real interfaces agree with the manifest (`models/README.md`).

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, PackageError};
use crate::policy::manifest::{Manifest, PolicyKind, TactileInput};
use crate::policy::onnx_info;
use crate::policy::options::{EngineOptions, ExecutionProvider};

/// A graph of the package, opened.
pub struct Graph {
    pub name: &'static str,
    pub path: PathBuf,
    pub sha256: String,
    pub parameters: Option<u64>,
    pub session: Session,
}

/// Sizes the manifest leaves to the graphs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContextShape {
    /// L: context tokens.
    pub tokens: usize,
    /// Dc: token width.
    pub width: usize,
}

pub struct PolicyPackage {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub graphs: Vec<Graph>,
    /// ManiFlow only: the encoder's context shape.
    pub context: ContextShape,
}

/// One expected dimension.
#[derive(Debug, Clone, Copy)]
enum D {
    /// The batch: symbolic or 1.
    Batch,
    /// Anything (read from the graph).
    Any,
    Is(usize),
}
type Dims = Vec<D>;

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl PolicyPackage {
    /// Read and check only the manifest (no ONNX Runtime needed).
    pub fn read_manifest(dir: &Path) -> Result<Manifest, PackageError> {
        let path = dir.join("policy.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| PackageError::Io {
            path: path.clone(),
            source,
        })?;
        let origin = path.display().to_string();
        let manifest = Manifest::from_toml(&text, &origin)?;
        manifest.validate(&origin)?;
        Ok(manifest)
    }

    /// Load a package: manifest, checksums, sessions, interface checks.
    pub fn load(dir: &Path, opts: &EngineOptions) -> Result<PolicyPackage, EngineError> {
        Self::load_on(dir, opts, None)
    }

    /// As `load`, with ONNX Runtime's CUDA provider running on `cuda_stream`
    /// (a `CUstream` of the engine's GPU path) instead of its own.
    pub(crate) fn load_on(
        dir: &Path,
        opts: &EngineOptions,
        cuda_stream: Option<CudaStreamPtr>,
    ) -> Result<PolicyPackage, EngineError> {
        let manifest = Self::read_manifest(dir)?;
        let env = crate::policy::ortlib::environment().map_err(|e| EngineError::Config {
            what: "ONNX Runtime".into(),
            message: e.to_string(),
        })?;
        let mut graphs = Vec::new();
        for (name, g) in manifest.graph_files() {
            let path = dir.join(&g.file);
            let bytes = std::fs::read(&path).map_err(|source| PackageError::Io {
                path: path.clone(),
                source,
            })?;
            let actual = sha256_hex(&bytes);
            if !actual.eq_ignore_ascii_case(&g.sha256) {
                return Err(PackageError::Checksum {
                    file: path,
                    graph: name.to_string(),
                    expected: g.sha256.clone(),
                    actual,
                }
                .into());
            }
            let session = build_session(&env, opts, cuda_stream, &bytes).map_err(|e| match e {
                SessionBuildError::Ort(m) => EngineError::from(PackageError::Graph {
                    file: path.clone(),
                    message: m,
                }),
                SessionBuildError::Config(m) => EngineError::Config {
                    what: "execution provider".into(),
                    message: m,
                },
            })?;
            graphs.push(Graph {
                name,
                path,
                sha256: actual,
                parameters: onnx_info::count_parameters(&bytes),
                session,
            });
        }
        let mut pkg = PolicyPackage {
            dir: dir.to_path_buf(),
            manifest,
            graphs,
            context: ContextShape::default(),
        };
        pkg.check_interfaces()?;
        Ok(pkg)
    }

    pub fn graph(&self, name: &str) -> Option<&Graph> {
        self.graphs.iter().find(|g| g.name == name)
    }

    pub fn parameter_count(&self) -> Option<u64> {
        self.graphs.iter().map(|g| g.parameters).sum()
    }

    /// The observation inputs of the encoder (ManiFlow) or act graph (ACT), with
    /// their dims: `(B, [To,] feature dims...)`; ACT has no history axis.
    fn observation_inputs(&self) -> Vec<(String, Dims)> {
        let m = &self.manifest;
        let lead: Dims = match m.kind {
            PolicyKind::Maniflow => vec![D::Batch, D::Is(m.n_obs_steps)],
            PolicyKind::Act => vec![D::Batch],
        };
        let with_lead = |tail: &[usize]| -> Dims {
            lead.iter()
                .copied()
                .chain(tail.iter().map(|v| D::Is(*v)))
                .collect()
        };
        let mut inputs: Vec<(String, Dims)> = m
            .image_inputs()
            .into_iter()
            .map(|img| (img.key, with_lead(&[3, img.height, img.width])))
            .collect();
        if let Some(s) = &m.inputs.state {
            inputs.push((s.key.clone(), with_lead(&[s.names.len()])));
        }
        if let Some(TactileInput::Taxels { key, size }) = &m.inputs.tactile {
            inputs.push((key.clone(), with_lead(&[*size])));
        }
        inputs
    }

    /// The tensors each graph must have, from the manifest.
    fn check_interfaces(&mut self) -> Result<(), PackageError> {
        let inputs = self.observation_inputs();
        let m = &self.manifest;
        let a = &m.outputs.action;
        let b = D::Batch;
        let act_dims = vec![b, D::Is(a.horizon), D::Is(a.dim())];
        match m.kind {
            PolicyKind::Maniflow => {
                let enc = self.graph("encoder").ok_or_else(|| missing("encoder"))?;
                check_graph(enc, &inputs, &[("context".into(), vec![b, D::Any, D::Any])])?;
                let (l, dc) = context_dims(enc)?;
                if let Some(last) = m.modality_map.last() {
                    if last.end != l {
                        return Err(PackageError::Interface {
                            file: enc.path.clone(),
                            tensor: "context".into(),
                            message: format!(
                                "has {l} tokens but policy.toml `modality_map` ends at {} (field modality_map)",
                                last.end
                            ),
                        });
                    }
                }
                let vel = self.graph("velocity").ok_or_else(|| missing("velocity"))?;
                let mut vel_inputs = vec![
                    ("x_t".into(), act_dims.clone()),
                    ("t".into(), vec![b]),
                    ("target_t".into(), vec![b]),
                    ("context".into(), vec![b, D::Is(l), D::Is(dc)]),
                ];
                if a.prefix_d_max > 0 {
                    vel_inputs.push(("prefix".into(), act_dims.clone()));
                    vel_inputs.push(("prefix_mask".into(), vec![b, D::Is(a.horizon)]));
                }
                check_graph(vel, &vel_inputs, &[("velocity".into(), act_dims)])?;
                self.context = ContextShape {
                    tokens: l,
                    width: dc,
                };
            }
            PolicyKind::Act => {
                let g = self.graph("act").ok_or_else(|| missing("act"))?;
                check_graph(g, &inputs, &[("action".into(), act_dims)])?;
            }
        }
        Ok(())
    }
}

fn missing(name: &str) -> PackageError {
    PackageError::Field {
        file: "policy.toml".into(),
        field: format!("graphs.{name}"),
        message: "is missing".into(),
    }
}

fn shape_of(vt: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match vt {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.to_vec())),
        _ => None,
    }
}

fn fmt_dims(d: &[D]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|x| match x {
            D::Batch => "B".to_string(),
            D::Any => "*".to_string(),
            D::Is(v) => v.to_string(),
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// Compare one side (inputs or outputs) of a graph with what the manifest implies.
fn check_side(
    g: &Graph,
    side: &str,
    actual: Vec<(String, ValueType)>,
    expected: &[(String, Dims)],
) -> Result<(), PackageError> {
    let err = |tensor: &str, message: String| PackageError::Interface {
        file: g.path.clone(),
        tensor: tensor.to_string(),
        message,
    };
    for (name, dims) in expected {
        let Some((_, vt)) = actual.iter().find(|(n, _)| n == name) else {
            let have: Vec<&str> = actual.iter().map(|(n, _)| n.as_str()).collect();
            return Err(err(
                name,
                format!("is required by policy.toml but the graph has no such {side} (graph {side}s: {have:?})"),
            ));
        };
        let Some((ty, shape)) = shape_of(vt) else {
            return Err(err(name, format!("is not a tensor ({vt})")));
        };
        if ty != TensorElementType::Float32 {
            return Err(err(
                name,
                format!("has element type {ty:?}, the format requires float32"),
            ));
        }
        let mismatch = shape.len() != dims.len()
            || shape.iter().zip(dims).any(|(s, d)| match d {
                // batch: symbolic, or 1
                D::Batch => !(*s < 0 || *s == 1),
                D::Any => false,
                D::Is(v) => *s >= 0 && *s as usize != *v,
            });
        if mismatch {
            return Err(err(
                name,
                format!(
                    "has shape {shape:?} in the graph but policy.toml implies {} (-1 = symbolic)",
                    fmt_dims(dims)
                ),
            ));
        }
    }
    if let Some((extra, _)) = actual
        .iter()
        .find(|(n, _)| !expected.iter().any(|(e, _)| e == n))
    {
        return Err(err(
            extra,
            format!("is a graph {side} that policy.toml does not declare"),
        ));
    }
    Ok(())
}

fn check_graph(
    g: &Graph,
    inputs: &[(String, Dims)],
    outputs: &[(String, Dims)],
) -> Result<(), PackageError> {
    let ins = g
        .session
        .inputs()
        .iter()
        .map(|o| (o.name().to_string(), o.dtype().clone()))
        .collect();
    check_side(g, "input", ins, inputs)?;
    let outs = g
        .session
        .outputs()
        .iter()
        .map(|o| (o.name().to_string(), o.dtype().clone()))
        .collect();
    // Outputs may carry extra tensors only if the manifest says so; it never does.
    check_side(g, "output", outs, outputs)
}

/// (L, Dc) of the encoder's `context` output, already checked to be `(B, *, *)`;
/// both must be fixed so the runtime can preallocate.
fn context_dims(g: &Graph) -> Result<(usize, usize), PackageError> {
    let shape = g
        .session
        .outputs()
        .iter()
        .find(|o| o.name() == "context")
        .and_then(|o| shape_of(o.dtype()))
        .map(|(_, shape)| shape)
        .unwrap_or_default();
    match shape.as_slice() {
        [_, l, dc] if *l >= 0 && *dc >= 0 => Ok((*l as usize, *dc as usize)),
        _ => Err(PackageError::Interface {
            file: g.path.clone(),
            tensor: "context".into(),
            message: format!(
                "has shape {shape:?}; tokens and width must be fixed for the runtime to preallocate"
            ),
        }),
    }
}

pub(crate) enum SessionBuildError {
    Ort(String),
    Config(String),
}

/// A CUDA stream handle for ONNX Runtime's `user_compute_stream`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CudaStreamPtr(pub *mut ());

fn build_session(
    env: &ort::environment::Environment,
    opts: &EngineOptions,
    #[allow(unused_variables)] cuda_stream: Option<CudaStreamPtr>,
    bytes: &[u8],
) -> Result<Session, SessionBuildError> {
    fn o(e: impl std::fmt::Display) -> SessionBuildError {
        SessionBuildError::Ort(e.to_string())
    }
    let mut b = Session::builder(env).map_err(o)?;
    b = b
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
        .map_err(o)?;
    b = b.with_intra_threads(opts.intra_threads.max(1)).map_err(o)?;
    b = b.with_inter_threads(1).map_err(o)?;
    let ep: Option<ort::ep::ExecutionProviderDispatch> = match opts.provider {
        ExecutionProvider::Cpu => None,
        #[cfg(feature = "cuda")]
        ExecutionProvider::Cuda { device_id } => {
            let mut ep = ort::ep::CUDA::default().with_device_id(device_id as i32);
            if let Some(s) = cuda_stream {
                // SAFETY: the stream belongs to the engine's GPU context and
                // outlives the sessions (the engine drops them first).
                ep = unsafe { ep.with_compute_stream(s.0) };
            }
            Some(ep.build())
        }
        #[cfg(feature = "tensorrt")]
        ExecutionProvider::TensorRt { device_id } => Some(
            ort::ep::TensorRT::default()
                .with_device_id(device_id as i32)
                .build(),
        ),
    };
    if let Some(mut ep) = ep {
        if opts.error_on_failure {
            ep = ep.error_on_failure();
        }
        b = b
            .with_execution_providers([ep])
            .map_err(|e| SessionBuildError::Config(e.to_string()))?;
    }
    b.commit_from_memory(bytes).map_err(o)
}
