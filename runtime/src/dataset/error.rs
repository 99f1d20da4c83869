//! The one error type of the dataset module. Every variant that comes from a
//! file names it; every variant about a column or key names that too.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file the format requires is absent.
    #[error("{path}: missing {what}")]
    Missing { path: PathBuf, what: String },

    /// Reading or writing a file failed at the OS level.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `meta/info.json` or `meta/stats.json` is not valid JSON for its schema.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The dataset is not LeRobot v3.0.
    #[error("{path}: codebase_version is {found:?}, this reader needs \"v3.0\"{hint}")]
    Version {
        path: PathBuf,
        found: String,
        hint: &'static str,
    },

    /// A parquet file is truncated, corrupt, or not parquet.
    #[error("{path}: cannot read parquet ({msg}); the file is truncated or corrupt")]
    Parquet { path: PathBuf, msg: String },

    /// A value in a file contradicts the format or another file.
    #[error("{path}: {field}: {msg}")]
    Invalid {
        path: PathBuf,
        field: String,
        msg: String,
    },

    /// No ffmpeg binary could be found.
    #[error(
        "ffmpeg not found (tried: {tried}). Run `make bootstrap` (installs the static ffmpeg \
         of PyPI `imageio-ffmpeg` into .venv) or set MANIFLOW_FFMPEG=/path/to/ffmpeg"
    )]
    FfmpegNotFound { tried: String },

    /// ffmpeg failed on a file, or a video does not hold the frames it should.
    #[error("{path}: {msg}")]
    Video { path: PathBuf, msg: String },

    /// The caller used the API wrongly (bad frame, unknown key, ...).
    #[error("{0}")]
    Usage(String),
}

impl DatasetError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DatasetError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        DatasetError::Invalid {
            path: path.into(),
            field: field.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn video(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        DatasetError::Video {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = DatasetError> = std::result::Result<T, E>;
