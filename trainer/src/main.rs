//! `maniflow-train`: the onboard trainer. This binary links libtorch (through
//! `tch`); the robot-side `maniflow` binary does not.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "maniflow-train",
    version,
    about = "Onboard trainer for ManiFlow and ACT policies (libtorch)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report the libtorch this binary runs on and the devices it sees, and run one small op on each.
    Info,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => info(),
    }
}

fn info() -> anyhow::Result<()> {
    let lib = loaded_libtorch().unwrap_or_else(|| "unknown".into());
    println!("libtorch      {lib}");
    println!(
        "cuda          {} ({} device(s))",
        tch::Cuda::is_available(),
        tch::Cuda::device_count()
    );
    println!("threads       {}", tch::get_num_threads());
    let a = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
    let b = a.matmul(&a);
    let v: Vec<f32> = b.reshape([-1]).try_into()?;
    println!("cpu matmul    [[1,2],[3,4]]^2 = {v:?}");
    anyhow::ensure!(
        v == [7.0, 10.0, 15.0, 22.0],
        "libtorch computed a wrong matmul: {v:?}"
    );
    Ok(())
}

/// Path of the libtorch_cpu.so this process mapped (proves which library the rpath found).
fn loaded_libtorch() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("libtorch_cpu.so"))
        .map(str::to_string)
}
