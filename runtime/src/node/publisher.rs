//! The publisher thread: turns commands and accepted chunks into messages,
//! publishes them, and measures end-to-end latency (observation stamp ->
//! command publish).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use maniflow_bridge::msg::{
    Float64MultiArray, Header, JointState, JointTrajectory, JointTrajectoryPoint, Time,
};
use maniflow_bridge::so101::{JOINT_NAMES, N_JOINTS};
use maniflow_bridge::transport::{wall_ns, AnyTransport, Publish, Qos, Transport, TransportError};
use std::sync::Arc;

use crossbeam::atomic::AtomicCell;

use super::config::{CommandType, NodeConfig};
use super::robot::{Command, RobotLink};

use super::messages::{Live, OutMsg};
use crate::stats::Latency;

pub(super) struct PublishOut {
    pub(super) e2e: Latency,
    pub(super) e2e_first: Latency,
    pub(super) published: u64,
    pub(super) errors: u64,
    pub(super) chunks: u64,
}

/// Where per-tick commands go.
pub(super) enum CommandSink {
    None,
    /// `outputs.command_topic`, Float64MultiArray.
    Topic(Box<dyn Publish<Float64MultiArray>>),
    /// `outputs.command_topic`, JointState.
    JointState(Box<dyn Publish<JointState>>),
    /// The robot's bus thread (`[robot]`).
    Bus(Arc<AtomicCell<Command>>),
}

/// The command sink the config asks for: the bus when there is a robot,
/// else the command topic (if any).
pub(super) fn open_command_sink(
    cfg: &NodeConfig,
    transport: &AnyTransport,
    robot: Option<&RobotLink>,
) -> Result<CommandSink, TransportError> {
    if let Some(r) = robot {
        return Ok(CommandSink::Bus(r.cmd.clone()));
    }
    let topic = &cfg.outputs.command_topic;
    Ok(match (topic.is_empty(), cfg.outputs.command_type) {
        (true, _) => CommandSink::None,
        (false, CommandType::Float64MultiArray) => {
            CommandSink::Topic(transport.publisher(topic, Qos::Command)?)
        }
        (false, CommandType::JointState) => {
            CommandSink::JointState(transport.publisher(topic, Qos::Command)?)
        }
    })
}

pub(super) fn publisher_loop(
    out_rx: Receiver<OutMsg>,
    pool_tx: Sender<Box<[f32]>>,
    sink: CommandSink,
    chunk_pub: Option<Box<dyn Publish<JointTrajectory>>>,
    rate_hz: f64,
    live: &Live,
) -> PublishOut {
    let mut o = PublishOut {
        e2e: Latency::new(),
        e2e_first: Latency::new(),
        published: 0,
        errors: 0,
        chunks: 0,
    };
    let mut f64msg = Float64MultiArray::vector("joint_command", vec![0.0; N_JOINTS]);
    let mut jsmsg = JointState {
        header: Header::default(),
        name: JOINT_NAMES.iter().map(|s| s.to_string()).collect(),
        position: vec![0.0; N_JOINTS],
        velocity: vec![],
        effort: vec![],
    };
    let mut last_err_print = Instant::now() - Duration::from_secs(10);
    let mut n = 0u64;
    // Runs until the control thread drops its sender (after the stop ramp).
    while let Ok(m) = out_rx.recv() {
        match m {
            OutMsg::Command {
                pos,
                obs_stamp_ns,
                first_of_chunk,
            } => {
                let r = match &sink {
                    CommandSink::Topic(p) => {
                        for (d, s) in f64msg.data.iter_mut().zip(pos.iter()) {
                            *d = f64::from(*s);
                        }
                        Some(p.publish(&f64msg))
                    }
                    CommandSink::JointState(p) => {
                        jsmsg.header.stamp = Time::from_nanos(wall_ns());
                        for (d, s) in jsmsg.position.iter_mut().zip(pos.iter()) {
                            *d = f64::from(*s);
                        }
                        Some(p.publish(&jsmsg))
                    }
                    CommandSink::Bus(cell) => {
                        let seq = cell.load().seq + 1;
                        cell.store(Command { seq, pos });
                        None
                    }
                    CommandSink::None => None,
                };
                match r {
                    Some(Err(e)) => {
                        o.errors += 1;
                        if last_err_print.elapsed() > Duration::from_secs(5) {
                            eprintln!("maniflow run: {e}");
                            last_err_print = Instant::now();
                        }
                    }
                    Some(Ok(())) | None => {
                        o.published += 1;
                        live.published.fetch_add(1, Ordering::Relaxed);
                        if obs_stamp_ns > 0 {
                            let lat = Duration::from_nanos(
                                wall_ns().saturating_sub(obs_stamp_ns).max(0) as u64,
                            );
                            o.e2e.record(lat);
                            if first_of_chunk {
                                o.e2e_first.record(lat);
                            }
                        }
                    }
                }
                n += 1;
                if n % 30 == 0 {
                    let p = o.e2e.percentiles();
                    live.e2e_p50_ns
                        .store((p.p50_us * 1000.0) as u64, Ordering::Relaxed);
                    live.e2e_p99_ns
                        .store((p.p99_us * 1000.0) as u64, Ordering::Relaxed);
                }
            }
            OutMsg::Chunk(c) => {
                if let Some(p) = &chunk_pub {
                    let da = N_JOINTS;
                    let rows = c.buf.len() / da;
                    let msg = JointTrajectory {
                        header: Header {
                            stamp: Time::from_nanos(c.obs_stamp_ns),
                            frame_id: String::new(),
                        },
                        joint_names: JOINT_NAMES.iter().map(|s| s.to_string()).collect(),
                        points: (0..rows)
                            .map(|i| JointTrajectoryPoint {
                                positions: c.buf[i * da..(i + 1) * da]
                                    .iter()
                                    .map(|v| f64::from(*v))
                                    .collect(),
                                time_from_start: maniflow_bridge::msg::Duration::from_secs_f64(
                                    i as f64 / rate_hz,
                                ),
                                ..Default::default()
                            })
                            .collect(),
                    };
                    match p.publish(&msg) {
                        Ok(()) => o.chunks += 1,
                        Err(_) => o.errors += 1,
                    }
                }
                let _ = pool_tx.try_send(c.buf);
            }
        }
    }
    o
}
