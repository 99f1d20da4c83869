//! Camera streams read without ROS (`source = { v4l2 = ... }` or
//! `{ ffmpeg = ... }` in a stream's config): one reader thread per camera
//! (maniflow_bridge::camera::reader) whose frames, as `sensor_msgs/Image`,
//! take the same path as a subscribed image topic: validation into the
//! stream's slot, its counters, its stale rule. Used by `maniflow run` (the
//! node's inputs), `maniflow record` and `maniflow robot` (their own sinks).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use maniflow_bridge::camera::{CameraEvent, CameraReader, CameraSink, CameraSource, CameraStats};
use maniflow_bridge::msg::Image;
use maniflow_bridge::transport::{AnyTransport, Publish, Qos, Transport};

use super::config::{NodeConfig, StreamConfig};
use super::streams::{self, Inputs, Reject, TactileStream};

/// The checked sources of every camera stream in `cfg` (name, source), with
/// the ffmpeg binary found for the ffmpeg ones (`hints`: where to look
/// besides `$MANIFLOW_FFMPEG` and PATH, see `dataset::video::find_ffmpeg`).
pub fn camera_sources(
    cfg: &NodeConfig,
    hints: &[&Path],
) -> anyhow::Result<Vec<(String, CameraSource)>> {
    let mut out = Vec::new();
    let mut ffmpeg = None;
    for (name, s) in &cfg.streams {
        let Some(mut src) = s.camera_source(name).map_err(anyhow::Error::msg)? else {
            continue;
        };
        set_ffmpeg(&mut src, name, hints, &mut ffmpeg)?;
        out.push((name.clone(), src));
    }
    Ok(out)
}

/// An ffmpeg source gets the binary `find_ffmpeg` finds (looked up once, in `found`).
fn set_ffmpeg(
    src: &mut CameraSource,
    name: &str,
    hints: &[&Path],
    found: &mut Option<PathBuf>,
) -> anyhow::Result<()> {
    if let CameraSource::Ffmpeg(f) = src {
        if found.is_none() {
            *found =
                Some(crate::dataset::video::find_ffmpeg(hints).map_err(|e| {
                    anyhow::anyhow!("streams.{name}.source.ffmpeg ({}): {e}", f.input)
                })?);
        }
        if let Some(p) = found {
            f.ffmpeg = p.clone();
        }
    }
    Ok(())
}

/// Prints connects and losses on stderr (one line each; repeats are muted by
/// the reader), hands every other event to `on`.
pub fn logging_sink(
    who: &'static str,
    name: &str,
    mut on: impl FnMut(CameraEvent) + Send + 'static,
) -> CameraSink {
    let name = name.to_string();
    Box::new(move |ev| match ev {
        CameraEvent::Connected(d) => eprintln!("{who}: camera {name}: connected: {d}"),
        CameraEvent::Lost(e) => {
            eprintln!("{who}: camera {name}: lost, reconnecting: {e}");
            on(CameraEvent::Lost(e))
        }
        other => on(other),
    })
}

/// The node's camera readers: each feeds its stream's slot in `inputs`.
pub(super) fn start_node_cameras(
    cfg: &NodeConfig,
    inputs: &Arc<Inputs>,
) -> anyhow::Result<BTreeMap<String, CameraReader>> {
    let mut readers = BTreeMap::new();
    for (name, src) in camera_sources(cfg, &[&cfg.policy.path])? {
        let idx = inputs.cameras.iter().position(|c| c.name == name);
        let used = idx.is_some()
            || (name == "tactile" && matches!(inputs.tactile, Some(TactileStream::Image(_))));
        if !used {
            eprintln!("maniflow run: camera {name}: the policy has no input for it: not opened");
            continue;
        }
        let inp = inputs.clone();
        let sink = logging_sink("maniflow run", &name, move |ev| {
            let s = match idx {
                Some(i) => inp.cameras.get(i),
                None => match &inp.tactile {
                    Some(TactileStream::Image(s)) => Some(s),
                    _ => None,
                },
            };
            let Some(s) = s else { return };
            match ev {
                CameraEvent::Frame(f) => {
                    let recv_ns = inp.clock.ns_of(f.recv);
                    streams::on_image(
                        s,
                        streams::image_input(f.image, recv_ns, f.recv_wall_ns),
                        Reject::Invalid,
                    )
                }
                CameraEvent::Corrupt(e) => streams::on_image(s, Err(e), Reject::Malformed),
                CameraEvent::Connected(_) | CameraEvent::Lost(_) => {}
            }
        });
        let reader = CameraReader::start(&name, src, sink)
            .map_err(|e| anyhow::anyhow!("camera {name}: starting its thread: {e}"))?;
        readers.insert(name, reader);
    }
    Ok(readers)
}

/// Final counters of every camera reader.
pub fn finish(readers: BTreeMap<String, CameraReader>) -> BTreeMap<String, CameraStats> {
    readers.into_iter().map(|(n, r)| (n, r.finish())).collect()
}

/// `maniflow robot --cameras`: each camera stream published as
/// `sensor_msgs/Image` on its topic (`publish_topic`). Returns the readers
/// and, per camera, the count of images published.
pub fn start_publishing_cameras(
    streams: &BTreeMap<String, StreamConfig>,
    transport: &AnyTransport,
    hints: &[&Path],
) -> anyhow::Result<Vec<(String, CameraReader, Arc<AtomicU64>)>> {
    let mut out = Vec::new();
    let mut ffmpeg = None;
    for (name, s) in streams {
        let Some(mut src) = s.camera_source(name).map_err(anyhow::Error::msg)? else {
            continue;
        };
        set_ffmpeg(&mut src, name, hints, &mut ffmpeg)?;
        let topic = s.publish_topic(name);
        let publisher: Box<dyn Publish<Image>> = transport
            .publisher::<Image>(&topic, Qos::Sensor)
            .with_context(|| format!("camera {name}: publishing on {topic}"))?;
        let published = Arc::new(AtomicU64::new(0));
        let n = published.clone();
        let sink = logging_sink("maniflow robot", name, move |ev| {
            if let CameraEvent::Frame(f) = ev {
                if publisher.publish(&f.image).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let reader = CameraReader::start(name, src, sink)
            .map_err(|e| anyhow::anyhow!("camera {name}: starting its thread: {e}"))?;
        out.push((topic, reader, published));
    }
    Ok(out)
}
