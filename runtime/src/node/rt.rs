//! Real-time helpers for the control thread: SCHED_FIFO (via `thread-priority`),
//! `mlockall`, CPU pinning, and sleeping to absolute deadlines with
//! `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`. Each attempt is reported,
//! never silently skipped.

use serde::Serialize;

/// What the node could set up; printed at start and written to the stats.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RtReport {
    pub sched_fifo: bool,
    pub priority: u8,
    pub mlockall: bool,
    pub cpu: Option<usize>,
    pub notes: Vec<String>,
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE)`, only where it cannot make later
/// allocations fail (root or an unlimited RLIMIT_MEMLOCK).
pub fn lock_memory() -> Result<(), String> {
    // SAFETY: plain libc calls with valid pointers to stack values.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) != 0 {
            return Err(format!(
                "getrlimit(RLIMIT_MEMLOCK): {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::geteuid() != 0 && lim.rlim_cur != libc::RLIM_INFINITY {
            return Err(format!(
                "not locking memory: RLIMIT_MEMLOCK is {} bytes and we are not root (raise it with `ulimit -l unlimited` or limits.conf)",
                lim.rlim_cur
            ));
        }
        if libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) != 0 {
            return Err(format!("mlockall: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// SCHED_FIFO at `priority` for the calling thread.
pub fn make_current_thread_fifo(priority: u8) -> Result<(), String> {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    let v = ThreadPriorityValue::try_from(priority.min(99))
        .map_err(|e| format!("priority {priority}: {e}"))?;
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(v),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .map_err(|e| format!("SCHED_FIFO priority {priority}: {e:?} (needs root or CAP_SYS_NICE / rtprio in limits.conf)"))
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds are checked below.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("cpu {cpu} out of range"));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity(cpu {cpu}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// A monotonic base for absolute-deadline sleeps.
#[derive(Debug, Clone, Copy)]
pub struct AbsClock {
    base: libc::timespec,
    base_instant: std::time::Instant,
}

impl AbsClock {
    pub fn now() -> AbsClock {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a stack timespec.
        unsafe {
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        }
        AbsClock {
            base: ts,
            base_instant: std::time::Instant::now(),
        }
    }

    /// The `Instant` this clock's offset 0 corresponds to (approximately).
    pub fn base_instant(&self) -> std::time::Instant {
        self.base_instant
    }

    /// Sleeps until `offset_ns` after the base (returns at once if past).
    /// No allocation; retried on EINTR.
    pub fn sleep_until(&self, offset_ns: u64) {
        let total = self.base.tv_nsec as u64 + offset_ns;
        let ts = libc::timespec {
            tv_sec: self.base.tv_sec + (total / 1_000_000_000) as libc::time_t,
            tv_nsec: (total % 1_000_000_000) as libc::c_long,
        };
        loop {
            // SAFETY: valid timespec; null remainder is allowed with TIMER_ABSTIME.
            let r = unsafe {
                libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    libc::TIMER_ABSTIME,
                    &ts,
                    std::ptr::null_mut(),
                )
            };
            if r != libc::EINTR {
                break;
            }
        }
    }

    /// Nanoseconds since the base.
    pub fn elapsed_ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer.
        unsafe {
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        }
        let s = (ts.tv_sec - self.base.tv_sec) as i64 * 1_000_000_000
            + (ts.tv_nsec - self.base.tv_nsec) as i64;
        s.max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_sleep_reaches_the_deadline() {
        let c = AbsClock::now();
        for k in 1..=5u64 {
            c.sleep_until(k * 2_000_000);
            let e = c.elapsed_ns();
            assert!(
                e >= k * 2_000_000,
                "woke at {e} before deadline {}",
                k * 2_000_000
            );
        }
        // a past deadline returns at once
        let t = std::time::Instant::now();
        c.sleep_until(0);
        assert!(t.elapsed() < std::time::Duration::from_millis(50));
    }
}
