//! `maniflow`: run, inspect and benchmark policy packages.
//!
//! Thin on purpose: each subcommand lives in `cli/`, the work in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use maniflow_runtime::cli;

#[derive(Parser)]
#[command(
    name = "maniflow",
    version,
    about = "Real-time runtime for ManiFlow and ACT robot policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a policy package: inputs, outputs, normalisation, sampler, graphs, parameters.
    Inspect(cli::inspect::Args),
    /// Latency of every stage vs the raw ONNX Runtime sessions, and peak memory.
    Bench(cli::bench::Args),
    /// One observation (.npz, raw units) -> the unnormalised action chunk (.npz).
    Infer(cli::infer::Args),
    /// The main job on the embedded default: the bundled policy in a closed loop on synthetic observations.
    Demo(cli::demo::Args),
    /// The robot node: subscribe to the robot's streams, run the policy, publish commands.
    Run(cli::run::Args),
    /// The simulated SO-101 pick task on the same transports (a separate process).
    Sim(cli::sim::Args),
    /// Record demonstrations from the robot's streams into a LeRobot v3.0 dataset.
    Record(cli::record::Args),
    /// Closed-loop evaluation on the simulated SO-101 through the real transports.
    Eval(cli::eval::Args),
    /// One-way latency of images and joint states over each transport on loopback.
    TransportBench(cli::transport_bench::Args),
    /// A leader SO-101 drives a follower SO-101 through the safety filter.
    Teleop(cli::teleop::Args),
    /// A real SO-101 on its bus, bridged to zenoh or ROS 2 (joint_states, joint_command, diagnostics).
    Robot(cli::robot::Args),
    /// Bus time per control tick, ours vs LeRobot's, on the servo emulator at 1 Mbps.
    BusBench(cli::bus_bench::Args),
    /// V4L2 cameras on this machine with their formats, sizes and rates; --bench: the camera path's cost per frame.
    Cameras(cli::cameras::Args),
    /// Calibrate a real SO-101 (follower or leader) as LeRobot does; writes LeRobot's file.
    Calibrate(cli::calibrate::Args),
    /// On a GPU machine: GPU preprocessing against the CPU path, and a package
    /// on ONNX Runtime's CUDA provider against the CPU (see README, GPU).
    GpuCheck(cli::gpu_check::Args),
}

fn main() -> ExitCode {
    // launch_ros appends `--ros-args ...` to every node's command line: split it
    // off before clap sees it.
    let mut args: Vec<String> = std::env::args().collect();
    let ros_args = match args.iter().position(|a| a == "--ros-args") {
        Some(i) => args.split_off(i),
        None => Vec::new(),
    };
    let cli = Cli::parse_from(args);
    let res = match cli.command {
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Infer(a) => cli::infer::run(a),
        Command::Demo(a) => cli::demo::run(a),
        Command::Run(a) => cli::run::run(a, cli::run::parse_ros_args(&ros_args)),
        Command::Sim(a) => cli::sim::run(a),
        Command::Record(a) => cli::record::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::TransportBench(a) => cli::transport_bench::run(a),
        Command::GpuCheck(a) => cli::gpu_check::run(a),
        Command::Calibrate(a) => cli::calibrate::run(a),
        Command::Cameras(a) => cli::cameras::run(a),
        Command::Teleop(a) => cli::teleop::run(a),
        Command::Robot(a) => cli::robot::run(a),
        Command::BusBench(a) => cli::bus_bench::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line (with its causes), no backtrace.
            let mut msg = format!("{e}");
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("maniflow: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
