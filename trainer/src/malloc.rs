//! The process's heap settings for training (glibc only).
//!
//! A training step frees and allocates the same large tensors every step:
//! activations of tens of MB, gradients and temporaries the size of the
//! parameters. glibc serves blocks above its mmap threshold (at most 32 MB)
//! with fresh `mmap`s and gives them back with `munmap` when freed, and trims
//! the top of the heap, so every step faults the same memory in again, page by
//! page. On the upstream-image step (193 M parameters, batch 8, 2 threads)
//! that was 2.9 M page faults for 5 steps instead of 1.5 M and about 300 ms of
//! a 2.4 s backward. [`keep_freed_memory`] turns that off: no mmap for
//! allocations, no trimming, so freed blocks are reused as they are. The
//! process keeps its peak heap until it exits (a training process reaches its
//! peak every step anyway).

/// Environment variables with which a user sets glibc's heap behaviour
/// themselves (then nothing is changed).
pub const OVERRIDES: [&str; 3] = ["MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"];

/// Set to `default` to keep glibc's own heap behaviour (e.g. to give memory
/// back to a device that needs it while a long run idles).
pub const OPT_OUT: &str = "MANIFLOW_GLIBC_HEAP";

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heap {
    /// mmap off, trimming off.
    KeepFreed,
    /// The user's own `MALLOC_*` settings, or [`OPT_OUT`], were left alone.
    UserSettings,
    /// Not glibc: nothing to do.
    Unsupported,
}

/// Call once at start, before the first large allocation.
pub fn keep_freed_memory() -> Heap {
    let opted_out = std::env::var(OPT_OUT).is_ok_and(|v| v == "default");
    if opted_out || OVERRIDES.iter().any(|k| std::env::var_os(k).is_some()) {
        return Heap::UserSettings;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> Heap {
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread allocates.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1 };
    if ok {
        Heap::KeepFreed
    } else {
        Heap::Unsupported
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> Heap {
    Heap::Unsupported
}
