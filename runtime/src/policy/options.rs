//! How and where a policy package runs: the execution provider (CPU, CUDA,
//! TensorRT) and the engine's options. Both the package loader (which builds
//! the ONNX Runtime sessions) and the engine read these; neither owns them.

/// Where the graphs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda { device_id: u32 },
    #[cfg(feature = "tensorrt")]
    TensorRt { device_id: u32 },
}

impl ExecutionProvider {
    /// The CUDA device index when the graphs run on ONNX Runtime's CUDA
    /// provider (the engine's GPU path); None otherwise (CPU, TensorRT).
    pub fn cuda_device(&self) -> Option<u32> {
        match *self {
            #[cfg(feature = "cuda")]
            ExecutionProvider::Cuda { device_id } => Some(device_id),
            _ => None,
        }
    }
}

impl std::str::FromStr for ExecutionProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, id) = match s.split_once(':') {
            Some((k, i)) => (
                k,
                i.parse::<u32>()
                    .map_err(|_| format!("bad device index in `{s}`"))?,
            ),
            None => (s, 0),
        };
        #[allow(unused_variables)] // used only in builds without a GPU feature
        let needs = |feature: &str| {
            format!("device `{s}` needs a build with `--features {feature}` (this binary has no {feature} support)")
        };
        match kind {
            "cpu" if id == 0 => Ok(ExecutionProvider::Cpu),
            "cpu" => Err(format!("device `{s}`: the CPU takes no device index")),
            #[cfg(feature = "cuda")]
            "cuda" => Ok(ExecutionProvider::Cuda { device_id: id }),
            #[cfg(not(feature = "cuda"))]
            "cuda" => Err(needs("cuda")),
            #[cfg(feature = "tensorrt")]
            "tensorrt" => Ok(ExecutionProvider::TensorRt { device_id: id }),
            #[cfg(not(feature = "tensorrt"))]
            "tensorrt" => Err(needs("tensorrt")),
            _ => Err(format!(
                "unknown device `{s}` (expected cpu, cuda[:N] or tensorrt[:N])"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
    pub provider: ExecutionProvider,
    /// Fail instead of falling back to CPU when the execution provider cannot start.
    pub error_on_failure: bool,
    /// Override of the manifest's `sampler.steps`.
    pub steps: Option<usize>,
    /// Override of the manifest's `sampler.seed`.
    pub seed: Option<u64>,
    /// Initial noise of each chunk: a fresh draw (default) or the same every chunk.
    pub noise: NoiseMode,
}

/// Where each chunk's initial noise comes from (ManiFlow).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum NoiseMode {
    /// A fresh draw from the seeded stream for every chunk (the sampler's definition).
    #[default]
    Fresh,
    /// The same draw (the seed's first) for every chunk: the chunk is a deterministic
    /// function of the observation, so successive chunks differ only as much as
    /// their observations do.
    Fixed,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            intra_threads: 1,
            provider: ExecutionProvider::Cpu,
            error_on_failure: true,
            steps: None,
            seed: None,
            noise: NoiseMode::Fresh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionProvider;

    #[test]
    fn device_strings_parse_or_say_what_is_missing() {
        assert_eq!(
            "cpu".parse::<ExecutionProvider>(),
            Ok(ExecutionProvider::Cpu)
        );
        assert!("cpu:1"
            .parse::<ExecutionProvider>()
            .unwrap_err()
            .contains("no device index"));
        assert!("tpu"
            .parse::<ExecutionProvider>()
            .unwrap_err()
            .contains("unknown device `tpu`"));
        assert!("cuda:x"
            .parse::<ExecutionProvider>()
            .unwrap_err()
            .contains("bad device index"));
        #[cfg(not(feature = "cuda"))]
        assert!("cuda:0"
            .parse::<ExecutionProvider>()
            .unwrap_err()
            .contains("--features cuda"));
        #[cfg(feature = "cuda")]
        assert_eq!(
            "cuda:1".parse::<ExecutionProvider>(),
            Ok(ExecutionProvider::Cuda { device_id: 1 })
        );
    }
}
