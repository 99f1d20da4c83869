//! `maniflow calibrate`: LeRobot's SO-101 calibration (follower or leader) on
//! a serial port, with the file written where LeRobot 0.6.1 reads it. The
//! person answers on stdin (prompts and the live table on stdout); EOF or
//! Ctrl-C cancels and restores the motors.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use maniflow_bridge::feetech::calibrate::{calibrate, Operator};
use maniflow_bridge::feetech::so101::{calibration_paths, calibration_root, Role};
use maniflow_bridge::feetech::{Bus, BusConfig, SerialPortIo};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Serial port of the arm's bus adapter (e.g. /dev/ttyACM0).
    #[arg(long)]
    pub port: String,
    /// follower or leader.
    #[arg(long, default_value = "follower")]
    pub role: String,
    /// The arm's calibration id (LeRobot's `--robot.id`).
    #[arg(long, default_value = "so101")]
    pub id: String,
    /// Write `<id>.json` here instead of LeRobot's directory
    /// (`$HF_LEROBOT_CALIBRATION/{robots/so_follower,teleoperators/so_leader}`).
    #[arg(long)]
    pub calibration_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1_000_000)]
    pub baud: u32,
}

pub fn parse_role(s: &str) -> anyhow::Result<Role> {
    match s {
        "follower" => Ok(Role::Follower),
        "leader" => Ok(Role::Leader),
        _ => anyhow::bail!("--role `{s}`: expected follower or leader"),
    }
}

/// The person on stdin: ENTER answers, EOF or Ctrl-C cancels.
struct Stdin {
    cancel: Arc<AtomicBool>,
    shown: bool,
}

impl Stdin {
    fn line_ready() -> bool {
        let mut fds = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut fds, 1, 0) > 0 }
    }

    fn read_line(&self) -> Result<(), ()> {
        let mut s = String::new();
        match std::io::stdin().lock().read_line(&mut s) {
            Ok(0) | Err(_) => Err(()),
            Ok(_) => Ok(()),
        }
    }
}

impl Operator for Stdin {
    fn wait_enter(&mut self, msg: &str) -> Result<(), ()> {
        println!("{msg}");
        // Poll, so Ctrl-C cancels (and restores) while waiting.
        while !Self::line_ready() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.read_line()
    }

    fn enter_pressed(&mut self) -> Result<bool, ()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(());
        }
        if Self::line_ready() {
            self.read_line()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn show(&mut self, rows: &[(&str, i32, i32, i32)]) {
        let mut e = std::io::stdout().lock();
        if !self.shown {
            let _ = writeln!(
                e,
                "Move every joint but wrist_roll through its whole range, then press ENTER."
            );
            self.shown = true;
        }
        let line: Vec<String> = rows
            .iter()
            .map(|(n, lo, p, hi)| format!("{n} {lo}..{p}..{hi}"))
            .collect();
        let _ = write!(e, "\r{}   ", line.join(" | "));
        let _ = e.flush();
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let role = parse_role(&a.role)?;
    let path = match &a.calibration_dir {
        Some(d) => d.join(format!("{}.json", a.id)),
        None => calibration_paths(&calibration_root(), role, &a.id).0,
    };
    let cancel = super::stop_on_signal(None)?;
    let port = SerialPortIo::open(&a.port, a.baud)?;
    let mut bus = Bus::new(port, BusConfig::default());
    let mut op = Stdin {
        cancel,
        shown: false,
    };
    let cal = calibrate(&mut bus, &mut op, Duration::from_millis(20))?;
    println!();
    cal.save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "calibration written to the motors and to {}",
        path.display()
    );
    Ok(())
}
