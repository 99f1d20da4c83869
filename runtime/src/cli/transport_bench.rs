//! `maniflow transport-bench`: one-way latency of a 640x480 RGB Image and of a
//! small JointState over native zenoh, ROS 2 over rmw_zenoh and ROS 2 over DDS,
//! on loopback. Publisher and subscriber are two separate sessions
//! (participants) in this process, connected over 127.0.0.1; latency =
//! receive wall clock - header stamp, one clock (same machine).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stats::{Latency, Percentiles};
use maniflow_bridge::msg::{encode_vec, Header, Image, JointState, Time};
use maniflow_bridge::transport::{
    wall_ns, AnyTransport, Qos, Transport, TransportConfig, TransportKind,
};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Transports to measure (default: all three).
    #[arg(long, value_delimiter = ',')]
    pub transports: Vec<TransportKind>,
    /// Images per transport (sent at --image-hz).
    #[arg(long, default_value_t = 150)]
    pub images: u64,
    #[arg(long, default_value_t = 30.0)]
    pub image_hz: f64,
    /// Joint states per transport (sent at --joint-hz).
    #[arg(long, default_value_t = 500)]
    pub joints: u64,
    #[arg(long, default_value_t = 100.0)]
    pub joint_hz: f64,
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// First zenoh port used (two per transport).
    #[arg(long, default_value_t = 17840)]
    pub port: u16,
    /// ROS domain id for the DDS run.
    #[arg(long, default_value_t = 77)]
    pub domain_id: u16,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub transport: String,
    pub message: String,
    pub bytes: usize,
    pub sent: u64,
    pub received: u64,
    pub latency_us: Percentiles,
}

fn measure<M>(
    t_pub: &AnyTransport,
    t_sub: &AnyTransport,
    topic: &str,
    make: &dyn Fn(i64) -> M,
    set_stamp: &dyn Fn(&mut M, i64),
    n: u64,
    hz: f64,
) -> anyhow::Result<(u64, u64, Percentiles)>
where
    M: maniflow_bridge::msg::RosMessage + Clone + Send + Sync + 'static,
    M: HasStamp,
{
    let lat = Arc::new(Mutex::new(Latency::new()));
    let count = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _sub = {
        let (lat, count, measuring) = (lat.clone(), count.clone(), measuring.clone());
        t_sub.subscribe::<M>(
            topic,
            Qos::Sensor,
            Box::new(move |r| {
                if let Ok(x) = r {
                    count.fetch_add(1, Ordering::Relaxed);
                    if measuring.load(Ordering::Relaxed) {
                        let d = x.recv_wall_ns - x.msg.stamp_ns();
                        if let Ok(mut l) = lat.lock() {
                            l.record(Duration::from_nanos(d.max(0) as u64));
                        }
                    }
                }
            }),
        )?
    };
    let p = t_pub.publisher::<M>(topic, Qos::Sensor)?;
    let mut msg = make(wall_ns());
    // Discovery / connection: publish until the subscriber hears us (10 s max).
    let t0 = Instant::now();
    while count.load(Ordering::Relaxed) == 0 {
        if t0.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("{topic}: no sample came through in 10 s (discovery failed)");
        }
        set_stamp(&mut msg, wall_ns());
        let _ = p.publish(&msg);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = count.load(Ordering::Relaxed);
    measuring.store(true, Ordering::Relaxed);
    let period = Duration::from_secs_f64(1.0 / hz);
    let start = Instant::now();
    for i in 0..n {
        let target = start + period * i as u32;
        let now = Instant::now();
        if target > now {
            std::thread::sleep(target - now);
        }
        set_stamp(&mut msg, wall_ns());
        p.publish(&msg)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    measuring.store(false, Ordering::Relaxed);
    let got = count.load(Ordering::Relaxed) - before;
    let pc = lat.lock().map(|l| l.percentiles()).unwrap_or_default();
    Ok((n, got.min(n), pc))
}

pub trait HasStamp {
    fn stamp_ns(&self) -> i64;
}
impl HasStamp for Image {
    fn stamp_ns(&self) -> i64 {
        self.header.stamp.as_nanos()
    }
}
impl HasStamp for JointState {
    fn stamp_ns(&self) -> i64 {
        self.header.stamp.as_nanos()
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let kinds = if a.transports.is_empty() {
        vec![
            TransportKind::Zenoh,
            TransportKind::Ros2Zenoh,
            TransportKind::Ros2Dds,
        ]
    } else {
        a.transports.clone()
    };
    let (w, h) = (a.width, a.height);
    let pixels: Vec<u8> = (0..(w * h * 3) as usize).map(|i| (i % 251) as u8).collect();
    let make_img = |s: i64| {
        Image::rgb8(
            Header::new(Time::from_nanos(s), "cam"),
            w,
            h,
            pixels.clone(),
        )
        .unwrap_or_default()
    };
    let make_js = |s: i64| JointState {
        header: Header::new(Time::from_nanos(s), ""),
        name: vec![],
        position: vec![0.5; 5],
        velocity: vec![],
        effort: vec![],
    };
    let img_bytes = encode_vec(&make_img(0)).map(|v| v.len()).unwrap_or(0);
    let js_bytes = encode_vec(&make_js(0)).map(|v| v.len()).unwrap_or(0);
    let mut rows = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let port = a.port + 2 * i as u16;
        let ep = format!("tcp/127.0.0.1:{port}");
        let base = TransportConfig {
            kind: *kind,
            robot: "bench".into(),
            domain_id: Some(a.domain_id),
            ..TransportConfig::default()
        };
        let pub_cfg = TransportConfig {
            listen: vec![ep.clone()],
            connect: vec![],
            ..base.clone()
        };
        let sub_cfg = TransportConfig {
            listen: vec![],
            connect: vec![ep],
            ..base
        };
        eprintln!("transport-bench: {kind} ...");
        let tp = AnyTransport::open(&pub_cfg, "bench_pub")?;
        let ts = AnyTransport::open(&sub_cfg, "bench_sub")?;
        let (sent, got, pc) = measure(
            &tp,
            &ts,
            "bench_joint_states",
            &make_js,
            &|m: &mut JointState, s| m.header.stamp = Time::from_nanos(s),
            a.joints,
            a.joint_hz,
        )?;
        rows.push(Row {
            transport: kind.to_string(),
            message: "JointState".into(),
            bytes: js_bytes,
            sent,
            received: got,
            latency_us: pc,
        });
        let (sent, got, pc) = measure(
            &tp,
            &ts,
            "bench_image",
            &make_img,
            &|m: &mut Image, s| m.header.stamp = Time::from_nanos(s),
            a.images,
            a.image_hz,
        )?;
        rows.push(Row {
            transport: kind.to_string(),
            message: format!("Image {w}x{h} rgb8"),
            bytes: img_bytes,
            sent,
            received: got,
            latency_us: pc,
        });
        drop(ts);
        drop(tp);
    }
    println!(
        "{:<11} {:<22} {:>8} {:>9} {:>10} {:>10} {:>10}",
        "transport", "message", "bytes", "recv/sent", "p50 us", "p99 us", "max us"
    );
    for r in &rows {
        println!(
            "{:<11} {:<22} {:>8} {:>4}/{:<4} {:>10.0} {:>10.0} {:>10.0}",
            r.transport,
            r.message,
            r.bytes,
            r.received,
            r.sent,
            r.latency_us.p50_us,
            r.latency_us.p99_us,
            r.latency_us.max_us
        );
    }
    if let Some(p) = &a.json {
        super::run::write_json_atomic(p, &rows)?;
    }
    Ok(())
}
