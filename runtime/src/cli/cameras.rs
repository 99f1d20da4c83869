//! `maniflow cameras`: the V4L2 video devices of this machine with their
//! formats, frame sizes and rates (what a `source = { v4l2 = ... }` can ask
//! for), and `--bench`: the camera path's cost per 640x480 frame (MJPEG
//! decode, or YUYV conversion, then the policy's resize + normalise).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use maniflow_bridge::camera::frame::{decode_frame, yuyv_to_rgb};
use maniflow_bridge::camera::v4l2::list::{list_devices, DeviceInfo};
use maniflow_bridge::camera::{encode_jpeg_rgb, PixelFormat};
use maniflow_bridge::sim::{SimConfig, SimWorld};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::policy::manifest::ColorOrder;
use crate::policy::normalize::Normalizer;
use crate::policy::package::PolicyPackage;
use crate::policy::preprocess::{Frame, ImagePreprocessor};
use crate::stats::{Latency, Percentiles};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Benchmark the camera path instead of listing devices.
    #[arg(long)]
    pub bench: bool,
    /// --bench: the policy whose first camera input sets the resize and normalisation.
    #[arg(long, default_value = "models/so101-sim-pick")]
    pub policy: PathBuf,
    /// --bench: measured frames.
    #[arg(long, default_value_t = 300)]
    pub frames: usize,
    /// --bench: JPEG quality of the synthetic MJPEG frame (webcams: ~80-90).
    #[arg(long, default_value_t = 85)]
    pub quality: u8,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.bench {
        return bench(&a);
    }
    let devices = list_devices();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(());
    }
    if devices.is_empty() {
        println!(
            "no V4L2 video devices on this machine (no /dev/video*): plug a USB camera in, \
             or read a camera through ffmpeg: source = {{ ffmpeg = \"rtsp://...\" }} (README, Cameras without ROS)"
        );
        return Ok(());
    }
    for d in &devices {
        print_device(d);
    }
    Ok(())
}

fn print_device(d: &DeviceInfo) {
    let what = if let Some(e) = &d.error {
        format!("cannot query: {e}")
    } else if !d.capture {
        "not a capture node (metadata or output)".into()
    } else {
        "capture".into()
    };
    println!(
        "{}: {} [{}] {} -- {what}",
        d.path.display(),
        d.card,
        d.driver,
        d.bus
    );
    for f in &d.formats {
        let usable = matches!(f.fourcc.as_str(), "MJPG" | "YUYV");
        println!(
            "  {} ({}){}",
            f.fourcc,
            f.description,
            if usable {
                format!(
                    ": format = \"{}\"",
                    f.fourcc.to_lowercase().replace("mjpg", "mjpeg")
                )
            } else {
                " (not read by a v4l2 source; try an ffmpeg source)".into()
            }
        );
        for s in &f.sizes {
            match &s.range {
                Some(r) => println!("    {r}"),
                None => println!(
                    "    {}x{} @ {} fps",
                    s.width,
                    s.height,
                    s.fps
                        .iter()
                        .map(|f| format!("{f}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    }
}

/// `--bench` results, microseconds per frame.
#[derive(Debug, Serialize)]
pub struct CameraBench {
    pub width: usize,
    pub height: usize,
    pub jpeg_bytes: usize,
    pub quality: u8,
    /// The policy input: key, H x W, resize rule.
    pub policy_input: String,
    pub frames: usize,
    pub mjpeg_decode: Percentiles,
    pub yuyv_to_rgb: Percentiles,
    pub resize_normalise: Percentiles,
    /// MJPEG decode + resize + normalise, each frame.
    pub mjpeg_total: Percentiles,
    /// YUYV conversion + resize + normalise, each frame.
    pub yuyv_total: Percentiles,
}

/// A 640x480 view of the simulator's scene with sensor-like noise (so the
/// JPEG carries the detail of a real camera frame, not flat colours).
fn camera_like_frame(w: usize, h: usize) -> Vec<u8> {
    let world = SimWorld::new(SimConfig {
        image_width: w,
        image_height: h,
        ..SimConfig::default()
    });
    let mut rgb = vec![0u8; w * h * 3];
    world.render_head(&mut rgb);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for v in &mut rgb {
        *v = (f32::from(*v) + rng.random_range(-6.0f32..6.0)).clamp(0.0, 255.0) as u8;
    }
    rgb
}

/// RGB8 -> YUYV (BT.601 limited range), the inverse of the camera decoder.
fn rgb_to_yuyv(rgb: &[u8]) -> Vec<u8> {
    let px = |p: &[u8]| {
        let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
        (
            16.0 + 0.257 * r + 0.504 * g + 0.098 * b,
            128.0 - 0.148 * r - 0.291 * g + 0.439 * b,
            128.0 + 0.439 * r - 0.368 * g - 0.071 * b,
        )
    };
    let mut out = Vec::with_capacity(rgb.len() / 3 * 2);
    for pair in rgb.chunks_exact(6) {
        let (y0, u0, v0) = px(&pair[..3]);
        let (y1, u1, v1) = px(&pair[3..]);
        for v in [y0, (u0 + u1) / 2.0, y1, (v0 + v1) / 2.0] {
            out.push(v.round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

fn bench(a: &Args) -> anyhow::Result<()> {
    let (w, h) = (640usize, 480usize);
    let m = PolicyPackage::read_manifest(&a.policy)
        .with_context(|| format!("--policy {}", a.policy.display()))?;
    let spec = m
        .image_inputs()
        .into_iter()
        .next()
        .with_context(|| format!("policy {}: no camera input", a.policy.display()))?;
    let norm = m.normalization.get(&spec.key).with_context(|| {
        format!(
            "policy {}: no normalization for {}",
            a.policy.display(),
            spec.key
        )
    })?;
    let mut pre = ImagePreprocessor::new(&spec, &Normalizer::new(norm, 3));
    let mut out = vec![0f32; pre.out_len()];
    let rgb = camera_like_frame(w, h);
    let jpeg = encode_jpeg_rgb(&rgb, w, h, a.quality).map_err(anyhow::Error::msg)?;
    let yuyv = rgb_to_yuyv(&rgb);
    let (mut dec, mut conv, mut prep, mut tot_j, mut tot_y) = (
        Latency::new(),
        Latency::new(),
        Latency::new(),
        Latency::new(),
        Latency::new(),
    );
    let mut yuv_rgb = Vec::new();
    let warmup = 10;
    for i in 0..a.frames + warmup {
        let t0 = Instant::now();
        let px = decode_frame(PixelFormat::Mjpeg, &jpeg, w, h, 0).map_err(anyhow::Error::msg)?;
        let t1 = Instant::now();
        let f = Frame {
            data: &px,
            width: w,
            height: h,
            order: ColorOrder::Rgb,
        };
        pre.process(&f, &mut out)?;
        let t2 = Instant::now();
        yuyv_to_rgb(&yuyv, w, h, w * 2, &mut yuv_rgb).map_err(anyhow::Error::msg)?;
        let t3 = Instant::now();
        let f = Frame {
            data: &yuv_rgb,
            width: w,
            height: h,
            order: ColorOrder::Rgb,
        };
        pre.process(&f, &mut out)?;
        let t4 = Instant::now();
        if i >= warmup {
            dec.record(t1 - t0);
            prep.record(t2 - t1);
            tot_j.record(t2 - t0);
            conv.record(t3 - t2);
            tot_y.record(t4 - t2);
        }
    }
    let r = CameraBench {
        width: w,
        height: h,
        jpeg_bytes: jpeg.len(),
        quality: a.quality,
        policy_input: format!(
            "{} {}x{} {:?}",
            spec.key, spec.height, spec.width, spec.resize
        ),
        frames: a.frames,
        mjpeg_decode: dec.percentiles(),
        yuyv_to_rgb: conv.percentiles(),
        resize_normalise: prep.percentiles(),
        mjpeg_total: tot_j.percentiles(),
        yuyv_total: tot_y.percentiles(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "camera path, {w}x{h} frame ({} KB MJPEG at quality {}), into {} ({} frames, one thread):",
        r.jpeg_bytes / 1024,
        r.quality,
        r.policy_input,
        r.frames
    );
    for (name, p) in [
        ("mjpeg decode", &r.mjpeg_decode),
        ("resize + normalise", &r.resize_normalise),
        ("mjpeg total", &r.mjpeg_total),
        ("yuyv -> rgb", &r.yuyv_to_rgb),
        ("yuyv total", &r.yuyv_total),
    ] {
        println!(
            "  {name:<20} p50 {:>8.0} us   p99 {:>8.0} us",
            p.p50_us, p.p99_us
        );
    }
    Ok(())
}
