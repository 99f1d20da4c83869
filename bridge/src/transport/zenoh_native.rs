//! Native zenoh transport: key `maniflow/<robot>/<topic>`, payload = CDR bytes
//! with the encapsulation header (the same bytes a ROS 2 peer would send), so
//! one decoder serves every transport. Sensor publishers drop under congestion
//! and are `express` (no batching); command publishers block (reliable).

use std::sync::Arc;

use zenoh::qos::{CongestionControl, Priority};
use zenoh::{Session, Wait};

use super::{
    check_topic, wall_ns, Publish, Qos, Received, Sink, Subscription, Transport, TransportConfig,
    TransportError, TransportKind,
};
use crate::msg::{decode, encode, RosMessage};

/// Key prefix of our own key space.
pub const KEY_PREFIX: &str = "maniflow";

/// A zenoh session in our key space.
pub struct ZenohNative {
    session: Arc<Session>,
    robot: String,
}

impl ZenohNative {
    pub fn open(cfg: &TransportConfig) -> Result<ZenohNative, TransportError> {
        check_topic(&cfg.robot).map_err(|e| TransportError::Config(format!("robot name: {e}")))?;
        let zc = cfg.zenoh_session_config()?;
        let session = zenoh::open(zc)
            .wait()
            .map_err(|e| TransportError::Session(format!("opening zenoh session: {e}")))?;
        Ok(ZenohNative {
            session: Arc::new(session),
            robot: cfg.robot.clone(),
        })
    }

    /// The underlying session (tests and tools).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Key for a relative topic: `maniflow/<robot>/<topic>`.
    pub fn key(&self, topic: &str) -> String {
        format!("{KEY_PREFIX}/{}/{}", self.robot, topic.trim_matches('/'))
    }
}

struct ZPublisher {
    publisher: zenoh::pubsub::Publisher<'static>,
    key: String,
}

impl<M: RosMessage + Send + Sync> Publish<M> for ZPublisher {
    fn publish(&self, msg: &M) -> Result<(), TransportError> {
        let mut buf = Vec::new();
        encode(msg, &mut buf).map_err(|e| TransportError::Publish {
            topic: self.key.clone(),
            message: e.to_string(),
        })?;
        self.publisher
            .put(buf)
            .wait()
            .map_err(|e| TransportError::Publish {
                topic: self.key.clone(),
                message: e.to_string(),
            })
    }
    fn wire_name(&self) -> &str {
        &self.key
    }
}

impl Transport for ZenohNative {
    fn kind(&self) -> TransportKind {
        TransportKind::Zenoh
    }

    fn publisher<M: RosMessage + Clone + Send + Sync + 'static>(
        &self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Publish<M>>, TransportError> {
        check_topic(topic)?;
        let key = self.key(topic);
        let b = self.session.declare_publisher(key.clone());
        let b = match qos {
            Qos::Sensor => b
                .congestion_control(CongestionControl::Drop)
                .priority(Priority::DataHigh)
                .express(true),
            Qos::Command => b
                .congestion_control(CongestionControl::Block)
                .priority(Priority::RealTime)
                .express(true),
        };
        let publisher = b.wait().map_err(|e| TransportError::Create {
            topic: key.clone(),
            what: "publisher",
            message: e.to_string(),
        })?;
        Ok(Box::new(ZPublisher { publisher, key }))
    }

    fn subscribe<M: RosMessage + Send + Sync + 'static>(
        &self,
        topic: &str,
        _qos: Qos,
        sink: Sink<M>,
    ) -> Result<Subscription, TransportError> {
        check_topic(topic)?;
        let key = self.key(topic);
        let k2 = key.clone();
        // zenoh may call back from several threads: serialise the sink.
        let sink = std::sync::Mutex::new(sink);
        let sub = self
            .session
            .declare_subscriber(key.clone())
            .callback(move |sample| {
                let recv = std::time::Instant::now();
                let recv_wall_ns = wall_ns();
                let bytes = sample.payload().to_bytes();
                let r = decode::<M>(&bytes)
                    .map(|msg| Received {
                        msg,
                        recv,
                        recv_wall_ns,
                        source_ns: None,
                    })
                    .map_err(|e| TransportError::Decode {
                        topic: k2.clone(),
                        message: e.to_string(),
                    });
                if let Ok(mut s) = sink.lock() {
                    s(r);
                }
            })
            .wait()
            .map_err(|e| TransportError::Create {
                topic: key.clone(),
                what: "subscriber",
                message: e.to_string(),
            })?;
        Ok(Subscription {
            wire_name: key,
            _guard: Box::new(sub),
        })
    }

    fn wire_name(&self, topic: &str) -> String {
        self.key(topic)
    }
}
