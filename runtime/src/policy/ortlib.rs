//! Finding and initialising the ONNX Runtime shared library.
//!
//! `ort` is built with `load-dynamic`: nothing is linked at build time, and the
//! library is opened here, once, before any session exists. Search order:
//! 1. `ORT_DYLIB_PATH` (exactly that file; an error if it is missing),
//! 2. `libonnxruntime.so*` beside the executable or in `../lib` (deployments),
//! 3. the bootstrap's virtual environment: `.venv/lib/python3*/site-packages/onnxruntime/capi/`
//!    in any ancestor of the executable and of the source tree it was built from.
//!
//! A missing or too-old library is an [`OrtLoadError`] that says where we looked.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::OrtLoadError;

static LOADED: OnceLock<Result<(PathBuf, ort::environment::Environment), OrtLoadError>> =
    OnceLock::new();

/// Candidate library paths in search order.
pub fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        if !p.is_empty() {
            out.push(PathBuf::from(p));
            return out;
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join("libonnxruntime.so"));
            out.push(dir.join("../lib/libonnxruntime.so"));
            roots.extend(dir.ancestors().map(Path::to_path_buf));
        }
    }
    // The workspace this crate was built from (dev builds, tests).
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    roots.push(ws);
    for root in roots {
        let lib = root.join(".venv/lib");
        let Ok(entries) = std::fs::read_dir(&lib) else {
            continue;
        };
        let mut pys: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python3"))
            })
            .collect();
        pys.sort();
        for py in pys {
            let capi = py.join("site-packages/onnxruntime/capi");
            if let Some(so) = newest_so(&capi) {
                out.push(so);
            } else {
                out.push(capi.join("libonnxruntime.so.*"));
            }
        }
    }
    out
}

fn newest_so(dir: &Path) -> Option<PathBuf> {
    let mut sos: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    sos.sort();
    sos.pop()
}

/// Open ONNX Runtime (once per process) and return the path it came from and
/// the process-wide environment sessions are created in.
pub fn init() -> Result<(PathBuf, ort::environment::Environment), OrtLoadError> {
    LOADED
        .get_or_init(|| {
            let cands = candidates();
            let Some(path) = cands.iter().find(|p| p.is_file()).cloned() else {
                let looked: Vec<String> = cands.iter().map(|p| p.display().to_string()).collect();
                return Err(OrtLoadError::NotFound {
                    looked: looked.join(", "),
                });
            };
            let unusable = |message: String| OrtLoadError::Unusable {
                path: path.clone(),
                message,
            };
            let builder = ort::init_from(&path).map_err(|e| unusable(e.to_string()))?;
            let env = builder
                .with_name("maniflow")
                .with_telemetry(false)
                .build()
                .map_err(|e| unusable(e.to_string()))?;
            Ok((path, env))
        })
        .clone()
}

/// The environment, initialising ONNX Runtime if needed.
pub fn environment() -> Result<ort::environment::Environment, OrtLoadError> {
    init().map(|(_, env)| env)
}
