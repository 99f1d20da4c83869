//! PNG plots of a run's metrics (`run_dir/plots/*.png`), drawn with `plotters`'
//! bitmap backend into an RGB buffer and encoded with the `png` crate. Text uses
//! DejaVu Sans embedded in the binary (`trainer/assets/fonts/`, licence beside
//! it) through plotters' `ab_glyph` feature, so no system fonts or fontconfig
//! are needed. A panel whose metrics are all absent is skipped.

use crate::metrics::{merge_by_step, Record};
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::{Path, PathBuf};
use std::sync::Once;

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FONT: &str = "sans-serif";
const W: u32 = 1100;
const H: u32 = 650;

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_err() {
            eprintln!(
                "warning: embedded DejaVuSans.ttf could not be loaded; plot text may be missing"
            );
        }
    });
}

#[derive(Clone, Copy, PartialEq)]
enum YScale {
    Linear,
    Log,
    /// Log when every value is positive and max/min > 100.
    Auto,
}

struct Panel {
    file: &'static str,
    title: &'static str,
    y_label: &'static str,
    series: Vec<String>,
    /// (mean series, std series) drawn as mean +- std bands.
    bands: Vec<(String, String)>,
    scale: YScale,
}

fn keys_matching(records: &[Record], pred: impl Fn(&str) -> bool) -> Vec<String> {
    let mut keys: Vec<String> = records
        .iter()
        .flat_map(|r| r.scalars.keys())
        .filter(|k| pred(k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn panels(records: &[Record]) -> Vec<Panel> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let modality_order = ["head", "wrist", "rgb", "tactile", "proprio"];
    let rank = |k: &String| {
        modality_order
            .iter()
            .position(|m| k.contains(&format!("_{m}")))
            .unwrap_or(99)
    };
    let mut gate_modality = keys_matching(records, |k| {
        k.starts_with("gate/modality_") && k.ends_with("_mean")
    });
    gate_modality.sort_by_key(rank);
    let bands = gate_modality
        .iter()
        .map(|m| (m.clone(), format!("{}_std", m.trim_end_matches("_mean"))))
        .collect();
    let mut attn_mod = keys_matching(records, |k| k.starts_with("attn/modality_"));
    attn_mod.sort_by_key(rank);
    let mut attn = s(&["attn/entropy", "attn/entropy_diff"]);
    attn.extend(attn_mod);
    vec![
        Panel {
            file: "losses.png",
            title: "Losses",
            y_label: "loss (log scale)",
            series: s(&["train_loss", "loss_flow", "loss_ct", "bc_loss", "val_loss"]),
            bands: vec![],
            scale: YScale::Log,
        },
        Panel {
            file: "lr.png",
            title: "Learning rate",
            y_label: "lr",
            series: s(&["lr", "batch/lr"]),
            bands: vec![],
            scale: YScale::Linear,
        },
        Panel {
            file: "grad_norm.png",
            title: "Gradient norm (before clipping)",
            y_label: "grad_norm",
            series: s(&["grad_norm"]),
            bands: vec![],
            scale: YScale::Auto,
        },
        Panel {
            file: "velocity.png",
            title: "Predicted velocity magnitude (RMS)",
            y_label: "magnitude",
            series: s(&["v_flow_pred_magnitude", "v_ct_pred_magnitude"]),
            bands: vec![],
            scale: YScale::Linear,
        },
        Panel {
            file: "gate.png",
            title: "Gate statistics",
            y_label: "value",
            series: s(&[
                "gate/mean_activation",
                "gate/std_activation",
                "gate/saturation_high_ratio",
                "gate/saturation_low_ratio",
                "gate/layer_variance",
                "gate/early_layers_mean",
                "gate/late_layers_mean",
                "gate/early_vs_late_diff",
            ]),
            bands: vec![],
            scale: YScale::Linear,
        },
        Panel {
            file: "modality_gates.png",
            title: "Modality gates (mean, band = std over layers)",
            y_label: "gate",
            series: gate_modality,
            bands,
            scale: YScale::Linear,
        },
        Panel {
            file: "mae_losses.png",
            title: "Tactile MAE losses (per batch)",
            y_label: "loss (log scale)",
            series: s(&[
                "batch/loss_total",
                "batch/loss_static",
                "batch/loss_dynamic",
                "batch/loss_recon",
                "batch/loss_pred",
            ]),
            bands: vec![],
            scale: YScale::Log,
        },
        Panel {
            file: "mae_epochs.png",
            title: "Tactile MAE losses (epoch means)",
            y_label: "loss (log scale)",
            series: s(&[
                "epoch/train_loss",
                "epoch/loss_static",
                "epoch/loss_dynamic",
                "epoch/best_loss_so_far",
            ]),
            bands: vec![],
            scale: YScale::Log,
        },
        Panel {
            file: "mae_balance.png",
            title: "Tactile MAE balance (healthy: ratio 0.5..1.5, contributions 0.3..0.7)",
            y_label: "ratio / share",
            series: s(&[
                "batch/loss_ratio",
                "batch/static_contribution",
                "batch/dynamic_contribution",
                "epoch/loss_ratio",
                "epoch/actual_static_contribution",
                "epoch/actual_dynamic_contribution",
            ]),
            bands: vec![],
            scale: YScale::Linear,
        },
        Panel {
            file: "attention.png",
            title: "Cross-attention",
            y_label: "entropy / attention share",
            series: attn,
            bands: vec![],
            scale: YScale::Linear,
        },
    ]
}

/// Finite (step, value) points of `name`; positive only when `positive`.
fn points(records: &[Record], name: &str, positive: bool) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| r.get(name).map(|v| (r.step as f64, v)))
        .filter(|(_, v)| v.is_finite() && (!positive || *v > 0.0))
        .collect()
}

/// Write every panel with data to `run_dir/plots/`; returns the files written.
pub fn write_all(run_dir: impl AsRef<Path>, records: &[Record]) -> Result<Vec<PathBuf>> {
    ensure_font();
    let records = merge_by_step(records);
    let dir = run_dir.as_ref().join("plots");
    let mut written = Vec::new();
    for panel in panels(&records) {
        let probe: Vec<Vec<(f64, f64)>> = panel
            .series
            .iter()
            .map(|n| points(&records, n, false))
            .collect();
        if probe.iter().all(|p| p.is_empty()) {
            continue;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(panel.file);
        draw_panel(&records, &panel, &path)
            .with_context(|| format!("plotting {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

struct Prepared {
    lines: Vec<(String, Vec<(f64, f64)>)>,
    bands: Vec<(usize, Vec<(f64, f64)>)>,
    x: (f64, f64),
    y: (f64, f64),
    log: bool,
}

fn prepare(records: &[Record], panel: &Panel) -> Prepared {
    let all_pos = panel
        .series
        .iter()
        .flat_map(|n| points(records, n, false))
        .all(|(_, v)| v > 0.0);
    let log = match panel.scale {
        YScale::Linear => false,
        YScale::Log => true,
        YScale::Auto => {
            let vals: Vec<f64> = panel
                .series
                .iter()
                .flat_map(|n| points(records, n, true))
                .map(|p| p.1)
                .collect();
            let (lo, hi) = vals
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
            all_pos && !vals.is_empty() && hi / lo > 100.0
        }
    };
    let lines: Vec<(String, Vec<(f64, f64)>)> = panel
        .series
        .iter()
        .map(|n| (n.clone(), points(records, n, log)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let mut bands = Vec::new();
    if !log {
        for (mean_key, std_key) in &panel.bands {
            let Some(idx) = lines.iter().position(|(n, _)| n == mean_key) else {
                continue;
            };
            let pts: Vec<(f64, f64, f64)> = records
                .iter()
                .filter_map(|r| Some((r.step as f64, r.get(mean_key)?, r.get(std_key)?)))
                .filter(|(_, m, s)| m.is_finite() && s.is_finite())
                .collect();
            if pts.len() >= 2 {
                let mut poly: Vec<(f64, f64)> = pts.iter().map(|(x, m, s)| (*x, m + s)).collect();
                poly.extend(pts.iter().rev().map(|(x, m, s)| (*x, m - s)));
                bands.push((idx, poly));
            }
        }
    }
    let xs = lines.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let ys = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .chain(bands.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    // headroom at the top for the legend (upper right), growing with its rows
    let legend = 0.035 * lines.len() as f64;
    if log {
        let span = (y1 / y0).max(10.0);
        y0 /= 1.5;
        y1 *= 1.5 * span.powf(legend);
    } else {
        let span = if y1 > y0 { y1 - y0 } else { y0.abs().max(1e-3) };
        y0 -= 0.08 * span;
        y1 += (0.08 + legend) * span;
    }
    let (x0, x1) = if x1 > x0 {
        (x0, x1)
    } else {
        (x0 - 1.0, x0 + 1.0)
    };
    Prepared {
        lines,
        bands,
        x: (x0, x1),
        y: (y0, y1),
        log,
    }
}

macro_rules! draw_chart {
    ($root:expr, $panel:expr, $prep:expr, $yspec:expr) => {{
        let e = |e: &dyn std::fmt::Display| anyhow!("{e}");
        let mut chart = ChartBuilder::on($root)
            .caption($panel.title, (FONT, 26))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(85)
            .build_cartesian_2d($prep.x.0..$prep.x.1, $yspec)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc($panel.y_label)
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 14))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|x| e(&x))?;
        for (idx, poly) in &$prep.bands {
            let c = COLORS[*idx % COLORS.len()];
            chart
                .draw_series(std::iter::once(Polygon::new(
                    poly.clone(),
                    c.mix(0.18).filled(),
                )))
                .map_err(|x| e(&x))?;
        }
        for (i, (name, pts)) in $prep.lines.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            // wide strokes get miter spikes on dense, jagged series: 1 px there
            let width = if pts.len() > 200 { 1 } else { 2 };
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(width)))
                .map_err(|x| e(&x))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3))
                });
            if pts.len() <= 60 {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(|x| e(&x))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 15))
            .draw()
            .map_err(|x| e(&x))?;
    }};
}

/// One PNG of `series` (names of scalars in `records`) against the step, on the same axes
/// (`maniflow-train compare`). Linear scale, or log when every value is positive and spans
/// more than 100x.
pub(crate) fn draw_lines(records: &[Record], series: Vec<String>, title: &'static str, y_label: &'static str, path: &Path) -> Result<()> {
    ensure_font();
    let panel = Panel { file: "", title, y_label, series, bands: Vec::new(), scale: YScale::Auto };
    draw_panel(records, &panel, path)
}

fn draw_panel(records: &[Record], panel: &Panel, path: &Path) -> Result<()> {
    let prep = prepare(records, panel);
    let mut buf = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| anyhow!("{x}"))?;
        if prep.log {
            draw_chart!(&root, panel, prep, (prep.y.0..prep.y.1).log_scale());
        } else {
            draw_chart!(&root, panel, prep, prep.y.0..prep.y.1);
        }
        root.present().map_err(|x| anyhow!("{x}"))?;
    }
    write_png(path, &buf, W, H)
}

fn write_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<()> {
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for l in crate::health::tests::healthy_lines() {
            text.push_str(&serde_json::to_string(&l).unwrap());
            text.push('\n');
        }
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(&p, text).unwrap();
        crate::metrics::read_jsonl(&p).unwrap()
    }

    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn writes_all_panels_as_valid_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let mut recs = records();
        recs[5].scalars.insert("train_loss".into(), f64::NAN); // non-finite points are skipped
        let files = write_all(dir.path(), &recs).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into())
            .collect();
        assert_eq!(
            names,
            [
                "losses.png",
                "lr.png",
                "grad_norm.png",
                "velocity.png",
                "gate.png",
                "modality_gates.png",
                "attention.png"
            ]
        );
        for f in &files {
            let size = std::fs::metadata(f).unwrap().len();
            assert!(size > 10_000, "{} is only {size} bytes", f.display());
            let (w, h, px) = decode(f);
            assert_eq!((w, h), (W, H));
            let non_white = px.chunks_exact(3).filter(|p| p != &[255, 255, 255]).count();
            let frac = non_white as f64 / (w * h) as f64;
            assert!(frac > 0.01 && frac < 0.9, "{}: {frac}", f.display());
            // some saturated colour (a series line), not only black text
            assert!(
                px.chunks_exact(3).any(|p| p == [31, 119, 180]),
                "{}",
                f.display()
            );
        }
    }

    #[test]
    fn skips_absent_panels() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<Record> = records()
            .into_iter()
            .map(|mut r| {
                r.scalars.retain(|k, _| k == "train_loss" || k == "lr");
                r
            })
            .collect();
        let files = write_all(dir.path(), &recs).unwrap();
        assert_eq!(files.len(), 2);
        assert!(write_all(dir.path(), &[]).unwrap().is_empty());
        // a single point still plots
        let one = vec![recs[0].clone()];
        let files = write_all(dir.path(), &one).unwrap();
        assert_eq!(files.len(), 2);
    }
}
