//! `maniflow run` configuration (TOML, e.g. `launch/so101.toml`). Every table
//! and field is checked (`deny_unknown_fields`); relative paths are resolved
//! against the config file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maniflow_bridge::camera::{CameraSource, SourceConfig};
use maniflow_bridge::transport::TransportConfig;
use serde::{Deserialize, Serialize};

use crate::control::executor::{Aggregate, ExecutorMode};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub policy: PolicySection,
    #[serde(default)]
    pub control: ControlSection,
    #[serde(default)]
    pub transport: TransportConfig,
    /// Input streams by name. `joints` and `tactile` are reserved names; every
    /// other stream is a camera, matched to the policy input
    /// `observation.images.<name>`.
    pub streams: BTreeMap<String, StreamConfig>,
    #[serde(default)]
    pub outputs: OutputSection,
    /// A real arm on this machine's serial port: joints are read and goals
    /// written on the node's own bus thread (no `streams.joints`, no command topic).
    pub robot: Option<super::robot::RobotSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Policy package directory.
    pub path: PathBuf,
    /// ONNX Runtime intra-op threads.
    #[serde(default = "one")]
    pub threads: usize,
    /// cpu, cuda[:N], tensorrt[:N].
    #[serde(default = "cpu")]
    pub device: String,
    /// When the GPU (driver, device, ONNX Runtime's CUDA provider) cannot be
    /// used: run on the CPU with a warning (true) or refuse to start (false).
    #[serde(default)]
    pub cpu_fallback: bool,
    /// Sampling steps N (ManiFlow); default: the manifest's.
    pub steps: Option<usize>,
    pub seed: Option<u64>,
    /// Initial noise per chunk: "fresh" (default) or "fixed" (the same every chunk).
    #[serde(default)]
    pub noise: crate::policy::options::NoiseMode,
}

fn one() -> usize {
    1
}
fn cpu() -> String {
    "cpu".into()
}

/// `control.executor` (and `--executor` of `maniflow run` / `eval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// LeRobot's queue: run n_action_steps, then infer and wait.
    Queue,
    /// ACT temporal ensembling (n_action_steps = 1).
    Ensemble,
    /// LeRobot async inference (threshold, aggregate).
    Async,
    /// Real-time chunking: early inference from the measured delay, splice
    /// after the prefix (policies that take one) or RTC soft-mask blend.
    Rtc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    WeightedAverage,
    LatestOnly,
    Average,
    Conservative,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Base rate of the policy's actions (the dataset fps), Hz.
    pub rate_hz: f64,
    /// Commands go out at `rate_hz * interpolation` (linear interpolation).
    pub interpolation: usize,
    pub executor: ExecutorKind,
    /// Async: start the next inference when queued/chunk <= threshold.
    pub async_threshold: f32,
    pub aggregate: AggregateKind,
    /// Temporal ensembling coefficient.
    pub ensemble_coeff: f32,
    /// Rtc: give a policy that accepts an action prefix the actions that run
    /// while it computes, and splice its chunk after them (true, the default);
    /// false = always the soft-mask blend (as for policies without a prefix).
    pub rtc_prefix: bool,
    /// Try SCHED_FIFO for the control thread and mlockall (reported either way).
    pub realtime: bool,
    /// SCHED_FIFO priority of the control thread (1..=99).
    pub priority: u8,
    /// CPU core to pin the control thread to (none by default).
    pub cpu: Option<usize>,
    /// Ticks of the stop ramp (hold at the present position) on SIGINT.
    pub stop_ramp_ticks: u32,
    /// Episode events (Float64MultiArray `[episode, event, t]`, event 0 = start,
    /// as `maniflow sim` publishes on `episode`): each start clears the executor's
    /// queues, like LeRobot's `policy.reset()`. "" = off.
    pub reset_topic: String,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            rate_hz: 30.0,
            interpolation: 1,
            executor: ExecutorKind::Async,
            async_threshold: 0.5,
            aggregate: AggregateKind::WeightedAverage,
            ensemble_coeff: 0.01,
            rtc_prefix: true,
            realtime: true,
            priority: 80,
            cpu: None,
            stop_ramp_ticks: 15,
            reset_topic: String::new(),
        }
    }
}

impl ControlSection {
    /// The executor mode for a policy that continues up to `policy_prefix_max`
    /// given actions (0 = it takes no prefix; see `Engine::prefix_max`).
    pub fn executor_mode(&self, policy_prefix_max: usize) -> ExecutorMode {
        match self.executor {
            ExecutorKind::Rtc => ExecutorMode::Rtc {
                prefix: self.rtc_prefix && policy_prefix_max > 0,
            },
            ExecutorKind::Queue => ExecutorMode::Queue,
            ExecutorKind::Ensemble => ExecutorMode::TemporalEnsemble {
                coeff: self.ensemble_coeff,
            },
            ExecutorKind::Async => ExecutorMode::Async {
                threshold: self.async_threshold,
                aggregate: match self.aggregate {
                    AggregateKind::WeightedAverage => Aggregate::WeightedAverage,
                    AggregateKind::LatestOnly => Aggregate::LatestOnly,
                    AggregateKind::Average => Aggregate::Average,
                    AggregateKind::Conservative => Aggregate::Conservative,
                },
            },
        }
    }

    /// Control tick rate in Hz.
    pub fn tick_hz(&self) -> f64 {
        self.rate_hz * self.interpolation as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamType {
    /// sensor_msgs/Image (rgb8, bgr8).
    Image,
    /// sensor_msgs/CompressedImage (JPEG).
    CompressedImage,
    /// std_msgs/Float32MultiArray of taxel values.
    Taxels,
    /// sensor_msgs/JointState.
    JointState,
    /// sensor_msgs/Image `32FC1` pressure image of the tactile pads (recorded as
    /// `observation.<name>`).
    PressureImage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JointUnits {
    /// LeRobot units: degrees from the calibration midpoint, gripper 0..100.
    Lerobot,
    /// ROS convention (REP-103): radians; the gripper is the jaw angle.
    Radians,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Topic relative to the robot's namespace / key prefix. With a `source`:
    /// where `maniflow robot --cameras` publishes the frames (default
    /// `<name>/image_raw`); `run` and `record` read the camera directly.
    #[serde(default)]
    pub topic: String,
    #[serde(rename = "type")]
    pub kind: StreamType,
    /// Inputs older than this (receive time) are stale and rejected.
    pub max_age_ms: Option<f64>,
    /// Joint states: units of `position` (default lerobot).
    pub units: Option<JointUnits>,
    /// A camera read directly, without ROS: a V4L2 device or an ffmpeg input
    /// (`type = "image"` only; see maniflow_bridge::camera::source).
    pub source: Option<SourceConfig>,
}

impl StreamConfig {
    /// The checked camera source, if any (errors name `streams.<name>.source...`).
    pub fn camera_source(&self, name: &str) -> Result<Option<CameraSource>, String> {
        self.source
            .as_ref()
            .map(|s| s.resolve().map_err(|e| format!("streams.{name}.{e}")))
            .transpose()
    }

    /// The topic `maniflow robot` publishes a camera on.
    pub fn publish_topic(&self, name: &str) -> String {
        if self.topic.is_empty() {
            format!("{name}/image_raw")
        } else {
            self.topic.clone()
        }
    }

    pub fn max_age_s(&self) -> f64 {
        self.max_age_ms.unwrap_or(match self.kind {
            StreamType::JointState => 100.0,
            _ => 500.0,
        }) / 1000.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandType {
    /// std_msgs/Float64MultiArray, one value per joint (policy units).
    Float64MultiArray,
    /// sensor_msgs/JointState with names and positions (policy units).
    JointState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// trajectory_msgs/JointTrajectory for every accepted chunk ("" = off).
    pub chunk_topic: String,
    /// Per-tick command ("" = off).
    pub command_topic: String,
    pub command_type: CommandType,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            chunk_topic: "action_chunk".into(),
            command_topic: "joint_command".into(),
            command_type: CommandType::Float64MultiArray,
        }
    }
}

/// A camera's ffmpeg input naming a file next to the config (a recorded video)
/// becomes that file's path.
fn resolve_camera_files(streams: &mut BTreeMap<String, StreamConfig>, base: &Path) {
    for s in streams.values_mut() {
        if let Some(input) = s.source.as_mut().and_then(|s| s.ffmpeg.as_mut()) {
            let p = Path::new(input.as_str());
            if p.is_relative() && !input.contains("://") && base.join(p).is_file() {
                *input = base.join(p).to_string_lossy().into_owned();
            }
        }
    }
}

/// The camera streams (those with a `source`) of a node config, checked; the
/// other sections are not read. What `maniflow robot --cameras` publishes.
pub fn load_camera_streams(path: &Path) -> anyhow::Result<BTreeMap<String, StreamConfig>> {
    #[derive(Deserialize)]
    struct StreamsOnly {
        #[serde(default)]
        streams: BTreeMap<String, StreamConfig>,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
    let mut f: StreamsOnly =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
    resolve_camera_files(&mut f.streams, path.parent().unwrap_or(Path::new(".")));
    f.streams.retain(|_, s| s.source.is_some());
    for (name, s) in &f.streams {
        let check = || -> Result<(), String> {
            s.camera_source(name)?;
            if s.kind != StreamType::Image {
                return Err(format!(
                    "streams.{name}.type must be \"image\" for a camera source"
                ));
            }
            maniflow_bridge::transport::check_topic(&s.publish_topic(name))
                .map_err(|e| format!("streams.{name}.topic: {e}"))
        };
        check().map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
    }
    if f.streams.is_empty() {
        anyhow::bail!(
            "config {}: no camera stream (a [streams.NAME] with a source)",
            path.display()
        );
    }
    Ok(f.streams)
}

impl NodeConfig {
    /// Reads and checks a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        let mut cfg: NodeConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.policy.path.is_relative() {
            cfg.policy.path = base.join(&cfg.policy.path);
        }
        if let Some(r) = cfg.robot.as_mut() {
            if let Some(d) = r.calibration_dir.as_mut() {
                if d.is_relative() {
                    *d = base.join(&*d);
                }
            }
        }
        resolve_camera_files(&mut cfg.streams, base);
        if let Some(z) = cfg.transport.zenoh_config.as_mut() {
            if z.is_relative() {
                *z = base.join(&*z);
            }
        }
        cfg.check()
            .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// Semantic checks; each error names the field.
    pub fn check(&self) -> Result<(), String> {
        let c = &self.control;
        if !(c.rate_hz.is_finite() && c.rate_hz > 0.0 && c.rate_hz <= 1000.0) {
            return Err(format!(
                "control.rate_hz = {} must be in (0, 1000]",
                c.rate_hz
            ));
        }
        if c.interpolation == 0 || c.tick_hz() > 1000.0 {
            return Err(format!(
                "control.interpolation = {} must be >= 1 with rate_hz * interpolation <= 1000",
                c.interpolation
            ));
        }
        if !(0.0..=1.0).contains(&c.async_threshold) {
            return Err(format!(
                "control.async_threshold = {} must be in [0, 1]",
                c.async_threshold
            ));
        }
        if !(1..=99).contains(&c.priority) {
            return Err(format!(
                "control.priority = {} must be in 1..=99",
                c.priority
            ));
        }
        if self.policy.threads == 0 {
            return Err("policy.threads must be >= 1".into());
        }
        let mut joints = 0;
        for (name, s) in &self.streams {
            if s.source.is_some() {
                s.camera_source(name)?;
                if s.kind != StreamType::Image {
                    return Err(format!(
                        "streams.{name}.source gives camera frames: set type = \"image\" (not {:?})",
                        s.kind
                    ));
                }
            }
            if s.topic.is_empty() && s.source.is_none() {
                return Err(format!(
                    "streams.{name}.topic is missing: give the topic (or a camera source)"
                ));
            }
            if !s.topic.is_empty() {
                maniflow_bridge::transport::check_topic(&s.topic)
                    .map_err(|e| format!("streams.{name}.topic: {e}"))?;
            }
            if let Some(a) = s.max_age_ms {
                if !(a.is_finite() && a > 0.0) {
                    return Err(format!("streams.{name}.max_age_ms = {a} must be > 0"));
                }
            }
            match (name.as_str(), s.kind) {
                ("joints", StreamType::JointState) => joints += 1,
                ("joints", k) => {
                    return Err(format!("streams.joints.type = {k:?}: must be joint_state"))
                }
                (
                    "tactile",
                    StreamType::Taxels
                    | StreamType::PressureImage
                    | StreamType::Image
                    | StreamType::CompressedImage,
                ) => {}
                ("tactile", k) => {
                    return Err(format!(
                        "streams.tactile.type = {k:?}: must be taxels, pressure_image, image or compressed_image"
                    ))
                }
                (_, StreamType::Image | StreamType::CompressedImage | StreamType::PressureImage) => {}
                (n, k) => {
                    return Err(format!(
                    "streams.{n}.type = {k:?}: a camera stream must be image or compressed_image"
                ))
                }
            }
            if s.units.is_some() && s.kind != StreamType::JointState {
                return Err(format!(
                    "streams.{name}.units applies to joint_state streams only"
                ));
            }
        }
        match (joints, &self.robot) {
            (0, None) => return Err("streams.joints (type = \"joint_state\") is required: the control loop needs the arm's position (or a [robot] section)".into()),
            (_, Some(_)) if joints > 0 => return Err("streams.joints and [robot] both give the arm's position: keep one".into()),
            (_, Some(r)) => r.check()?,
            _ => {}
        }
        for (field, t) in [
            ("outputs.chunk_topic", &self.outputs.chunk_topic),
            ("outputs.command_topic", &self.outputs.command_topic),
        ] {
            if !t.is_empty() {
                maniflow_bridge::transport::check_topic(t).map_err(|e| format!("{field}: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[policy]
path = "p"
[streams.joints]
topic = "joint_states"
type = "joint_state"
"#;

    #[test]
    fn minimal_config_gets_defaults_and_relative_paths() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, MIN).unwrap();
        let c = NodeConfig::load(&p).unwrap();
        assert_eq!(c.policy.path, d.path().join("p"));
        assert_eq!(c.control.rate_hz, 30.0);
        assert_eq!(c.streams["joints"].max_age_s(), 0.1);
        assert_eq!(c.outputs.command_topic, "joint_command");
    }

    #[test]
    fn rtc_executor_uses_the_prefix_only_when_the_policy_takes_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, format!("{MIN}\n[control]\nexecutor = \"rtc\"\n")).unwrap();
        let c = NodeConfig::load(&p).unwrap();
        assert_eq!(c.control.executor, ExecutorKind::Rtc);
        assert!(c.control.rtc_prefix);
        assert_eq!(
            c.control.executor_mode(0),
            ExecutorMode::Rtc { prefix: false }
        );
        assert_eq!(
            c.control.executor_mode(8),
            ExecutorMode::Rtc { prefix: true }
        );
        let text = format!("{MIN}\n[control]\nexecutor = \"rtc\"\nrtc_prefix = false\n");
        std::fs::write(&p, text).unwrap();
        let c = NodeConfig::load(&p).unwrap();
        assert_eq!(
            c.control.executor_mode(8),
            ExecutorMode::Rtc { prefix: false }
        );
        // The other modes do not depend on the policy's prefix.
        std::fs::write(&p, MIN).unwrap();
        let c = NodeConfig::load(&p).unwrap();
        assert!(matches!(
            c.control.executor_mode(8),
            ExecutorMode::Async { .. }
        ));
    }

    #[test]
    fn camera_streams_take_a_source_instead_of_a_topic() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(d.path().join("clip.mp4"), b"").unwrap();
        let text = format!(
            "{MIN}\n[streams.head]\ntype = \"image\"\nsource = {{ v4l2 = \"/dev/video0\", format = \"yuyv\", width = 320, height = 240, fps = 15 }}\n\
             [streams.wrist]\ntype = \"image\"\ntopic = \"cams/wrist\"\nsource = {{ ffmpeg = \"clip.mp4\", input_args = [\"-re\"] }}\n"
        );
        std::fs::write(&p, text).unwrap();
        let c = NodeConfig::load(&p).unwrap();
        let head = c.streams["head"].camera_source("head").unwrap().unwrap();
        assert_eq!(head.describe(), "v4l2 /dev/video0 (yuyv 320x240 @ 15 fps)");
        assert_eq!(c.streams["head"].publish_topic("head"), "head/image_raw");
        let wrist = c.streams["wrist"].camera_source("wrist").unwrap().unwrap();
        // a file next to the config is found from anywhere
        let want = format!("ffmpeg {}", d.path().join("clip.mp4").display());
        assert_eq!(wrist.describe(), want);
        assert_eq!(c.streams["wrist"].publish_topic("wrist"), "cams/wrist");
        assert!(c.streams["joints"]
            .camera_source("joints")
            .unwrap()
            .is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        let cases = [
            (
                format!("{MIN}\n[control]\nrate_hz = -1\n"),
                "control.rate_hz",
            ),
            (
                format!("{MIN}\n[streams.head]\ntopic = \"h\"\ntype = \"taxels\"\n"),
                "streams.head.type",
            ),
            (
                format!("{MIN}\n[streams.head]\ntopic = \"1h\"\ntype = \"image\"\n"),
                "streams.head.topic",
            ),
            (
                MIN.replace("joint_state\"", "image\""),
                "streams.joints.type",
            ),
            (format!("{MIN}\n[control]\nbogus = 1\n"), "bogus"),
            (
                format!("{MIN}\n[control]\nexecutor = \"fast\"\n"),
                "expected one of `queue`, `ensemble`, `async`, `rtc`",
            ),
            (
                format!("{MIN}\n[control]\nrtc_prefix = 1\n"),
                "rtc_prefix",
            ),
            (
                format!("{MIN}\n[streams.head]\ntype = \"image\"\n"),
                "streams.head.topic is missing",
            ),
            (
                format!("{MIN}\n[streams.head]\ntype = \"image\"\nsource = {{ v4l2 = \"/dev/video0\", format = \"h264\" }}\n"),
                "h264",
            ),
            (
                format!("{MIN}\n[streams.head]\ntype = \"image\"\nsource = {{ v4l2 = \"/dev/video0\", rate = 30 }}\n"),
                "rate",
            ),
            (
                format!("{MIN}\n[streams.head]\ntype = \"image\"\nsource = {{ ffmpeg = \"x\", format = \"mjpeg\" }}\n"),
                "streams.head.source.format",
            ),
            (
                format!("{MIN}\n[streams.head]\ntype = \"compressed_image\"\nsource = {{ ffmpeg = \"x\" }}\n"),
                "streams.head.source gives camera frames",
            ),
            (
                "[policy]\npath = \"p\"\n[streams.head]\ntopic = \"h\"\ntype = \"image\"\n".into(),
                "streams.joints",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&p, &text).unwrap();
            let e = NodeConfig::load(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("c.toml"), "{want}: {e}");
        }
    }
}
