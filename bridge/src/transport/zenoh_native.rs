//! Native zenoh transport: key `maniflow/<robot>/<topic>`, payload = CDR bytes
//! with the encapsulation header (the same bytes a ROS 2 peer would send), so
//! one decoder serves every transport. Sensor publishers drop under congestion
//! and are `express` (no batching); command publishers block (reliable).
//!
//! Shared memory (`TransportConfig::shared_memory`, on by default): a payload
//! of [`SHM_THRESHOLD`] bytes or more (an image) is serialised straight into a
//! buffer of the session's zenoh shared-memory provider, so a subscriber on the
//! same host maps the very bytes the encoder wrote (one copy in all: the
//! decoder's into the message). zenoh sends the buffer's contents over the
//! network instead to a peer that did not negotiate shared memory (another
//! host, or shared memory off), transparently. Without a provider, or when the
//! pool is exhausted, the payload goes as ordinary bytes.
//!
//! Images can skip both copies ([`super::image`]): [`Transport::image_publisher`]
//! lends a shared-memory buffer with the CDR fields in place for the producer
//! to write its pixels into, and [`Transport::subscribe_images`] hands the
//! subscriber the mapped buffer itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use zenoh::bytes::ZBytes;
use zenoh::qos::{CongestionControl, Priority};
use zenoh::shm::{GarbageCollect, PosixShmProviderBackend, ShmProvider, ZShmMut};
use zenoh::{Session, Wait};

use super::image::{ImageLayout, ImageLoan, PublishImage, SharedImage};
use super::{
    check_topic, wall_ns, Publish, Qos, Received, Sink, Subscription, Transport, TransportConfig,
    TransportError, TransportKind,
};
use crate::msg::{decode, encode, encode_to_writer, MsgError, RosMessage};

/// Key prefix of our own key space.
pub const KEY_PREFIX: &str = "maniflow";

/// Payloads of this many bytes or more are written into shared memory (zenoh's
/// own `transport_optimization` threshold: below it a copy costs nothing).
pub const SHM_THRESHOLD: usize = 3072;

type Provider = Arc<ShmProvider<PosixShmProviderBackend>>;

/// Shared-memory counters of one session (for benchmarks and diagnostics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShmCounts {
    /// Samples published from a shared-memory buffer.
    pub published_shm: u64,
    /// Samples published as ordinary bytes.
    pub published_bytes: u64,
    /// Samples received as a shared-memory buffer.
    pub received_shm: u64,
    /// Samples received as ordinary bytes.
    pub received_bytes: u64,
}

#[derive(Default)]
struct Counters {
    published_shm: AtomicU64,
    published_bytes: AtomicU64,
    received_shm: AtomicU64,
    received_bytes: AtomicU64,
}

/// The session's shared-memory provider, looked up once, on first use.
struct Shm {
    enabled: bool,
    session: Arc<Session>,
    provider: OnceLock<Option<Provider>>,
}

impl Shm {
    fn provider(&self) -> Option<&Provider> {
        if !self.enabled {
            return None;
        }
        self.provider
            .get_or_init(|| self.session.get_shm_provider().wait())
            .as_ref()
    }
}

/// A zenoh session in our key space.
pub struct ZenohNative {
    session: Arc<Session>,
    robot: String,
    shm: Arc<Shm>,
    counters: Arc<Counters>,
}

impl ZenohNative {
    pub fn open(cfg: &TransportConfig) -> Result<ZenohNative, TransportError> {
        check_topic(&cfg.robot).map_err(|e| TransportError::Config(format!("robot name: {e}")))?;
        let zc = cfg.zenoh_session_config()?;
        let session = zenoh::open(zc)
            .wait()
            .map_err(|e| TransportError::Session(format!("opening zenoh session: {e}")))?;
        let session = Arc::new(session);
        Ok(ZenohNative {
            shm: Arc::new(Shm {
                enabled: cfg.shared_memory,
                session: session.clone(),
                provider: OnceLock::new(),
            }),
            session,
            robot: cfg.robot.clone(),
            counters: Arc::default(),
        })
    }

    /// How many samples went through shared memory so far, both ways.
    pub fn shm_counts(&self) -> ShmCounts {
        let c = &self.counters;
        ShmCounts {
            published_shm: c.published_shm.load(Ordering::Relaxed),
            published_bytes: c.published_bytes.load(Ordering::Relaxed),
            received_shm: c.received_shm.load(Ordering::Relaxed),
            received_bytes: c.received_bytes.load(Ordering::Relaxed),
        }
    }

    /// The underlying session (tests and tools).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Key for a relative topic: `maniflow/<robot>/<topic>`.
    pub fn key(&self, topic: &str) -> String {
        format!("{KEY_PREFIX}/{}/{}", self.robot, topic.trim_matches('/'))
    }

    /// A publisher on `topic` with the settings of `qos` (messages and image loans).
    fn declare_publisher(&self, topic: &str, qos: Qos) -> Result<ZPublisher, TransportError> {
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
        Ok(ZPublisher {
            publisher,
            key,
            shm: self.shm.clone(),
            counters: self.counters.clone(),
        })
    }

    /// A subscriber on `topic` calling `on_sample(payload, receive instant,
    /// receive wall clock ns)` for every sample (counted by kind).
    fn declare_subscriber(
        &self,
        topic: &str,
        on_sample: impl Fn(&ZBytes, std::time::Instant, i64) + Send + Sync + 'static,
    ) -> Result<Subscription, TransportError> {
        check_topic(topic)?;
        let key = self.key(topic);
        let counters = self.counters.clone();
        let sub = self
            .session
            .declare_subscriber(key.clone())
            .callback(move |sample| {
                let recv = std::time::Instant::now();
                let recv_wall_ns = wall_ns();
                let payload = sample.payload();
                let kind = if payload.as_shm().is_some() {
                    &counters.received_shm
                } else {
                    &counters.received_bytes
                };
                kind.fetch_add(1, Ordering::Relaxed);
                on_sample(payload, recv, recv_wall_ns);
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
}

/// A decoded sample with its receive times, or the decode error naming `key`.
fn received<M>(
    r: Result<M, MsgError>,
    key: &str,
    recv: std::time::Instant,
    recv_wall_ns: i64,
) -> Result<Received<M>, TransportError> {
    r.map(|msg| Received {
        msg,
        recv,
        recv_wall_ns,
        source_ns: None,
    })
    .map_err(|e| TransportError::Decode {
        topic: key.to_string(),
        message: e.to_string(),
    })
}

struct ZPublisher {
    publisher: zenoh::pubsub::Publisher<'static>,
    key: String,
    shm: Arc<Shm>,
    counters: Arc<Counters>,
}

/// Counts the bytes an encoder writes.
struct CountingWriter(usize);

impl std::io::Write for CountingWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ZPublisher {
    fn error(&self, e: impl ToString) -> TransportError {
        TransportError::Publish {
            topic: self.key.clone(),
            message: e.to_string(),
        }
    }

    /// A shared-memory buffer of `n` bytes, or `None` (no provider, pool
    /// exhausted). `reclaim_first`: collect the buffers subscribers have let
    /// go of before allocating, so the allocator hands the last ones out again
    /// (still in cache) instead of walking the whole pool (cold memory).
    fn shm_buffer(&self, n: usize, reclaim_first: bool) -> Option<ZShmMut> {
        // Created by zenoh on first use (a pool of `transport/shared_memory/
        // transport_optimization/pool_size` bytes, 16 MiB by default).
        let provider = self.shm.provider()?;
        if reclaim_first {
            provider.garbage_collect();
        }
        provider
            .alloc(n)
            .with_policy::<GarbageCollect>()
            .wait()
            .ok()
    }

    /// `msg` encoded straight into a shared-memory buffer of its exact size,
    /// or `None` (no provider, small message, pool exhausted).
    fn encode_shm<M: RosMessage>(&self, msg: &M) -> Result<Option<ZBytes>, TransportError> {
        if !self.shm.enabled {
            return Ok(None);
        }
        let mut count = CountingWriter(0);
        encode_to_writer(msg, &mut count).map_err(|e| self.error(e))?;
        if count.0 < SHM_THRESHOLD {
            return Ok(None);
        }
        let Some(mut buf) = self.shm_buffer(count.0, false) else {
            return Ok(None);
        };
        let mut w: &mut [u8] = buf.as_mut();
        encode_to_writer(msg, &mut w).map_err(|e| self.error(e))?;
        if !w.is_empty() {
            return Err(self.error("encoded size changed between two passes"));
        }
        Ok(Some(ZBytes::from(buf)))
    }
}

impl<M: RosMessage + Send + Sync> Publish<M> for ZPublisher {
    fn publish(&self, msg: &M) -> Result<(), TransportError> {
        let payload = match self.encode_shm(msg)? {
            Some(shm) => {
                self.counters.published_shm.fetch_add(1, Ordering::Relaxed);
                shm
            }
            None => {
                let mut buf = Vec::new();
                encode(msg, &mut buf).map_err(|e| self.error(e))?;
                self.counters
                    .published_bytes
                    .fetch_add(1, Ordering::Relaxed);
                ZBytes::from(buf)
            }
        };
        self.publisher
            .put(payload)
            .wait()
            .map_err(|e| self.error(e))
    }
    fn wire_name(&self) -> &str {
        &self.key
    }
}

/// Images from loans: in shared memory when the session has it.
impl PublishImage for ZPublisher {
    fn loan(&self, frame_id: &str, layout: &ImageLayout) -> Result<ImageLoan, TransportError> {
        let n = ImageLoan::cdr_len(frame_id, layout);
        let buf = (n >= SHM_THRESHOLD)
            .then(|| self.shm_buffer(n, true))
            .flatten();
        Ok(match buf {
            Some(buf) => ImageLoan::shm(buf, frame_id, layout),
            None => ImageLoan::heap(frame_id, layout),
        })
    }

    fn publish(&self, loan: ImageLoan) -> Result<(), TransportError> {
        let counter = if loan.in_shared_memory() {
            &self.counters.published_shm
        } else {
            &self.counters.published_bytes
        };
        let payload = match loan.into_payload() {
            Ok(z) => z,
            Err(msg) => {
                let mut buf = Vec::new();
                encode(&msg, &mut buf).map_err(|e| self.error(e))?;
                ZBytes::from(buf)
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.publisher
            .put(payload)
            .wait()
            .map_err(|e| self.error(e))
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
        Ok(Box::new(self.declare_publisher(topic, qos)?))
    }

    fn subscribe<M: RosMessage + Send + Sync + 'static>(
        &self,
        topic: &str,
        _qos: Qos,
        sink: Sink<M>,
    ) -> Result<Subscription, TransportError> {
        let key = self.key(topic);
        // zenoh may call back from several threads: serialise the sink. The
        // vector reassembles a payload that arrived in fragments (no shared
        // memory); it keeps its capacity, so a large image is copied into
        // memory already mapped rather than into a fresh allocation whose
        // pages fault in one by one (about 1 ms for 640x480 on a VM).
        let state = std::sync::Mutex::new((sink, Vec::<u8>::new()));
        self.declare_subscriber(topic, move |payload, recv, recv_wall_ns| {
            let Ok(mut guard) = state.lock() else { return };
            let (sink, scratch) = &mut *guard;
            // Borrowed when contiguous (always for shared memory): the
            // decoder's copy into the message is then the only one.
            let mut slices = payload.slices();
            let bytes: &[u8] = match (slices.next(), slices.next()) {
                (None, _) => &[],
                (Some(one), None) => one,
                (Some(a), Some(b)) => {
                    scratch.clear();
                    scratch.reserve(payload.len());
                    scratch.extend_from_slice(a);
                    scratch.extend_from_slice(b);
                    slices.for_each(|s| scratch.extend_from_slice(s));
                    scratch
                }
            };
            let r = received(decode::<M>(bytes), &key, recv, recv_wall_ns);
            sink(r);
        })
    }

    fn image_publisher(
        &self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn PublishImage>, TransportError> {
        Ok(Box::new(self.declare_publisher(topic, qos)?))
    }

    fn subscribe_images(
        &self,
        topic: &str,
        _qos: Qos,
        sink: Sink<SharedImage>,
    ) -> Result<Subscription, TransportError> {
        let key = self.key(topic);
        let sink = std::sync::Mutex::new(sink);
        self.declare_subscriber(topic, move |payload, recv, recv_wall_ns| {
            let r = received(SharedImage::from_payload(payload), &key, recv, recv_wall_ns);
            if let Ok(mut sink) = sink.lock() {
                sink(r);
            }
        })
    }

    fn wire_name(&self, topic: &str) -> String {
        self.key(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Header, Image, Time};
    use std::sync::mpsc::channel;
    use std::time::Duration;

    /// An image from one session to another over loopback, with shared memory
    /// on and off: the same message arrives, through shared memory only when on.
    #[test]
    fn images_arrive_intact_with_and_without_shared_memory() {
        for (port, shm) in [(17961u16, true), (17962, false)] {
            let ep = format!("tcp/127.0.0.1:{port}");
            let base = TransportConfig {
                robot: "shmtest".into(),
                shared_memory: shm,
                ..TransportConfig::default()
            };
            let a = ZenohNative::open(&TransportConfig {
                listen: vec![ep.clone()],
                connect: vec![],
                ..base.clone()
            })
            .unwrap();
            let b = ZenohNative::open(&TransportConfig {
                connect: vec![ep],
                ..base
            })
            .unwrap();
            let (tx, rx) = channel();
            let tx = std::sync::Mutex::new(tx);
            let _sub = b
                .subscribe::<Image>(
                    "cam",
                    Qos::Sensor,
                    Box::new(move |r| {
                        let _ = tx.lock().unwrap().send(r.map(|x| x.msg));
                    }),
                )
                .unwrap();
            let p = a.publisher::<Image>("cam", Qos::Sensor).unwrap();
            let pixels: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7 % 256) as u8).collect();
            let img =
                Image::rgb8(Header::new(Time::from_nanos(42), "cam"), 64, 48, pixels).unwrap();
            let mut got = None;
            for _ in 0..100 {
                p.publish(&img).unwrap();
                if let Ok(r) = rx.recv_timeout(Duration::from_millis(100)) {
                    got = Some(r.unwrap());
                    break;
                }
            }
            assert_eq!(got.as_ref(), Some(&img), "shm {shm}");
            let (pc, sc) = (a.shm_counts(), b.shm_counts());
            if shm {
                assert!(pc.published_shm > 0 && pc.published_bytes == 0, "{pc:?}");
                // Negotiated with a peer on this host (Linux, /dev/shm).
                if std::path::Path::new("/dev/shm").is_dir() {
                    assert!(sc.received_shm > 0, "{sc:?}");
                }
            } else {
                assert_eq!((pc.published_shm, sc.received_shm), (0, 0), "{pc:?} {sc:?}");
            }
        }
    }

    /// Loaned images to a borrowing subscriber and to a decoding one, shared
    /// memory on and off: both see the same message; with shared memory the
    /// borrowed image is the publisher's buffer (no copy on either side).
    #[test]
    fn loaned_images_arrive_borrowed_and_decoded() {
        for (port, shm) in [(17963u16, true), (17964, false)] {
            let ep = format!("tcp/127.0.0.1:{port}");
            let base = TransportConfig {
                robot: "loantest".into(),
                shared_memory: shm,
                ..TransportConfig::default()
            };
            let a = ZenohNative::open(&TransportConfig {
                listen: vec![ep.clone()],
                connect: vec![],
                ..base.clone()
            })
            .unwrap();
            let b = ZenohNative::open(&TransportConfig {
                connect: vec![ep],
                ..base
            })
            .unwrap();
            let (tx, rx) = channel();
            let (tx2, rx2) = channel();
            let tx = std::sync::Mutex::new(tx);
            let tx2 = std::sync::Mutex::new(tx2);
            let _borrowing = b
                .subscribe_images(
                    "cam",
                    Qos::Sensor,
                    Box::new(move |r| {
                        let _ = tx.lock().unwrap().send(r.map(|x| x.msg));
                    }),
                )
                .unwrap();
            let _decoding = b
                .subscribe::<Image>(
                    "cam",
                    Qos::Sensor,
                    Box::new(move |r| {
                        let _ = tx2.lock().unwrap().send(r.map(|x| x.msg));
                    }),
                )
                .unwrap();
            let p = a.image_publisher("cam", Qos::Sensor).unwrap();
            let pixels: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7 % 256) as u8).collect();
            let want =
                Image::rgb8(Header::new(Time::from_nanos(42), "cam"), 64, 48, pixels).unwrap();
            let layout = ImageLayout::packed("rgb8", 3, 64, 48).unwrap();
            let mut got = None;
            for _ in 0..100 {
                let mut loan = p.loan("cam", &layout).unwrap();
                assert_eq!(loan.in_shared_memory(), shm);
                loan.data_mut().copy_from_slice(&want.data);
                loan.set_stamp(want.header.stamp);
                assert_eq!(loan.view().to_image(), want);
                p.publish(loan).unwrap();
                if let Ok(r) = rx.recv_timeout(Duration::from_millis(100)) {
                    got = Some(r.unwrap());
                    break;
                }
            }
            let got = got.expect("no image arrived");
            assert_eq!(got.view().to_image(), want, "shm {shm}");
            let decoded = rx2.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
            assert_eq!(decoded, want, "shm {shm}");
            let pc = a.shm_counts();
            if shm {
                assert!(pc.published_shm > 0 && pc.published_bytes == 0, "{pc:?}");
                if std::path::Path::new("/dev/shm").is_dir() {
                    assert!(got.in_shared_memory());
                }
            } else {
                assert!(!got.in_shared_memory());
                assert_eq!(pc.published_shm, 0, "{pc:?}");
            }
        }
    }
}
