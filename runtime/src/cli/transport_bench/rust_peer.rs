//! Our side of a benchmark pair, as its own process:
//! `maniflow transport-bench --peer pub|sub --peer-transport T ...` (hidden
//! arguments). It speaks the protocol of `tests/bench/transport_peer.py`:
//! the publisher takes `warm TOPIC` and `run TOPIC N HZ` lines on stdin, the
//! subscriber prints `{"heard": TOPIC}` at a topic's first sample and records
//! the one-way latency (wall clock once the message is decoded and in the
//! sink - its header stamp, taken just before encoding) of every "bench"
//! sample; `--echo` republishes every sample unchanged on `<topic>_echo`. At
//! EOF on stdin each prints `{"results": {TOPIC: [ns, ...]}, "shm": {...}}`,
//! plus where the time went: `TOPIC.publish` (publisher: duration of the
//! publish call, i.e. serialising and handing the sample to the transport) and
//! `TOPIC.callback` (subscriber: the transport's receive callback - stamp,
//! before decoding).
//!
//! Images go the zero-copy way unless `--peer-copy-images`: the publisher
//! stamps, loans a buffer ([`Transport::image_publisher`], shared memory on
//! native zenoh), writes the frame's pixels into it and publishes; the
//! subscriber's latency ends once it holds the received image borrowed where
//! it arrived ([`Transport::subscribe_images`]). With `--peer-copy-images`,
//! an owned `Image` is published and decoded, as ROS 2 client libraries do.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maniflow_bridge::msg::{Header, Image, JointState, RosMessage, Time};
use maniflow_bridge::transport::image::{ImageLayout, ImageView, PublishImage};
use maniflow_bridge::transport::{
    wall_ns, AnyTransport, Publish, Qos, Subscription, Transport, TransportConfig, TransportKind,
};
use serde_json::json;

/// The two benchmark streams: (short name, topic).
pub const TOPICS: [(&str, &str); 2] = [("joint", "bench_joint_states"), ("image", "bench_image")];

/// The robot name (native zenoh key prefix `maniflow/bench/`, ROS 2 namespace `/bench`).
pub const ROBOT: &str = "bench";

pub struct PeerArgs {
    pub role: String,
    pub kind: TransportKind,
    pub shm: bool,
    pub listen: Option<String>,
    pub connect: Option<String>,
    pub echo: bool,
    /// Images as owned messages (publish `&Image`, decode into `Image`).
    pub copy_images: bool,
    pub width: u32,
    pub height: u32,
    pub domain_id: u16,
}

/// The benchmark JointState: 5 positions, no names.
pub fn joint(frame_id: &str) -> JointState {
    JointState {
        header: Header::new(Time::from_nanos(0), frame_id),
        name: vec![],
        position: vec![0.5; 5],
        velocity: vec![],
        effort: vec![],
    }
}

/// The benchmark image: `w`x`h` rgb8, byte i = i % 251.
pub fn image(frame_id: &str, w: u32, h: u32) -> Image {
    let pixels: Vec<u8> = (0..(w * h * 3) as usize).map(|i| (i % 251) as u8).collect();
    Image::rgb8(Header::new(Time::from_nanos(0), frame_id), w, h, pixels).unwrap_or_default()
}

trait Stamped {
    fn header(&self) -> &Header;
    fn header_mut(&mut self) -> &mut Header;
}
impl Stamped for JointState {
    fn header(&self) -> &Header {
        &self.header
    }
    fn header_mut(&mut self) -> &mut Header {
        &mut self.header
    }
}
impl Stamped for Image {
    fn header(&self) -> &Header {
        &self.header
    }
    fn header_mut(&mut self) -> &mut Header {
        &mut self.header
    }
}

fn say(v: serde_json::Value) {
    println!("{v}");
}

/// Stamps `m` (just before it is serialised) and publishes it.
fn stamp<M: Stamped + RosMessage>(
    m: &mut M,
    frame: &str,
    p: &dyn Publish<M>,
) -> anyhow::Result<()> {
    let h = m.header_mut();
    if h.frame_id != frame {
        h.frame_id = frame.into();
    }
    h.stamp = Time::from_nanos(wall_ns());
    Ok(p.publish(m)?)
}

/// The image publisher: owned messages or loans.
struct Images {
    publisher: ImagePublisher,
    /// Loans only: ns spent in `loan`, `fill` and `put` (the publish call),
    /// per "bench" image.
    phases: Mutex<BTreeMap<&'static str, Vec<i64>>>,
}

enum ImagePublisher {
    Copy(Box<dyn Publish<Image>>),
    Loan(Box<dyn PublishImage>),
}

impl Images {
    fn new(t: &AnyTransport, topic: &str, copy: bool) -> anyhow::Result<Images> {
        let publisher = if copy {
            ImagePublisher::Copy(t.publisher::<Image>(topic, Qos::Sensor)?)
        } else {
            ImagePublisher::Loan(t.image_publisher(topic, Qos::Sensor)?)
        };
        Ok(Images {
            publisher,
            phases: Mutex::default(),
        })
    }

    /// Publishes `img`'s pixels from `frame`: a loan is stamped first, then
    /// filled (the producer writing its frame), then published.
    fn send(&self, img: &mut Image, frame: &str) -> anyhow::Result<()> {
        match &self.publisher {
            ImagePublisher::Copy(p) => stamp(img, frame, p.as_ref()),
            ImagePublisher::Loan(p) => {
                let t = Time::from_nanos(wall_ns());
                let view = ImageView::of(img);
                let phases = send_view(p.as_ref(), &view, frame, t)?;
                if frame == "bench" {
                    if let Ok(mut m) = self.phases.lock() {
                        for (name, ns) in ["loan", "fill", "put"].into_iter().zip(phases) {
                            m.entry(name).or_default().push(ns);
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Loans a buffer for `v`'s layout, copies its pixels in and publishes it;
/// returns the ns each of the three took.
fn send_view(
    p: &dyn PublishImage,
    v: &ImageView<'_>,
    frame: &str,
    t: Time,
) -> anyhow::Result<[i64; 3]> {
    let layout = ImageLayout {
        width: v.width,
        height: v.height,
        encoding: v.encoding.to_string(),
        step: v.step,
    };
    let t0 = Instant::now();
    let mut loan = p.loan(frame, &layout)?;
    let t1 = Instant::now();
    loan.set_stamp(t);
    loan.fill(v.data)?;
    let t2 = Instant::now();
    p.publish(loan)?;
    let ns = |a: Instant, b: Instant| (b - a).as_nanos() as i64;
    Ok([ns(t0, t1), ns(t1, t2), ns(t2, Instant::now())])
}

fn stdin_lines() -> Receiver<Option<String>> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(Some(line.trim().to_string())).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    rx
}

pub fn run(p: PeerArgs) -> anyhow::Result<()> {
    let cfg = TransportConfig {
        kind: p.kind,
        robot: ROBOT.into(),
        domain_id: Some(p.domain_id),
        listen: p.listen.clone().into_iter().collect(),
        connect: p.connect.clone().into_iter().collect(),
        shared_memory: p.shm,
        ..TransportConfig::default()
    };
    let node = format!("bench_{}", p.role);
    let t = AnyTransport::open(&cfg, &node)?;
    let lines = stdin_lines();
    let results = match p.role.as_str() {
        "pub" => publisher(&t, &p, &lines)?,
        "sub" => subscriber(&t, &p, &lines)?,
        other => anyhow::bail!("--peer {other}: expected pub or sub"),
    };
    let shm = match &t {
        AnyTransport::Zenoh(z) => {
            let c = z.shm_counts();
            json!({"published_shm": c.published_shm, "published_bytes": c.published_bytes,
                   "received_shm": c.received_shm, "received_bytes": c.received_bytes})
        }
        _ => serde_json::Value::Null,
    };
    say(json!({"results": results, "shm": shm}));
    // Session teardown (DDS discovery, zenoh links) is not measured: skip it.
    std::process::exit(0)
}

fn publisher(
    t: &AnyTransport,
    p: &PeerArgs,
    lines: &Receiver<Option<String>>,
) -> anyhow::Result<BTreeMap<String, Vec<i64>>> {
    let pj = t.publisher::<JointState>(TOPICS[0].1, Qos::Sensor)?;
    let mut js = joint("bench");
    let mut img = image("bench", p.width, p.height);
    let images = Images::new(t, TOPICS[1].1, p.copy_images)?;
    let mut send = |topic: &str, frame: &str| -> anyhow::Result<()> {
        match topic {
            "joint" => stamp(&mut js, frame, pj.as_ref()),
            "image" => images.send(&mut img, frame),
            other => anyhow::bail!("unknown topic {other}"),
        }
    };
    say(json!({"ready": true}));
    let mut spent: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut warm: Option<String> = None;
    loop {
        let line = match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(w) = &warm {
                    // Warm-up samples may be dropped (congestion, discovery).
                    let _ = send(w, "warmup");
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => None,
        };
        let Some(line) = line else { break };
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["warm", topic] => {
                warm = Some(topic.to_string());
                let _ = send(topic, "warmup");
            }
            ["run", topic, n, hz] => {
                warm = None;
                let n: u64 = n.parse()?;
                let period = Duration::from_secs_f64(1.0 / hz.parse::<f64>()?);
                let start = Instant::now();
                let mut calls = Vec::with_capacity(n as usize);
                for i in 0..n {
                    let target = start + period * i as u32;
                    let now = Instant::now();
                    if target > now {
                        std::thread::sleep(target - now);
                    }
                    let t0 = Instant::now();
                    send(topic, "bench")?;
                    calls.push(t0.elapsed().as_nanos() as i64);
                }
                spent.insert(format!("{topic}.publish"), calls);
                for (phase, ns) in images
                    .phases
                    .lock()
                    .map(|mut p| std::mem::take(&mut *p))
                    .unwrap_or_default()
                {
                    spent
                        .entry(format!("{topic}.{phase}"))
                        .or_default()
                        .extend(ns);
                }
                say(json!({"done": topic}));
            }
            _ => anyhow::bail!("unknown command {line:?}"),
        }
    }
    Ok(spent)
}

type Record = Arc<Mutex<(BTreeSet<&'static str>, BTreeMap<String, Vec<i64>>)>>;

fn listen<M>(
    t: &AnyTransport,
    name: &'static str,
    topic: &str,
    rec: &Record,
    echo: Option<Box<dyn Publish<M>>>,
) -> anyhow::Result<Subscription>
where
    M: RosMessage + Stamped + Send + Sync + 'static,
{
    let rec = rec.clone();
    Ok(t.subscribe::<M>(
        topic,
        Qos::Sensor,
        Box::new(move |r| {
            let Ok(x) = r else { return };
            let h = x.msg.header();
            record(&rec, name, &h.frame_id, h.stamp.as_nanos(), x.recv_wall_ns);
            if let Some(e) = &echo {
                let _ = e.publish(&x.msg);
            }
        }),
    )?)
}

/// Records one sample: the first one of a topic is announced, "bench" ones
/// give a latency (now - stamp) and a callback time (receive - stamp).
fn record(rec: &Record, name: &'static str, frame_id: &str, stamp: i64, recv_wall_ns: i64) {
    let now = wall_ns();
    if let Ok(mut g) = rec.lock() {
        if g.0.insert(name) {
            say(json!({ "heard": name }));
        }
        if frame_id == "bench" {
            g.1.entry(name.to_string()).or_default().push(now - stamp);
            g.1.entry(format!("{name}.callback"))
                .or_default()
                .push(recv_wall_ns - stamp);
        }
    }
}

/// Like [`listen`] for images received where they arrived (no decode copy).
fn listen_images(
    t: &AnyTransport,
    name: &'static str,
    topic: &str,
    rec: &Record,
    echo: Option<Box<dyn PublishImage>>,
) -> anyhow::Result<Subscription> {
    let rec = rec.clone();
    Ok(t.subscribe_images(
        topic,
        Qos::Sensor,
        Box::new(move |r| {
            let Ok(x) = r else { return };
            let v = x.msg.view();
            record(&rec, name, v.frame_id, v.stamp.as_nanos(), x.recv_wall_ns);
            if let Some(e) = &echo {
                let _ = send_view(e.as_ref(), &v, v.frame_id, v.stamp);
            }
        }),
    )?)
}

fn subscriber(
    t: &AnyTransport,
    p: &PeerArgs,
    lines: &Receiver<Option<String>>,
) -> anyhow::Result<BTreeMap<String, Vec<i64>>> {
    let rec: Record = Arc::default();
    let ej = match p.echo {
        true => Some(t.publisher::<JointState>(&format!("{}_echo", TOPICS[0].1), Qos::Sensor)?),
        false => None,
    };
    let image_echo = format!("{}_echo", TOPICS[1].1);
    let image_sub = if p.copy_images {
        let ei = match p.echo {
            true => Some(t.publisher::<Image>(&image_echo, Qos::Sensor)?),
            false => None,
        };
        listen::<Image>(t, TOPICS[1].0, TOPICS[1].1, &rec, ei)?
    } else {
        let ei = match p.echo {
            true => Some(t.image_publisher(&image_echo, Qos::Sensor)?),
            false => None,
        };
        listen_images(t, TOPICS[1].0, TOPICS[1].1, &rec, ei)?
    };
    let _subs = [
        listen::<JointState>(t, TOPICS[0].0, TOPICS[0].1, &rec, ej)?,
        image_sub,
    ];
    say(json!({"ready": true}));
    while let Ok(Some(_)) = lines.recv() {}
    let g = rec.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut out = g.1.clone();
    for (name, _) in TOPICS {
        out.entry(name.to_string()).or_default();
    }
    Ok(out)
}
