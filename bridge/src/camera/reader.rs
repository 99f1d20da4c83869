//! One thread per camera: open the source, deliver every frame to a sink as a
//! stamped `sensor_msgs/Image` (rgb8), and when the camera goes away (device
//! unplugged, ffmpeg exits, no frame for `stall_ms`) report it, wait (100 ms,
//! doubling to 2 s) and open it again, until stopped. Corrupt frames are
//! counted and dropped; nothing input-dependent panics.
//!
//! What happens to a missing camera downstream is the node's business: its
//! frames stop, the stream goes stale by its own `max_age_ms`, and the node
//! holds as for any other stale stream.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};
use serde::Serialize;

use super::source::CameraSource;
use crate::msg::Image;

/// First wait before reopening a lost camera; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A decoded frame.
#[derive(Debug, Clone)]
pub struct CameraFrame {
    /// rgb8, tightly packed; `header.stamp` = capture time (wall clock): the
    /// kernel's buffer timestamp (V4L2) or the arrival of the last byte (ffmpeg).
    pub image: Image,
    /// The same instant on the monotonic clock (the node's stale rules use it).
    pub recv: Instant,
    /// `header.stamp` in ns since the epoch.
    pub recv_wall_ns: i64,
}

/// What a camera reader reports.
#[derive(Debug, Clone)]
pub enum CameraEvent {
    /// The camera is open (first time or again); what it delivers.
    Connected(String),
    Frame(CameraFrame),
    /// A frame that did not decode: counted and dropped.
    Corrupt(String),
    /// The camera could not be opened, or was lost; the reader retries.
    /// Repeats of the same failure while it stays away are not reported again.
    Lost(String),
}

/// Receives every event, on the camera's thread.
pub type CameraSink = Box<dyn FnMut(CameraEvent) + Send>;

/// Counters of one camera (`--stats-json`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CameraStats {
    pub source: String,
    pub frames: u64,
    pub corrupt: u64,
    /// Successful opens (1 = never lost).
    pub connects: u64,
    /// Open cameras lost (error, end of input, stall).
    pub lost: u64,
    /// Attempts to open that failed.
    pub open_failures: u64,
    pub last_error: String,
}

#[derive(Default)]
pub(crate) struct Shared {
    frames: AtomicU64,
    corrupt: AtomicU64,
    connects: AtomicU64,
    lost: AtomicU64,
    open_failures: AtomicU64,
    last_error: Mutex<String>,
    /// The running ffmpeg child's pid (0: none).
    pub(crate) child_pid: AtomicI32,
}

impl Shared {
    fn error(&self, e: &str) {
        if let Ok(mut l) = self.last_error.lock() {
            l.clear();
            l.push_str(e);
        }
    }
}

/// The stop request, as seen by a capture loop.
pub(crate) struct Stop(Receiver<()>);

impl Stop {
    pub(crate) fn requested(&self) -> bool {
        !matches!(self.0.try_recv(), Err(TryRecvError::Empty))
    }
    /// Waits up to `d`; true when stopped meanwhile.
    fn wait(&self, d: Duration) -> bool {
        !matches!(self.0.recv_timeout(d), Err(RecvTimeoutError::Timeout))
    }
}

/// What a capture produced.
pub(crate) enum Next {
    Frame(CameraFrame),
    Corrupt(String),
    Stopped,
}

/// An open camera.
pub(crate) trait Capture {
    /// Blocks until a frame, a corrupt frame, a stop request, or the camera is
    /// lost (`Err`, the reason). Returns within ~100 ms of a stop request.
    fn next(&mut self, stop: &Stop) -> Result<Next, String>;
    /// What it delivers, for the `Connected` event.
    fn describe(&self) -> String;
}

fn open(
    source: &CameraSource,
    name: &str,
    shared: &Arc<Shared>,
) -> Result<Box<dyn Capture>, String> {
    Ok(match source {
        CameraSource::V4l2(v) => Box::new(super::v4l2::Capture::open(v, name)?),
        CameraSource::Ffmpeg(f) => Box::new(super::ffmpeg::Capture::open(f, name, shared.clone())?),
    })
}

/// A running camera reader; stops (and joins) on drop.
pub struct CameraReader {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    source: String,
}

impl CameraReader {
    /// Starts reading `source` for the stream `name` into `sink`.
    pub fn start(
        name: &str,
        source: CameraSource,
        mut sink: CameraSink,
    ) -> std::io::Result<CameraReader> {
        let (stop_tx, stop_rx) = bounded::<()>(1);
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let desc = source.describe();
        let name2 = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("cam-{name}"))
            .spawn(move || {
                let sh2 = sh.clone();
                let mut opener = || open(&source, &name2, &sh2);
                run(&mut opener, &mut sink, &Stop(stop_rx), &sh)
            })?;
        Ok(CameraReader {
            stop: Some(stop_tx),
            thread: Some(thread),
            shared,
            source: desc,
        })
    }

    pub fn stats(&self) -> CameraStats {
        let s = &self.shared;
        CameraStats {
            source: self.source.clone(),
            frames: s.frames.load(Ordering::Relaxed),
            corrupt: s.corrupt.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            open_failures: s.open_failures.load(Ordering::Relaxed),
            last_error: s.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
        }
    }

    /// The pid of the ffmpeg process reading the camera now, if any (for
    /// fault-injection tests: kill it and watch the reader reconnect).
    pub fn ffmpeg_pid(&self) -> Option<i32> {
        let p = self.shared.child_pid.load(Ordering::Relaxed);
        (p > 0).then_some(p)
    }

    /// Stops the thread and returns the final counters.
    pub fn finish(mut self) -> CameraStats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CameraReader {
    fn drop(&mut self) {
        self.halt();
    }
}

type Opener<'a> = dyn FnMut() -> Result<Box<dyn Capture>, String> + 'a;

/// The reader thread: open, read until lost, back off, again.
fn run(open: &mut Opener<'_>, sink: &mut CameraSink, stop: &Stop, sh: &Shared) {
    let mut backoff = MIN_BACKOFF;
    let mut last_reported = String::new();
    while !stop.requested() {
        match open() {
            Err(e) => {
                sh.open_failures.fetch_add(1, Ordering::Relaxed);
                sh.error(&e);
                if e != last_reported {
                    sink(CameraEvent::Lost(e.clone()));
                    last_reported = e;
                }
            }
            Ok(mut cap) => {
                sh.connects.fetch_add(1, Ordering::Relaxed);
                last_reported.clear();
                sink(CameraEvent::Connected(cap.describe()));
                loop {
                    match cap.next(stop) {
                        Ok(Next::Frame(f)) => {
                            sh.frames.fetch_add(1, Ordering::Relaxed);
                            backoff = MIN_BACKOFF;
                            sink(CameraEvent::Frame(f));
                        }
                        Ok(Next::Corrupt(e)) => {
                            sh.corrupt.fetch_add(1, Ordering::Relaxed);
                            sh.error(&e);
                            sink(CameraEvent::Corrupt(e));
                        }
                        Ok(Next::Stopped) => return,
                        Err(e) => {
                            sh.lost.fetch_add(1, Ordering::Relaxed);
                            sh.error(&e);
                            sink(CameraEvent::Lost(e.clone()));
                            last_reported = e;
                            break;
                        }
                    }
                }
            }
        }
        if stop.wait(backoff) {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Monotonic clock (CLOCK_MONOTONIC, the clock of V4L2 buffer timestamps and
/// of `Instant`) in ns.
pub(crate) fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64
}

/// Maps a capture time on CLOCK_MONOTONIC (`capture_mono_ns`, e.g. a V4L2
/// buffer timestamp) to our clocks, given one reading of each "now". A capture
/// time in the future or more than 10 s old is not trusted: the frame is
/// stamped on arrival instead.
pub fn capture_time(
    capture_mono_ns: i64,
    now_mono_ns: i64,
    now: Instant,
    now_wall_ns: i64,
) -> (Instant, i64) {
    let age = now_mono_ns - capture_mono_ns;
    if (0..=10_000_000_000).contains(&age) {
        let d = Duration::from_nanos(age as u64);
        (now.checked_sub(d).unwrap_or(now), now_wall_ns - age)
    } else {
        (now, now_wall_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A capture that plays a script: frames, corrupt frames, then loss.
    struct Script(VecDeque<Result<Next, String>>);

    impl Capture for Script {
        fn next(&mut self, _: &Stop) -> Result<Next, String> {
            self.0.pop_front().unwrap_or(Ok(Next::Stopped))
        }
        fn describe(&self) -> String {
            "script".into()
        }
    }

    fn frame() -> Result<Next, String> {
        let image = crate::camera::frame::rgb_image(vec![0; 3], 1, 1, 5, "x").unwrap();
        Ok(Next::Frame(CameraFrame {
            image,
            recv: Instant::now(),
            recv_wall_ns: 5,
        }))
    }

    #[test]
    fn the_loop_counts_reports_and_reopens() {
        // open fails twice (same reason), then a capture with a corrupt frame
        // that is lost, then one that runs until the script ends (stop).
        let mut opens: VecDeque<Result<Vec<Result<Next, String>>, String>> = VecDeque::from([
            Err("gone".to_string()),
            Err("gone".to_string()),
            Ok(vec![
                frame(),
                Ok(Next::Corrupt("bad".into())),
                frame(),
                Err("unplugged".into()),
            ]),
            Ok(vec![frame()]),
        ]);
        let mut opener = || -> Result<Box<dyn Capture>, String> {
            match opens.pop_front() {
                Some(Ok(v)) => Ok(Box::new(Script(v.into()))),
                Some(Err(e)) => Err(e),
                None => Err("script over".into()),
            }
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let e2 = events.clone();
        let mut sink: CameraSink = Box::new(move |ev| {
            let s = match ev {
                CameraEvent::Connected(d) => format!("connected {d}"),
                CameraEvent::Frame(_) => "frame".into(),
                CameraEvent::Corrupt(e) => format!("corrupt {e}"),
                CameraEvent::Lost(e) => format!("lost {e}"),
            };
            e2.lock().unwrap().push(s);
        });
        let (_tx, rx) = bounded::<()>(1);
        let sh = Shared::default();
        run(&mut opener, &mut sink, &Stop(rx), &sh);
        assert_eq!(
            *events.lock().unwrap(),
            [
                "lost gone", // the repeat is not reported again
                "connected script",
                "frame",
                "corrupt bad",
                "frame",
                "lost unplugged",
                "connected script",
                "frame",
            ]
        );
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(
            (
                n(&sh.frames),
                n(&sh.corrupt),
                n(&sh.connects),
                n(&sh.lost),
                n(&sh.open_failures)
            ),
            (3, 1, 2, 1, 2)
        );
    }

    #[test]
    fn capture_times_map_to_both_clocks() {
        let now = Instant::now();
        let (t, wall) = capture_time(1_000, 31_000_000 + 1_000, now, 5_000_000_000);
        assert_eq!(now - t, Duration::from_millis(31));
        assert_eq!(wall, 5_000_000_000 - 31_000_000);
        // from the future, or absurdly old: stamped on arrival
        assert_eq!(capture_time(2_000, 1_000, now, 7), (now, 7));
        assert_eq!(capture_time(0, 11_000_000_000, now, 7), (now, 7));
        let m = monotonic_ns();
        assert!(m > 0 && monotonic_ns() >= m);
    }
}
