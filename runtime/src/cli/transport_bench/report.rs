//! What `maniflow transport-bench` prints: the table of every pair, the p50
//! ratios, where the time goes, and the in-process cost of one image.

use std::time::Instant;

use maniflow_bridge::msg::{decode, encode, encode_to_writer, encode_vec, Image};
use maniflow_bridge::transport::image::ImageView;
use serde::Serialize;

use super::rust_peer::image;
use super::Row;
use crate::stats::Latency;

/// In-process cost of the steps a 640x480 image goes through (p50 us).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Breakdown {
    pub encode_vec_us: f64,
    pub encode_exact_buffer_us: f64,
    pub decode_us: f64,
    /// Reading the same bytes as a borrowed `ImageView` (what a zero-copy
    /// subscriber does instead of decoding).
    pub view_us: f64,
    pub memcpy_us: f64,
}

/// p50 of `f` over `n` runs, in us.
fn p50(n: usize, mut f: impl FnMut()) -> f64 {
    let mut lat = Latency::new();
    for _ in 0..n {
        let t = Instant::now();
        f();
        lat.record(t.elapsed());
    }
    lat.percentiles().p50_us
}

/// The steps of one image in this process: encoding into a fresh vector (what
/// a publisher without shared memory does), encoding into a buffer of the
/// exact size (what the shared-memory publisher does), decoding, and a plain
/// copy of the frame for scale.
pub(super) fn breakdown(w: u32, h: u32) -> anyhow::Result<Breakdown> {
    let img = image("bench", w, h);
    let bytes = encode_vec(&img)?;
    let n = 100;
    let encode_vec_us = p50(n, || {
        let mut v = Vec::new();
        let _ = encode(&img, &mut v);
        std::hint::black_box(v);
    });
    let mut exact = vec![0u8; bytes.len()];
    let encode_exact_buffer_us = p50(n, || {
        let mut wr: &mut [u8] = &mut exact;
        let _ = encode_to_writer(&img, &mut wr);
    });
    let decode_us = p50(n, || {
        let m = decode::<Image>(&bytes);
        std::hint::black_box(m.is_ok());
    });
    let view_us = p50(n, || {
        let v = ImageView::parse(std::hint::black_box(&bytes));
        std::hint::black_box(v.is_ok());
    });
    let src = img.data.clone();
    let mut dst = vec![0u8; src.len()];
    let memcpy_us = p50(n, || {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
    });
    Ok(Breakdown {
        encode_vec_us,
        encode_exact_buffer_us,
        decode_us,
        view_us,
        memcpy_us,
    })
}

pub(super) fn print_table(rows: &[Row], b: &Breakdown) {
    println!(
        "{:<28} {:<32} {:<10} {:<20} {:>7} {:>9} {:>9} {:>9} {:>9}  shm",
        "path",
        "transport",
        "measure",
        "message",
        "bytes",
        "recv/sent",
        "p50 us",
        "p99 us",
        "max us"
    );
    for r in rows {
        let head = format!(
            "{:<28} {:<32} {:<10} {:<20} {:>7}",
            r.path, r.transport, r.measure, r.message, r.bytes
        );
        match &r.skipped {
            Some(why) => println!("{head}   skipped: {why}"),
            None => println!(
                "{head} {:>4}/{:<4} {:>9.0} {:>9.0} {:>9.0}  {}",
                r.received,
                r.sent,
                r.latency_us.p50_us,
                r.latency_us.p99_us,
                r.latency_us.max_us,
                r.shm.as_deref().unwrap_or("")
            ),
        }
    }
    // Ratios of medians, where both rows have numbers.
    let find = |path: &str, transport: &str, msg: &str| {
        rows.iter()
            .find(|r| {
                r.path == path
                    && r.transport.starts_with(transport)
                    && r.message.starts_with(msg)
                    && r.skipped.is_none()
                    && r.received > 0
            })
            .map(|r| r.latency_us.p50_us)
    };
    let pairs = [
        (
            ("maniflow -> maniflow", "zenoh, shm on"),
            ("python -> python", "eclipse-zenoh, shm on"),
        ),
        (
            ("maniflow -> maniflow", "zenoh, shm off"),
            ("python -> python", "eclipse-zenoh, shm off"),
        ),
        (
            ("maniflow -> maniflow", "zenoh, shm on"),
            ("maniflow -> maniflow", "zenoh, shm off"),
        ),
        (
            ("maniflow -> maniflow", "zenoh, shm on"),
            ("maniflow -> maniflow", "zenoh copying, shm on"),
        ),
        (("rclpy -> maniflow", "DDS"), ("rclpy -> rclpy", "DDS")),
        (
            ("rclpy -> maniflow -> rclpy", "DDS"),
            ("rclpy -> rclpy -> rclpy", "DDS"),
        ),
    ];
    println!("p50 ratios (first / second; below 1 = the first is faster):");
    for ((pa, ta), (pb, tb)) in pairs {
        for msg in ["JointState", "Image"] {
            if let (Some(x), Some(y)) = (find(pa, ta, msg), find(pb, tb, msg)) {
                if y > 0.0 {
                    println!(
                        "  {msg:<10} {pa} ({ta}) / {pb} ({tb}): {x:.0} / {y:.0} us = {:.2}",
                        x / y
                    );
                }
            }
        }
    }
    println!("where the time goes, ours (p50 / p99 us): publish call (serialise + hand over) | stamp -> receive callback | stamp -> decoded message");
    println!("  (ros2-dds and rmw_zenoh take their receive time after decoding)");
    for r in rows {
        if let (Some(p), Some(c)) = (&r.publish_call_us, &r.to_callback_us) {
            println!(
                "  {:<32} {:<20} {:>6.0} / {:<6.0} | {:>6.0} / {:<6.0} | {:>6.0} / {:<6.0}",
                r.transport,
                r.message,
                p.p50_us,
                p.p99_us,
                c.p50_us,
                c.p99_us,
                r.latency_us.p50_us,
                r.latency_us.p99_us
            );
        }
    }
    for r in rows {
        if let (Some(l), Some(f), Some(p)) = (&r.loan_us, &r.fill_us, &r.put_us) {
            println!(
                "  {:<32} image publish call = loan {:.0} / {:.0} + write pixels {:.0} / {:.0} + put {:.0} / {:.0}",
                r.transport, l.p50_us, l.p99_us, f.p50_us, f.p99_us, p.p50_us, p.p99_us
            );
        }
    }
    println!(
        "one image in-process, p50: encode into a new Vec {:.0} us, into an exact-size buffer {:.0} us, decode {:.0} us, borrowed view {:.1} us, memcpy of the pixels {:.0} us",
        b.encode_vec_us, b.encode_exact_buffer_us, b.decode_us, b.view_us, b.memcpy_us
    );
}
