//! `maniflow sim`: the simulated SO-101 (bridge::sim) as its own process on the
//! same transports as a real arm: joint states at `--joint-rate` (100 Hz), head
//! and wrist images, tactile taxels and the pads' tactile pressure images
//! (`tactile/image`, 32FC1, pad 0 above pad 1, see bridge::sim::tactile) at
//! `--fps` (30), commands in from
//! `joint_command` (Float64MultiArray, LeRobot units). `--expert` drives the
//! scripted expert instead, and publishes its commands on `joint_command` (what
//! `maniflow record` stores as the action). Episodes reset on success (after a
//! short hold) or on timeout; every episode is reported, and announced on the
//! `episode` topic (Float64MultiArray `[episode, event, t_episode_s]`, event 0 =
//! start, 1 = success, 2 = end after success, 3 = end on timeout; RELIABLE).
//! `--wait-for-command` / `--wait-for-start` hold the world at episode 0's start
//! (sensors still published) until the first command, or a message on
//! `episode_control`, arrives: evaluation and recording start on time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam::atomic::AtomicCell;
use maniflow_bridge::msg::{
    CompressedImage, Float32MultiArray, Float64MultiArray, Header, JointState, Time,
};
use maniflow_bridge::sim::reward::EpisodeReturn;
use maniflow_bridge::sim::{Expert, Outcome, SimConfig, SimWorld};
use maniflow_bridge::so101::{JOINT_NAMES, N_JOINTS};
use maniflow_bridge::transport::image::ImageLayout;
use maniflow_bridge::transport::{
    wall_ns, AnyTransport, Qos, Transport, TransportConfig, TransportKind, DEFAULT_ENDPOINT,
};
use serde::{Deserialize, Serialize};

use super::run::{parse_duration, write_json_atomic};

/// Topic of the episode events (see the module docs).
pub const EPISODE_TOPIC: &str = "episode";
/// Topic whose first message starts episode 0 under `--wait-for-start`.
pub const EPISODE_CONTROL_TOPIC: &str = "episode_control";
pub const EVENT_START: f64 = 0.0;
pub const EVENT_SUCCESS: f64 = 1.0;
pub const EVENT_END_SUCCESS: f64 = 2.0;
pub const EVENT_END_TIMEOUT: f64 = 3.0;

/// How long `--wait-for-command` / `--wait-for-start` hold with nothing
/// received before the awaited topic is named on stderr (the hold goes on).
pub const SILENT_AFTER: Duration = Duration::from_secs(5);

/// The report for an awaited topic that delivered nothing (both are RELIABLE
/// subscriptions, which a BEST_EFFORT publisher does not match in ROS 2).
fn silent_message(t: &AnyTransport, tc: &TransportConfig, command: bool) -> String {
    let topic = if command {
        "joint_command"
    } else {
        EPISODE_CONTROL_TOPIC
    };
    let hint = match tc.kind {
        TransportKind::Zenoh => " Check that the commander runs and connects to this endpoint.".to_string(),
        _ => format!(
            " Check that the commander runs, on ROS_DOMAIN_ID {} and namespace {}. Our subscription is RELIABLE: a BEST_EFFORT publication (e.g. rclpy's qos_profile_sensor_data) is refused, as ROS 2 refuses it; publish it RELIABLE.",
            tc.resolved_domain_id()
                .map_or_else(|e| e.to_string(), |d| d.to_string()),
            tc.resolved_namespace()
        ),
    };
    format!(
        "maniflow sim: still holding episode 0: nothing on {} ({}, std_msgs/msg/Float64MultiArray) in {} s.{hint}",
        t.wire_name(topic),
        tc.kind,
        SILENT_AFTER.as_secs()
    )
}

/// The simulated task.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SimTask {
    /// Pick up the red cube.
    #[default]
    Pick,
    /// The same with a fragile cube of unknown weight (bridge::sim::slip): the
    /// squeeze that holds it without crushing it is found by touch.
    PickSlip,
}

impl SimTask {
    /// The simulator's slip settings of the task.
    pub fn slip(self) -> Option<maniflow_bridge::sim::slip::SlipConfig> {
        (self == SimTask::PickSlip).then(Default::default)
    }

    /// The name `--task` takes.
    pub fn name(self) -> &'static str {
        match self {
            SimTask::Pick => "pick",
            SimTask::PickSlip => "pick-slip",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// zenoh | ros2-dds | ros2-zenoh.
    #[arg(long, default_value = "zenoh")]
    pub transport: TransportKind,
    /// Robot name (zenoh key prefix maniflow/<robot>/, ROS namespace /<robot>).
    #[arg(long, default_value = "so101")]
    pub robot: String,
    /// Zenoh endpoint(s) to listen on (default tcp/127.0.0.1:7447).
    #[arg(long)]
    pub listen: Vec<String>,
    /// Zenoh endpoint(s) to connect to.
    #[arg(long)]
    pub connect: Vec<String>,
    /// ROS domain id (default: ROS_DOMAIN_ID, else 0).
    #[arg(long)]
    pub domain_id: Option<u16>,
    /// Scenario seed (cube poses).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// pick, or pick-slip (touch decides: per-episode hold and crush squeezes).
    #[arg(long, value_enum, default_value_t = SimTask::Pick)]
    pub task: SimTask,
    /// Drive the scripted expert instead of listening for commands.
    #[arg(long)]
    pub expert: bool,
    /// Stop after this long (default: until SIGINT).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many episodes.
    #[arg(long)]
    pub episodes: Option<u64>,
    /// Episode timeout in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub episode_s: f64,
    /// Camera image width and height.
    #[arg(long, default_value_t = 96)]
    pub width: usize,
    #[arg(long, default_value_t = 96)]
    pub height: usize,
    /// Camera and tactile rate (Hz).
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Joint state rate and physics step (Hz).
    #[arg(long, default_value_t = 100.0)]
    pub joint_rate: f64,
    /// Publish JPEG CompressedImage on `<camera>/image_raw/compressed` as well.
    #[arg(long)]
    pub jpeg: bool,
    /// Hold episode 0 until the first command arrives on `joint_command`.
    #[arg(long)]
    pub wait_for_command: bool,
    /// Hold episode 0 until any message arrives on `episode_control`.
    #[arg(long)]
    pub wait_for_start: bool,
    /// Write per-episode results as JSON here at the end.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// No per-second status line.
    #[arg(long)]
    pub quiet: bool,
    /// Expose the arm as six STS3215 servos on a pseudo-terminal (printed;
    /// see `--serial-link`): commands come from the bus instead of `joint_command`.
    #[arg(long)]
    pub serial: bool,
    /// With --serial: a symlink to the pty (e.g. /tmp/ttySO101).
    #[arg(long)]
    pub serial_link: Option<PathBuf>,
    /// With --serial: write the emulated arm's calibration as `<dir>/<serial-id>.json`.
    #[arg(long)]
    pub serial_calibration: Option<PathBuf>,
    #[arg(long, default_value = "sim")]
    pub serial_id: String,
    /// With --serial: also a leader arm on a second pty (symlink here), its
    /// joints moved by the scripted expert as a person would move them; the
    /// simulated (follower) arm only moves by what its bus is told (teleop).
    #[arg(long)]
    pub leader_link: Option<PathBuf>,
    /// Write the leader's calibration as `<dir>/<leader-id>.json`.
    #[arg(long)]
    pub leader_calibration: Option<PathBuf>,
    #[arg(long, default_value = "sim-leader")]
    pub leader_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpisodeResult {
    pub episode: u64,
    pub success: bool,
    pub time_to_success_s: Option<f64>,
    pub duration_s: f64,
    /// How the episode ended (older reports lack it).
    #[serde(default)]
    pub outcome: Outcome,
    /// The dense reward's mean over `--episode-s` (0 to 1, `maniflow_bridge::sim::reward`;
    /// older reports lack it).
    #[serde(default)]
    pub episode_return: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimStats {
    pub episodes: Vec<EpisodeResult>,
    pub success_rate: f64,
    pub commands_received: u64,
    pub commands_malformed: u64,
    pub joint_states_published: u64,
    pub frames_published: u64,
    pub expert: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if !(a.fps > 0.0 && a.joint_rate >= a.fps && a.joint_rate <= 1000.0) {
        anyhow::bail!("--fps must be > 0 and <= --joint-rate <= 1000");
    }
    if a.width == 0 || a.height == 0 || a.width > 4096 || a.height > 4096 {
        anyhow::bail!("--width/--height must be in 1..=4096");
    }
    let mut tc = TransportConfig {
        kind: a.transport,
        robot: a.robot.clone(),
        domain_id: a.domain_id,
        listen: if a.listen.is_empty() && a.connect.is_empty() {
            vec![DEFAULT_ENDPOINT.to_string()]
        } else {
            a.listen.clone()
        },
        connect: a.connect.clone(),
        ..TransportConfig::default()
    };
    tc.namespace = None;
    let t = AnyTransport::open(&tc, "so101_sim")
        .with_context(|| format!("opening the {} transport", tc.kind))?;
    let js_pub = t.publisher::<JointState>("joint_states", Qos::Sensor)?;
    // Rendered frames go out from loaned buffers (shared memory on native zenoh).
    let head_pub = t.image_publisher("head/image_raw", Qos::Sensor)?;
    let wrist_pub = t.image_publisher("wrist/image_raw", Qos::Sensor)?;
    let layout = ImageLayout::packed("rgb8", 3, a.width as u32, a.height as u32)?;
    let (head_jpg, wrist_jpg) = if a.jpeg {
        (
            Some(t.publisher::<CompressedImage>("head/image_raw/compressed", Qos::Sensor)?),
            Some(t.publisher::<CompressedImage>("wrist/image_raw/compressed", Qos::Sensor)?),
        )
    } else {
        (None, None)
    };
    let tac_pub = t.publisher::<Float32MultiArray>("tactile", Qos::Sensor)?;
    let tac_img_pub = t.image_publisher("tactile/image", Qos::Sensor)?;
    let ep_pub = t.publisher::<Float64MultiArray>(EPISODE_TOPIC, Qos::Command)?;
    let expert_pub = if a.expert {
        Some(t.publisher::<Float64MultiArray>("joint_command", Qos::Command)?)
    } else {
        None
    };
    let start_requested = Arc::new(AtomicBool::new(false));
    let _start_sub = {
        let s = start_requested.clone();
        t.subscribe::<Float64MultiArray>(
            EPISODE_CONTROL_TOPIC,
            Qos::Command,
            Box::new(move |res| {
                if res.is_ok() {
                    s.store(true, Ordering::SeqCst);
                }
            }),
        )?
    };

    let serial_cal = a
        .serial_calibration
        .as_deref()
        .map(|d| (d, a.serial_id.as_str()));
    let mut serial = match a.serial {
        true => Some(super::sim_serial::SerialArm::start(
            &maniflow_bridge::sim::HOME_LEROBOT,
            a.serial_link.as_deref(),
            serial_cal,
        )?),
        false if a.serial_link.is_some() || a.serial_calibration.is_some() => {
            anyhow::bail!("--serial-link and --serial-calibration need --serial")
        }
        false => None,
    };
    let leader = match (&a.leader_link, a.serial) {
        (Some(l), true) => {
            let cal = a
                .leader_calibration
                .as_deref()
                .map(|d| (d, a.leader_id.as_str()));
            let arm = super::sim_serial::SerialArm::start(
                &maniflow_bridge::sim::HOME_LEROBOT,
                Some(l),
                cal,
            )?;
            eprintln!(
                "maniflow sim: leader arm (moved by the scripted expert) on {} ({})",
                arm.path(),
                l.display()
            );
            Some(arm)
        }
        (Some(_), false) => {
            anyhow::bail!("--leader-link needs --serial (the follower the leader drives)")
        }
        (None, _) => None,
    };
    if let Some(arm) = &serial {
        eprintln!(
            "maniflow sim: the arm is six STS3215 servos on {}{}",
            arm.path(),
            a.serial_link
                .as_ref()
                .map_or(String::new(), |l| format!(" ({})", l.display()))
        );
    }
    let latest_cmd: Arc<AtomicCell<([f32; N_JOINTS], u64)>> =
        Arc::new(AtomicCell::new(([0.0; N_JOINTS], 0)));
    let received = Arc::new(AtomicU64::new(0));
    let malformed = Arc::new(AtomicU64::new(0));
    // In expert mode our own commands go out on joint_command: do not listen.
    let _cmd_sub = if a.expert {
        None
    } else {
        Some({
            let c = latest_cmd.clone();
            let (r, m) = (received.clone(), malformed.clone());
            t.subscribe::<Float64MultiArray>(
                "joint_command",
                Qos::Command,
                Box::new(move |res| match res {
                    Ok(x)
                        if x.msg.data.len() == N_JOINTS
                            && x.msg.data.iter().all(|v| v.is_finite()) =>
                    {
                        let mut q = [0.0f32; N_JOINTS];
                        for (d, s) in q.iter_mut().zip(&x.msg.data) {
                            *d = *s as f32;
                        }
                        let seq = c.load().1 + 1;
                        c.store((q, seq));
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        m.fetch_add(1, Ordering::Relaxed);
                    }
                }),
            )?
        })
    };

    let stop = super::stop_on_signal(None)?;

    let cfg = SimConfig {
        seed: a.seed,
        image_width: a.width,
        image_height: a.height,
        slip: a.task.slip(),
        ..SimConfig::default()
    };
    let mut world = SimWorld::new(cfg.clone());
    let mut expert = Expert::new(&cfg);
    let mut episode = 0u64;
    world.reset(episode);
    expert.reset();
    eprintln!(
        "maniflow sim: SO-101 pick task, seed {}, {} transport (robot {}), {}x{} cameras at {} fps, joints at {} Hz, {}",
        a.seed,
        tc.kind,
        a.robot,
        a.width,
        a.height,
        a.fps,
        a.joint_rate,
        if a.expert { "scripted expert drives" } else { "listening on joint_command" }
    );

    let n_px = a.width * a.height * 3;
    let mut head = vec![0u8; n_px];
    let mut wrist = vec![0u8; n_px];
    let mut taxels = vec![0.0f32; world.taxel_count()];
    let mut pressure = vec![0.0f32; world.tactile_image_len()];
    let mut pressure_bytes = Vec::with_capacity(pressure.len() * 4);
    let (pr, pc) = (
        world.config().tactile_image_rows as u32,
        world.config().tactile_image_cols as u32,
    );
    let pressure_layout = ImageLayout::packed("32FC1", 4, pc, 2 * pr)?;
    let dt = 1.0 / a.joint_rate;
    let frame_dt = 1.0 / a.fps;
    let start = Instant::now();
    let mut next_frame_t = 0.0f64;
    let mut last_cmd_seq = 0u64;
    let mut ep_start_t = 0.0f64;
    let mut success_at: Option<f64> = None;
    let mut ever_grasped = false;
    let mut ret = EpisodeReturn::default();
    let mut results: Vec<EpisodeResult> = Vec::new();
    let (mut js_count, mut frame_count) = (0u64, 0u64);
    let mut last_status = Instant::now();
    let mut js = JointState {
        header: Header::default(),
        name: JOINT_NAMES.iter().map(|s| s.to_string()).collect(),
        position: vec![0.0; N_JOINTS],
        velocity: vec![],
        effort: vec![],
    };
    let mut tac_msg = Float32MultiArray::vector("taxels", vec![0.0; taxels.len()]);
    let mut k: u64 = 0;
    let mut waiting = a.wait_for_command || a.wait_for_start;
    let frame_every = ((a.joint_rate / a.fps).round() as u64).max(1);
    let mut wait_announced = false;
    // Named on stderr once if nothing has arrived after this long (held, not stuck silently).
    let mut silent_reported = false;
    let publish_event = |ep: u64, ev: f64, t: f64| {
        let _ = ep_pub.publish(&Float64MultiArray::vector(
            "episode",
            vec![ep as f64, ev, t],
        ));
    };
    if !waiting {
        publish_event(episode, EVENT_START, 0.0);
    }
    loop {
        if stop.load(Ordering::Relaxed)
            || a.duration.is_some_and(|d| start.elapsed() >= d)
            || a.episodes.is_some_and(|n| results.len() as u64 >= n)
        {
            break;
        }
        let target = start + Duration::from_secs_f64(k as f64 * dt);
        let now = Instant::now();
        if target > now {
            std::thread::sleep(target - now);
        }
        if let Some(arm) = serial.as_mut() {
            // The bus's goals (also while waiting: the first one starts episode 0).
            if let Some(cmd) = arm.command() {
                world.set_command(&cmd);
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
        if waiting {
            let go = (a.wait_for_command && received.load(Ordering::Relaxed) > 0)
                || (a.wait_for_start && start_requested.load(Ordering::SeqCst));
            if go {
                waiting = false;
                eprintln!("maniflow sim: start of episode 0");
                publish_event(episode, EVENT_START, 0.0);
            } else if !wait_announced {
                wait_announced = true;
                eprintln!(
                    "maniflow sim: holding episode 0 until {}",
                    if a.wait_for_command {
                        "the first command"
                    } else {
                        "a start request"
                    }
                );
            } else if !silent_reported
                && serial.is_none()
                && malformed.load(Ordering::Relaxed) == 0
                && start.elapsed() >= SILENT_AFTER
            {
                silent_reported = true;
                eprintln!("{}", silent_message(&t, &tc, a.wait_for_command));
            }
        }
        let t_sim = world.time();
        let frame_due = if waiting {
            k % frame_every == 0
        } else {
            t_sim + 1e-9 >= next_frame_t
        };
        if frame_due {
            world.render_head(&mut head);
            world.render_wrist(&mut wrist);
            world.tactile(&mut taxels);
            world.tactile_image(&mut pressure);
        }
        if waiting {
            // Frozen at the episode's start: sensors only, the clock does not run.
        } else if let Some(l) = &leader {
            // The person at the leader: the expert's command is where they move it.
            if frame_due {
                let q = world.joint_positions();
                let cmd = expert.act(&head, &q, &taxels, t_sim);
                l.set_joints(&cmd);
            }
        } else if a.expert {
            if frame_due {
                let q = world.joint_positions();
                let cmd = expert.act(&head, &q, &taxels, t_sim);
                world.set_command(&cmd);
                if let Some(p) = &expert_pub {
                    let _ = p.publish(&Float64MultiArray::vector(
                        "joint_command",
                        cmd.iter().map(|v| f64::from(*v)).collect(),
                    ));
                }
            }
        } else if serial.is_some() {
            // Polled below, before `waiting` is evaluated next step.
        } else {
            let (cmd, seq) = latest_cmd.load();
            if seq != last_cmd_seq {
                last_cmd_seq = seq;
                world.set_command(&cmd);
            }
        }
        if !waiting {
            world.step(dt);
            ret.add(&world, dt);
        }
        let stamp = Time::from_nanos(wall_ns());
        let q = world.joint_positions();
        if let Some(arm) = &serial {
            arm.set_joints(&q);
        }
        js.header.stamp = stamp;
        for (d, s) in js.position.iter_mut().zip(q.iter()) {
            *d = f64::from(*s);
        }
        if js_pub.publish(&js).is_ok() {
            js_count += 1;
        }
        if frame_due {
            if !waiting {
                next_frame_t += frame_dt;
            }
            let h = Header::new(stamp, "head_camera");
            let w = Header::new(stamp, "wrist_camera");
            let _ = head_pub.publish_pixels(&h, &layout, &head);
            let _ = wrist_pub.publish_pixels(&w, &layout, &wrist);
            if let (Some(hp), Some(wp)) = (&head_jpg, &wrist_jpg) {
                if let Ok(j) =
                    maniflow_bridge::camera::encode_jpeg_rgb(&head, a.width, a.height, 90)
                {
                    let _ = hp.publish(&CompressedImage::jpeg(h, j));
                }
                if let Ok(j) =
                    maniflow_bridge::camera::encode_jpeg_rgb(&wrist, a.width, a.height, 90)
                {
                    let _ = wp.publish(&CompressedImage::jpeg(w, j));
                }
            }
            tac_msg.data.copy_from_slice(&taxels);
            let _ = tac_pub.publish(&tac_msg);
            maniflow_bridge::sim::tactile::to_32fc1_bytes(&pressure, &mut pressure_bytes);
            let th = Header::new(stamp, "tactile_pads");
            let _ = tac_img_pub.publish_pixels(&th, &pressure_layout, &pressure_bytes);
            frame_count += 1;
        }
        // Episode bookkeeping.
        let t_ep = world.time() - ep_start_t;
        ever_grasped |= world.is_grasped();
        if success_at.is_none() && world.success() {
            success_at = Some(t_ep);
            publish_event(episode, EVENT_SUCCESS, t_ep);
            eprintln!("maniflow sim: episode {episode}: success at {t_ep:.2} s");
        }
        let done = success_at.is_some_and(|s| t_ep >= s + 1.0) || t_ep >= a.episode_s;
        if done {
            let outcome = Outcome::judge(&world, success_at.is_some(), ever_grasped);
            results.push(EpisodeResult {
                episode,
                success: success_at.is_some(),
                time_to_success_s: success_at,
                duration_s: t_ep,
                outcome,
                episode_return: Some(ret.finish(success_at.is_some(), t_ep, a.episode_s)),
            });
            if success_at.is_none() {
                let how = outcome.name();
                eprintln!("maniflow sim: episode {episode}: timeout after {t_ep:.1} s ({how})");
            }
            publish_event(
                episode,
                if success_at.is_some() {
                    EVENT_END_SUCCESS
                } else {
                    EVENT_END_TIMEOUT
                },
                t_ep,
            );
            episode += 1;
            world.reset(episode);
            expert.reset();
            // reset() restarts the world's clock (the expert relies on it).
            ep_start_t = world.time();
            next_frame_t = world.time();
            success_at = None;
            ever_grasped = false;
            ret = EpisodeReturn::default();
            if !a.episodes.is_some_and(|n| results.len() as u64 >= n) {
                publish_event(episode, EVENT_START, 0.0);
            }
        }
        if !a.quiet && last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            let ok = results.iter().filter(|r| r.success).count();
            eprintln!(
                "sim t {:>6.1}s | episode {episode} ({:.1} s{}) | done {} ok {ok} | commands {} (malformed {}) | joints [{}]",
                start.elapsed().as_secs_f64(),
                t_ep,
                if a.expert { format!(", expert {}", expert.phase()) } else { String::new() },
                results.len(),
                received.load(Ordering::Relaxed),
                malformed.load(Ordering::Relaxed),
                q.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(" ")
            );
        }
        k += 1;
    }
    let ok = results.iter().filter(|r| r.success).count();
    let stats = SimStats {
        success_rate: if results.is_empty() {
            0.0
        } else {
            ok as f64 / results.len() as f64
        },
        episodes: results,
        commands_received: received.load(Ordering::Relaxed),
        commands_malformed: malformed.load(Ordering::Relaxed),
        joint_states_published: js_count,
        frames_published: frame_count,
        expert: a.expert,
    };
    println!(
        "sim summary: {} episodes, success rate {:.2}, commands received {} (malformed {}), joint states {}, frames {}",
        stats.episodes.len(),
        stats.success_rate,
        stats.commands_received,
        stats.commands_malformed,
        stats.joint_states_published,
        stats.frames_published
    );
    if let Some(p) = &a.stats_json {
        write_json_atomic(p, &stats)?;
    }
    Ok(())
}
