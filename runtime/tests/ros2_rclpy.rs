//! A real ROS 2 node in the loop: Jazzy rclpy on rmw_fastrtps_cpp (Fast DDS),
//! from PyPI into .venv-ros2 by `make bootstrap`, driven by tests/ros2/peer.py,
//! against our `ros2-dds` transport (RustDDS) in this process and the real
//! `maniflow sim` / `maniflow run`:
//! - messages both ways, every byte checked, at the published rates;
//! - rclpy's graph shows our node, namespace, topic types, QoS and the official
//!   REP-2016 type hashes (`get_publishers_info_by_topic`);
//! - `ROS_DOMAIN_ID` is honoured (a peer on another domain sees nothing);
//! - a QoS pairing that ROS 2 refuses (RELIABLE reader, BEST_EFFORT writer) is
//!   refused both ways, and the awaiting side names the silent topic;
//! - the node names an input stream that stays silent;
//! - the closed loop (sim + node on ros2-dds) with rclpy watching its topics.
//!
//! Loopback only: every rclpy process runs with ROS_AUTOMATIC_DISCOVERY_RANGE=
//! LOCALHOST and RMW_IMPLEMENTATION=rmw_fastrtps_cpp, our side with
//! `dds_networks = ["127.0.0.1"]`, each test on its own domain; as root (CI),
//! each test re-runs itself inside a private network namespace (`unshare -n`,
//! only `lo` up), where no packet can go anywhere else. Skips with a visible
//! message when .venv-ros2 is missing (fails instead under CI=...).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maniflow_bridge::msg::{
    CompressedImage, Duration as RosDuration, Float64MultiArray, Header, Image, JointState,
    JointTrajectory, JointTrajectoryPoint, Time,
};
use maniflow_bridge::so101::JOINT_NAMES;
use maniflow_bridge::transport::{
    AnyTransport, Publish, Qos, Received, Transport, TransportConfig, TransportError, TransportKind,
};
use serde_json::Value;

/// One test at a time (2 cores; each starts DDS participants and Python).
static SERIAL: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The official REP-2016 hashes (Jazzy = Kilted; the `share/<pkg>/msg/<T>.json`
/// of the PyPI message wheels, shared/design/TRANSPORT.md).
const OFFICIAL_HASHES: [(&str, &str); 5] = [
    (
        "sensor_msgs/msg/JointState",
        "RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e",
    ),
    (
        "sensor_msgs/msg/Image",
        "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
    ),
    (
        "sensor_msgs/msg/CompressedImage",
        "RIHS01_15640771531571185e2efc8a100baf923961a4d15d5569652e6cb6691e8e371a",
    ),
    (
        "trajectory_msgs/msg/JointTrajectory",
        "RIHS01_179b33eba59d676f6d967ac71fe35e7ca2f64b2f3928f4a018cec115e213796e",
    ),
    (
        "std_msgs/msg/Float64MultiArray",
        "RIHS01_1025ddc6b9552d191f89ef1a8d2f60f3d373e28b283d8891ddcc974e8c55397f",
    ),
];

// ------------------------------------------------------------ setup

/// .venv-ros2's python, or None after a visible SKIP line (a failure under CI).
fn rclpy_python() -> Option<PathBuf> {
    let py = root().join(".venv-ros2/bin/python");
    let ok = py.is_file()
        && Command::new(&py)
            .args(["-c", "import rclpy, sensor_msgs.msg, trajectory_msgs.msg"])
            .envs(ros_env(0))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !ok {
        let msg = format!(
            "{} cannot import rclpy (run `make bootstrap`: it installs Jazzy rclpy there)",
            py.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIP: {msg}");
        return None;
    }
    Some(py)
}

/// The environment of every process in a test: loopback-only discovery, Fast DDS,
/// the test's domain, logs out of $HOME.
fn ros_env(domain: u16) -> Vec<(&'static str, String)> {
    vec![
        ("ROS_DOMAIN_ID", domain.to_string()),
        ("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST".into()),
        ("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp".into()),
        (
            "ROS_LOG_DIR",
            std::env::temp_dir()
                .join("maniflow-ros2-test-logs")
                .display()
                .to_string(),
        ),
    ]
}

const NETNS_ENV: &str = "MANIFLOW_TEST_NETNS";

/// Runs `test` in a private network namespace when we are root and
/// `unshare -n` works: returns true when it ran there (the caller returns),
/// false when the caller runs the test body here (already inside, or not root).
fn ran_in_private_netns(test: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        loopback_up();
        return false;
    }
    let root_user = unsafe { libc::geteuid() } == 0;
    let works = root_user
        && Command::new("unshare")
            .args(["-n", "true"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !works {
        eprintln!("note: {test} runs on this host's loopback (no private network namespace: not root or no `unshare -n`)");
        return false;
    }
    let status = Command::new("unshare")
        .args(["-n", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .status()
        .expect("unshare");
    assert!(
        status.success(),
        "{test} failed inside its network namespace ({status}; its output is above)"
    );
    true
}

/// `ip link set lo up` without iproute2.
fn loopback_up() {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr), 0);
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(r, 0, "bringing lo up: {err}");
    }
}

/// Runs the body of a test: serialised, in its own network namespace when possible.
macro_rules! ros2_test {
    ($name:ident) => {{
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if ran_in_private_netns(stringify!($name)) {
            return;
        }
        match rclpy_python() {
            Some(py) => py,
            None => return,
        }
    }};
}

fn our_transport(domain: u16, node: &str) -> AnyTransport {
    AnyTransport::open(
        &TransportConfig {
            kind: TransportKind::Ros2Dds,
            domain_id: Some(domain),
            dds_networks: vec!["127.0.0.1".into()],
            ..Default::default()
        },
        node,
    )
    .expect("our ros2-dds transport")
}

// ------------------------------------------------------------ processes

/// A child process whose output lines are collected (and echoed with a prefix).
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    json: Arc<Mutex<Vec<Value>>>,
    text: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let json = Arc::new(Mutex::new(Vec::new()));
        let text = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (stream, is_out) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, true),
            (Box::new(err), false),
        ] {
            let (json, text, name) = (json.clone(), text.clone(), name.to_string());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) if is_out && v.is_object() => {
                            if v.get("status").is_none() {
                                eprintln!("[{name}] {line}");
                            }
                            json.lock().unwrap().push(v)
                        }
                        _ => {
                            eprintln!("[{name}] {line}");
                            text.lock().unwrap().push(line);
                        }
                    }
                }
            });
        }
        Proc {
            stdin: child.stdin.take(),
            child,
            json,
            text,
            name: name.to_string(),
        }
    }

    fn rclpy(py: &Path, domain: u16, args: &[&str]) -> Proc {
        let mut c = Command::new(py);
        c.arg(root().join("tests/ros2/peer.py"))
            .args(args)
            .envs(ros_env(domain));
        Proc::spawn(&format!("rclpy {}", args[0]), c)
    }

    fn maniflow(domain: u16, name: &str, args: &[&str]) -> Proc {
        let mut c = Command::new(env!("CARGO_BIN_EXE_maniflow"));
        c.current_dir(root()).args(args).envs(ros_env(domain));
        Proc::spawn(name, c)
    }

    fn send(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    /// The first JSON line for which `f` holds, waiting up to `t`.
    fn wait_json(&self, t: Duration, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.json.lock().unwrap().iter().find(|v| f(v)) {
                return v.clone();
            }
            if let Some(v) = self
                .json
                .lock()
                .unwrap()
                .iter()
                .find(|v| v.get("error").is_some())
            {
                panic!("{}: {v}", self.name);
            }
            assert!(
                start.elapsed() < t,
                "{} did not report {what} within {t:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The newest `status` line of a peer.
    fn last_status(&self) -> Option<Value> {
        self.json
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|v| v.get("status").cloned())
    }

    fn has_text(&self, needle: &str) -> bool {
        self.text.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    fn wait_text(&self, t: Duration, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self
                .text
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                start.elapsed() < t,
                "{} printed no line with {needle:?} within {t:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then waits (SIGKILL after 10 s).
    fn interrupt(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        self.wait_exit(Duration::from_secs(10));
    }

    fn wait_exit(&mut self, t: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < t {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Sends "stop" and returns the peer's summary line.
    fn summary(&mut self, t: Duration) -> Value {
        self.send("stop");
        let v = self.wait_json(t, "its summary", |v| v.get("summary").is_some());
        self.wait_exit(Duration::from_secs(10));
        v
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGINT);
            }
            self.wait_exit(Duration::from_secs(5));
        }
    }
}

// ------------------------------------------------------------ patterns (tests/ros2/peer.py)

fn js_positions(seq: u64) -> Vec<f64> {
    (0..6).map(|i| seq as f64 + i as f64 / 8.0).collect()
}
fn js_velocities(seq: u64) -> Vec<f64> {
    (0..6).map(|i| -(seq as f64) - i as f64 / 4.0).collect()
}
fn command_values(seq: u64) -> Vec<f64> {
    (0..6).map(|i| seq as f64 + i as f64 / 4.0).collect()
}
fn chunk_positions(seq: u64, p: usize) -> Vec<f64> {
    (0..6)
        .map(|i| seq as f64 + p as f64 / 16.0 + i as f64 / 4.0)
        .collect()
}
const IMG_W: u32 = 320;
const IMG_H: u32 = 240;
fn image_byte(seq: u64, k: usize) -> u8 {
    ((k as u64 + seq * 7) % 251) as u8
}
fn jpeg_bytes(seq: u64) -> Vec<u8> {
    let n = 2000 + (seq % 97) as usize;
    let mut v = vec![0xFF, 0xD8];
    v.extend((0..n).map(|k| ((seq as usize + 3 * k) % 256) as u8));
    v.extend([0xFF, 0xD9]);
    v
}

fn frame_seq(h: &Header, tag: &str) -> Option<u64> {
    let (t, n) = h.frame_id.split_once(' ')?;
    (t == tag).then(|| n.parse().ok()).flatten()
}

fn check_stamp(h: &Header, recv_wall_ns: i64) -> Result<(), String> {
    // the peer's clock is ours (same machine)
    if (recv_wall_ns - h.stamp.as_nanos()).abs() > 5_000_000_000 {
        return Err(format!("stamp {:?} is not now", h.stamp));
    }
    Ok(())
}

fn check_joint_state(m: &JointState, recv_wall_ns: i64) -> (Option<u64>, Result<(), String>) {
    let seq = frame_seq(&m.header, "js");
    let r = (|| {
        let seq = seq.ok_or(format!("frame_id {:?}", m.header.frame_id))?;
        check_stamp(&m.header, recv_wall_ns)?;
        if m.name != JOINT_NAMES.map(String::from).to_vec() {
            return Err(format!("names {:?}", m.name));
        }
        if m.position != js_positions(seq)
            || m.velocity != js_velocities(seq)
            || !m.effort.is_empty()
        {
            return Err(format!(
                "seq {seq}: position {:?} velocity {:?} effort {:?}",
                m.position, m.velocity, m.effort
            ));
        }
        Ok(())
    })();
    (seq, r)
}

fn check_image(m: &Image, recv_wall_ns: i64) -> (Option<u64>, Result<(), String>) {
    let seq = frame_seq(&m.header, "head");
    let r = (|| {
        let seq = seq.ok_or(format!("frame_id {:?}", m.header.frame_id))?;
        check_stamp(&m.header, recv_wall_ns)?;
        let shape = (
            m.width,
            m.height,
            m.step,
            m.encoding.as_str(),
            m.is_bigendian,
        );
        if shape != (IMG_W, IMG_H, IMG_W * 3, "rgb8", 0) {
            return Err(format!("shape {shape:?}"));
        }
        if m.data.len() != (IMG_W * IMG_H * 3) as usize {
            return Err(format!("{} bytes", m.data.len()));
        }
        if let Some(k) = (0..m.data.len()).find(|&k| m.data[k] != image_byte(seq, k)) {
            return Err(format!("seq {seq}: byte {k} is {}", m.data[k]));
        }
        Ok(())
    })();
    (seq, r)
}

fn check_compressed(m: &CompressedImage, recv_wall_ns: i64) -> (Option<u64>, Result<(), String>) {
    let seq = frame_seq(&m.header, "wrist");
    let r = (|| {
        let seq = seq.ok_or(format!("frame_id {:?}", m.header.frame_id))?;
        check_stamp(&m.header, recv_wall_ns)?;
        if m.format != "jpeg" {
            return Err(format!("format {:?}", m.format));
        }
        if m.data != jpeg_bytes(seq) {
            return Err(format!(
                "seq {seq}: {} bytes, not the pattern",
                m.data.len()
            ));
        }
        Ok(())
    })();
    (seq, r)
}

/// What one of our subscriptions received.
#[derive(Default)]
struct Rx {
    n: u64,
    bad: u64,
    bad_reason: String,
    seqs: BTreeSet<u64>,
    dup: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Rx {
    fn got(&mut self, seq: Option<u64>, r: Result<(), String>, at: Instant) {
        self.n += 1;
        self.first.get_or_insert(at);
        self.last = Some(at);
        if let Err(e) = r {
            self.bad += 1;
            self.bad_reason = e;
        }
        if let Some(s) = seq {
            if !self.seqs.insert(s) {
                self.dup += 1;
            }
        }
    }
    fn rate_hz(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) if b > a && self.n > 1 => {
                (self.n - 1) as f64 / (b - a).as_secs_f64()
            }
            _ => 0.0,
        }
    }
    fn last_seq(&self) -> u64 {
        self.seqs.iter().next_back().copied().unwrap_or(0)
    }
    fn gaps(&self) -> u64 {
        match (self.seqs.first(), self.seqs.last()) {
            (Some(a), Some(b)) => (b - a + 1) - self.seqs.len() as u64,
            _ => 0,
        }
    }
}

type Shared = Arc<Mutex<Rx>>;

fn subscribe<M: maniflow_bridge::msg::RosMessage + Send + Sync + 'static>(
    t: &AnyTransport,
    topic: &str,
    check: fn(&M, i64) -> (Option<u64>, Result<(), String>),
) -> (Shared, maniflow_bridge::transport::Subscription) {
    let rx: Shared = Arc::default();
    let r2 = rx.clone();
    let sub = t
        .subscribe::<M>(
            topic,
            Qos::Sensor,
            Box::new(move |r: Result<Received<M>, TransportError>| {
                let mut s = r2.lock().unwrap();
                match r {
                    Ok(x) => {
                        let (seq, ok) = check(&x.msg, x.recv_wall_ns);
                        s.got(seq, ok, x.recv)
                    }
                    Err(e) => s.got(None, Err(e.to_string()), Instant::now()),
                }
            }),
        )
        .unwrap();
    (rx, sub)
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count in {v}"))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

// ------------------------------------------------------------ tests

/// rclpy publishes JointState (100 Hz), Image (320x240 rgb8, 30 Hz) and
/// CompressedImage (30 Hz) with the sensor-data QoS to our subscriptions; we
/// publish JointState (sensor QoS, 100 Hz), Float64MultiArray commands (50 Hz)
/// and JointTrajectory chunks (10 Hz, both RELIABLE) to its subscriptions.
/// Every message is checked byte for byte on the receiving side.
#[test]
fn rclpy_and_our_dds_transport_exchange_every_message_intact() {
    let py = ros2_test!(rclpy_and_our_dds_transport_exchange_every_message_intact);
    let domain = 71;
    let t = our_transport(domain, "maniflow_exchange");
    let (rx_js, _s1) = subscribe::<JointState>(&t, "joint_states", check_joint_state);
    let (rx_img, _s2) = subscribe::<Image>(&t, "head/image_raw", check_image);
    let (rx_jpg, _s3) =
        subscribe::<CompressedImage>(&t, "wrist/image_raw/compressed", check_compressed);
    let p_goal: Box<dyn Publish<JointState>> = t.publisher("joint_goal", Qos::Sensor).unwrap();
    let p_cmd: Box<dyn Publish<Float64MultiArray>> =
        t.publisher("joint_command", Qos::Command).unwrap();
    let p_chunk: Box<dyn Publish<JointTrajectory>> =
        t.publisher("action_chunk", Qos::Command).unwrap();

    let seconds = 3.0;
    let mut peer = Proc::rclpy(
        &py,
        domain,
        &["exchange", "--seconds", &seconds.to_string()],
    );
    let t_disc = Instant::now();
    peer.wait_json(Duration::from_secs(45), "discovery", |v| {
        v.get("ready").is_some()
    });
    eprintln!(
        "rclpy <-> RustDDS discovery (both directions) took {:.2} s",
        t_disc.elapsed().as_secs_f64()
    );

    // Ours: 100 Hz ticks; goal every tick, command every 2nd, chunk every 10th.
    let names: Vec<String> = JOINT_NAMES.map(String::from).to_vec();
    let (mut n_goal, mut n_cmd, mut n_chunk) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let ticks = (seconds * 100.0) as u32;
    for k in 0..ticks {
        let due = start + Duration::from_millis(10 * k as u64);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        n_goal += 1;
        p_goal
            .publish(&JointState {
                header: Header::new(Time::now(), format!("goal {n_goal}")),
                name: names.clone(),
                position: js_positions(n_goal),
                velocity: js_velocities(n_goal),
                effort: vec![],
            })
            .unwrap();
        if k % 2 == 0 {
            n_cmd += 1;
            p_cmd
                .publish(&Float64MultiArray::vector("joints", command_values(n_cmd)))
                .unwrap();
        }
        if k % 10 == 0 {
            n_chunk += 1;
            let points = (0..10)
                .map(|p| JointTrajectoryPoint {
                    positions: chunk_positions(n_chunk, p),
                    velocities: vec![],
                    accelerations: vec![],
                    effort: vec![],
                    time_from_start: RosDuration {
                        sec: (p / 4) as i32,
                        nanosec: (p % 4) as u32 * 250_000_000,
                    },
                })
                .collect();
            p_chunk
                .publish(&JointTrajectory {
                    header: Header::new(Time::now(), format!("chunk {n_chunk}")),
                    joint_names: names.clone(),
                    points,
                })
                .unwrap();
        }
    }
    let ours_s = start.elapsed().as_secs_f64();
    peer.send(&format!(
        "sent {{\"joint_goal\": {n_goal}, \"joint_command\": {n_cmd}, \"action_chunk\": {n_chunk}}}"
    ));
    let published = peer.wait_json(Duration::from_secs(30), "its publishing", |v| {
        v.get("published").is_some() && v.get("summary").is_none()
    });
    // Ours: wait for the peer's last message of each topic (or 1 s of quiet).
    let want = |k: &str| u(&published, &["published", k]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let done = [
            (&rx_js, want("joint_states")),
            (&rx_img, want("head/image_raw")),
            (&rx_jpg, want("wrist/image_raw/compressed")),
        ]
        .iter()
        .all(|(rx, n)| {
            let r = rx.lock().unwrap();
            r.last_seq() == *n || r.last.is_none_or(|l| l.elapsed() > Duration::from_secs(1))
        });
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let summary = peer.wait_json(Duration::from_secs(40), "its summary", |v| {
        v.get("summary").is_some()
    })["summary"]
        .clone();

    // Peer -> us.
    let peer_s = f(&published, &["seconds"]);
    let mut report = Vec::new();
    for (topic, rx, nominal) in [
        ("joint_states", &rx_js, 100.0),
        ("head/image_raw", &rx_img, 30.0),
        ("wrist/image_raw/compressed", &rx_jpg, 30.0),
    ] {
        let r = rx.lock().unwrap();
        let sent = want(topic);
        report.push(format!(
            "rclpy -> us {topic}: {} of {sent} received ({:.0} Hz published over {peer_s:.1} s, {:.1} Hz received), gaps {}, duplicates {}, bad {}",
            r.n,
            sent as f64 / peer_s,
            r.rate_hz(),
            r.gaps(),
            r.dup,
            r.bad
        ));
        assert_eq!(r.bad, 0, "{topic}: {} bad, last: {}", r.bad, r.bad_reason);
        assert_eq!(r.dup, 0, "{topic}: duplicates");
        assert!(
            r.n as f64 >= 0.5 * sent as f64,
            "{topic}: only {} of {sent} arrived",
            r.n
        );
        assert!(
            r.rate_hz() >= 0.5 * nominal,
            "{topic}: {:.1} Hz received, {nominal} Hz published",
            r.rate_hz()
        );
    }
    // Us -> peer.
    for (topic, sent, nominal, reliable) in [
        ("joint_goal", n_goal, n_goal as f64 / ours_s, false),
        ("joint_command", n_cmd, n_cmd as f64 / ours_s, true),
        ("action_chunk", n_chunk, n_chunk as f64 / ours_s, true),
    ] {
        let s = &summary[topic];
        let n = u(s, &["n"]);
        report.push(format!(
            "us -> rclpy {topic} ({}): {n} of {sent} received ({nominal:.0} Hz published, {:.1} Hz received), first seq {}, gaps {}, duplicates {}, bad {}",
            if reliable { "RELIABLE" } else { "BEST_EFFORT" },
            f(s, &["rate_hz"]),
            s["first"],
            s["gaps"],
            s["dup"],
            s["bad"]
        ));
        assert_eq!(u(s, &["bad"]), 0, "{topic}: {s}");
        assert_eq!(u(s, &["dup"]), 0, "{topic}: {s}");
        assert!(n as f64 >= 0.5 * sent as f64, "{topic}: {n} of {sent}: {s}");
        assert!(f(s, &["rate_hz"]) >= 0.5 * nominal, "{topic}: {s}");
        if reliable {
            // Everything from the first delivered sample on, in order, to the last one.
            assert_eq!(u(s, &["gaps"]), 0, "{topic}: {s}");
            assert_eq!(u(s, &["reorder"]), 0, "{topic}: {s}");
            assert_eq!(u(s, &["last"]), sent, "{topic}: {s}");
        }
    }
    for l in &report {
        eprintln!("{l}");
    }
}

/// rclpy's graph API shows our node (name, namespace), our topics with their
/// types and QoS, and the official REP-2016 type hash of every endpoint.
#[test]
fn rclpy_sees_our_node_topics_types_qos_and_type_hashes() {
    let py = ros2_test!(rclpy_sees_our_node_topics_types_qos_and_type_hashes);
    let domain = 72;
    let t = our_transport(domain, "maniflow_policy");
    let _p1: Box<dyn Publish<JointState>> = t.publisher("joint_states", Qos::Sensor).unwrap();
    let _p2: Box<dyn Publish<Image>> = t.publisher("head/image_raw", Qos::Sensor).unwrap();
    let _p3: Box<dyn Publish<CompressedImage>> = t
        .publisher("head/image_raw/compressed", Qos::Sensor)
        .unwrap();
    let _p4: Box<dyn Publish<Float64MultiArray>> =
        t.publisher("joint_command", Qos::Command).unwrap();
    let _p5: Box<dyn Publish<JointTrajectory>> = t.publisher("action_chunk", Qos::Command).unwrap();
    let _s1 = t
        .subscribe::<Image>("wrist/image_raw", Qos::Sensor, Box::new(|_| {}))
        .unwrap();
    let _s2 = t
        .subscribe::<Float64MultiArray>("episode", Qos::Command, Box::new(|_| {}))
        .unwrap();
    // (topic, type, reliability, we publish)
    let expect = [
        (
            "/so101/joint_states",
            "sensor_msgs/msg/JointState",
            "BEST_EFFORT",
            true,
        ),
        (
            "/so101/head/image_raw",
            "sensor_msgs/msg/Image",
            "BEST_EFFORT",
            true,
        ),
        (
            "/so101/head/image_raw/compressed",
            "sensor_msgs/msg/CompressedImage",
            "BEST_EFFORT",
            true,
        ),
        (
            "/so101/joint_command",
            "std_msgs/msg/Float64MultiArray",
            "RELIABLE",
            true,
        ),
        (
            "/so101/action_chunk",
            "trajectory_msgs/msg/JointTrajectory",
            "RELIABLE",
            true,
        ),
        (
            "/so101/wrist/image_raw",
            "sensor_msgs/msg/Image",
            "BEST_EFFORT",
            false,
        ),
        (
            "/so101/episode",
            "std_msgs/msg/Float64MultiArray",
            "RELIABLE",
            false,
        ),
    ];
    let mut args = vec!["graph", "--node", "maniflow_policy", "--ns", "/so101"];
    for e in &expect {
        args.extend(["--topic", e.0]);
    }
    let mut peer = Proc::rclpy(&py, domain, &args);
    let g = peer.wait_json(Duration::from_secs(45), "the graph", |v| {
        v.get("graph").is_some()
    })["graph"]
        .clone();
    peer.wait_exit(Duration::from_secs(10));
    assert!(
        g.get("timeout").is_none(),
        "rclpy did not see all of our node's endpoints: {g:#}"
    );
    let nodes: Vec<(String, String)> = serde_json::from_value(g["nodes"].clone()).unwrap();
    assert!(
        nodes.contains(&("maniflow_policy".into(), "/so101".into())),
        "{nodes:?}"
    );
    let mut hash_errors = Vec::new();
    for (topic, ty, rel, publishes) in expect {
        let types: Vec<String> = serde_json::from_value(g["topics"][topic].clone())
            .unwrap_or_else(|_| panic!("{topic} not in rclpy's topic list: {g:#}"));
        assert_eq!(types, vec![ty.to_string()], "{topic}");
        let side = if publishes {
            "publishers"
        } else {
            "subscriptions"
        };
        let eps = g[side][topic].as_array().unwrap();
        let ours: Vec<&Value> = eps
            .iter()
            .filter(|e| e["node_name"] == "maniflow_policy" && e["node_namespace"] == "/so101")
            .collect();
        assert_eq!(ours.len(), 1, "{topic} {side}: {eps:?}");
        let e = ours[0];
        assert_eq!(e["topic_type"], ty, "{topic}: {e}");
        assert_eq!(e["reliability"], rel, "{topic}: {e}");
        assert_eq!(e["durability"], "VOLATILE", "{topic}: {e}");
        let official = OFFICIAL_HASHES.iter().find(|h| h.0 == ty).unwrap().1;
        eprintln!(
            "rclpy sees {side} {topic}: {ty}, {rel}, type hash {}",
            e["topic_type_hash"]
        );
        if e["topic_type_hash"] != official {
            hash_errors.push(format!(
                "{topic} ({ty}): rclpy reports type hash {}, official {official}",
                e["topic_type_hash"]
            ));
        }
    }
    assert!(hash_errors.is_empty(), "{}", hash_errors.join("\n"));
}

/// `maniflow sim` on ROS_DOMAIN_ID 73 (from the environment): an rclpy context
/// on 73 sees the node and its joint states; one on 74 sees neither, and the
/// commands it publishes never reach the simulator.
#[test]
fn ros_domain_id_is_honoured() {
    let py = ros2_test!(ros_domain_id_is_honoured);
    let (domain, other) = (73, 74);
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("sim.json");
    let mut sim = Proc::maniflow(
        domain,
        "sim",
        &[
            "sim",
            "--transport",
            "ros2-dds",
            "--quiet",
            "--stats-json",
            stats.to_str().unwrap(),
        ],
    );
    let mut peer = Proc::rclpy(
        &py,
        domain,
        &[
            "domains",
            "--domain",
            &domain.to_string(),
            "--other-domain",
            &other.to_string(),
            "--seconds",
            "2",
        ],
    );
    let s = peer.wait_json(Duration::from_secs(60), "its summary", |v| {
        v.get("summary").is_some()
    })["summary"]
        .clone();
    peer.wait_exit(Duration::from_secs(10));
    sim.interrupt();
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    eprintln!(
        "domains: {s}; sim commands received {}",
        st["commands_received"]
    );
    assert_eq!(
        s["here_ok"], true,
        "domain {domain} did not see the sim: {s}"
    );
    assert!(
        s["nodes"]["here"]
            .as_array()
            .unwrap()
            .contains(&Value::from("/so101/so101_sim")),
        "{s}"
    );
    assert!(u(&s, &["received", "here"]) >= 20, "{s}");
    assert!(
        !s["nodes"]["other"]
            .as_array()
            .unwrap()
            .contains(&Value::from("/so101/so101_sim")),
        "domain {other} saw our node: {s}"
    );
    assert_eq!(u(&s, &["received", "other"]), 0, "{s}");
    assert_eq!(u(&s, &["publishers_seen", "other"]), 0, "{s}");
    assert_eq!(u(&s, &["other_subscribers_matched"]), 0, "{s}");
    assert!(u(&s, &["other_commands_sent"]) > 10, "{s}");
    assert_eq!(st["commands_received"], 0, "{st}");
    assert_eq!(st["commands_malformed"], 0, "{st}");
}

/// ROS 2 refuses a RELIABLE subscription on a BEST_EFFORT publication. Our
/// BEST_EFFORT joint_states: rclpy's RELIABLE subscription gets nothing and an
/// incompatible-QoS event, its sensor-data one gets the stream. rclpy's
/// BEST_EFFORT joint_command into `maniflow sim --wait-for-command` (a RELIABLE
/// subscription): refused too (Fast DDS reports it on its side), the simulator
/// names the silent topic instead of holding without a word, and starts as
/// soon as rclpy publishes RELIABLE.
#[test]
fn qos_pairing_ros2_refuses_is_refused_and_the_silent_topic_named() {
    let py = ros2_test!(qos_pairing_ros2_refuses_is_refused_and_the_silent_topic_named);
    let domain = 75;
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("sim.json");
    let mut sim = Proc::maniflow(
        domain,
        "sim",
        &[
            "sim",
            "--transport",
            "ros2-dds",
            "--wait-for-command",
            "--quiet",
            "--stats-json",
            stats.to_str().unwrap(),
        ],
    );
    let mut peer = Proc::rclpy(&py, domain, &["qos"]);
    peer.wait_json(Duration::from_secs(30), "ready", |v| {
        v.get("ready").is_some()
    });
    // Both refusals seen by Fast DDS, the control subscription fed, the sim's report.
    let start = Instant::now();
    let status = loop {
        if let Some(s) = peer.last_status() {
            let ev = |k: &str| u(&s, &["events", k]);
            if u(&s, &["received", "best_effort"]) >= 20
                && ev("sub_reliable_incompatible") >= 1
                && ev("pub_best_effort_incompatible") >= 1
                && sim.has_text("still holding episode 0")
            {
                break s;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "no refusal seen on both sides and reported within 45 s; last status {:?}",
            peer.last_status()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let report = sim.wait_text(Duration::ZERO, "still holding episode 0");
    assert!(
        report.contains("rt/so101/joint_command")
            && report.contains("ros2-dds")
            && report.contains("RELIABLE")
            && report.contains("BEST_EFFORT"),
        "{report}"
    );
    assert!(
        !sim.has_text("start of episode 0"),
        "a BEST_EFFORT command reached the RELIABLE subscription"
    );
    assert_eq!(u(&status, &["received", "reliable"]), 0, "{status}");
    // The compatible pairing: RELIABLE commands start the episode.
    peer.send("reliable");
    sim.wait_text(Duration::from_secs(30), "start of episode 0");
    let s = peer.summary(Duration::from_secs(20))["summary"].clone();
    sim.interrupt();
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    eprintln!(
        "qos: {s}\nsim: {report}\nsim commands received {}",
        st["commands_received"]
    );
    assert_eq!(u(&s, &["received", "reliable"]), 0, "{s}");
    assert!(u(&s, &["received", "best_effort"]) >= 20, "{s}");
    for k in ["sub_reliable_incompatible", "pub_best_effort_incompatible"] {
        let ev = s["events"][k].as_array().unwrap();
        assert!(
            !ev.is_empty()
                && ev
                    .iter()
                    .all(|e| e["policy"].as_str().unwrap().contains("RELIABILITY")),
            "{k}: {ev:?}"
        );
    }
    for k in ["sub_best_effort_incompatible", "pub_reliable_incompatible"] {
        assert!(s["events"][k].as_array().unwrap().is_empty(), "{k}: {s}");
    }
    assert!(u(&st, &["commands_received"]) > 0, "{st}");
}

/// `maniflow run` on ros2-dds with rclpy publishing only the joint states: the
/// node takes them (rclpy's JointState through our validation) and names each
/// camera and the tactile stream as silent, with topic, transport and type.
#[test]
fn node_names_a_silent_stream() {
    let py = ros2_test!(node_names_a_silent_stream);
    let domain = 77;
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("run.json");
    let mut peer = Proc::rclpy(&py, domain, &["joints"]);
    let mut node = Proc::maniflow(
        domain,
        "run",
        &[
            "run",
            "--config",
            "launch/so101.toml",
            "--transport",
            "ros2-dds",
            "--quiet",
            "--stats-json",
            stats.to_str().unwrap(),
        ],
    );
    let mut lines = Vec::new();
    for (name, topic, ty) in [
        ("head", "rt/so101/head/image_raw", "sensor_msgs/msg/Image"),
        ("wrist", "rt/so101/wrist/image_raw", "sensor_msgs/msg/Image"),
        (
            "tactile",
            "rt/so101/tactile",
            "std_msgs/msg/Float32MultiArray",
        ),
    ] {
        let l = node.wait_text(
            Duration::from_secs(40),
            &format!("stream `{name}` is silent"),
        );
        assert!(
            l.contains(topic)
                && l.contains("ros2-dds")
                && l.contains(ty)
                && l.contains("ROS_DOMAIN_ID 77"),
            "{l}"
        );
        lines.push(l);
    }
    node.interrupt();
    let s = peer.summary(Duration::from_secs(20));
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    eprintln!("node inputs: {}\npeer: {s}", st["inputs"]);
    assert!(!node.has_text("stream `joints` is silent"));
    assert!(
        u(&st, &["inputs", "joints", "accepted"]) > 50,
        "{}",
        st["inputs"]
    );
    assert_eq!(
        u(&st, &["inputs", "joints", "invalid"]),
        0,
        "{}",
        st["inputs"]
    );
    assert_eq!(
        u(&st, &["inputs", "head", "received"]),
        0,
        "{}",
        st["inputs"]
    );
}

/// The closed loop with a real ROS 2 node in it: `maniflow sim` and `maniflow
/// run` (the bundled policy) on ros2-dds, an rclpy node watching the camera,
/// command and chunk topics and reporting their rates; the episode succeeds.
#[test]
fn closed_loop_on_ros2_dds_with_an_rclpy_node_watching() {
    let py = ros2_test!(closed_loop_on_ros2_dds_with_an_rclpy_node_watching);
    let domain = 76;
    let dir = tempfile::tempdir().unwrap();
    let sim_stats = dir.path().join("sim.json");
    let run_stats = dir.path().join("run.json");
    let mut watch = Proc::rclpy(&py, domain, &["watch"]);
    watch.wait_json(Duration::from_secs(30), "ready", |v| {
        v.get("ready").is_some()
    });
    let mut sim = Proc::maniflow(
        domain,
        "sim",
        &[
            "sim",
            "--transport",
            "ros2-dds",
            "--seed",
            "0",
            "--episodes",
            "1",
            "--wait-for-command",
            "--quiet",
            "--stats-json",
            sim_stats.to_str().unwrap(),
        ],
    );
    let mut node = Proc::maniflow(
        domain,
        "run",
        &[
            "run",
            "--config",
            "launch/so101.toml",
            "--transport",
            "ros2-dds",
            "--quiet",
            "--duration",
            "120s",
            "--stats-json",
            run_stats.to_str().unwrap(),
        ],
    );
    // The simulator ends after its episode (success + 1 s hold, or 20 s timeout).
    let finished = sim.wait_exit(Duration::from_secs(100));
    node.interrupt();
    let w = watch.summary(Duration::from_secs(20));
    assert!(finished, "the simulator did not finish its episode");
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&sim_stats).unwrap()).unwrap();
    let run: Value = serde_json::from_str(&std::fs::read_to_string(&run_stats).unwrap()).unwrap();
    let sm = &w["summary"];
    eprintln!(
        "closed loop on ros2-dds: episode {}, node {:.1} Hz, chunks accepted {}; rclpy saw head {:.1} Hz, wrist {:.1} Hz, joint_command {:.1} Hz, action_chunk {:.1} Hz; nodes {}",
        st["episodes"][0],
        f(&run, &["achieved_rate_hz"]),
        run["chunks"]["accepted"],
        f(sm, &["head/image_raw", "rate_hz"]),
        f(sm, &["wrist/image_raw", "rate_hz"]),
        f(sm, &["joint_command", "rate_hz"]),
        f(sm, &["action_chunk", "rate_hz"]),
        w["nodes"]
    );
    assert_eq!(st["episodes"][0]["success"], true, "{st}");
    let nodes = w["nodes"].as_array().unwrap();
    for n in ["/so101/so101_sim", "/so101/maniflow_policy"] {
        assert!(
            nodes.contains(&Value::from(n)),
            "rclpy did not see {n}: {nodes:?}"
        );
    }
    for (topic, nominal) in [
        ("head/image_raw", 30.0),
        ("wrist/image_raw", 30.0),
        ("joint_command", 30.0),
    ] {
        let r = f(sm, &[topic, "rate_hz"]);
        assert!(
            r >= 0.5 * nominal,
            "{topic}: rclpy saw {r:.1} Hz of {nominal}: {sm}"
        );
        assert_eq!(u(sm, &[topic, "bad"]), 0, "{topic}: {sm}");
    }
    assert!(u(sm, &["action_chunk", "n"]) > 0, "{sm}");
    assert_eq!(u(sm, &["action_chunk", "bad"]), 0, "{sm}");
}
