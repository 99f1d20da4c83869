//! Train-time image augmentation (MANIFLOW.md section 3), drawn per sample,
//! never used at inference: random crop of 95% resized back, rotation within
//! +-5 degrees (one affine warp, bilinear, border padding), and colour jitter
//! (brightness 0.3, contrast 0.4, saturation 0.5, hue 0.08).

use tch::{Kind, Tensor};

/// `x`: (N, 3, H, W) in [0, 1]. Uses torch's global RNG (seeded per step).
pub fn augment(x: &Tensor) -> Tensor {
    let s = x.size();
    let n = s[0];
    let opts = (Kind::Float, x.device());
    // Affine: scale 0.95 (crop), random offset within the remaining 5%, rotation.
    let scale = 0.95;
    let angle = (crate::rng::rand(&[n], opts) * 2.0 - 1.0) * (5.0f64.to_radians());
    let (ca, sa) = (angle.cos() * scale, angle.sin() * scale);
    let tx = (crate::rng::rand(&[n], opts) * 2.0 - 1.0) * (1.0 - scale);
    let ty = (crate::rng::rand(&[n], opts) * 2.0 - 1.0) * (1.0 - scale);
    let row0 = Tensor::stack(&[&ca, &(-&sa), &tx], 1);
    let row1 = Tensor::stack(&[&sa, &ca, &ty], 1);
    let theta = Tensor::stack(&[row0, row1], 1); // (N, 2, 3)
    let grid = Tensor::affine_grid_generator(&theta, s.as_slice(), false);
    // interpolation 0 = bilinear, padding 1 = border
    let y = x.grid_sampler(&grid, 0, 1, false);
    colour_jitter(&y)
}

fn rand_factor(n: i64, amount: f64, opts: (Kind, tch::Device)) -> Tensor {
    (crate::rng::rand(&[n, 1, 1, 1], opts) * 2.0 - 1.0) * amount + 1.0
}

fn grey(x: &Tensor) -> Tensor {
    let w = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]).to_device(x.device());
    (x * w).sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
}

pub fn colour_jitter(x: &Tensor) -> Tensor {
    let n = x.size()[0];
    let opts = (Kind::Float, x.device());
    // brightness
    let mut y = (x * rand_factor(n, 0.3, opts)).clamp(0.0, 1.0);
    // contrast: blend with the mean grey level
    let c = rand_factor(n, 0.4, opts);
    let m = grey(&y).mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
    let mix: Tensor = &y * &c + m * (c.ones_like() - &c);
    y = mix.clamp(0.0, 1.0);
    // saturation: blend with the grey image
    let s = rand_factor(n, 0.5, opts);
    let g = grey(&y);
    let mix: Tensor = &y * &s + g * (s.ones_like() - &s);
    y = mix.clamp(0.0, 1.0);
    // hue: rotate chroma in YIQ space by up to +-0.08 turns
    let h = (crate::rng::rand(&[n], opts) * 2.0 - 1.0) * (0.08 * std::f64::consts::TAU);
    hue_rotate(&y, &h).clamp(0.0, 1.0)
}

fn hue_rotate(x: &Tensor, angle: &Tensor) -> Tensor {
    let dev = x.device();
    let to_yiq = Tensor::from_slice(&[0.299f32, 0.587, 0.114, 0.596, -0.274, -0.322, 0.211, -0.523, 0.312])
        .view([3, 3])
        .to_device(dev);
    let to_rgb = to_yiq.inverse();
    let n = angle.size()[0];
    let (c, s) = (angle.cos(), angle.sin());
    let one = Tensor::ones([n], (Kind::Float, dev));
    let zero = Tensor::zeros([n], (Kind::Float, dev));
    let rot = Tensor::stack(
        &[
            Tensor::stack(&[&one, &zero, &zero], 1),
            Tensor::stack(&[&zero, &c, &(-&s)], 1),
            Tensor::stack(&[&zero, &s, &c], 1),
        ],
        1,
    ); // (N, 3, 3)
    let m = to_rgb.unsqueeze(0).matmul(&rot).matmul(&to_yiq.unsqueeze(0)); // (N, 3, 3)
    let sz = x.size();
    let flat = x.view([sz[0], 3, -1]);
    m.matmul(&flat).view(sz.as_slice())
}
