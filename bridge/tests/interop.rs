//! Interop with real peers on loopback: a Python eclipse-zenoh session on our
//! native keys and on rmw_zenoh keys (with the attachment), and a Python Cyclone
//! DDS participant on `rt/...` topics (tests/peers/peer.py). Each peer publishes
//! JointState and Image (serialised by cyclonedds) that our transports must
//! receive and decode, and receives the Float64MultiArray commands we publish.
//! Skips with a visible message when the venv or a peer package is missing
//! (`make bootstrap` installs them; CI always has them).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maniflow_bridge::msg::{Float64MultiArray, Image, JointState};
use maniflow_bridge::so101::JOINT_NAMES;
use maniflow_bridge::transport::{
    AnyTransport, Qos, Received, Transport, TransportConfig, TransportKind,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv python with `module` importable, or None (and a visible SKIP line).
fn python_with(module: &str) -> Option<PathBuf> {
    let py = root().join(".venv/bin/python");
    let ok = py.is_file()
        && Command::new(&py)
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !ok {
        eprintln!(
            "SKIP: {} lacks the Python package {module:?} (run `make bootstrap`)",
            py.display()
        );
        return None;
    }
    Some(py)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const CYCLONE_LOOPBACK: &str = r#"<CycloneDDS><Domain id="any"><General><Interfaces><NetworkInterface name="lo"/></Interfaces><AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex><MaxAutoParticipantIndex>30</MaxAutoParticipantIndex><Peers><Peer address="127.0.0.1"/></Peers></Discovery></Domain></CycloneDDS>"#;

struct Peer {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Peer {
    fn spawn(py: &PathBuf, args: &[&str]) -> Peer {
        let mut child = Command::new(py)
            .arg(root().join("tests/peers/peer.py"))
            .args(args)
            .env("CYCLONEDDS_URI", CYCLONE_LOOPBACK)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn peer");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    l2.lock().unwrap().push(v);
                } else {
                    eprintln!("peer: {line}");
                }
            }
        });
        let p = Peer { child, lines };
        p.wait_for(
            |v| v.get("ready").is_some(),
            Duration::from_secs(30),
            "ready",
        );
        p
    }

    fn wait_for(
        &self,
        f: impl Fn(&serde_json::Value) -> bool,
        t: Duration,
        what: &str,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.lines.lock().unwrap().iter().find(|v| f(v)) {
                return v.clone();
            }
            assert!(start.elapsed() < t, "peer did not report {what} in {t:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn summary(mut self, t: Duration) -> serde_json::Value {
        let v = self.wait_for(|v| v.get("summary").is_some(), t, "its summary");
        let _ = self.child.wait();
        v["summary"].clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Got<M> = Arc<Mutex<Vec<Received<M>>>>;

/// Subscribes joint_states + head/image_raw, publishes joint_command for
/// `seconds`, then checks what came in.
fn exchange(t: &AnyTransport, seconds: f64) -> (Got<JointState>, Got<Image>, Arc<Mutex<u64>>) {
    let js: Got<JointState> = Arc::default();
    let img: Got<Image> = Arc::default();
    let errors = Arc::new(Mutex::new(0u64));
    let (j2, e2) = (js.clone(), errors.clone());
    let _s1 = t
        .subscribe::<JointState>(
            "joint_states",
            Qos::Sensor,
            Box::new(move |r| match r {
                Ok(x) => j2.lock().unwrap().push(x),
                Err(_) => *e2.lock().unwrap() += 1,
            }),
        )
        .unwrap();
    let (i2, e3) = (img.clone(), errors.clone());
    let _s2 = t
        .subscribe::<Image>(
            "head/image_raw",
            Qos::Sensor,
            Box::new(move |r| match r {
                Ok(x) => i2.lock().unwrap().push(x),
                Err(_) => *e3.lock().unwrap() += 1,
            }),
        )
        .unwrap();
    let p = t
        .publisher::<Float64MultiArray>("joint_command", Qos::Command)
        .unwrap();
    let start = Instant::now();
    let mut k = 0u32;
    while start.elapsed().as_secs_f64() < seconds {
        k += 1;
        let cmd =
            Float64MultiArray::vector("cmd", (0..6).map(|i| i as f64 + k as f64 * 0.5).collect());
        p.publish(&cmd).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    (js, img, errors)
}

fn check_received(js: &Got<JointState>, img: &Got<Image>, errors: &Arc<Mutex<u64>>) {
    let js = js.lock().unwrap();
    let img = img.lock().unwrap();
    assert!(
        js.len() >= 5,
        "only {} JointState samples received",
        js.len()
    );
    assert!(img.len() >= 5, "only {} Image samples received", img.len());
    assert_eq!(
        *errors.lock().unwrap(),
        0,
        "decode errors on valid peer data"
    );
    for r in js.iter() {
        let m = &r.msg;
        assert_eq!(m.name, JOINT_NAMES.map(String::from).to_vec());
        // positions 0.1*(i+1) + seq*1e-3 for some seq >= 1
        let seq = ((m.position[0] - 0.1) / 1e-3).round();
        assert!(seq >= 1.0, "{:?}", m.position);
        for (i, p) in m.position.iter().enumerate() {
            assert!(
                (p - (0.1 * (i + 1) as f64 + seq * 1e-3)).abs() < 1e-9,
                "{:?}",
                m.position
            );
        }
        assert_eq!(m.header.frame_id, "peer");
        // the stamp is the peer's wall clock, close to ours (same machine)
        assert!((r.recv_wall_ns - m.header.stamp.as_nanos()).abs() < 5_000_000_000);
    }
    for r in img.iter() {
        let m = &r.msg;
        assert_eq!(
            (m.width, m.height, m.step, m.encoding.as_str()),
            (4, 3, 12, "rgb8")
        );
        assert_eq!(m.data.len(), 36);
        let s = m.data[0] as usize;
        assert!(m
            .data
            .iter()
            .enumerate()
            .all(|(i, v)| *v as usize == (s + i) % 256));
    }
}

fn check_commands(summary: &serde_json::Value) {
    assert!(summary["commands"].as_u64().unwrap() >= 5, "{summary}");
    let last: Vec<f64> = summary["last_cmd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // our commands are (i + k * 0.5)
    let k = last[0] / 0.5;
    for (i, v) in last.iter().enumerate() {
        assert!((v - (i as f64 + k * 0.5)).abs() < 1e-9, "{last:?}");
    }
}

#[test]
fn native_zenoh_with_an_eclipse_zenoh_peer() {
    let Some(py) = python_with("zenoh") else {
        return;
    };
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let peer = Peer::spawn(&py, &["zenoh", "--listen", &ep, "--seconds", "5"]);
    let t = AnyTransport::open(
        &TransportConfig {
            kind: TransportKind::Zenoh,
            connect: vec![ep.clone()],
            ..Default::default()
        },
        "interop",
    )
    .unwrap();
    let (js, img, err) = exchange(&t, 3.5);
    let summary = peer.summary(Duration::from_secs(20));
    check_received(&js, &img, &err);
    check_commands(&summary);
}

#[test]
fn rmw_zenoh_keys_and_attachment_with_an_eclipse_zenoh_peer() {
    let Some(py) = python_with("zenoh") else {
        return;
    };
    let port = free_port();
    let ep = format!("tcp/127.0.0.1:{port}");
    let peer = Peer::spawn(
        &py,
        &[
            "rmw-zenoh",
            "--listen",
            &ep,
            "--domain",
            "13",
            "--seconds",
            "6",
        ],
    );
    let t = AnyTransport::open(
        &TransportConfig {
            kind: TransportKind::Ros2Zenoh,
            domain_id: Some(13),
            connect: vec![ep.clone()],
            ..Default::default()
        },
        "interop",
    )
    .unwrap();
    let (js, img, err) = exchange(&t, 4.0);
    let summary = peer.summary(Duration::from_secs(20));
    check_received(&js, &img, &err);
    check_commands(&summary);
    // every sample we sent carried rmw_zenoh's 33-byte attachment
    assert!(summary["attachment_33"].as_u64().unwrap() >= 5, "{summary}");
    assert_eq!(
        summary["attachment_other"].as_u64().unwrap(),
        0,
        "{summary}"
    );
    // and the source timestamp from the peer's attachment reached us
    assert!(js.lock().unwrap().iter().all(|r| r.source_ns.is_some()));
}

#[test]
fn ros2_dds_with_a_cyclone_dds_peer() {
    let Some(py) = python_with("cyclonedds") else {
        return;
    };
    let peer = Peer::spawn(&py, &["dds", "--domain", "57", "--seconds", "8"]);
    let t = AnyTransport::open(
        &TransportConfig {
            kind: TransportKind::Ros2Dds,
            domain_id: Some(57),
            ..Default::default()
        },
        "interop",
    )
    .unwrap();
    let (js, img, err) = exchange(&t, 6.0);
    let summary = peer.summary(Duration::from_secs(30));
    check_received(&js, &img, &err);
    check_commands(&summary);
}

/// Our REP-2016 hashes and field lists against the official
/// `share/<pkg>/msg/<T>.json` of the PyPI message wheels, Jazzy and Kilted
/// (`scripts/ros_msg_json.py`, run by `make bootstrap`).
#[test]
fn type_hashes_equal_the_official_jazzy_and_kilted_json() {
    use maniflow_bridge::type_hash::{rihs01, DESCRIPTIONS};
    let cache = root().join(".cache/ros-msgs");
    if !cache.join("jazzy").is_dir() || !cache.join("kilted").is_dir() {
        eprintln!(
            "SKIP: {} lacks the official message descriptions (run `make bootstrap`)",
            cache.display()
        );
        return;
    }
    let mut checked = 0;
    for distro in ["jazzy", "kilted"] {
        for d in DESCRIPTIONS {
            let path = cache.join(distro).join(format!("{}.json", d.type_name));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let official = &v["type_hashes"][0];
            assert_eq!(official["type_name"], d.type_name, "{}", path.display());
            assert_eq!(
                rihs01(d.type_name).unwrap(),
                official["hash_string"].as_str().unwrap(),
                "{distro} {}",
                d.type_name
            );
            // The field list itself, field by field (a hash mismatch alone
            // would not say which field is wrong).
            let fields = v["type_description_msg"]["type_description"]["fields"]
                .as_array()
                .unwrap();
            assert_eq!(fields.len(), d.fields.len(), "{distro} {}", d.type_name);
            for (f, ours) in fields.iter().zip(d.fields) {
                let t = &f["type"];
                assert_eq!(
                    (
                        f["name"].as_str().unwrap(),
                        t["type_id"].as_u64().unwrap(),
                        t["capacity"].as_u64().unwrap(),
                        t["string_capacity"].as_u64().unwrap(),
                        t["nested_type_name"].as_str().unwrap(),
                    ),
                    (
                        ours.name,
                        ours.type_id as u64,
                        ours.capacity,
                        ours.string_capacity,
                        ours.nested_type_name
                    ),
                    "{distro} {}",
                    d.type_name
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * DESCRIPTIONS.len());
}

/// The Image bytes ros2-client's rmw_zenoh backend puts on the wire (byte
/// fields written in bulk, `msg::with_bulk_bytes`) are exactly those of our
/// encoder, whose output is checked against Cyclone DDS frames.
#[test]
fn rmw_zenoh_images_are_the_bytes_of_our_checked_encoder() {
    use maniflow_bridge::msg::{encode_vec, Header, Time};
    use zenoh::Wait;
    let ep = format!("tcp/127.0.0.1:{}", free_port());
    let cfg = TransportConfig {
        kind: TransportKind::Ros2Zenoh,
        domain_id: Some(19),
        listen: vec![ep.clone()],
        connect: vec![],
        ..Default::default()
    };
    let mut zc = TransportConfig {
        kind: TransportKind::Zenoh,
        connect: vec![ep.clone()],
        ..Default::default()
    }
    .zenoh_session_config()
    .unwrap();
    zc.insert_json5("transport/shared_memory/enabled", "false")
        .unwrap();
    let t = AnyTransport::open(&cfg, "bytes").unwrap();
    let session = zenoh::open(zc).wait().unwrap();
    let sub = session
        .declare_subscriber("19/so101/head/image_raw/**")
        .wait()
        .unwrap();
    let p = t.publisher::<Image>("head/image_raw", Qos::Sensor).unwrap();
    let img = Image {
        header: Header {
            stamp: Time::new(3, 4),
            frame_id: "head".into(),
        },
        height: 48,
        width: 64,
        encoding: "rgb8".into(),
        is_bigendian: 0,
        step: 192,
        data: (0..48 * 192).map(|i| (i * 7 % 251) as u8).collect(),
    };
    let want = encode_vec(&img).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        p.publish(&img).unwrap();
        if let Ok(Some(s)) = sub.recv_timeout(Duration::from_millis(100)) {
            break s.payload().to_bytes().to_vec();
        }
        assert!(
            Instant::now() < deadline,
            "no sample from the rmw_zenoh publisher"
        );
    };
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "rmw_zenoh Image bytes differ from our encoder's"
    );
}
