//! One transport trait, three implementations (`shared/design/TRANSPORT.md`):
//!
//! - [`zenoh_native::ZenohNative`] (default): our own key space
//!   `maniflow/<robot>/<topic>`, payload = the message's CDR bytes with the
//!   encapsulation header. Loopback-only unless configured.
//! - [`ros2::Ros2Dds`]: ROS 2 over DDS (RustDDS through `ros2-client`), topics
//!   `rt/<namespace>/<topic>`, domain from `ROS_DOMAIN_ID`.
//! - [`ros2::Ros2Zenoh`]: ROS 2 over rmw_zenoh, through `ros2-client`'s `zenoh`
//!   backend (keys `<domain>/<ns>/<topic>/<type>/<hash>`, the 33-byte
//!   attachment, liveliness tokens), so ROS 2 Jazzy nodes on rmw_zenoh see us.
//!
//! Sensor streams are BEST_EFFORT, commands RELIABLE ([`Qos`]). A subscription
//! delivers every sample, decoded, to a sink closure running on a transport
//! thread; malformed bytes arrive as `Err` (the caller counts them), never as a
//! panic. Nothing here runs on the control thread.
//!
//! Images also travel without copies ([`image`]): a publisher lends the buffer
//! the pixels are written into, a subscriber reads them where they arrived.

pub mod image;
pub mod ros2;
pub mod zenoh_native;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::msg::{Image, RosMessage};
use image::{PublishImage, SharedImage};

/// Which middleware carries the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// Native zenoh, our key space (default).
    #[default]
    Zenoh,
    /// ROS 2 over DDS (RustDDS).
    Ros2Dds,
    /// ROS 2 over rmw_zenoh.
    Ros2Zenoh,
}

impl std::str::FromStr for TransportKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zenoh" => Ok(TransportKind::Zenoh),
            "ros2-dds" | "dds" => Ok(TransportKind::Ros2Dds),
            "ros2-zenoh" | "rmw-zenoh" | "rmw_zenoh" => Ok(TransportKind::Ros2Zenoh),
            other => Err(format!(
                "unknown transport {other:?}: expected zenoh, ros2-dds or ros2-zenoh"
            )),
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Zenoh => "zenoh",
            TransportKind::Ros2Dds => "ros2-dds",
            TransportKind::Ros2Zenoh => "ros2-zenoh",
        })
    }
}

/// Quality of service class of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// Sensor data: BEST_EFFORT, keep last 1, drop rather than queue.
    Sensor,
    /// Commands and chunks: RELIABLE.
    Command,
}

/// Where and how to connect. Every field has a loopback-only default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    pub kind: TransportKind,
    /// Robot name: the native zenoh key prefix is `maniflow/<robot>/`.
    pub robot: String,
    /// ROS 2 namespace of the topics (DDS and rmw_zenoh); default `/<robot>`.
    pub namespace: Option<String>,
    /// ROS domain id; default: the `ROS_DOMAIN_ID` environment variable, else 0.
    pub domain_id: Option<u16>,
    /// Zenoh endpoints to listen on (native zenoh and rmw_zenoh), e.g. `tcp/127.0.0.1:7447`.
    pub listen: Vec<String>,
    /// Zenoh endpoints to connect to (retried until they answer).
    pub connect: Vec<String>,
    /// Zenoh multicast scouting (off by default: loopback only, explicit endpoints).
    pub multicast_scouting: bool,
    /// A zenoh JSON5 config file; `listen`/`connect`/`multicast_scouting` are applied on top.
    pub zenoh_config: Option<PathBuf>,
    /// DDS: IP addresses of the interfaces to use (default `["127.0.0.1"]`;
    /// empty = every interface).
    pub dds_networks: Vec<String>,
    /// Zenoh shared memory (native zenoh and rmw_zenoh): announced to peers,
    /// used only with peers on the same host that announce it too (others get
    /// the same bytes over the network, transparently). Native zenoh then
    /// serialises payloads of [`zenoh_native::SHM_THRESHOLD`] bytes or more
    /// (images) straight into a shared-memory buffer. `false` turns it off
    /// (`transport/shared_memory/enabled` in the zenoh config). Default `true`.
    pub shared_memory: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            kind: TransportKind::Zenoh,
            robot: "so101".into(),
            namespace: None,
            domain_id: None,
            listen: Vec::new(),
            connect: vec![DEFAULT_ENDPOINT.into()],
            multicast_scouting: false,
            zenoh_config: None,
            dds_networks: vec!["127.0.0.1".into()],
            shared_memory: true,
        }
    }
}

/// The endpoint the simulator listens on and the node connects to by default.
pub const DEFAULT_ENDPOINT: &str = "tcp/127.0.0.1:7447";

impl TransportConfig {
    /// The ROS domain id: explicit, else `ROS_DOMAIN_ID`, else 0.
    pub fn resolved_domain_id(&self) -> Result<u16, TransportError> {
        if let Some(d) = self.domain_id {
            return Ok(d);
        }
        match std::env::var("ROS_DOMAIN_ID") {
            Ok(s) if s.trim().is_empty() => Ok(0),
            Ok(s) => s
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|d| *d <= 232)
                .ok_or_else(|| {
                    TransportError::Config(format!(
                        "ROS_DOMAIN_ID={s:?} is not a domain id (0..=232)"
                    ))
                }),
            Err(_) => Ok(0),
        }
    }

    /// ROS 2 namespace, absolute, without a trailing slash (`/so101`).
    pub fn resolved_namespace(&self) -> String {
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| format!("/{}", self.robot));
        let ns = ns.trim_end_matches('/');
        if ns.is_empty() {
            "/".into()
        } else if ns.starts_with('/') {
            ns.to_string()
        } else {
            format!("/{ns}")
        }
    }

    /// Builds the zenoh session config (native and rmw_zenoh modes).
    pub fn zenoh_session_config(&self) -> Result<zenoh::Config, TransportError> {
        let mut c = match &self.zenoh_config {
            Some(p) => zenoh::Config::from_file(p).map_err(|e| {
                TransportError::Config(format!("zenoh config {}: {e}", p.display()))
            })?,
            None => zenoh::Config::default(),
        };
        let set = |c: &mut zenoh::Config, key: &str, v: String| {
            c.insert_json5(key, &v)
                .map_err(|e| TransportError::Config(format!("zenoh config {key} = {v}: {e}")))
        };
        if self.zenoh_config.is_none() {
            set(&mut c, "mode", "\"peer\"".into())?;
            // A 640x480 image without shared memory is 15 fragments of 64 KiB:
            // room for all of them (the most zenoh allows; batches are
            // allocated lazily) instead of 2, so the publisher does not wait
            // for the TX thread batch by batch (p50 1.28 -> 1.06 ms, p90 4.1
            // -> 1.8 ms on loopback).
            for q in ["data_high", "data"] {
                let key = format!("transport/link/tx/queue/size/{q}");
                set(&mut c, &key, "16".into())?;
            }
        }
        set(
            &mut c,
            "scouting/multicast/enabled",
            self.multicast_scouting.to_string(),
        )?;
        // Loopback only unless configured: never listen on every interface by default.
        let listen: Vec<String> = self.listen.clone();
        set(&mut c, "listen/endpoints", json_list(&listen))?;
        set(&mut c, "connect/endpoints", json_list(&self.connect))?;
        // Reconnect quickly when the other side comes back (sim restarted).
        let retry = "{period_init_ms: 200, period_max_ms: 1000, period_increase_factor: 2}";
        set(&mut c, "connect/retry", retry.into())?;
        set(&mut c, "listen/retry", retry.into())?;
        set(
            &mut c,
            "transport/shared_memory/enabled",
            self.shared_memory.to_string(),
        )?;
        Ok(c)
    }
}

fn json_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(","))
}

/// Transport errors; each names the topic or setting involved.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("transport config: {0}")]
    Config(String),
    #[error("topic {topic}: cannot create {what}: {message}")]
    Create {
        topic: String,
        what: &'static str,
        message: String,
    },
    #[error("topic {topic}: malformed message: {message}")]
    Decode { topic: String, message: String },
    #[error("topic {topic}: publish failed: {message}")]
    Publish { topic: String, message: String },
    #[error("transport session: {0}")]
    Session(String),
}

/// A received, decoded message with its timing.
#[derive(Debug, Clone)]
pub struct Received<M> {
    pub msg: M,
    /// Monotonic receive time.
    pub recv: Instant,
    /// Wall-clock receive time, ns since the Unix epoch.
    pub recv_wall_ns: i64,
    /// The sender's source timestamp (rmw_zenoh attachment / DDS source
    /// timestamp), ns since the epoch, when the transport carries one.
    pub source_ns: Option<i64>,
}

/// Where a subscription delivers: called on a transport thread for every
/// sample, with `Err` for bytes that do not decode.
pub type Sink<M> = Box<dyn FnMut(Result<Received<M>, TransportError>) + Send + 'static>;

/// Wall clock now, ns since the Unix epoch.
pub fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Publishes one message type on one topic.
pub trait Publish<M>: Send + Sync {
    fn publish(&self, msg: &M) -> Result<(), TransportError>;
    /// The name on the wire (key expression or DDS topic).
    fn wire_name(&self) -> &str;
}

/// A live subscription; dropping it stops delivery.
pub struct Subscription {
    pub(crate) wire_name: String,
    pub(crate) _guard: Box<dyn Send>,
}

impl Subscription {
    pub fn wire_name(&self) -> &str {
        &self.wire_name
    }
}

/// The one transport interface the node, the simulator and the recorder use.
/// `topic` is relative (`joint_states`, `head/image_raw`); each implementation
/// maps it into its own name space.
pub trait Transport: Send + Sync {
    fn kind(&self) -> TransportKind;
    fn publisher<M: RosMessage + Clone + Send + Sync + 'static>(
        &self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Publish<M>>, TransportError>;
    fn subscribe<M: RosMessage + Send + Sync + 'static>(
        &self,
        topic: &str,
        qos: Qos,
        sink: Sink<M>,
    ) -> Result<Subscription, TransportError>;
    /// The wire name `topic` maps to (for logs and errors).
    fn wire_name(&self, topic: &str) -> String;
    /// A `sensor_msgs/Image` publisher that lends its buffers: on native
    /// zenoh, shared memory the pixels are written into; elsewhere an owned
    /// message.
    fn image_publisher(
        &self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn PublishImage>, TransportError> {
        Ok(Box::new(image::MessageImages(
            self.publisher::<Image>(topic, qos)?,
        )))
    }
    /// Subscribes `sensor_msgs/Image` keeping the received bytes (on native
    /// zenoh with shared memory, the mapped buffer itself) instead of copying
    /// them into an [`Image`].
    fn subscribe_images(
        &self,
        topic: &str,
        qos: Qos,
        sink: Sink<SharedImage>,
    ) -> Result<Subscription, TransportError> {
        self.subscribe::<Image>(topic, qos, image::owned_sink(sink))
    }
}

/// Any of the three transports, chosen at run time.
pub enum AnyTransport {
    Zenoh(zenoh_native::ZenohNative),
    Ros2Dds(ros2::Ros2Dds),
    Ros2Zenoh(ros2::Ros2Zenoh),
}

impl AnyTransport {
    /// Opens the transport `cfg.kind` with node name `node` (ROS 2 modes).
    pub fn open(cfg: &TransportConfig, node: &str) -> Result<AnyTransport, TransportError> {
        Ok(match cfg.kind {
            TransportKind::Zenoh => AnyTransport::Zenoh(zenoh_native::ZenohNative::open(cfg)?),
            TransportKind::Ros2Dds => AnyTransport::Ros2Dds(ros2::Ros2Dds::open(cfg, node)?),
            TransportKind::Ros2Zenoh => AnyTransport::Ros2Zenoh(ros2::Ros2Zenoh::open(cfg, node)?),
        })
    }
}

impl Transport for AnyTransport {
    fn kind(&self) -> TransportKind {
        match self {
            AnyTransport::Zenoh(t) => t.kind(),
            AnyTransport::Ros2Dds(t) => t.kind(),
            AnyTransport::Ros2Zenoh(t) => t.kind(),
        }
    }
    fn publisher<M: RosMessage + Clone + Send + Sync + 'static>(
        &self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Publish<M>>, TransportError> {
        match self {
            AnyTransport::Zenoh(t) => t.publisher(topic, qos),
            AnyTransport::Ros2Dds(t) => t.publisher(topic, qos),
            AnyTransport::Ros2Zenoh(t) => t.publisher(topic, qos),
        }
    }
    fn subscribe<M: RosMessage + Send + Sync + 'static>(
        &self,
        topic: &str,
        qos: Qos,
        sink: Sink<M>,
    ) -> Result<Subscription, TransportError> {
        match self {
            AnyTransport::Zenoh(t) => t.subscribe(topic, qos, sink),
            AnyTransport::Ros2Dds(t) => t.subscribe(topic, qos, sink),
            AnyTransport::Ros2Zenoh(t) => t.subscribe(topic, qos, sink),
        }
    }
    fn wire_name(&self, topic: &str) -> String {
        match self {
            AnyTransport::Zenoh(t) => t.wire_name(topic),
            AnyTransport::Ros2Dds(t) => t.wire_name(topic),
            AnyTransport::Ros2Zenoh(t) => t.wire_name(topic),
        }
    }
    fn image_publisher(
        &self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn PublishImage>, TransportError> {
        match self {
            AnyTransport::Zenoh(t) => t.image_publisher(topic, qos),
            AnyTransport::Ros2Dds(t) => t.image_publisher(topic, qos),
            AnyTransport::Ros2Zenoh(t) => t.image_publisher(topic, qos),
        }
    }
    fn subscribe_images(
        &self,
        topic: &str,
        qos: Qos,
        sink: Sink<SharedImage>,
    ) -> Result<Subscription, TransportError> {
        match self {
            AnyTransport::Zenoh(t) => t.subscribe_images(topic, qos, sink),
            AnyTransport::Ros2Dds(t) => t.subscribe_images(topic, qos, sink),
            AnyTransport::Ros2Zenoh(t) => t.subscribe_images(topic, qos, sink),
        }
    }
}

/// Checks a relative topic name: ROS 2 name rules (letters, digits, `_`, `/`
/// separators, no empty segment, no leading digit in a segment).
pub fn check_topic(topic: &str) -> Result<(), TransportError> {
    let bad = |why: &str| TransportError::Config(format!("topic {topic:?}: {why}"));
    let t = topic.trim_matches('/');
    if t.is_empty() {
        return Err(bad("empty"));
    }
    for seg in t.split('/') {
        let mut chars = seg.chars();
        match chars.next() {
            None => return Err(bad("empty segment")),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
            Some(c) => return Err(bad(&format!("segment starts with {c:?}"))),
        }
        if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
            return Err(bad(&format!("character {c:?} not allowed")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_ros_rules() {
        assert!(check_topic("joint_states").is_ok());
        assert!(check_topic("head/image_raw").is_ok());
        assert!(check_topic("/so101/head/image_raw/").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("a//b").is_err());
        assert!(check_topic("1abc").is_err());
        assert!(check_topic("a-b").is_err());
    }

    #[test]
    fn namespace_and_domain_resolution() {
        let mut c = TransportConfig::default();
        assert_eq!(c.resolved_namespace(), "/so101");
        c.namespace = Some("robot1/".into());
        assert_eq!(c.resolved_namespace(), "/robot1");
        c.namespace = Some("".into());
        assert_eq!(c.resolved_namespace(), "/");
        c.domain_id = Some(42);
        assert_eq!(c.resolved_domain_id().unwrap(), 42);
    }

    #[test]
    fn transport_kind_parses_and_names() {
        for k in [
            TransportKind::Zenoh,
            TransportKind::Ros2Dds,
            TransportKind::Ros2Zenoh,
        ] {
            assert_eq!(k.to_string().parse::<TransportKind>().unwrap(), k);
        }
        let e = "mqtt".parse::<TransportKind>().unwrap_err();
        assert!(e.contains("mqtt") && e.contains("ros2-dds"), "{e}");
    }

    #[test]
    fn zenoh_config_is_loopback_by_default() {
        let c = TransportConfig::default();
        let z = c.zenoh_session_config().unwrap();
        let s = format!("{z:?}");
        assert!(!s.contains("0.0.0.0"), "{s}");
    }
}
