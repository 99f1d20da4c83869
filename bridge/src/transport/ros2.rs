//! ROS 2 transports through `ros2-client` 0.12: [`Ros2Dds`] (RustDDS backend,
//! topics `rt/<ns>/<topic>`, type `pkg::msg::dds_::Type_`) and [`Ros2Zenoh`]
//! (the `zenoh` backend, which speaks rmw_zenoh's wire protocol: data keys
//! `<domain>/<ns>/<topic>/<type>/<hash>`, the 33-byte attachment, liveliness
//! tokens). Both backends are compiled in one build; the ROS 2 distribution is
//! the bridge crate's cargo feature (`jazzy` by default).
//!
//! Subscriptions run one small thread each that awaits samples and hands them to
//! the sink; dropping the [`Subscription`] stops the thread.
//!
//! Type hashes: every topic declares the REP-2016 hash of its message type
//! ([`crate::type_hash`], computed from the field list) for the distribution
//! the bridge is built for: on rmw_zenoh in the data key and the MP/MS
//! liveliness tokens (Humble: `TypeHashNotSupported`), over DDS as
//! `typehash=RIHS01_<hex>;` in each endpoint's USER_DATA (not on Humble).
//! ros2-client 0.12.1 and RustDDS 0.15.1 are vendored with the small patch
//! that makes this possible (`vendor/README.md`).

use std::net::IpAddr;
use std::sync::Mutex;
use std::thread::JoinHandle;

use futures::channel::oneshot;
use futures::FutureExt;
use ros2_client::{MessageTypeName, Name, NodeName, NodeOptions, QosProfile};

use super::{
    check_topic, wall_ns, Publish, Qos, Received, Sink, Subscription, Transport, TransportConfig,
    TransportError, TransportKind,
};
use crate::msg::RosMessage;
use crate::type_hash::Distro;

fn qos_profile(qos: Qos) -> QosProfile {
    use ros2_client::qos::{History, WhenFull};
    match qos {
        Qos::Sensor => QosProfile::subscription_default()
            .reliability_best_effort()
            .history(History::KeepLast { depth: 1 }),
        Qos::Command => QosProfile::publisher_default()
            .reliability_reliable(WhenFull::Wait(std::time::Duration::from_millis(20)))
            .history(History::KeepLast { depth: 10 }),
    }
}

/// `/so101` + `head/image_raw` -> Name `/so101/head/image_raw`.
fn ros_name(namespace: &str, topic: &str) -> Result<Name, TransportError> {
    check_topic(topic)?;
    let full = if namespace == "/" {
        format!("/{}", topic.trim_matches('/'))
    } else {
        format!("{namespace}/{}", topic.trim_matches('/'))
    };
    Name::parse(&full).map_err(|e| TransportError::Config(format!("topic {full:?}: {e}")))
}

fn node_name(namespace: &str, node: &str) -> Result<NodeName, TransportError> {
    NodeName::new(namespace, node)
        .map_err(|e| TransportError::Config(format!("node name {namespace}/{node}: {e:?}")))
}

fn type_name<M: RosMessage>() -> MessageTypeName {
    MessageTypeName::new(M::PACKAGE, M::NAME)
}

/// The hash `M`'s topics declare on the wire for this build's distribution.
pub fn wire_type_hash<M: RosMessage>() -> Result<&'static str, TransportError> {
    Distro::built()
        .wire_hash(&M::ros_type_name())
        .map_err(|e| TransportError::Config(e.to_string()))
}

/// The rmw_zenoh data key of `topic` (relative to `namespace`) for type `M`:
/// `<domain>/<ns>/<topic>/<pkg>::msg::dds_::<Type>_/<hash>`.
pub fn rmw_zenoh_key<M: RosMessage>(
    domain_id: u16,
    namespace: &str,
    topic: &str,
) -> Result<String, TransportError> {
    let name = format!(
        "{}/{}",
        namespace.trim_matches('/'),
        topic.trim_matches('/')
    );
    Ok(format!(
        "{domain_id}/{}/{}/{}",
        name.trim_matches('/'),
        M::dds_type_name(),
        wire_type_hash::<M>()?
    ))
}

/// DDS topic of `M` on `name`: with `typehash=...;` USER_DATA from Jazzy on.
fn dds_topic<M: RosMessage>(
    node: &ros2_client::dds::Node,
    name: &Name,
    q: &QosProfile,
) -> Result<ros2_client::dds::rustdds::Topic, String> {
    match Distro::built() {
        Distro::Humble => node.create_topic(name, type_name::<M>(), q),
        _ => {
            let hash = wire_type_hash::<M>().map_err(|e| e.to_string())?;
            node.create_topic_with_type_hash(name, type_name::<M>(), q, hash)
        }
    }
    .map_err(|e| e.to_string())
}

/// Runs `take` (one awaited sample) in a loop on its own thread until the guard drops.
fn spawn_reader<M, F, Fut>(
    wire: String,
    mut sink: Sink<M>,
    mut take: F,
) -> Result<Box<dyn Send>, TransportError>
where
    M: Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(M, Option<i64>), String>>,
{
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let w2 = wire.clone();
    let handle = std::thread::Builder::new()
        .name(format!("sub {}", short(&wire)))
        .spawn(move || {
            futures::executor::block_on(async move {
                let mut stop = stop_rx.fuse();
                loop {
                    let next = take().fuse();
                    futures::pin_mut!(next);
                    futures::select! {
                        _ = stop => break,
                        r = next => {
                            let recv = std::time::Instant::now();
                            let recv_wall_ns = wall_ns();
                            match r {
                                Ok((msg, source_ns)) => sink(Ok(Received { msg, recv, recv_wall_ns, source_ns })),
                                Err(e) if e == CLOSED => break,
                                Err(message) => sink(Err(TransportError::Decode { topic: w2.clone(), message })),
                            }
                        }
                    }
                }
            })
        })
        .map_err(|e| TransportError::Create {
            topic: wire,
            what: "reader thread",
            message: e.to_string(),
        })?;
    Ok(Box::new(ReaderGuard {
        stop: Some(stop_tx),
        handle: Some(handle),
    }))
}

const CLOSED: &str = "\u{0}closed";

fn short(s: &str) -> String {
    s.chars()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

struct ReaderGuard {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------- DDS

/// ROS 2 over DDS (RustDDS).
pub struct Ros2Dds {
    node: Mutex<ros2_client::dds::Node>,
    namespace: String,
    domain_id: u16,
}

impl Ros2Dds {
    pub fn open(cfg: &TransportConfig, node: &str) -> Result<Ros2Dds, TransportError> {
        use ros2_client::dds::rustdds::DomainParticipantBuilder;
        let domain_id = cfg.resolved_domain_id()?;
        let namespace = cfg.resolved_namespace();
        let mut b = DomainParticipantBuilder::new(domain_id);
        if !cfg.dds_networks.is_empty() {
            let mut ips = Vec::new();
            for s in &cfg.dds_networks {
                let ip: IpAddr = s.parse().map_err(|e| {
                    TransportError::Config(format!("dds_networks: {s:?} is not an IP address: {e}"))
                })?;
                ips.push(ip);
            }
            b = b.with_only_networks(ips);
        }
        let dp = b.build().map_err(|e| {
            TransportError::Session(format!("DDS participant on domain {domain_id}: {e:?}"))
        })?;
        let ctx = ros2_client::dds::Context::from_domain_participant(dp)
            .map_err(|e| TransportError::Session(format!("ROS 2 context: {e}")))?;
        let n = ctx
            .new_node(
                node_name(&namespace, node)?,
                NodeOptions::new()
                    .enable_rosout(false)
                    .start_parameter_services(false),
            )
            .map_err(|e| TransportError::Session(format!("ROS 2 node {namespace}/{node}: {e}")))?;
        Ok(Ros2Dds {
            node: Mutex::new(n),
            namespace,
            domain_id,
        })
    }

    pub fn domain_id(&self) -> u16 {
        self.domain_id
    }
}

struct DdsPublisher<M: serde::Serialize> {
    p: ros2_client::dds::Publisher<M>,
    wire: String,
}

impl<M: RosMessage + Clone + Send + Sync> Publish<M> for DdsPublisher<M> {
    fn publish(&self, msg: &M) -> Result<(), TransportError> {
        crate::msg::with_bulk_bytes(|| self.p.publish(msg.clone())).map_err(|e| {
            TransportError::Publish {
                topic: self.wire.clone(),
                message: e.to_string(),
            }
        })
    }
    fn wire_name(&self) -> &str {
        &self.wire
    }
}

impl Transport for Ros2Dds {
    fn kind(&self) -> TransportKind {
        TransportKind::Ros2Dds
    }

    fn publisher<M: RosMessage + Clone + Send + Sync + 'static>(
        &self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Publish<M>>, TransportError> {
        let wire = self.wire_name(topic);
        let name = ros_name(&self.namespace, topic)?;
        let q = qos_profile(qos);
        let mut node = self
            .node
            .lock()
            .map_err(|_| TransportError::Session("ROS 2 node lock poisoned".into()))?;
        let create = |what: &'static str, m: String| TransportError::Create {
            topic: wire.clone(),
            what,
            message: m,
        };
        let t = dds_topic::<M>(&node, &name, &q).map_err(|e| create("topic", e))?;
        let p = node
            .create_publisher::<M>(&t, Some(q))
            .map_err(|e| create("publisher", e.to_string()))?;
        Ok(Box::new(DdsPublisher { p, wire }))
    }

    fn subscribe<M: RosMessage + Send + Sync + 'static>(
        &self,
        topic: &str,
        qos: Qos,
        sink: Sink<M>,
    ) -> Result<Subscription, TransportError> {
        let wire = self.wire_name(topic);
        let name = ros_name(&self.namespace, topic)?;
        let q = qos_profile(qos);
        let sub = {
            let mut node = self
                .node
                .lock()
                .map_err(|_| TransportError::Session("ROS 2 node lock poisoned".into()))?;
            let create = |what: &'static str, m: String| TransportError::Create {
                topic: wire.clone(),
                what,
                message: m,
            };
            let t = dds_topic::<M>(&node, &name, &q).map_err(|e| create("topic", e))?;
            node.create_subscription::<M>(&t, Some(q))
                .map_err(|e| create("subscription", e.to_string()))?
        };
        let sub = std::sync::Arc::new(sub);
        let guard = spawn_reader(wire.clone(), sink, move || {
            let sub = sub.clone();
            async move {
                match sub.async_take().await {
                    Ok((m, info)) => Ok((m, info.source_timestamp().map(|t| t.to_nanos()))),
                    Err(ros2_client::ReadError::Closed) => Err(CLOSED.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })?;
        Ok(Subscription {
            wire_name: wire,
            _guard: guard,
        })
    }

    fn wire_name(&self, topic: &str) -> String {
        let t = topic.trim_matches('/');
        if self.namespace == "/" {
            format!("rt/{t}")
        } else {
            format!("rt{}/{t}", self.namespace)
        }
    }
}

// ---------------------------------------------------------------- rmw_zenoh

/// ROS 2 over rmw_zenoh (ros2-client's zenoh backend).
pub struct Ros2Zenoh {
    node: ros2_client::zenoh::Node,
    _ctx: ros2_client::zenoh::Context,
    namespace: String,
    domain_id: u16,
}

impl Ros2Zenoh {
    pub fn open(cfg: &TransportConfig, node: &str) -> Result<Ros2Zenoh, TransportError> {
        let domain_id = cfg.resolved_domain_id()?;
        let namespace = cfg.resolved_namespace();
        let zc = cfg.zenoh_session_config()?;
        let ctx = ros2_client::zenoh::Context::with_options(
            ros2_client::zenoh::ContextOptions::new()
                .domain_id(domain_id)
                .zenoh_config(zc),
        )
        .map_err(|e| TransportError::Session(format!("rmw_zenoh context: {e}")))?;
        let n = ctx
            .new_node(
                node_name(&namespace, node)?,
                NodeOptions::new()
                    .enable_rosout(false)
                    .start_parameter_services(false),
            )
            .map_err(|e| {
                TransportError::Session(format!("rmw_zenoh node {namespace}/{node}: {e}"))
            })?;
        Ok(Ros2Zenoh {
            node: n,
            _ctx: ctx,
            namespace,
            domain_id,
        })
    }

    pub fn domain_id(&self) -> u16 {
        self.domain_id
    }
}

struct RzPublisher<M: serde::Serialize> {
    p: ros2_client::zenoh::Publisher<M>,
    wire: String,
}

impl<M: RosMessage + Clone + Send + Sync> Publish<M> for RzPublisher<M> {
    fn publish(&self, msg: &M) -> Result<(), TransportError> {
        crate::msg::with_bulk_bytes(|| self.p.publish(msg.clone())).map_err(|e| {
            TransportError::Publish {
                topic: self.wire.clone(),
                message: e.to_string(),
            }
        })
    }
    fn wire_name(&self) -> &str {
        &self.wire
    }
}

impl Transport for Ros2Zenoh {
    fn kind(&self) -> TransportKind {
        TransportKind::Ros2Zenoh
    }

    fn publisher<M: RosMessage + Clone + Send + Sync + 'static>(
        &self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Publish<M>>, TransportError> {
        let wire = rmw_zenoh_key::<M>(self.domain_id, &self.namespace, topic)?;
        let name = ros_name(&self.namespace, topic)?;
        let q = qos_profile(qos);
        let t = self
            .node
            .create_topic(&name, type_name::<M>(), &q)
            .with_type_hash(wire_type_hash::<M>()?);
        let p =
            self.node
                .create_publisher::<M>(&t, Some(q))
                .map_err(|e| TransportError::Create {
                    topic: wire.clone(),
                    what: "publisher",
                    message: e.to_string(),
                })?;
        Ok(Box::new(RzPublisher { p, wire }))
    }

    fn subscribe<M: RosMessage + Send + Sync + 'static>(
        &self,
        topic: &str,
        qos: Qos,
        sink: Sink<M>,
    ) -> Result<Subscription, TransportError> {
        let wire = rmw_zenoh_key::<M>(self.domain_id, &self.namespace, topic)?;
        let name = ros_name(&self.namespace, topic)?;
        let q = qos_profile(qos);
        let t = self
            .node
            .create_topic(&name, type_name::<M>(), &q)
            .with_type_hash(wire_type_hash::<M>()?);
        let sub = self
            .node
            .create_subscription::<M>(&t, Some(q))
            .map_err(|e| TransportError::Create {
                topic: wire.clone(),
                what: "subscription",
                message: e.to_string(),
            })?;
        let sub = std::sync::Arc::new(sub);
        let guard = spawn_reader(wire.clone(), sink, move || {
            let sub = sub.clone();
            async move {
                match sub.async_take().await {
                    Ok((m, info)) => Ok((m, info.source_timestamp().map(|t| t.to_nanos()))),
                    Err(ros2_client::ReadError::Closed) => Err(CLOSED.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })?;
        Ok(Subscription {
            wire_name: wire,
            _guard: guard,
        })
    }

    fn wire_name(&self, topic: &str) -> String {
        let t = topic.trim_matches('/');
        let ns = self.namespace.trim_matches('/');
        if ns.is_empty() {
            format!("{}/{t}/<type>/<hash>", self.domain_id)
        } else {
            format!("{}/{ns}/{t}/<type>/<hash>", self.domain_id)
        }
    }
}
