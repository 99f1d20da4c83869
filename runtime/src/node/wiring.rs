//! From the node config and the policy's inputs to validated input streams:
//! which streams the policy needs, and one subscription per stream whose sink
//! validates each sample into the latest-value slots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam::atomic::AtomicCell;
use maniflow_bridge::msg::{
    CompressedImage, Float32MultiArray, Float64MultiArray, Image, JointState,
};
use maniflow_bridge::so101::N_JOINTS;
use maniflow_bridge::transport::{AnyTransport, Qos, Subscription, Transport, TransportError};

use super::config::{JointUnits, NodeConfig, StreamType};
use super::streams::{
    self, ImageSlot, ImageStream, Inputs, JointSample, Reject, StreamCounters, TactileStream,
};
use crate::policy::engine::Engine;
use crate::policy::manifest::TactileInput;

/// Builds the input streams the policy needs from the config.
pub(super) fn build_inputs(cfg: &NodeConfig, engine: &Engine) -> anyhow::Result<Inputs> {
    let m = &engine.package().manifest;
    let ms = |s: f64| (s * 1e9) as u64;
    // The arm's position: the joints stream, or the robot's bus thread.
    let (joint_max_age_s, joint_units) = match (&cfg.robot, cfg.streams.get("joints")) {
        (Some(r), _) => (r.max_age_ms / 1000.0, JointUnits::Lerobot),
        (None, Some(j)) => (j.max_age_s(), j.units.unwrap_or(JointUnits::Lerobot)),
        (None, None) => {
            anyhow::bail!("streams.joints is missing (config check should have refused this)")
        }
    };
    if engine.action_dim() != N_JOINTS {
        anyhow::bail!(
            "policy {}: the node drives an SO-101 ({N_JOINTS} joints) but the action has {} values",
            m.name,
            engine.action_dim()
        );
    }
    if let Some(st) = &m.inputs.state {
        if st.names.len() != N_JOINTS {
            anyhow::bail!(
                "policy {}: inputs.state has {} values, the SO-101 joint state has {N_JOINTS}",
                m.name,
                st.names.len()
            );
        }
    }
    let mut cameras = Vec::new();
    for c in &m.inputs.cameras {
        let name = c
            .key
            .strip_prefix("observation.images.")
            .unwrap_or(&c.key)
            .to_string();
        let Some(s) = cfg.streams.get(&name) else {
            anyhow::bail!(
                "policy input {} has no stream: add [streams.{name}] (type = \"image\") to the config",
                c.key
            );
        };
        cameras.push(ImageStream {
            name,
            slot: Mutex::new(ImageSlot::default()),
            counters: StreamCounters::default(),
            max_age_ns: ms(s.max_age_s()),
        });
    }
    let tactile = match &m.inputs.tactile {
        None => None,
        Some(t) => {
            let Some(s) = cfg.streams.get("tactile") else {
                anyhow::bail!(
                    "policy input {} has no stream: add [streams.tactile] to the config",
                    t.key()
                );
            };
            Some(match (t, s.kind) {
                // A pressure image is a vector of H x W cells to the policy.
                (TactileInput::Taxels { size, .. }, StreamType::Taxels | StreamType::PressureImage) => TactileStream::Taxels {
                    slot: Mutex::new(Default::default()),
                    counters: StreamCounters::default(),
                    max_age_ns: ms(s.max_age_s()),
                    size: *size,
                },
                (TactileInput::Image { .. }, StreamType::Image | StreamType::CompressedImage) => {
                    TactileStream::Image(ImageStream {
                        name: "tactile".into(),
                        slot: Mutex::new(ImageSlot::default()),
                        counters: StreamCounters::default(),
                        max_age_ns: ms(s.max_age_s()),
                    })
                }
                (t, k) => anyhow::bail!(
                    "streams.tactile.type = {k:?} does not match the policy's tactile input {} ({})",
                    t.key(),
                    match t {
                        TactileInput::Taxels { .. } => "taxels",
                        TactileInput::Image { .. } => "image",
                    }
                ),
            })
        }
    };
    Ok(Inputs {
        clock: streams::Clock::new(),
        joints: AtomicCell::new(JointSample::default()),
        joint_counters: StreamCounters::default(),
        joint_max_age_ns: ms(joint_max_age_s),
        joint_units,
        cameras,
        tactile,
        episode_starts: AtomicU64::new(0),
        episode_id: AtomicU64::new(u64::MAX),
    })
}

/// A `pressure_image` tactile stream (32FC1) into the policy's tactile vector:
/// its H x W cells, row-major, must be the input's size.
fn subscribe_pressure(
    t: &AnyTransport,
    topic: &str,
    inputs: &Arc<Inputs>,
) -> Result<Subscription, TransportError> {
    let inp = inputs.clone();
    t.subscribe::<Image>(
        topic,
        Qos::Sensor,
        Box::new(move |r| {
            let Some(TactileStream::Taxels {
                slot,
                counters,
                size,
                ..
            }) = &inp.tactile
            else {
                return;
            };
            counters.received.fetch_add(1, Ordering::Relaxed);
            let x = match r {
                Err(e) => return counters.reject(Reject::Malformed, e.to_string()),
                Ok(x) => x,
            };
            match streams::pressure_input(&x.msg, x.recv_wall_ns) {
                Err(e) => counters.reject(Reject::Invalid, e),
                Ok((_, h, w, _)) if h * w != *size => counters.reject(
                    Reject::Invalid,
                    format!(
                        "pressure image {h}x{w} = {} cells, the policy's tactile input has {size}",
                        h * w
                    ),
                ),
                Ok((stamp, _, _, cells)) => {
                    let recv_ns = inp.clock.ns_of(x.recv);
                    if let Ok(mut sl) = slot.lock() {
                        sl.data = cells;
                        sl.stamp_ns = stamp;
                        sl.recv_ns = recv_ns;
                        sl.seq += 1;
                    }
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }),
    )
}

/// Subscribes every stream; the sinks validate into `inputs`.
pub(super) fn subscribe_all(
    cfg: &NodeConfig,
    t: &AnyTransport,
    inputs: &Arc<Inputs>,
) -> Result<Vec<Subscription>, TransportError> {
    let mut subs = Vec::new();
    let err = |e: TransportError| e.to_string();
    if let Some(j) = cfg.streams.get("joints") {
        let inp = inputs.clone();
        subs.push(t.subscribe::<JointState>(
            &j.topic,
            Qos::Sensor,
            Box::new(move |r| {
                let now = inp.clock.now_ns();
                inp.on_joints(r.map(|x| (x.msg, x.recv_wall_ns)).map_err(err), now);
            }),
        )?);
    }
    let image_sub = |idx: Option<usize>, topic: &str, kind: StreamType| {
        let inp = inputs.clone();
        match kind {
            StreamType::CompressedImage => t.subscribe::<CompressedImage>(
                topic,
                Qos::Sensor,
                Box::new(move |r| {
                    let Some(s) = pick_stream(&inp, idx) else {
                        return;
                    };
                    match r {
                        Err(e) => streams::on_image(s, Err(err(e)), Reject::Malformed),
                        Ok(x) => {
                            let now = inp.clock.ns_of(x.recv);
                            streams::on_image(
                                s,
                                streams::compressed_input(x.msg, now, x.recv_wall_ns),
                                Reject::Invalid,
                            )
                        }
                    }
                }),
            ),
            // Raw images are read where they arrived (on native zenoh, the
            // publisher's shared memory) and copied once, into a buffer that
            // the slot hands back frame after frame.
            _ => {
                let mut spare = streams::ImageSlot::default();
                t.subscribe_images(
                    topic,
                    Qos::Sensor,
                    Box::new(move |r| {
                        let Some(s) = pick_stream(&inp, idx) else {
                            return;
                        };
                        match r {
                            Err(e) => streams::on_image(s, Err(err(e)), Reject::Malformed),
                            Ok(x) => {
                                let now = inp.clock.ns_of(x.recv);
                                let v = x.msg.view();
                                streams::on_image_view(s, &v, now, x.recv_wall_ns, &mut spare)
                            }
                        }
                    }),
                )
            }
        }
    };
    // Cameras with a `source` are read directly (node::cameras), not subscribed.
    for (i, cam) in inputs.cameras.iter().enumerate() {
        let s = &cfg.streams[&cam.name];
        if s.source.is_none() {
            subs.push(image_sub(Some(i), &s.topic, s.kind)?);
        }
    }
    match &inputs.tactile {
        None => {}
        Some(TactileStream::Image(_)) if cfg.streams["tactile"].source.is_some() => {}
        Some(TactileStream::Image(_)) => {
            let s = &cfg.streams["tactile"];
            subs.push(image_sub(None, &s.topic, s.kind)?);
        }
        Some(TactileStream::Taxels { .. })
            if cfg.streams["tactile"].kind == StreamType::PressureImage =>
        {
            subs.push(subscribe_pressure(
                t,
                &cfg.streams["tactile"].topic,
                inputs,
            )?);
        }
        Some(TactileStream::Taxels { .. }) => {
            let inp = inputs.clone();
            subs.push(t.subscribe::<Float32MultiArray>(
                &cfg.streams["tactile"].topic,
                Qos::Sensor,
                Box::new(move |r| {
                    let Some(TactileStream::Taxels {
                        slot,
                        counters,
                        size,
                        ..
                    }) = &inp.tactile
                    else {
                        return;
                    };
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Err(e) => counters.reject(Reject::Malformed, err(e)),
                        Ok(x) => match streams::taxels_from_msg(&x.msg, *size) {
                            Err(e) => counters.reject(Reject::Invalid, e),
                            Ok(()) => {
                                let recv_ns = inp.clock.ns_of(x.recv);
                                if let Ok(mut sl) = slot.lock() {
                                    sl.data = x.msg.data;
                                    sl.stamp_ns = x.recv_wall_ns;
                                    sl.recv_ns = recv_ns;
                                    sl.seq += 1;
                                }
                                counters.accepted.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                    }
                }),
            )?);
        }
    }
    if !cfg.control.reset_topic.is_empty() {
        // Episode events ([episode, event, t], event 0 = start, as `maniflow sim`
        // publishes them): a start clears the executor on the control thread.
        let inp = inputs.clone();
        subs.push(t.subscribe::<Float64MultiArray>(
            &cfg.control.reset_topic,
            Qos::Command,
            Box::new(move |r| {
                if let Ok(x) = r {
                    if x.msg.data.len() >= 2 && x.msg.data[1] == 0.0 {
                        let ep = x.msg.data[0];
                        let id = if ep.is_finite() && ep >= 0.0 && ep < u64::MAX as f64 {
                            ep as u64
                        } else {
                            u64::MAX
                        };
                        inp.episode_id.store(id, Ordering::Release);
                        inp.episode_starts.fetch_add(1, Ordering::Release);
                    }
                }
            }),
        )?);
    }
    Ok(subs)
}

/// The image stream a subscription feeds: camera `idx`, or the tactile image (None).
fn pick_stream(inp: &Inputs, idx: Option<usize>) -> Option<&ImageStream> {
    match idx {
        Some(i) => inp.cameras.get(i),
        None => match &inp.tactile {
            Some(TactileStream::Image(s)) => Some(s),
            _ => None,
        },
    }
}
