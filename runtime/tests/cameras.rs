//! Cameras without ROS, with real components and no camera hardware: the
//! static ffmpeg of `make bootstrap` provides the sources (lavfi test
//! patterns) and the reference decoder.
//!
//! - the ffmpeg input: frames equal ffmpeg's own rgb24 output, stamped on
//!   arrival; a killed ffmpeg and a hung one (SIGSTOP) are replaced and frames
//!   resume; a missing file or device is reported, named, and retried;
//! - recorded MJPEG (with and without Huffman tables) and YUYV frames decode
//!   like ffmpeg decodes them (the V4L2 path's decoders);
//! - `maniflow cameras` on a machine without /dev/video;
//! - the example config launch/so101-cameras.toml, with its two V4L2 sources
//!   swapped for lavfi sources of the same size and rate, under `maniflow
//!   run` (a camera hangs mid-run: the node reports it stale, the reader
//!   restarts it, inference resumes) and `maniflow record`.
//!
//! Not covered (no /dev/video here): the V4L2 ioctls and mmap streaming on a
//! real device, kernel timestamps, a real USB unplug.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, Receiver};
use maniflow_bridge::camera::frame::decode_frame;
use maniflow_bridge::camera::source::{FfmpegSource, V4l2Source};
use maniflow_bridge::camera::{CameraEvent, CameraFrame, CameraReader, CameraSource, PixelFormat};
use maniflow_bridge::transport::wall_ns;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ffmpeg() -> PathBuf {
    maniflow_runtime::dataset::video::find_ffmpeg(&[&root()])
        .unwrap_or_else(|e| panic!("these tests need ffmpeg (`make bootstrap`): {e}"))
}

/// Processes of the node tests share 2 cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// An upper bound for events that normally take well under a second.
const PATIENCE: Duration = Duration::from_secs(30);

fn lavfi(graph: &str) -> FfmpegSource {
    FfmpegSource {
        ffmpeg: ffmpeg(),
        input: graph.into(),
        input_args: vec!["-re".into(), "-f".into(), "lavfi".into()],
        size: None,
        fps: None,
        stall: Duration::from_secs(1),
    }
}

fn start(source: CameraSource) -> (CameraReader, Receiver<CameraEvent>) {
    let (tx, rx) = unbounded();
    let r = CameraReader::start(
        "head",
        source,
        Box::new(move |ev| {
            let _ = tx.send(ev);
        }),
    )
    .unwrap();
    (r, rx)
}

/// The next event that `want` picks, within [`PATIENCE`]; the others are returned too.
fn next_event<T>(
    rx: &Receiver<CameraEvent>,
    mut want: impl FnMut(&CameraEvent) -> Option<T>,
) -> (T, Vec<CameraEvent>) {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let ev = rx
            .recv_deadline(deadline)
            .unwrap_or_else(|_| panic!("no such event; saw {seen:?}"));
        if let Some(t) = want(&ev) {
            return (t, seen);
        }
        seen.push(ev);
    }
}

fn frame(ev: &CameraEvent) -> Option<CameraFrame> {
    match ev {
        CameraEvent::Frame(f) => Some(f.clone()),
        _ => None,
    }
}

/// ffmpeg's own decode/conversion of `args` to rgb24 (raw bytes on stdout).
fn ffmpeg_rgb(args: &[&str]) -> Vec<u8> {
    let o = Command::new(ffmpeg())
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(args)
        .args(["-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

#[test]
fn ffmpeg_frames_match_ffmpeg_and_are_stamped_on_arrival() {
    let graph = "testsrc2=size=320x240:rate=30";
    let t0 = (Instant::now(), wall_ns());
    let (reader, rx) = start(CameraSource::Ffmpeg(lavfi(graph)));
    let (connected, _) = next_event(&rx, |e| match e {
        CameraEvent::Connected(d) => Some(d.clone()),
        _ => None,
    });
    assert!(connected.contains(graph), "{connected}");
    let frames: Vec<CameraFrame> = (0..4).map(|_| next_event(&rx, frame).0).collect();
    let now = (Instant::now(), wall_ns());
    // The first frames, pixel for pixel, as ffmpeg writes them itself.
    let want = ffmpeg_rgb(&["-f", "lavfi", "-i", graph, "-frames:v", "4"]);
    for (i, f) in frames.iter().enumerate() {
        let im = &f.image;
        assert_eq!((im.width, im.height, im.step), (320, 240, 960));
        assert_eq!(
            (im.encoding.as_str(), im.header.frame_id.as_str()),
            ("rgb8", "head")
        );
        assert!(
            im.data == want[i * 230_400..(i + 1) * 230_400],
            "frame {i} differs"
        );
        // stamped on arrival: between the start and now, in order, on both clocks
        let stamp =
            i64::from(im.header.stamp.sec) * 1_000_000_000 + i64::from(im.header.stamp.nanosec);
        assert_eq!(stamp, f.recv_wall_ns);
        assert!(t0.1 <= stamp && stamp <= now.1);
        assert!(t0.0 <= f.recv && f.recv <= now.0);
        if i > 0 {
            assert!(f.recv > frames[i - 1].recv && stamp > frames[i - 1].recv_wall_ns);
        }
    }
    let s = reader.finish();
    assert_eq!((s.connects, s.lost, s.corrupt), (1, 0, 0), "{s:?}");
    assert!(
        s.frames >= 4 && s.source == format!("ffmpeg {graph}"),
        "{s:?}"
    );
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: sends a signal to a child process of this test.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

#[test]
fn ffmpeg_killed_or_hung_is_replaced_and_frames_resume() {
    let (reader, rx) = start(CameraSource::Ffmpeg(lavfi("testsrc2=size=160x120:rate=30")));
    next_event(&rx, frame);
    let pid1 = reader.ffmpeg_pid().unwrap();
    // The source dies.
    signal(pid1, libc::SIGKILL);
    let (why, _) = next_event(&rx, |e| match e {
        CameraEvent::Lost(w) => Some(w.clone()),
        _ => None,
    });
    assert!(
        why.contains("camera head") && why.contains("testsrc2") && why.contains("ffmpeg ended"),
        "{why}"
    );
    next_event(&rx, |e| {
        matches!(e, CameraEvent::Connected(_)).then_some(())
    });
    next_event(&rx, frame);
    let pid2 = reader.ffmpeg_pid().unwrap();
    assert_ne!(pid1, pid2);
    // The source hangs (no exit, no frames): after stall_ms it is replaced.
    signal(pid2, libc::SIGSTOP);
    let (why, _) = next_event(&rx, |e| match e {
        CameraEvent::Lost(w) => Some(w.clone()),
        _ => None,
    });
    assert!(why.contains("no frame for 1000 ms"), "{why}");
    next_event(&rx, frame);
    let s = reader.finish();
    assert_eq!((s.connects, s.lost), (3, 2), "{s:?}");
    assert!(s.last_error.contains("no frame for"), "{s:?}");
}

#[test]
fn missing_inputs_are_named_and_retried() {
    let d = tempfile::tempdir().unwrap();
    let dev = d.path().join("video9");
    let (reader, rx) = start(CameraSource::V4l2(V4l2Source {
        device: dev.clone(),
        format: PixelFormat::Mjpeg,
        width: 640,
        height: 480,
        fps: 30,
        stall: Duration::from_secs(1),
    }));
    let (why, _) = next_event(&rx, |e| match e {
        CameraEvent::Lost(w) => Some(w.clone()),
        _ => None,
    });
    assert!(
        why.contains("camera head")
            && why.contains(&dev.display().to_string())
            && why.contains("No such file"),
        "{why}"
    );
    // Retried with backoff, repeats not reported again; a file that is no device:
    std::fs::write(&dev, b"").unwrap();
    let (why, _) = next_event(&rx, |e| match e {
        CameraEvent::Lost(w) => Some(w.clone()),
        _ => None,
    });
    assert!(why.contains("not a V4L2 device"), "{why}");
    let s = reader.finish();
    assert!(s.open_failures >= 2 && s.connects == 0, "{s:?}");

    let missing = d.path().join("missing.mp4");
    let mut src = lavfi("unused");
    src.input = missing.display().to_string();
    src.input_args.clear();
    let (reader, rx) = start(CameraSource::Ffmpeg(src));
    let (why, _) = next_event(&rx, |e| match e {
        CameraEvent::Lost(w) => Some(w.clone()),
        _ => None,
    });
    assert!(
        why.contains("camera head") && why.contains("missing.mp4") && why.contains("No such file"),
        "{why}"
    );
    drop(reader);
}

/// Max and mean absolute difference.
fn diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    (max, sum as f64 / a.len() as f64)
}

/// JPEG files from an MJPEG stream (split at SOI markers after an EOI).
fn split_jpegs(b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 2..b.len().saturating_sub(1) {
        if b[i - 2..i] == [0xFF, 0xD9] && b[i..i + 2] == [0xFF, 0xD8] {
            out.push(b[start..i].to_vec());
            start = i;
        }
    }
    out.push(b[start..].to_vec());
    out
}

fn strip_dht(j: &[u8]) -> Vec<u8> {
    let mut out = j[..2].to_vec();
    let mut i = 2;
    while j[i + 1] != 0xDA {
        let len = usize::from(u16::from_be_bytes([j[i + 2], j[i + 3]]));
        if j[i + 1] != 0xC4 {
            out.extend_from_slice(&j[i..i + 2 + len]);
        }
        i += 2 + len;
    }
    out.extend_from_slice(&j[i..]);
    out
}

#[test]
fn recorded_mjpeg_and_yuyv_frames_decode_like_ffmpeg() {
    let d = tempfile::tempdir().unwrap();
    let src = [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x480:rate=30",
        "-frames:v",
        "3",
    ];
    let run = |args: &[&str]| {
        let o = Command::new(ffmpeg())
            .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    // MJPEG as a UVC camera sends it: 4:2:2, standard Huffman tables (which
    // many cameras then leave out).
    let mjpeg = run(&[
        &src[..],
        &[
            "-pix_fmt", "yuvj422p", "-c:v", "mjpeg", "-huffman", "default", "-q:v", "3", "-f",
            "mjpeg", "pipe:1",
        ],
    ]
    .concat());
    let jpegs = split_jpegs(&mjpeg);
    assert_eq!(jpegs.len(), 3);
    for (i, j) in jpegs.iter().enumerate() {
        let path = d.path().join(format!("f{i}.jpg"));
        std::fs::write(&path, j).unwrap();
        // Chroma interpolated, as JPEG decoders do (libjpeg's "fancy
        // upsampling", zune-jpeg); ffmpeg's default conversion repeats each
        // chroma sample instead (114 levels off at coloured edges).
        let want = ffmpeg_rgb(&[
            "-i",
            path.to_str().unwrap(),
            "-sws_flags",
            "bilinear+accurate_rnd+full_chroma_int",
        ]);
        let ours = decode_frame(PixelFormat::Mjpeg, j, 640, 480, 0).unwrap();
        let (max, mean) = diff(&ours, &want);
        eprintln!(
            "mjpeg frame {i}: {} bytes, vs ffmpeg max {max} mean {mean:.3}",
            j.len()
        );
        assert!(
            mean < 0.5 && max <= 6,
            "mjpeg frame {i}: max {max} mean {mean}"
        );
        let bare = strip_dht(j);
        assert!(bare.len() < j.len());
        assert_eq!(
            decode_frame(PixelFormat::Mjpeg, &bare, 640, 480, 0).unwrap(),
            ours
        );
        // a damaged frame is an error or a picture, never a panic
        for cut in [3, 100, j.len() / 3] {
            let _ = decode_frame(PixelFormat::Mjpeg, &j[..cut], 640, 480, 0);
        }
        let mut flipped = j.clone();
        for k in (600..flipped.len()).step_by(97) {
            flipped[k] ^= 0x55;
        }
        let _ = decode_frame(PixelFormat::Mjpeg, &flipped, 640, 480, 0);
    }
    // YUYV 4:2:2 as V4L2 delivers it, and ffmpeg's conversion of the same bytes.
    let yuyv = run(&[
        &src[..],
        &["-pix_fmt", "yuyv422", "-f", "rawvideo", "pipe:1"],
    ]
    .concat());
    assert_eq!(yuyv.len(), 3 * 640 * 480 * 2);
    let path = d.path().join("f.yuyv");
    std::fs::write(&path, &yuyv).unwrap();
    let want = ffmpeg_rgb(&[
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuyv422",
        "-s",
        "640x480",
        "-i",
        path.to_str().unwrap(),
    ]);
    for i in 0..3 {
        let n = 640 * 480;
        let ours = decode_frame(
            PixelFormat::Yuyv,
            &yuyv[i * n * 2..(i + 1) * n * 2],
            640,
            480,
            1280,
        )
        .unwrap();
        let (max, mean) = diff(&ours, &want[i * n * 3..(i + 1) * n * 3]);
        eprintln!("yuyv frame {i}: vs ffmpeg max {max} mean {mean:.3}");
        assert!(
            mean < 1.0 && max <= 4,
            "yuyv frame {i}: max {max} mean {mean}"
        );
    }
    assert!(decode_frame(PixelFormat::Yuyv, &yuyv[..1000], 640, 480, 1280).is_err());
}

#[test]
fn maniflow_cameras_lists_devices_or_says_there_are_none() {
    let exe = env!("CARGO_BIN_EXE_maniflow");
    let o = Command::new(exe).arg("cameras").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let none = maniflow_bridge::camera::v4l2::list::video_nodes(Path::new("/dev")).is_empty();
    if none {
        assert!(out.contains("no V4L2 video devices"), "{out}");
    } else {
        eprintln!("this machine has cameras:\n{out}");
        assert!(out.contains("/dev/video"), "{out}");
    }
    let o = Command::new(exe)
        .args(["cameras", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().is_empty(), none);
    // the benchmark runs (its numbers are for the README, not asserted)
    let o = Command::new(exe)
        .current_dir(root())
        .args(["cameras", "--bench", "--frames", "3", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["mjpeg_total"]["count"], 3, "{b}");
}

// ---------------------------------------------------------------------------
// The example config under `maniflow run` and `maniflow record`

/// The lavfi sources that stand in for the example's two V4L2 cameras.
const HEAD_LAVFI: &str = r#"source = { ffmpeg = "testsrc2=size=640x480:rate=30", input_args = ["-re", "-f", "lavfi"], stall_ms = 1000 }"#;
const WRIST_LAVFI: &str =
    r#"source = { ffmpeg = "testsrc=size=320x240:rate=30", input_args = ["-re", "-f", "lavfi"] }"#;

/// launch/so101-cameras.toml, loaded as is (every key checked), then written
/// to `dir` with its V4L2 sources replaced by lavfi sources of the same size
/// and rate, connecting to `port`.
fn example_config(dir: &Path, port: u16) -> PathBuf {
    let path = root().join("launch/so101-cameras.toml");
    let cfg = maniflow_runtime::node::config::NodeConfig::load(&path).unwrap();
    let head = cfg.streams["head"].camera_source("head").unwrap().unwrap();
    assert_eq!(head.describe(), "v4l2 /dev/video0 (mjpeg 640x480 @ 30 fps)");
    let wrist = cfg.streams["wrist"]
        .camera_source("wrist")
        .unwrap()
        .unwrap();
    assert_eq!(wrist.describe(), "v4l2 /dev/video2 (yuyv 320x240 @ 30 fps)");
    let text = std::fs::read_to_string(&path).unwrap();
    let head_line = r#"source = { v4l2 = "/dev/video0", format = "mjpeg", width = 640, height = 480, fps = 30 }"#;
    let wrist_line = r#"source = { v4l2 = "/dev/video2", format = "yuyv", width = 320, height = 240, fps = 30 }"#;
    assert!(text.contains(head_line) && text.contains(wrist_line));
    let text = text
        .replace(head_line, HEAD_LAVFI)
        .replace(wrist_line, WRIST_LAVFI)
        .replace("\"../models/", &format!("\"{}/models/", root().display()))
        .replace("tcp/127.0.0.1:7447", &format!("tcp/127.0.0.1:{port}"));
    let out = dir.join("so101-cameras.toml");
    std::fs::write(&out, text).unwrap();
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process whose stderr lines are collected with their arrival time.
struct Proc {
    child: Child,
    /// stderr lines with their arrival time; the condvar wakes waiters on each.
    lines: Arc<(Mutex<Vec<(Instant, String)>>, Condvar)>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_maniflow"))
            .current_dir(root())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                l2.0.lock().unwrap().push((Instant::now(), l));
                l2.1.notify_all();
            }
        });
        Proc { child, lines }
    }

    /// Waits for stderr lines until `f` finds what it wants in them.
    fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&[(Instant, String)]) -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        let mut g = self.lines.0.lock().unwrap();
        loop {
            if let Some(t) = f(&g) {
                return t;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "never saw {what}: {:?}", *g);
            g = self.lines.1.wait_timeout(g, left).unwrap().0;
        }
    }

    fn text(&self) -> Vec<String> {
        self.lines
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.1.clone())
            .collect()
    }

    fn finish(mut self) -> Vec<String> {
        let st = self.child.wait().unwrap();
        let text = self.text();
        assert!(st.success(), "{text:?}");
        text
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Children of `pid` whose command line contains `needle`.
fn children_with(pid: u32, needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": the comm may hold spaces, so split after ')'
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(pid) && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(p);
        }
    }
    out
}

/// "chunks ok N" of a status line.
fn chunks_ok(line: &str) -> Option<u64> {
    let i = line.find("chunks ok ")? + "chunks ok ".len();
    line[i..].split_whitespace().next()?.parse().ok()
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn example_config_runs_the_node_and_survives_a_hung_camera() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = example_config(d.path(), port);
    let stats = d.path().join("run.json");
    let addr = format!("tcp/127.0.0.1:{port}");
    let _sim = Proc::spawn(&["sim", "--listen", &addr, "--duration", "40s", "--quiet"]);
    let node = Proc::spawn(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--duration",
        "60s",
        "--stats-json",
        stats.to_str().unwrap(),
    ]);
    // The policy runs on the cameras' frames.
    node.wait_for("chunks from the camera frames", |l| {
        l.iter()
            .any(|(_, s)| chunks_ok(s).is_some_and(|n| n > 0))
            .then_some(())
    });
    // The head camera hangs.
    let pids = children_with(node.child.id(), "640x480");
    assert_eq!(pids.len(), 1, "{pids:?}");
    signal(pids[0], libc::SIGSTOP);
    let back = node.wait_for("the head camera back", |l| {
        let lost = l
            .iter()
            .position(|(_, s)| s.contains("camera head: lost"))?;
        l[lost..]
            .iter()
            .find(|(_, s)| s.contains("camera head: connected"))
            .map(|(t, _)| *t)
    });
    // Inference resumes on the new frames.
    node.wait_for("chunks after the camera returned", |l| {
        let before = l
            .iter()
            .filter(|(t, _)| *t <= back)
            .filter_map(|(_, s)| chunks_ok(s))
            .last()?;
        l.iter()
            .filter(|(t, _)| *t > back)
            .filter_map(|(_, s)| chunks_ok(s))
            .any(|n| n > before)
            .then_some(())
    });
    // Done: SIGINT ends the run (stop ramp, stats written).
    signal(node.child.id() as i32, libc::SIGINT);
    let text = node.finish();
    let r = read_json(&stats);
    eprintln!(
        "node stats: inputs {} cameras {}",
        r["inputs"], r["cameras"]
    );
    let (head, cam) = (&r["inputs"]["head"], &r["cameras"]["head"]);
    assert!(head["accepted"].as_u64().unwrap() > 30, "{head}");
    assert!(
        head["stale"].as_u64().unwrap() > 0,
        "the hang was not seen as stale: {head}"
    );
    assert!(
        cam["connects"].as_u64().unwrap() >= 2 && cam["lost"].as_u64().unwrap() >= 1,
        "{cam}"
    );
    assert!(
        cam["last_error"]
            .as_str()
            .unwrap()
            .contains("no frame for 1000 ms"),
        "{cam}"
    );
    assert_eq!(r["cameras"]["wrist"]["lost"], 0, "{}", r["cameras"]);
    assert!(r["inputs"]["wrist"]["accepted"].as_u64().unwrap() > 30);
    assert!(
        r["chunks"]["produced"].as_u64().unwrap() > 5,
        "{}",
        r["chunks"]
    );
    assert!(
        text.iter()
            .any(|s| s.contains("camera wrist: connected: ffmpeg testsrc")),
        "{text:?}"
    );
}

#[test]
fn example_config_records_camera_frames() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let cfg = example_config(d.path(), free_port());
    let out = d.path().join("ds");
    let o = Command::new(env!("CARGO_BIN_EXE_maniflow"))
        .current_dir(root())
        .args([
            "record",
            "--config",
            cfg.to_str().unwrap(),
            "--expert",
            "--episodes",
            "1",
        ])
        .args([
            "--video",
            "png",
            "--keep-failed",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("camera head: connected: ffmpeg testsrc2"),
        "{err}"
    );
    let info: serde_json::Value = read_json(&out.join("meta/info.json"));
    let f = &info["features"];
    assert_eq!(
        f["observation.images.head"]["shape"],
        serde_json::json!([480, 640, 3]),
        "{f}"
    );
    assert_eq!(
        f["observation.images.wrist"]["shape"],
        serde_json::json!([240, 320, 3]),
        "{f}"
    );
    assert_eq!(info["total_episodes"], 1);
    assert!(info["total_frames"].as_u64().unwrap() > 10, "{info}");
}
