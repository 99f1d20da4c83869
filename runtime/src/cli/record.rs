//! `maniflow record`: subscribe to the robot's streams (any transport) and
//! write a LeRobot v3.0 dataset, one atomic episode at a time.
//!
//! Streams come from the node config (`streams.*`: joints, cameras, tactile
//! taxels), the action from the command topic (`outputs.command_topic`, what a
//! leader arm or the scripted expert sends to the follower). Episodes are
//! delimited by the robot's `episode` topic (`maniflow sim` announces start and
//! end) or, for robots that announce none, by `--episode-s` with `--reset-s`
//! between them. A frame is taken for every new image of the first camera,
//! once every camera has the same stamp (or 15 ms later), with the newest
//! joints, taxels and command. `--expert` starts `maniflow sim --expert` on a
//! free loopback port and records its scripted expert; `--in-process` (with
//! `--expert`) runs that same simulator loop inside this process without
//! transports, faster than real time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dataset::synth::{ACTION, STATE, TACTILE};
use crate::dataset::{DatasetWriter, Frame, VideoCodec, WriterOptions};
use crate::node::cameras::{camera_sources, logging_sink};
use crate::node::config::{NodeConfig, StreamType};
use crate::node::record::{
    camera_key, record_sim_expert_in_process, set_episode_quality, so101_features, EpisodeRecord,
    EpisodeTiming, InProcessOptions, RecordSummary, TimingAcc, ROBOT_TYPE, SIM_TASK, SLIP_TASK,
};
use crate::node::streams::{compressed_input, image_input, joints_from_msg, ImageSlot};
use anyhow::{bail, Context};
use crossbeam::channel::unbounded;
use maniflow_bridge::camera::{CameraEvent, CameraReader, CameraSource};
use maniflow_bridge::msg::{
    CompressedImage, Float32MultiArray, Float64MultiArray, Image, JointState,
};
use maniflow_bridge::sim::SimConfig;
use maniflow_bridge::transport::{AnyTransport, Qos, Transport, TransportKind};

use super::run::write_json_atomic;
use super::sim::{
    SimTask, EPISODE_CONTROL_TOPIC, EVENT_END_SUCCESS, EVENT_END_TIMEOUT, EVENT_START,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Node configuration (TOML) naming the transport and the streams, e.g. launch/so101.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Dataset directory to create (absent or empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Episodes to save.
    #[arg(long)]
    pub episodes: usize,
    /// Start `maniflow sim --expert` on a free loopback port and record its scripted expert.
    #[arg(long)]
    pub expert: bool,
    /// With --expert: run the simulator loop in this process (no transport), faster than real time.
    #[arg(long, requires = "expert")]
    pub in_process: bool,
    /// Simulator seed (--expert).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Simulator task (--expert): pick, or pick-slip (touch decides; the default
    /// --task text becomes the fragile cube's).
    #[arg(long, value_enum, default_value_t = SimTask::Pick, requires = "expert")]
    pub sim_task: SimTask,
    /// Nominal frame rate (default: control.rate_hz of the config).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Task description stored with every frame.
    #[arg(long, default_value = SIM_TASK)]
    pub task: String,
    /// Camera storage: av1 (LeRobot's default), h264, or png (images in the parquet files).
    #[arg(long, default_value = "av1")]
    pub video: String,
    /// Topic of the action (default: outputs.command_topic of the config).
    #[arg(long)]
    pub action_topic: Option<String>,
    /// Topic of the robot's episode events ("" = none; then --episode-s is required).
    #[arg(long, default_value = "episode")]
    pub episode_topic: String,
    /// Fixed episode length in seconds, for robots that announce no episodes.
    #[arg(long)]
    pub episode_s: Option<f64>,
    /// Pause between fixed-length episodes (s).
    #[arg(long, default_value_t = 2.0)]
    pub reset_s: f64,
    /// Simulator episode timeout (s, --expert).
    #[arg(long, default_value_t = 20.0)]
    pub timeout_s: f64,
    /// Keep episodes the robot reports as failed (default: discard them).
    #[arg(long)]
    pub keep_failed: bool,
    /// Zenoh endpoint to connect to (replaces transport.connect).
    #[arg(long)]
    pub connect: Vec<String>,
    /// Overall limit (default: none).
    #[arg(long, value_parser = super::run::parse_duration)]
    pub duration: Option<Duration>,
    /// Write the per-episode summary here as JSON.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Only the final summary.
    #[arg(long)]
    pub quiet: bool,
    /// Teleoperate while recording: the leader arm's serial port (its position,
    /// through the safety filter, is the action) ...
    #[arg(long, requires = "follower")]
    pub leader: Option<String>,
    /// ... and the follower's (its position is observation.state); no joint or
    /// command topics then.
    #[arg(long, requires = "leader")]
    pub follower: Option<String>,
    #[arg(long, default_value = "so101")]
    pub leader_id: String,
    #[arg(long, default_value = "so101")]
    pub follower_id: String,
    /// Directory of both arms' `<id>.json` (default: LeRobot's directories).
    #[arg(long)]
    pub calibration_dir: Option<PathBuf>,
    /// Teleoperation rate (Hz).
    #[arg(long, default_value_t = 100.0)]
    pub teleop_rate: f64,
}

fn parse_video(s: &str) -> anyhow::Result<Option<VideoCodec>> {
    Ok(match s {
        "av1" => Some(VideoCodec::Av1),
        "h264" => Some(VideoCodec::H264),
        "png" | "none" => None,
        other => bail!("--video {other:?}: expected av1, h264 or png"),
    })
}

fn print_episode(r: &EpisodeRecord, target: usize, saved: usize, quiet: bool) {
    if quiet {
        return;
    }
    let t = &r.timing;
    eprintln!(
        "record: {} {:>3}/{target}: {} frames, {:.2} Hz (nominal {}), dropped {}{}{}{}",
        if r.dataset_index.is_some() {
            "saved episode"
        } else {
            "discarded     "
        },
        saved,
        t.frames,
        t.achieved_fps,
        t.nominal_fps,
        t.dropped_frames,
        if t.rate_flagged { ", RATE FLAGGED" } else { "" },
        match r.success {
            Some(true) => ", success",
            Some(false) => ", failed",
            None => "",
        },
        if r.dataset_index.is_some() {
            format!(", saved in {:.2} s", r.save_s)
        } else {
            String::new()
        },
    );
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    if a.sim_task == SimTask::PickSlip && a.task == SIM_TASK {
        a.task = SLIP_TASK.to_string();
    }
    if a.episodes == 0 {
        bail!("--episodes must be >= 1");
    }
    let video = parse_video(&a.video)?;
    let mut cfg = NodeConfig::load(&a.config)?;
    let fps = a.fps.unwrap_or(cfg.control.rate_hz);
    if !(fps.is_finite() && fps > 0.0 && fps <= 1000.0) {
        bail!("--fps {fps}: must be in (0, 1000]");
    }
    let summary = if a.in_process {
        let opts = InProcessOptions {
            sim: SimConfig {
                seed: a.seed,
                slip: a.sim_task.slip(),
                ..SimConfig::default()
            },
            episodes: a.episodes,
            fps,
            episode_timeout_s: a.timeout_s,
            video,
            task: a.task.clone(),
            keep_failed: a.keep_failed,
            tactile_image_key: cfg
                .streams
                .iter()
                .find(|(_, s)| s.kind == StreamType::PressureImage)
                .map(|(n, _)| format!("observation.{n}")),
            ..InProcessOptions::default()
        };
        let mut saved = 0usize;
        if cfg.streams.values().any(|s| s.source.is_some()) {
            eprintln!("record: --in-process records the simulator's own cameras; the config's camera sources are not opened");
        }
        eprintln!(
            "record: in-process simulator (seed {}), scripted expert, {} episodes -> {}",
            a.seed,
            a.episodes,
            a.out.display()
        );
        record_sim_expert_in_process(&a.out, &opts, &mut |r| {
            saved += usize::from(r.dataset_index.is_some());
            print_episode(r, a.episodes, saved, a.quiet);
        })?
    } else {
        let mut sim: Option<SimChild> = None;
        if a.expert {
            let s = SimChild::spawn(a.seed, a.sim_task, a.timeout_s)?;
            cfg.transport.kind = TransportKind::Zenoh;
            cfg.transport.connect = vec![s.endpoint.clone()];
            cfg.transport.listen = vec![];
            sim = Some(s);
        } else if !a.connect.is_empty() {
            cfg.transport.connect = a.connect.clone();
        }
        if a.episode_topic.is_empty() && a.episode_s.is_none() {
            bail!("--episode-topic \"\" needs --episode-s (fixed-length episodes)");
        }
        let res = record_topics(&a, &cfg, fps, video);
        drop(sim);
        res?
    };
    eprintln!(
        "record: {} episodes saved ({} discarded), {} frames, {} flagged for rate, in {:.1} s -> {}",
        summary.episodes_saved,
        summary.episodes_discarded,
        summary.frames,
        summary.flagged,
        summary.wall_s,
        summary.root.display()
    );
    if let Some(p) = &a.summary_json {
        write_json_atomic(p, &summary)?;
    }
    Ok(())
}

/// `maniflow sim --expert` as a child on a free loopback port (killed on drop).
struct SimChild {
    child: Child,
    endpoint: String,
}

impl SimChild {
    fn spawn(seed: u64, task: SimTask, timeout_s: f64) -> anyhow::Result<SimChild> {
        let port = free_port()?;
        let endpoint = format!("tcp/127.0.0.1:{port}");
        let exe = std::env::current_exe().context("locating the maniflow binary")?;
        let child = Command::new(exe)
            .args([
                "sim",
                "--expert",
                "--wait-for-start",
                "--quiet",
                "--listen",
                &endpoint,
            ])
            .args([
                "--seed",
                &seed.to_string(),
                "--task",
                task.name(),
                "--episode-s",
                &timeout_s.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting `maniflow sim --expert`")?;
        Ok(SimChild { child, endpoint })
    }
}

impl Drop for SimChild {
    fn drop(&mut self) {
        // SIGINT first (clean exit), then kill.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

#[derive(Default)]
struct CamLatest {
    slot: Option<ImageSlot>,
    stamp_ns: i64,
    recv: Option<Instant>,
}

#[derive(Default)]
struct Latest {
    joints: Option<([f32; 6], Instant)>,
    cams: Vec<CamLatest>,
    taxels: Option<(Vec<f32>, Instant)>,
    /// Pressure image streams, in config order: `(stamp ns, height, width, cells)`.
    pressure: Vec<Option<(i64, usize, usize, Vec<f32>)>>,
    action: Option<([f32; 6], Instant)>,
}

/// Subscribes pressure image stream `i` (32FC1) into `latest.pressure[i]`.
fn subscribe_pressure(
    t: &AnyTransport,
    i: usize,
    name: &str,
    topic: &str,
    latest: &Arc<Mutex<Latest>>,
    c: &Arc<Counters>,
) -> anyhow::Result<maniflow_bridge::transport::Subscription> {
    let (l, c, name) = (latest.clone(), c.clone(), name.to_string());
    Ok(t.subscribe::<Image>(
        topic,
        Qos::Sensor,
        Box::new(move |r| match r {
            Err(e) => c.bad(&name, true, e.to_string()),
            Ok(x) => match crate::node::streams::pressure_input(&x.msg, x.recv_wall_ns) {
                Err(e) => c.bad(&name, false, e),
                Ok(p) => {
                    if let Ok(mut g) = l.lock() {
                        g.pressure[i] = Some(p);
                    }
                }
            },
        }),
    )?)
}

#[derive(Default)]
struct Counters {
    malformed: AtomicU64,
    invalid: AtomicU64,
    last_error: Mutex<String>,
}

impl Counters {
    fn bad(&self, what: &str, malformed: bool, why: String) {
        if malformed {
            self.malformed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.invalid.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut l) = self.last_error.lock() {
            *l = format!("{what}: {why}");
        }
    }
}

enum EpisodeState {
    Idle,
    Recording {
        source: Option<u64>,
        timing: TimingAcc,
        started: Instant,
    },
    Resetting(Instant),
}

/// Teleoperation beside the recorder: the leader drives the follower, and every
/// tick the command sent (the action) and the follower's position (the state)
/// become the newest values the recorder samples.
struct TeleopThread {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TeleopThread {
    fn start(
        a: &Args,
        leader: &str,
        follower: &str,
        latest: Arc<Mutex<Latest>>,
    ) -> anyhow::Result<TeleopThread> {
        let arms = super::teleop::Arms {
            leader: leader.to_string(),
            follower: follower.to_string(),
            leader_id: a.leader_id.clone(),
            follower_id: a.follower_id.clone(),
            calibration_dir: a.calibration_dir.clone(),
            baud: 1_000_000,
        };
        let rate = a.teleop_rate;
        let mut tele = super::teleop::Teleop::open(&arms, rate)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("maniflow-teleop".into())
            .spawn(move || {
                let r = super::teleop::drive(&mut tele, rate, &s2, None, |cmd, present| {
                    if let Ok(mut g) = latest.lock() {
                        let now = Instant::now();
                        g.joints = Some((*present, now));
                        g.action = Some((*cmd, now));
                    }
                });
                tele.finish();
                if let Err(e) = r {
                    eprintln!("record: teleoperation stopped: {e:#}");
                }
            })?;
        Ok(TeleopThread {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TeleopThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn record_topics(
    a: &Args,
    cfg: &NodeConfig,
    fps: f64,
    video: Option<VideoCodec>,
) -> anyhow::Result<RecordSummary> {
    let t0 = Instant::now();
    let t = AnyTransport::open(&cfg.transport, "maniflow_record")
        .with_context(|| format!("opening the {} transport", cfg.transport.kind))?;
    // Streams: cameras in config order (BTreeMap: by name), joints, tactile.
    let mut cam_names: Vec<(String, String, StreamType)> = Vec::new();
    let mut joints: Option<(String, crate::node::config::JointUnits)> = None;
    let mut tactile_topic: Option<String> = None;
    let mut pressure_names: Vec<(String, String)> = Vec::new();
    for (name, s) in &cfg.streams {
        match s.kind {
            StreamType::Image | StreamType::CompressedImage => {
                cam_names.push((name.clone(), s.topic.clone(), s.kind))
            }
            StreamType::JointState => {
                joints = Some((
                    s.topic.clone(),
                    s.units.unwrap_or(crate::node::config::JointUnits::Lerobot),
                ))
            }
            StreamType::Taxels => tactile_topic = Some(s.topic.clone()),
            StreamType::PressureImage => pressure_names.push((name.clone(), s.topic.clone())),
        }
    }
    let teleop = a.leader.is_some();
    let (joint_topic, units) = match joints {
        Some(j) => j,
        None if teleop => (
            "(follower arm)".to_string(),
            crate::node::config::JointUnits::Lerobot,
        ),
        None => bail!(
            "config {}: no joint_state stream (observation.state needs one)",
            a.config.display()
        ),
    };
    if cam_names.is_empty() {
        bail!("config {}: no camera stream", a.config.display());
    }
    let latest = Arc::new(Mutex::new(Latest {
        cams: (0..cam_names.len()).map(|_| CamLatest::default()).collect(),
        pressure: vec![None; pressure_names.len()],
        ..Default::default()
    }));
    let counters = Arc::new(Counters::default());
    let mut subs = Vec::new();
    let _teleop = match (&a.leader, &a.follower) {
        (Some(leader), Some(follower)) => {
            Some(TeleopThread::start(a, leader, follower, latest.clone())?)
        }
        _ => None,
    };
    if !teleop {
        let (l, c) = (latest.clone(), counters.clone());
        subs.push(t.subscribe::<JointState>(
            &joint_topic,
            Qos::Sensor,
            Box::new(move |r| match r {
                Err(e) => c.bad("joints", true, e.to_string()),
                Ok(x) => match joints_from_msg(&x.msg, units) {
                    Ok(q) => {
                        if let Ok(mut g) = l.lock() {
                            g.joints = Some((q, x.recv));
                        }
                    }
                    Err(e) => c.bad("joints", false, e),
                },
            }),
        )?);
    }
    // Cameras with a `source` are read directly (node::cameras), the rest subscribed.
    let sources: std::collections::BTreeMap<String, CameraSource> =
        camera_sources(cfg, &[&a.config])?.into_iter().collect();
    let mut cam_readers = Vec::new();
    for (i, (name, topic, kind)) in cam_names.iter().enumerate() {
        let (l, c) = (latest.clone(), counters.clone());
        let cam = name.clone();
        let name = name.clone();
        let store = move |r: Result<(ImageSlot, i64), String>, recv: Instant, c: &Counters| match r
        {
            Ok((slot, stamp)) => {
                if let Ok(mut g) = l.lock() {
                    g.cams[i] = CamLatest {
                        slot: Some(slot),
                        stamp_ns: stamp,
                        recv: Some(recv),
                    };
                }
            }
            Err(e) => c.bad(&name, false, e),
        };
        if let Some(src) = sources.get(&cam) {
            let label = cam.clone();
            let sink = logging_sink("record", &cam, move |ev| match ev {
                CameraEvent::Frame(f) => store(image_input(f.image, 0, f.recv_wall_ns), f.recv, &c),
                CameraEvent::Corrupt(e) => c.bad(&label, true, e),
                CameraEvent::Connected(_) | CameraEvent::Lost(_) => {}
            });
            cam_readers.push(
                CameraReader::start(&cam, src.clone(), sink)
                    .with_context(|| format!("camera {cam}: starting its thread"))?,
            );
            continue;
        }
        let sub = match kind {
            StreamType::CompressedImage => t.subscribe::<CompressedImage>(
                topic,
                Qos::Sensor,
                Box::new(move |r| match r {
                    Err(e) => c.bad("camera", true, e.to_string()),
                    Ok(x) => store(compressed_input(x.msg, 0, x.recv_wall_ns), x.recv, &c),
                }),
            )?,
            _ => t.subscribe::<Image>(
                topic,
                Qos::Sensor,
                Box::new(move |r| match r {
                    Err(e) => c.bad("camera", true, e.to_string()),
                    Ok(x) => store(image_input(x.msg, 0, x.recv_wall_ns), x.recv, &c),
                }),
            )?,
        };
        subs.push(sub);
    }
    if let Some(topic) = &tactile_topic {
        let (l, c) = (latest.clone(), counters.clone());
        subs.push(t.subscribe::<Float32MultiArray>(
            topic,
            Qos::Sensor,
            Box::new(move |r| match r {
                Err(e) => c.bad("tactile", true, e.to_string()),
                Ok(x) => {
                    if let Some((i, v)) =
                        x.msg.data.iter().enumerate().find(|(_, v)| !v.is_finite())
                    {
                        c.bad("tactile", false, format!("taxel {i} is {v}"));
                    } else if let Ok(mut g) = l.lock() {
                        g.taxels = Some((x.msg.data, x.recv));
                    }
                }
            }),
        )?);
    }
    for (i, (name, topic)) in pressure_names.iter().enumerate() {
        subs.push(subscribe_pressure(&t, i, name, topic, &latest, &counters)?);
    }
    let action_topic = if teleop {
        "(leader arm)".to_string()
    } else {
        a.action_topic
            .clone()
            .unwrap_or_else(|| cfg.outputs.command_topic.clone())
    };
    if action_topic.is_empty() {
        bail!("no action topic: set --action-topic or outputs.command_topic");
    }
    if !teleop {
        let (l, c) = (latest.clone(), counters.clone());
        subs.push(t.subscribe::<Float64MultiArray>(
            &action_topic,
            Qos::Command,
            Box::new(move |r| match r {
                Err(e) => c.bad("action", true, e.to_string()),
                Ok(x) if x.msg.data.len() == 6 && x.msg.data.iter().all(|v| v.is_finite()) => {
                    let mut q = [0.0f32; 6];
                    for (d, s) in q.iter_mut().zip(&x.msg.data) {
                        *d = *s as f32;
                    }
                    if let Ok(mut g) = l.lock() {
                        g.action = Some((q, x.recv));
                    }
                }
                Ok(x) => c.bad(
                    "action",
                    false,
                    format!(
                        "{} values (6 finite joint targets expected)",
                        x.msg.data.len()
                    ),
                ),
            }),
        )?);
    }
    let (ev_tx, ev_rx) = unbounded::<(u64, f64)>();
    if !a.episode_topic.is_empty() {
        let c = counters.clone();
        subs.push(t.subscribe::<Float64MultiArray>(
            &a.episode_topic,
            Qos::Command,
            Box::new(move |r| match r {
                Ok(x) if x.msg.data.len() >= 2 && x.msg.data[0] >= 0.0 => {
                    let _ = ev_tx.send((x.msg.data[0] as u64, x.msg.data[1]));
                }
                Ok(_) => c.bad("episode", false, "expected [episode, event, t]".into()),
                Err(e) => c.bad("episode", true, e.to_string()),
            }),
        )?);
    }
    let start_pub = if a.expert {
        Some(t.publisher::<Float64MultiArray>(EPISODE_CONTROL_TOPIC, Qos::Command)?)
    } else {
        None
    };

    let stop = super::stop_on_signal(Some(
        "record: stopping: the episode in progress is discarded, saved ones are kept",
    ))?;

    let features_cams = |g: &Latest| -> Option<Vec<(String, usize, usize)>> {
        cam_names
            .iter()
            .zip(&g.cams)
            .map(|((n, _, _), c)| c.slot.as_ref().map(|s| (n.clone(), s.height, s.width)))
            .collect()
    };
    eprintln!(
        "record: {} transport, cameras [{}], joints {joint_topic}, tactile {}, action {action_topic}, episodes {}; waiting for data",
        cfg.transport.kind,
        cam_names.iter().map(|c| sources.get(&c.0).map_or(c.1.clone(), |s| s.describe())).collect::<Vec<_>>().join(", "),
        tactile_topic.as_deref().unwrap_or("-"),
        if a.episode_topic.is_empty() { format!("fixed {} s", a.episode_s.unwrap_or(0.0)) } else { format!("from `{}`", a.episode_topic) },
    );

    let mut writer: Option<WriterThread> = None;
    let mut state = EpisodeState::Idle;
    let mut tally = Tally::default();
    // Episodes handed to the writer to save (it confirms them asynchronously).
    let mut queued_saves = 0usize;
    let mut last_trigger_stamp: i64 = i64::MIN;
    let mut last_trigger_at = Instant::now();
    let mut last_start_req = Instant::now() - Duration::from_secs(1);
    let mut sim_started = false;
    let mut incomplete = 0u64;
    let data_deadline = Instant::now() + Duration::from_secs(30);
    let fixed = a.episode_topic.is_empty();

    // Ends the episode in `state`: hands it to the writer to save, or discards it.
    let end_episode = |w: Option<&WriterThread>,
                       st: EpisodeState,
                       success: Option<bool>,
                       keep: bool,
                       queued: &mut usize|
     -> anyhow::Result<()> {
        let (EpisodeState::Recording { source, timing, .. }, Some(w)) = (st, w) else {
            return Ok(());
        };
        let tm = timing.finish();
        let save = keep && timing.frames() > 0;
        *queued += usize::from(save);
        w.send(WriterCmd::End {
            save,
            timing: tm,
            success,
            source,
        })
    };

    loop {
        // Writer results (saved / discarded episodes, or a failure).
        if let Some(w) = &writer {
            while let Ok(r) = w.done.try_recv() {
                tally.add(r.map_err(|e| anyhow::anyhow!("{e}"))?, a.episodes, a.quiet);
            }
        }
        if stop.load(Ordering::SeqCst) || a.duration.is_some_and(|d| t0.elapsed() >= d) {
            break;
        }
        if queued_saves >= a.episodes {
            break;
        }
        // Ask the simulator to start (until it announces an episode).
        if let Some(p) = &start_pub {
            if !sim_started && last_start_req.elapsed() > Duration::from_millis(200) {
                last_start_req = Instant::now();
                let _ = p.publish(&Float64MultiArray::vector("start", vec![1.0]));
            }
        }
        // Episode events.
        while let Ok((ep, ev)) = ev_rx.try_recv() {
            if ev == EVENT_START {
                sim_started = true;
                // A missed end: keep what we have only with --keep-failed.
                let st = std::mem::replace(&mut state, EpisodeState::Idle);
                end_episode(writer.as_ref(), st, None, a.keep_failed, &mut queued_saves)?;
                if queued_saves < a.episodes {
                    state = EpisodeState::Recording {
                        source: Some(ep),
                        timing: TimingAcc::new(fps),
                        started: Instant::now(),
                    };
                }
            } else if ev == EVENT_END_SUCCESS || ev == EVENT_END_TIMEOUT {
                let success = ev == EVENT_END_SUCCESS;
                let st = std::mem::replace(&mut state, EpisodeState::Idle);
                end_episode(
                    writer.as_ref(),
                    st,
                    Some(success),
                    success || a.keep_failed,
                    &mut queued_saves,
                )?;
            }
        }
        // Fixed-length episodes.
        if fixed {
            match &state {
                EpisodeState::Idle => {
                    state = EpisodeState::Recording {
                        source: None,
                        timing: TimingAcc::new(fps),
                        started: Instant::now(),
                    }
                }
                EpisodeState::Recording { started, .. }
                    if started.elapsed().as_secs_f64() >= a.episode_s.unwrap_or(f64::INFINITY) =>
                {
                    let st = std::mem::replace(&mut state, EpisodeState::Resetting(Instant::now()));
                    end_episode(writer.as_ref(), st, None, true, &mut queued_saves)?;
                    if !a.quiet && queued_saves < a.episodes {
                        eprintln!("record: reset the scene ({} s)", a.reset_s);
                    }
                }
                EpisodeState::Resetting(since) if since.elapsed().as_secs_f64() >= a.reset_s => {
                    state = EpisodeState::Idle;
                }
                _ => {}
            }
        }
        // A new frame of the first camera?
        let frame = {
            let g = latest
                .lock()
                .map_err(|_| anyhow::anyhow!("recorder state poisoned"))?;
            let c0 = &g.cams[0];
            let new = c0.slot.is_some() && c0.stamp_ns != last_trigger_stamp;
            // Every camera holds this frame, and the taxels (unstamped) were read again
            // since the last frame: they may arrive just after the images of their frame
            // (a fast shared-memory image overtakes them). Or 15 ms have passed.
            let taxels_caught_up = tactile_topic.is_none()
                || g.taxels.as_ref().is_some_and(|(_, r)| *r > last_trigger_at);
            let settled = c0
                .recv
                .is_some_and(|r| r.elapsed() >= Duration::from_millis(15))
                || (g.cams.iter().all(|c| c.stamp_ns == c0.stamp_ns)
                    && g.pressure
                        .iter()
                        .all(|p| p.as_ref().is_some_and(|p| p.0 == c0.stamp_ns))
                    && taxels_caught_up);
            if new && settled {
                let now = Instant::now();
                last_trigger_stamp = c0.stamp_ns;
                last_trigger_at = now;
                let fresh =
                    |r: Instant, ms: u64| now.duration_since(r) <= Duration::from_millis(ms);
                let ok = g.joints.is_some_and(|(_, r)| fresh(r, 200))
                    && g.action.is_some_and(|(_, r)| fresh(r, 500))
                    && g.cams
                        .iter()
                        .all(|c| c.slot.is_some() && c.recv.is_some_and(|r| fresh(r, 500)))
                    && (tactile_topic.is_none()
                        || g.taxels.as_ref().is_some_and(|(_, r)| fresh(*r, 500)))
                    && g.pressure.iter().all(Option::is_some);
                if ok {
                    if writer.is_none() {
                        let Some(cams) = features_cams(&g) else {
                            continue;
                        };
                        let taxels = g.taxels.as_ref().map_or(0, |(v, _)| v.len());
                        let pressure: Vec<(String, usize, usize)> = pressure_names
                            .iter()
                            .zip(&g.pressure)
                            .filter_map(|((n, _), p)| {
                                p.as_ref().map(|p| (format!("observation.{n}"), p.1, p.2))
                            })
                            .collect();
                        let features = so101_features(&cams, taxels, &pressure);
                        let w = DatasetWriter::create_with(
                            &a.out,
                            fps.round().max(1.0) as u32,
                            ROBOT_TYPE,
                            &features,
                            video,
                            WriterOptions::default(),
                        )
                        .with_context(|| format!("creating dataset {}", a.out.display()))?;
                        writer = Some(WriterThread::start(w)?);
                    }
                    let mut f = Frame::new(a.task.clone());
                    for ((name, _, _), c) in cam_names.iter().zip(&g.cams) {
                        if let Some(s) = &c.slot {
                            let mut rgb = s.data.clone();
                            if s.order == Some(crate::policy::manifest::ColorOrder::Bgr) {
                                for px in rgb.chunks_exact_mut(3) {
                                    px.swap(0, 2);
                                }
                            }
                            f = f.image(camera_key(name), rgb);
                        }
                    }
                    if let Some((q, _)) = g.joints {
                        f = f.vector(STATE, q.to_vec());
                    }
                    if let Some((v, _)) = &g.taxels {
                        f = f.vector(TACTILE, v.clone());
                    }
                    if let Some((q, _)) = g.action {
                        f = f.vector(ACTION, q.to_vec());
                    }
                    for ((n, _), p) in pressure_names.iter().zip(&g.pressure) {
                        if let Some(p) = p {
                            f = f.vector(format!("observation.{n}"), p.3.clone());
                        }
                    }
                    Some((f, c0.stamp_ns))
                } else {
                    incomplete += 1;
                    None
                }
            } else {
                None
            }
        };
        if writer.is_none() && Instant::now() > data_deadline {
            let last = counters
                .last_error
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            bail!(
                "no complete frame (cameras, joints{}, action on `{action_topic}`) within 30 s on the {} transport{}",
                if tactile_topic.is_some() { ", tactile" } else { "" },
                cfg.transport.kind,
                if last.is_empty() { String::new() } else { format!("; last rejected input: {last}") }
            );
        }
        if let (Some((f, stamp)), Some(w), EpisodeState::Recording { timing, .. }) =
            (frame, writer.as_ref(), &mut state)
        {
            w.send(WriterCmd::Frame(f))?;
            timing.push(stamp);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(subs);
    // Stop: the episode in progress is discarded; queued saves complete.
    if let (Some(w), EpisodeState::Recording { timing, .. }) = (writer.as_ref(), &state) {
        if timing.frames() > 0 && !a.quiet && queued_saves < a.episodes {
            eprintln!(
                "record: discarding the episode in progress ({} frames)",
                timing.frames()
            );
        }
        w.send(WriterCmd::Discard)?;
    }
    if let Some(w) = writer.take() {
        let (rest, res) = w.finish();
        for rec in rest {
            tally.add(rec, a.episodes, a.quiet);
        }
        res?;
    }
    let (m, i) = (
        counters.malformed.load(Ordering::Relaxed),
        counters.invalid.load(Ordering::Relaxed),
    );
    if m + i + incomplete > 0 && !a.quiet {
        eprintln!(
            "record: rejected inputs: {m} malformed, {i} invalid; {incomplete} frames skipped for missing or stale inputs{}",
            counters.last_error.lock().map(|s| if s.is_empty() { String::new() } else { format!(" (last: {s})") }).unwrap_or_default()
        );
    }
    Ok(RecordSummary {
        root: a.out.clone(),
        episodes_saved: tally.saved,
        episodes_discarded: tally.discarded,
        frames: tally.frames,
        flagged: tally.flagged,
        wall_s: t0.elapsed().as_secs_f64(),
        episodes: tally.records,
    })
}

/// Episodes the writer confirmed, counted and printed as they come.
#[derive(Default)]
struct Tally {
    saved: usize,
    discarded: usize,
    frames: usize,
    flagged: usize,
    records: Vec<EpisodeRecord>,
}

impl Tally {
    fn add(&mut self, rec: EpisodeRecord, target: usize, quiet: bool) {
        if rec.dataset_index.is_some() {
            self.saved += 1;
            self.frames += rec.timing.frames;
            self.flagged += usize::from(rec.timing.rate_flagged);
        } else {
            self.discarded += 1;
        }
        print_episode(&rec, target, self.saved, quiet);
        self.records.push(rec);
    }
}

enum WriterCmd {
    Frame(Frame),
    End {
        save: bool,
        timing: EpisodeTiming,
        success: Option<bool>,
        source: Option<u64>,
    },
    Discard,
}

/// The dataset writer on its own thread, so that saving an episode (parquet
/// rewrite, video mux, fsync: up to about a second on a large dataset) never
/// stalls frame capture: frames of the next episode queue meanwhile.
struct WriterThread {
    tx: crossbeam::channel::Sender<WriterCmd>,
    done: crossbeam::channel::Receiver<Result<EpisodeRecord, String>>,
    join: std::thread::JoinHandle<Result<(), String>>,
}

impl WriterThread {
    fn start(mut w: DatasetWriter) -> anyhow::Result<WriterThread> {
        let (tx, rx) = unbounded::<WriterCmd>();
        let (done_tx, done) = unbounded();
        let join = std::thread::Builder::new()
            .name("record-writer".into())
            .spawn(move || -> Result<(), String> {
                for cmd in rx {
                    match cmd {
                        WriterCmd::Frame(f) => {
                            if let Err(e) = w.add_frame(f) {
                                let msg = format!("adding a frame: {e}");
                                let _ = done_tx.send(Err(msg.clone()));
                                return Err(msg);
                            }
                        }
                        WriterCmd::Discard => w.clear_episode(),
                        WriterCmd::End {
                            save,
                            timing,
                            success,
                            source,
                        } => {
                            let rec = if save && w.pending_frames() > 0 {
                                let r = set_episode_quality(&mut w, &timing, success)
                                    .and_then(|_| w.save_episode());
                                match r {
                                    Ok(r) => EpisodeRecord {
                                        dataset_index: Some(r.episode_index),
                                        source_episode: source,
                                        success,
                                        timing,
                                        save_s: r.elapsed.as_secs_f64(),
                                    },
                                    Err(e) => {
                                        let msg = format!("saving an episode: {e}");
                                        let _ = done_tx.send(Err(msg.clone()));
                                        return Err(msg);
                                    }
                                }
                            } else {
                                w.clear_episode();
                                EpisodeRecord {
                                    dataset_index: None,
                                    source_episode: source,
                                    success,
                                    timing,
                                    save_s: 0.0,
                                }
                            };
                            let _ = done_tx.send(Ok(rec));
                        }
                    }
                }
                w.clear_episode();
                if w.num_episodes() > 0 {
                    w.finalize()
                        .map_err(|e| format!("finalising the dataset: {e}"))?;
                }
                Ok(())
            })
            .context("starting the writer thread")?;
        Ok(WriterThread { tx, done, join })
    }

    fn send(&self, c: WriterCmd) -> anyhow::Result<()> {
        self.tx.send(c).map_err(|_| {
            // The thread ended: its error is in `done`.
            match self.done.try_iter().find_map(|r| r.err()) {
                Some(e) => anyhow::anyhow!("{e}"),
                None => anyhow::anyhow!("the dataset writer thread stopped"),
            }
        })
    }

    /// Closes the queue, waits for pending saves, finalises.
    fn finish(self) -> (Vec<EpisodeRecord>, anyhow::Result<()>) {
        drop(self.tx);
        let res = match self.join.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("{e}")),
            Err(_) => Err(anyhow::anyhow!("the dataset writer thread panicked")),
        };
        let recs = self.done.try_iter().filter_map(|r| r.ok()).collect();
        (recs, res)
    }
}
