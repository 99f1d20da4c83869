//! `maniflow transport-bench`: latency of a 640x480 rgb8 Image and of a small
//! JointState between two processes on this machine, over each transport,
//! next to Python peers measured in the same run.
//!
//! Every pair is two processes started here (this process only relays
//! commands and collects numbers): a publisher and a subscriber. One-way
//! latency = the subscriber's wall clock once it holds the decoded message -
//! the header stamp the publisher took just before serialising it (one
//! machine, one clock). Round trip (rclpy rows) = the publisher's wall clock
//! when the echo of its own sample comes back - the same stamp.
//!
//! Pairs (`--transports`, default all):
//! - `zenoh`, `zenoh-shm`: ours to ours over native zenoh, shared memory off / on
//!   (images from loaned buffers, received without a copy: `transport::image`)
//! - `zenoh-shm-copy`: the same with shared memory on, but images published as
//!   an owned `Image` and decoded into one (two copies), for comparison
//! - `ros2-zenoh`, `ros2-dds`: ours to ours over rmw_zenoh and DDS (RustDDS)
//! - `python-zenoh`, `python-zenoh-shm`: two eclipse-zenoh Python processes
//!   (`tests/bench/transport_peer.py`, the .venv), shared memory off / on
//! - `rclpy`: a real ROS 2 Jazzy rclpy node (Fast DDS, the .venv-ros2)
//!   publishing to us over DDS, which echo back (one-way and round trip), and
//!   the same against a second rclpy node
//!
//! A pair whose peer is missing (no venv, package not installed) or fails is a
//! row marked skipped with the reason. Numbers only: nothing here asserts a time.

mod peer;
mod report;
mod rust_peer;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::stats::{Latency, Percentiles};
use maniflow_bridge::msg::encode_vec;
use maniflow_bridge::transport::TransportKind;
use serde::Serialize;
use serde_json::Value;

use peer::Peer;
use report::{breakdown, print_table, Breakdown};
use rust_peer::{image, joint, PeerArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pairs to measure: zenoh, zenoh-shm, ros2-zenoh, ros2-dds, python-zenoh,
    /// python-zenoh-shm, rclpy (default: all).
    #[arg(long, value_delimiter = ',')]
    pub transports: Vec<String>,
    /// Images per pair (sent at --image-hz).
    #[arg(long, default_value_t = 150)]
    pub images: u64,
    #[arg(long, default_value_t = 30.0)]
    pub image_hz: f64,
    /// Joint states per pair (sent at --joint-hz).
    #[arg(long, default_value_t = 500)]
    pub joints: u64,
    #[arg(long, default_value_t = 100.0)]
    pub joint_hz: f64,
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// First zenoh port used (one per pair).
    #[arg(long, default_value_t = 17840)]
    pub port: u16,
    /// First ROS domain id used (one per DDS pair).
    #[arg(long, default_value_t = 77)]
    pub domain_id: u16,
    /// Python with eclipse-zenoh (default: the bootstrap's .venv).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Python with rclpy, Jazzy (default: .venv-ros2).
    #[arg(long)]
    pub rclpy_python: Option<PathBuf>,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,

    // Internal: run as one side of a pair (`pub` or `sub`).
    #[arg(long, hide = true)]
    pub peer: Option<String>,
    #[arg(long, hide = true)]
    pub peer_transport: Option<TransportKind>,
    #[arg(long, hide = true, default_value_t = false)]
    pub peer_shm: bool,
    #[arg(long, hide = true)]
    pub peer_listen: Option<String>,
    #[arg(long, hide = true)]
    pub peer_connect: Option<String>,
    #[arg(long, hide = true, default_value_t = false)]
    pub echo: bool,
    #[arg(long, hide = true, default_value_t = false)]
    pub peer_copy_images: bool,
}

const ALL: [&str; 8] = [
    "zenoh",
    "zenoh-shm",
    "zenoh-shm-copy",
    "ros2-zenoh",
    "ros2-dds",
    "python-zenoh",
    "python-zenoh-shm",
    "rclpy",
];

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Who sends to whom, e.g. `maniflow -> maniflow`.
    pub path: String,
    /// Middleware and setting, e.g. `zenoh, shm on`.
    pub transport: String,
    /// `one-way` or `round trip`.
    pub measure: String,
    pub message: String,
    pub bytes: usize,
    pub sent: u64,
    pub received: u64,
    pub latency_us: Percentiles,
    /// Shared-memory use seen by our subscriber (samples received in shm / all).
    pub shm: Option<String>,
    /// Ours only, where the time goes: the publish call (serialise, hand to
    /// the transport) and stamp -> the transport's receive callback (before
    /// decoding); `latency_us` ends once the message is decoded.
    pub publish_call_us: Option<Percentiles>,
    pub to_callback_us: Option<Percentiles>,
    /// Images from loans: the publish call's three parts (loan a buffer,
    /// write the pixels into it, hand it to zenoh).
    pub loan_us: Option<Percentiles>,
    pub fill_us: Option<Percentiles>,
    pub put_us: Option<Percentiles>,
    /// Why the row has no numbers.
    pub skipped: Option<String>,
}


#[derive(Debug, Serialize)]
struct Report {
    rows: Vec<Row>,
    breakdown: Breakdown,
    host_cpus: usize,
}

/// One pair: which processes, what to report.
struct Pair {
    path: &'static str,
    transport: String,
    publisher: Cmd,
    subscriber: Cmd,
    /// Round-trip rows from the publisher (it records echoes).
    rtt_path: Option<&'static str>,
}

enum Cmd {
    Rust {
        kind: TransportKind,
        shm: bool,
        listen: Option<String>,
        connect: Option<String>,
        echo: bool,
        copy_images: bool,
        domain: u16,
    },
    Python {
        python: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(role) = &a.peer {
        return rust_peer::run(PeerArgs {
            role: role.clone(),
            kind: a.peer_transport.unwrap_or_default(),
            shm: a.peer_shm,
            listen: a.peer_listen.clone(),
            connect: a.peer_connect.clone(),
            echo: a.echo,
            copy_images: a.peer_copy_images,
            width: a.width,
            height: a.height,
            domain_id: a.domain_id,
        });
    }
    let wanted: Vec<String> = if a.transports.is_empty() {
        ALL.iter().map(|s| s.to_string()).collect()
    } else {
        a.transports.clone()
    };
    for w in &wanted {
        if !ALL.contains(&w.as_str()) {
            anyhow::bail!("--transports {w}: expected some of {}", ALL.join(", "));
        }
    }
    let (w, h) = (a.width, a.height);
    let js_bytes = encode_vec(&joint("bench"))?.len();
    let img_bytes = encode_vec(&image("bench", w, h))?.len();
    let message = |name: &str| match name {
        "joint" => ("JointState".to_string(), js_bytes),
        _ => (format!("Image {w}x{h} rgb8"), img_bytes),
    };

    eprintln!("transport-bench: in-process cost of one {w}x{h} image ...");
    let breakdown = breakdown(w, h)?;

    let root = source_root();
    let python = a
        .python
        .clone()
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let rclpy_python = a
        .rclpy_python
        .clone()
        .unwrap_or_else(|| root.join(".venv-ros2/bin/python"));
    let script = root.join("tests/bench/transport_peer.py");
    let geometry = vec![
        "--width".to_string(),
        w.to_string(),
        "--height".into(),
        h.to_string(),
    ];
    let ros_env = |domain: u16| {
        vec![
            ("ROS_DOMAIN_ID".to_string(), domain.to_string()),
            (
                "ROS_AUTOMATIC_DISCOVERY_RANGE".to_string(),
                "LOCALHOST".to_string(),
            ),
            (
                "RMW_IMPLEMENTATION".to_string(),
                "rmw_fastrtps_cpp".to_string(),
            ),
        ]
    };
    let py = |interp: &PathBuf, extra: &[&str], env: Vec<(String, String)>| Cmd::Python {
        python: interp.clone(),
        args: [script.display().to_string()]
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .chain(geometry.iter().cloned())
            .collect(),
        env,
    };

    let mut pairs = Vec::new();
    for (i, name) in wanted.iter().enumerate() {
        let port = a.port + i as u16;
        let ep = format!("tcp/127.0.0.1:{port}");
        let domain = a.domain_id + i as u16;
        let rust = |kind, shm, listen: bool, copy_images| Cmd::Rust {
            kind,
            shm,
            listen: listen.then(|| ep.clone()),
            connect: (!listen).then(|| ep.clone()),
            echo: false,
            copy_images,
            domain,
        };
        let rust_pair_with = |kind, shm, copy, label: String| Pair {
            path: "maniflow -> maniflow",
            transport: label,
            publisher: rust(kind, shm, true, copy),
            subscriber: rust(kind, shm, false, copy),
            rtt_path: None,
        };
        let rust_pair = |kind, shm, label| rust_pair_with(kind, shm, false, label);
        let py_zenoh = |shm: &str| Pair {
            path: "python -> python",
            transport: format!("eclipse-zenoh, shm {shm}"),
            publisher: py(
                &python,
                &[
                    "--mw", "zenoh", "--role", "pub", "--listen", &ep, "--shm", shm,
                ],
                vec![],
            ),
            subscriber: py(
                &python,
                &[
                    "--mw",
                    "zenoh",
                    "--role",
                    "sub",
                    "--connect",
                    &ep,
                    "--shm",
                    shm,
                ],
                vec![],
            ),
            rtt_path: None,
        };
        match name.as_str() {
            "zenoh" => pairs.push(rust_pair(
                TransportKind::Zenoh,
                false,
                "zenoh, shm off".into(),
            )),
            "zenoh-shm" => pairs.push(rust_pair(
                TransportKind::Zenoh,
                true,
                "zenoh, shm on".into(),
            )),
            "zenoh-shm-copy" => pairs.push(rust_pair_with(
                TransportKind::Zenoh,
                true,
                true,
                "zenoh copying, shm on".into(),
            )),
            "ros2-zenoh" => pairs.push(rust_pair(
                TransportKind::Ros2Zenoh,
                true,
                "rmw_zenoh (ros2-client), shm on".into(),
            )),
            "ros2-dds" => pairs.push(rust_pair(
                TransportKind::Ros2Dds,
                false,
                "DDS (RustDDS)".into(),
            )),
            "python-zenoh" => pairs.push(py_zenoh("off")),
            "python-zenoh-shm" => pairs.push(py_zenoh("on")),
            "rclpy" => {
                pairs.push(Pair {
                    path: "rclpy -> maniflow",
                    transport: "DDS (Fast DDS -> RustDDS)".into(),
                    publisher: py(
                        &rclpy_python,
                        &["--mw", "rclpy", "--role", "pub", "--rtt"],
                        ros_env(domain),
                    ),
                    subscriber: Cmd::Rust {
                        kind: TransportKind::Ros2Dds,
                        shm: false,
                        listen: None,
                        connect: None,
                        echo: true,
                        copy_images: false,
                        domain,
                    },
                    rtt_path: Some("rclpy -> maniflow -> rclpy"),
                });
                let domain = domain + 100;
                pairs.push(Pair {
                    path: "rclpy -> rclpy",
                    transport: "DDS (Fast DDS)".into(),
                    publisher: py(
                        &rclpy_python,
                        &["--mw", "rclpy", "--role", "pub", "--rtt"],
                        ros_env(domain),
                    ),
                    subscriber: py(
                        &rclpy_python,
                        &["--mw", "rclpy", "--role", "sub", "--echo"],
                        ros_env(domain),
                    ),
                    rtt_path: Some("rclpy -> rclpy -> rclpy"),
                });
            }
            _ => unreachable!(),
        }
    }

    let plan = [
        ("joint", a.joints, a.joint_hz),
        ("image", a.images, a.image_hz),
    ];
    let mut rows = Vec::new();
    for pair in &pairs {
        eprintln!("transport-bench: {} ({}) ...", pair.path, pair.transport);
        let t0 = Instant::now();
        let res = run_pair(pair, &plan, w, h);
        let blank = |name: &str, path: &str, measure: &str, why: Option<String>| {
            let (m, bytes) = message(name);
            Row {
                path: path.into(),
                transport: pair.transport.clone(),
                measure: measure.into(),
                message: m,
                bytes,
                sent: plan.iter().find(|p| p.0 == name).map(|p| p.1).unwrap_or(0),
                received: 0,
                latency_us: Percentiles::default(),
                shm: None,
                publish_call_us: None,
                to_callback_us: None,
                loan_us: None,
                fill_us: None,
                put_us: None,
                skipped: why,
            }
        };
        match res {
            Err(e) => {
                eprintln!("transport-bench:   skipped: {e:#}");
                for (name, _, _) in plan {
                    rows.push(blank(name, pair.path, "one-way", Some(format!("{e:#}"))));
                    if let Some(rp) = pair.rtt_path {
                        rows.push(blank(name, rp, "round trip", Some(format!("{e:#}"))));
                    }
                }
            }
            Ok(out) => {
                for (name, _, _) in plan {
                    let mut row = blank(name, pair.path, "one-way", out.failed.get(name).cloned());
                    let lat = to_latency(&out.one_way, name);
                    row.received = lat.count;
                    row.latency_us = lat;
                    if name == "image" {
                        row.shm = out.shm.clone();
                    }
                    let detail =
                        |v: &Value, key: String| v.get(&key).is_some().then(|| to_latency(v, &key));
                    row.publish_call_us = detail(&out.round_trip, format!("{name}.publish"));
                    row.to_callback_us = detail(&out.one_way, format!("{name}.callback"));
                    row.loan_us = detail(&out.round_trip, format!("{name}.loan"));
                    row.fill_us = detail(&out.round_trip, format!("{name}.fill"));
                    row.put_us = detail(&out.round_trip, format!("{name}.put"));
                    rows.push(row);
                    if let Some(rp) = pair.rtt_path {
                        let mut row = blank(name, rp, "round trip", out.failed.get(name).cloned());
                        let lat = to_latency(&out.round_trip, name);
                        row.received = lat.count;
                        row.latency_us = lat;
                        rows.push(row);
                    }
                }
                eprintln!(
                    "transport-bench:   done in {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
            }
        }
    }

    print_table(&rows, &breakdown);
    if let Some(p) = &a.json {
        let report = Report {
            rows,
            breakdown,
            host_cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
        };
        super::run::write_json_atomic(p, &report)?;
    }
    Ok(())
}

#[derive(Default)]
struct PairOut {
    one_way: Value,
    round_trip: Value,
    shm: Option<String>,
    failed: std::collections::BTreeMap<String, String>,
}

fn spawn(cmd: &Cmd, name: &str, role: &str, w: u32, h: u32) -> anyhow::Result<Peer> {
    match cmd {
        Cmd::Rust {
            kind,
            shm,
            listen,
            connect,
            echo,
            copy_images,
            domain,
        } => {
            // This very binary, even if a rebuild replaced the file meanwhile.
            let proc_exe = PathBuf::from("/proc/self/exe");
            let exe = if proc_exe.exists() {
                proc_exe
            } else {
                std::env::current_exe()?
            };
            let mut c = Command::new(exe);
            c.args(["transport-bench", "--peer", role])
                .args(["--peer-transport", &kind.to_string()])
                .args(["--width", &w.to_string(), "--height", &h.to_string()])
                .args(["--domain-id", &domain.to_string()]);
            if *shm {
                c.arg("--peer-shm");
            }
            if let Some(l) = listen {
                c.args(["--peer-listen", l]);
            }
            if let Some(l) = connect {
                c.args(["--peer-connect", l]);
            }
            if *echo {
                c.arg("--echo");
            }
            if *copy_images {
                c.arg("--peer-copy-images");
            }
            Peer::spawn(name, c)
        }
        Cmd::Python { python, args, env } => {
            if !python.exists() {
                anyhow::bail!("{name}: {} not found", python.display());
            }
            let mut c = Command::new(python);
            c.args(args).envs(env.iter().cloned());
            Peer::spawn(name, c)
        }
    }
}

fn run_pair(pair: &Pair, plan: &[(&str, u64, f64)], w: u32, h: u32) -> anyhow::Result<PairOut> {
    // The subscriber first, so that it is listening when the publisher starts.
    let mut sub = spawn(&pair.subscriber, "subscriber", "sub", w, h)?;
    let mut publ = spawn(&pair.publisher, "publisher", "pub", w, h)?;
    let ready = Duration::from_secs(60);
    sub.wait_for("ready", ready, |v| v.get("ready").is_some())?;
    publ.wait_for("ready", ready, |v| v.get("ready").is_some())?;
    let mut out = PairOut::default();
    for &(name, n, hz) in plan {
        publ.send(&format!("warm {name}"))?;
        // Discovery (DDS can take seconds), then let the warm-up settle.
        if let Err(e) = sub.wait_for(&format!("{name} sample"), Duration::from_secs(20), |v| {
            v.get("heard").and_then(Value::as_str) == Some(name)
        }) {
            out.failed.insert(name.to_string(), format!("{e:#}"));
            continue;
        }
        std::thread::sleep(Duration::from_millis(500));
        publ.send(&format!("run {name} {n} {hz}"))?;
        let span = Duration::from_secs_f64(n as f64 / hz * 1.5 + 20.0);
        publ.wait_for(&format!("end of the {name} run"), span, |v| {
            v.get("done").and_then(Value::as_str) == Some(name)
        })?;
        std::thread::sleep(Duration::from_millis(300));
    }
    let p = publ.finish(Duration::from_secs(20))?;
    let s = sub.finish(Duration::from_secs(20))?;
    out.one_way = s["results"].clone();
    out.round_trip = p["results"].clone();
    if let Some(c) = s.get("shm").filter(|c| !c.is_null()) {
        let (shm, bytes) = (
            c["received_shm"].as_u64().unwrap_or(0),
            c["received_bytes"].as_u64().unwrap_or(0),
        );
        out.shm = Some(format!("{shm} of {} samples in shm", shm + bytes));
    }
    Ok(out)
}

fn to_latency(results: &Value, name: &str) -> Percentiles {
    let mut lat = Latency::new();
    for ns in results[name].as_array().into_iter().flatten() {
        let ns = ns.as_i64().unwrap_or(0).max(0) as u64;
        lat.record(Duration::from_nanos(ns));
    }
    lat.percentiles()
}

/// The source tree this binary was built from (the bench peer and the venvs).
fn source_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
