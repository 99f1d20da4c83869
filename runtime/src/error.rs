//! Typed errors of the runtime library. Every message names the file, field,
//! tensor or input it is about, and what to do where that is not obvious.

use std::path::PathBuf;

use thiserror::Error;

/// Loading a policy package.
#[derive(Debug, Error)]
pub enum PackageError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Manifest { file: String, message: String },
    #[error("{file}: field `{field}` {message}")]
    Field {
        file: String,
        field: String,
        message: String,
    },
    #[error("{}: sha256 is {actual} but policy.toml `graphs.{graph}.sha256` says {expected} (file changed or corrupt)", file.display())]
    Checksum {
        file: PathBuf,
        graph: String,
        expected: String,
        actual: String,
    },
    #[error("{}: ONNX Runtime cannot load this graph (corrupt or not ONNX): {message}", file.display())]
    Graph { file: PathBuf, message: String },
    #[error("{}: tensor `{tensor}` {message}", file.display())]
    Interface {
        file: PathBuf,
        tensor: String,
        message: String,
    },
}

/// Running a policy.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("input `{input}`: {message}")]
    Input { input: String, message: String },
    #[error("ONNX Runtime failed in {stage}: {source}")]
    Ort {
        stage: &'static str,
        #[source]
        source: ort::Error,
    },
    #[error("{what}: {message}")]
    Config { what: String, message: String },
}

impl EngineError {
    pub(crate) fn input(input: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::Input {
            input: input.into(),
            message: message.into(),
        }
    }
}

/// Finding and opening the ONNX Runtime shared library.
#[derive(Debug, Clone, Error)]
pub enum OrtLoadError {
    #[error(
        "ONNX Runtime not found (looked at: {looked}). Run `make bootstrap` (installs onnxruntime==1.31.1 into .venv), or set ORT_DYLIB_PATH to libonnxruntime.so 1.31+"
    )]
    NotFound { looked: String },
    #[error("ONNX Runtime at {} cannot be used: {message}. Install onnxruntime==1.31.1 (`make bootstrap`) or point ORT_DYLIB_PATH at a 1.31+ libonnxruntime.so", path.display())]
    Unusable { path: PathBuf, message: String },
}
