//! Every random draw of a training step goes through here, so that where the
//! draws come from is one switch: normally from the generator of the device
//! the tensors live on (no host round trip on a GPU), or, inside
//! [`with_host_draws`], from the CPU generator and then moved to the device, so
//! a step on the GPU sees exactly the random numbers of the same step on the
//! CPU (the GPU-vs-CPU parity check of `maniflow-train gpu-check`).

use std::cell::Cell;
use tch::{Device, Kind, Tensor};

thread_local! {
    static HOST_DRAWS: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with every draw made on the CPU generator.
pub fn with_host_draws<T>(f: impl FnOnce() -> T) -> T {
    let prev = HOST_DRAWS.with(|h| h.replace(true));
    let out = f();
    HOST_DRAWS.with(|h| h.set(prev));
    out
}

fn draw_device(device: Device) -> Device {
    if HOST_DRAWS.with(Cell::get) {
        Device::Cpu
    } else {
        device
    }
}

/// Uniform [0, 1).
pub fn rand(shape: &[i64], opts: (Kind, Device)) -> Tensor {
    Tensor::rand(shape, (opts.0, draw_device(opts.1))).to_device(opts.1)
}

/// Standard normal.
pub fn randn(shape: &[i64], opts: (Kind, Device)) -> Tensor {
    Tensor::randn(shape, (opts.0, draw_device(opts.1))).to_device(opts.1)
}

/// Standard normal shaped like `x`.
pub fn randn_like(x: &Tensor) -> Tensor {
    randn(&x.size(), (x.kind(), x.device()))
}

/// Integers in [low, high).
pub fn randint(low: i64, high: i64, shape: &[i64], device: Device) -> Tensor {
    Tensor::randint_low(low, high, shape, (Kind::Int64, draw_device(device))).to_device(device)
}

/// Dropout with the mask drawn as above.
pub fn dropout(x: &Tensor, p: f64) -> Tensor {
    if !HOST_DRAWS.with(Cell::get) {
        return x.dropout(p, true);
    }
    // The same mask arithmetic on every device, from the CPU generator.
    let keep = rand(&x.size(), (Kind::Float, x.device()))
        .ge(p)
        .to_kind(x.kind());
    x * keep / (1.0 - p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host draws reproduce the CPU generator's draws exactly, and the normal
    /// (device) draws on the CPU are what they always were.
    #[test]
    fn host_draws_follow_the_cpu_generator() {
        let _rng = crate::tch_rng_lock();
        tch::manual_seed(5);
        let plain = Tensor::rand([4], (Kind::Float, Device::Cpu));
        tch::manual_seed(5);
        let ours = rand(&[4], (Kind::Float, Device::Cpu));
        tch::manual_seed(5);
        let host = with_host_draws(|| rand(&[4], (Kind::Float, Device::Cpu)));
        let v = |t: Tensor| Vec::<f32>::try_from(t).unwrap();
        let p = v(plain);
        assert_eq!(p, v(ours));
        assert_eq!(p, v(host));
        tch::manual_seed(9);
        let a = with_host_draws(|| randint(0, 10, &[6], Device::Cpu));
        tch::manual_seed(9);
        let b = Tensor::randint_low(0, 10, [6], (Kind::Int64, Device::Cpu));
        assert_eq!(
            Vec::<i64>::try_from(a).unwrap(),
            Vec::<i64>::try_from(b).unwrap()
        );
        // The flag is restored after the closure.
        assert!(!HOST_DRAWS.with(Cell::get));
    }
}
