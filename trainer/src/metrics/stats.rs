//! Gate and attention statistics of METRICS.md, computed from plain arrays
//! (the caller copies tensors out with `Vec::<f32>::try_from`). All sums are in
//! f64; std and variance are population (ddof = 0, like `np.std`).
//!
//! Layer thirds: with `L` layers, `k = max(1, floor(L / 3))`; "early" is layers
//! `0..k`, "late" is layers `L-k..L`. For L = 8 that is {0,1} and {6,7}; for
//! L < 3 both use one layer (L = 1: the same layer, so the diffs are 0). The seed
//! Python used `[:L//3]` and `[2L//3:]` (late = 3 layers for L = 8, and 0 when
//! L < 3); we keep the two groups the same size and never empty.

/// Number of layers in the early (and in the late) group.
pub fn third(n_layers: usize) -> usize {
    (n_layers / 3).max(1).min(n_layers)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn pop_var(xs: &[f64]) -> f64 {
    let m = mean(xs);
    xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64
}

/// (mean of the early group, mean of the late group) of per-layer values.
fn early_late(per_layer: &[f64]) -> (f64, f64) {
    let k = third(per_layer.len());
    (
        mean(&per_layer[..k]),
        mean(&per_layer[per_layer.len() - k..]),
    )
}

/// Global gate statistics. `per_layer[l]` holds every gate value of block `l`
/// (self- and cross-attention output gates, all elements). Empty layers are
/// skipped; no layers -> empty result.
///
/// - `gate/mean_activation`, `gate/std_activation`: mean and population std over all values
/// - `gate/saturation_high_ratio`: fraction of values > 0.9; `..._low_ratio`: fraction < 0.1
/// - `gate/layer_variance`: population variance over layers of the per-layer mean
/// - `gate/early_layers_mean`, `gate/late_layers_mean`: mean of the per-layer means of
///   the first / last third (see module doc); `gate/early_vs_late_diff` = late - early
pub fn gate_stats(per_layer: &[Vec<f32>]) -> Vec<(String, f64)> {
    let layers: Vec<&Vec<f32>> = per_layer.iter().filter(|l| !l.is_empty()).collect();
    if layers.is_empty() {
        return Vec::new();
    }
    let n: usize = layers.iter().map(|l| l.len()).sum();
    let all = || layers.iter().flat_map(|l| l.iter().map(|&g| g as f64));
    let m = all().sum::<f64>() / n as f64;
    let var = all().map(|g| (g - m) * (g - m)).sum::<f64>() / n as f64;
    let high = all().filter(|&g| g > 0.9).count() as f64 / n as f64;
    let low = all().filter(|&g| g < 0.1).count() as f64 / n as f64;
    let layer_means: Vec<f64> = layers
        .iter()
        .map(|l| l.iter().map(|&g| g as f64).sum::<f64>() / l.len() as f64)
        .collect();
    let (early, late) = early_late(&layer_means);
    vec![
        ("gate/mean_activation".into(), m),
        ("gate/std_activation".into(), var.sqrt()),
        ("gate/saturation_high_ratio".into(), high),
        ("gate/saturation_low_ratio".into(), low),
        ("gate/layer_variance".into(), pop_var(&layer_means)),
        ("gate/early_layers_mean".into(), early),
        ("gate/late_layers_mean".into(), late),
        ("gate/early_vs_late_diff".into(), late - early),
    ]
}

/// Modality gate statistics from `gamma[layer][modality][head]` (modality order
/// as in `modality_names`, e.g. `["head", "wrist", "tactile", "proprio"]`).
/// For each modality with data:
/// - `gate/modality_<name>_mean`: mean over layers and heads (all elements)
/// - `gate/modality_<name>_std`: population std over layers of the head-averaged value
///
/// Layers lacking that modality (short or empty vectors) are skipped for it.
pub fn modality_gate_stats(gamma: &[Vec<Vec<f32>>], modality_names: &[&str]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (m, name) in modality_names.iter().enumerate() {
        let per_layer: Vec<&Vec<f32>> = gamma
            .iter()
            .filter_map(|layer| layer.get(m))
            .filter(|heads| !heads.is_empty())
            .collect();
        if per_layer.is_empty() {
            continue;
        }
        let n: usize = per_layer.iter().map(|h| h.len()).sum();
        let total: f64 = per_layer
            .iter()
            .flat_map(|h| h.iter().map(|&g| g as f64))
            .sum();
        let head_avg: Vec<f64> = per_layer
            .iter()
            .map(|h| h.iter().map(|&g| g as f64).sum::<f64>() / h.len() as f64)
            .collect();
        out.push((format!("gate/modality_{name}_mean"), total / n as f64));
        out.push((
            format!("gate/modality_{name}_std"),
            pop_var(&head_avg).sqrt(),
        ));
    }
    out
}

/// `correlation/loss_vs_tactile_gate` = train_loss x gate/modality_tactile_mean,
/// `correlation/loss_vs_proprio_gate` likewise (the seed's definition: a product,
/// not a correlation coefficient). Absent gate means give no entry.
pub fn correlation_stats(
    train_loss: f64,
    tactile_mean: Option<f64>,
    proprio_mean: Option<f64>,
) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    if let Some(t) = tactile_mean {
        out.push(("correlation/loss_vs_tactile_gate".into(), train_loss * t));
    }
    if let Some(p) = proprio_mean {
        out.push(("correlation/loss_vs_proprio_gate".into(), train_loss * p));
    }
    out
}

/// Cross-attention statistics. `per_layer_probs[l] = (probs, [B, H, T, L])`,
/// probs row-major (B, H, T, L), each length-L row a softmax distribution over
/// context tokens. `modality_map` gives each modality's token range
/// `(name, start, end)` (end exclusive, clamped to L).
///
/// - `attn/entropy`: mean over layers of the mean over (batch, head, query) rows
///   of H(p)/ln(L), H(p) = -sum p ln p with 0 ln 0 = 0 (entries <= 0 count as 0).
///   Rows are used as given (not renormalised). With L = 1 a row's normalised
///   entropy is defined as 1.0: a single token is the uniform distribution, and
///   that must not read as "attention collapse".
/// - `attn/entropy_diff`: early-third mean entropy minus late-third mean entropy
///   (layer groups as in the module doc; positive = early layers more uniform).
/// - `attn/modality_<name>`: mean over layers and rows of the mass on that
///   modality's tokens; `attn/modality_rgb` = head + wrist (when either is in the map).
///
/// Every layer counts equally (rows averaged within a layer first). A layer
/// whose buffer length is not B*H*T*L, or with L = 0, is skipped.
pub fn attn_stats(
    per_layer_probs: &[(&[f32], [usize; 4])],
    modality_map: &[(String, usize, usize)],
) -> Vec<(String, f64)> {
    let mut layer_entropy = Vec::new();
    let mut layer_mass: Vec<Vec<f64>> = Vec::new();
    for (probs, [b, h, t, l]) in per_layer_probs {
        let (b, h, t, l) = (*b, *h, *t, *l);
        let rows = b * h * t;
        if l == 0 || rows == 0 || probs.len() != rows * l {
            continue;
        }
        let ln_l = (l as f64).ln();
        let mut ent_sum = 0.0;
        let mut mass_sum = vec![0.0; modality_map.len()];
        for row in probs.chunks_exact(l) {
            if l == 1 {
                ent_sum += 1.0;
            } else {
                let hsum: f64 = row
                    .iter()
                    .map(|&p| p as f64)
                    .filter(|&p| p > 0.0)
                    .map(|p| -p * p.ln())
                    .sum();
                ent_sum += hsum / ln_l;
            }
            for (i, (_, start, end)) in modality_map.iter().enumerate() {
                let (s, e) = ((*start).min(l), (*end).min(l));
                if s < e {
                    mass_sum[i] += row[s..e].iter().map(|&p| p as f64).sum::<f64>();
                }
            }
        }
        layer_entropy.push(ent_sum / rows as f64);
        layer_mass.push(mass_sum.into_iter().map(|m| m / rows as f64).collect());
    }
    if layer_entropy.is_empty() {
        return Vec::new();
    }
    let (early, late) = early_late(&layer_entropy);
    let mut out = vec![
        ("attn/entropy".to_string(), mean(&layer_entropy)),
        ("attn/entropy_diff".to_string(), early - late),
    ];
    let mut rgb = None::<f64>;
    for (i, (name, _, _)) in modality_map.iter().enumerate() {
        let per_layer: Vec<f64> = layer_mass.iter().map(|m| m[i]).collect();
        let v = mean(&per_layer);
        if name == "head" || name == "wrist" {
            rgb = Some(rgb.unwrap_or(0.0) + v);
        }
        out.push((format!("attn/modality_{name}"), v));
    }
    if let Some(v) = rgb {
        out.push(("attn/modality_rgb".into(), v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(stats: &[(String, f64)], k: &str) -> f64 {
        stats
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("{k} missing in {stats:?}"))
            .1
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn thirds() {
        assert_eq!(
            (
                third(1),
                third(2),
                third(3),
                third(5),
                third(6),
                third(8),
                third(12)
            ),
            (1, 1, 1, 1, 2, 2, 4)
        );
        assert_eq!(third(0), 0);
    }

    #[test]
    fn gate_stats_by_hand() {
        // values 0.95 0.05 0.0 0.2 | 0.5 0.5 | 0.9 0.7 ; layer means 0.3 0.5 0.8
        let layers = vec![
            vec![0.95f32, 0.05, 0.0, 0.2],
            vec![0.5, 0.5],
            vec![0.9, 0.7],
        ];
        let s = gate_stats(&layers);
        assert_eq!(s.len(), 8);
        // mean = 3.8 / 8
        close(get(&s, "gate/mean_activation"), 0.475);
        // sum of squares = .9025+.0025+0+.04+.25+.25+.81+.49 = 2.745; var = 2.745/8 - .475^2 = .117500
        close(get(&s, "gate/std_activation"), 0.1175f64.sqrt());
        // > 0.9: only 0.95 (0.9 itself is not > 0.9); < 0.1: 0.05 and 0.0
        close(get(&s, "gate/saturation_high_ratio"), 1.0 / 8.0);
        close(get(&s, "gate/saturation_low_ratio"), 2.0 / 8.0);
        // layer means .3 .5 .8, mean 1.6/3; var = (.09+.25+.64)/3 - (1.6/3)^2 = .98/3 - 2.56/9
        close(get(&s, "gate/layer_variance"), 0.98 / 3.0 - 2.56 / 9.0);
        close(get(&s, "gate/early_layers_mean"), 0.3);
        close(get(&s, "gate/late_layers_mean"), 0.8);
        close(get(&s, "gate/early_vs_late_diff"), 0.5);
    }

    #[test]
    fn gate_layer_groups() {
        // 6 layers with constant values 0..5 / 10: early = layers 0,1, late = 4,5
        let layers: Vec<Vec<f32>> = (0..6).map(|i| vec![i as f32 / 10.0; 3]).collect();
        let s = gate_stats(&layers);
        close(get(&s, "gate/early_layers_mean"), 0.05);
        close(get(&s, "gate/late_layers_mean"), 0.45);
        close(get(&s, "gate/early_vs_late_diff"), 0.4);
        // one layer: early = late = that layer
        let s = gate_stats(&[vec![0.2f32, 0.4]]);
        close(get(&s, "gate/early_vs_late_diff"), 0.0);
        close(get(&s, "gate/layer_variance"), 0.0);
        close(get(&s, "gate/std_activation"), 0.1);
        // two layers: first vs second
        let s = gate_stats(&[vec![0.2f32], vec![0.6]]);
        close(get(&s, "gate/early_vs_late_diff"), 0.4);
        close(get(&s, "gate/layer_variance"), 0.04);
        assert!(gate_stats(&[]).is_empty());
        assert!(gate_stats(&[vec![]]).is_empty());
    }

    #[test]
    fn modality_gates_by_hand() {
        // [layer][modality][head]: head: L0 (.2,.4) avg .3, L1 (.6,.8) avg .7; tactile const .1
        let gamma = vec![
            vec![vec![0.2f32, 0.4], vec![0.1, 0.1]],
            vec![vec![0.6f32, 0.8], vec![0.1, 0.1]],
        ];
        let s = modality_gate_stats(&gamma, &["head", "tactile"]);
        assert_eq!(s.len(), 4);
        close(get(&s, "gate/modality_head_mean"), 0.5);
        close(get(&s, "gate/modality_head_std"), 0.2);
        close(get(&s, "gate/modality_tactile_mean"), 0.1);
        close(get(&s, "gate/modality_tactile_std"), 0.0);
        // a name without data gives nothing
        let s = modality_gate_stats(&gamma, &["head", "tactile", "proprio"]);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn correlation_products() {
        let s = correlation_stats(0.5, Some(0.4), None);
        assert_eq!(s.len(), 1);
        close(get(&s, "correlation/loss_vs_tactile_gate"), 0.2);
        let s = correlation_stats(2.0, Some(0.25), Some(0.75));
        close(get(&s, "correlation/loss_vs_proprio_gate"), 1.5);
    }

    fn map4() -> Vec<(String, usize, usize)> {
        vec![
            ("head".into(), 0, 1),
            ("wrist".into(), 1, 2),
            ("tactile".into(), 2, 3),
            ("proprio".into(), 3, 4),
        ]
    }

    #[test]
    fn attention_entropy_extremes() {
        let one_hot = [0.0f32, 1.0, 0.0, 0.0];
        let uniform = [0.25f32; 4];
        let half = [0.5f32, 0.5, 0.0, 0.0];
        let s = attn_stats(&[(&one_hot[..], [1, 1, 1, 4])], &[]);
        close(get(&s, "attn/entropy"), 0.0);
        let s = attn_stats(&[(&uniform[..], [1, 1, 1, 4])], &[]);
        close(get(&s, "attn/entropy"), 1.0);
        // ln2 / ln4 = 0.5
        let s = attn_stats(&[(&half[..], [1, 1, 1, 4])], &[]);
        close(get(&s, "attn/entropy"), 0.5);
        // 3 layers: uniform, half, one-hot -> mean 0.5, early - late = 1 - 0
        let s = attn_stats(
            &[
                (&uniform[..], [1, 1, 1, 4]),
                (&half[..], [1, 1, 1, 4]),
                (&one_hot[..], [1, 1, 1, 4]),
            ],
            &[],
        );
        close(get(&s, "attn/entropy"), 0.5);
        close(get(&s, "attn/entropy_diff"), 1.0);
        // L = 1: defined as 1.0
        let s = attn_stats(&[(&[1.0f32, 1.0][..], [2, 1, 1, 1])], &[]);
        close(get(&s, "attn/entropy"), 1.0);
        // bad shape is skipped
        assert!(attn_stats(&[(&uniform[..], [1, 1, 2, 4])], &[]).is_empty());
    }

    #[test]
    fn attention_averages_rows_and_modality_mass() {
        // B=2, H=1, T=1: a uniform row and a one-hot row -> entropy 0.5 in this layer
        let l0: Vec<f32> = [0.25f32, 0.25, 0.25, 0.25, 1.0, 0.0, 0.0, 0.0].to_vec();
        // second layer: B=1,H=2,T=1 rows (.1,.2,.3,.4) and (.1,.2,.3,.4)
        let l1: Vec<f32> = [0.1f32, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4].to_vec();
        let s = attn_stats(&[(&l0[..], [2, 1, 1, 4]), (&l1[..], [1, 2, 1, 4])], &map4());
        // entropy of (.1,.2,.3,.4) = 1.279854 nats / ln 4
        let h1 =
            -(0.1f64 * 0.1f64.ln() + 0.2 * 0.2f64.ln() + 0.3 * 0.3f64.ln() + 0.4 * 0.4f64.ln())
                / 4f64.ln();
        close(get(&s, "attn/entropy"), (0.5 + h1) / 2.0);
        close(get(&s, "attn/entropy_diff"), 0.5 - h1);
        // head mass: layer0 (.25 + 1)/2 = .625, layer1 .1 -> .3625
        close(get(&s, "attn/modality_head"), 0.3625);
        // wrist: layer0 .125, layer1 .2 -> .1625
        close(get(&s, "attn/modality_wrist"), 0.1625);
        close(get(&s, "attn/modality_tactile"), (0.125 + 0.3) / 2.0);
        close(get(&s, "attn/modality_proprio"), (0.125 + 0.4) / 2.0);
        close(get(&s, "attn/modality_rgb"), 0.3625 + 0.1625);
        let total: f64 = ["head", "wrist", "tactile", "proprio"]
            .iter()
            .map(|m| get(&s, &format!("attn/modality_{m}")))
            .sum();
        close(total, 1.0);
    }

    #[test]
    fn attention_without_rgb_modalities() {
        let row = [0.5f32, 0.5];
        let s = attn_stats(
            &[(&row[..], [1, 1, 1, 2])],
            &[("tactile".into(), 0, 1), ("proprio".into(), 1, 5)],
        );
        close(get(&s, "attn/modality_tactile"), 0.5);
        close(get(&s, "attn/modality_proprio"), 0.5); // end clamped to L
        assert!(s.iter().all(|(n, _)| n != "attn/modality_rgb"));
    }
}
