//! Memory-allocator settings for a streaming process.
//!
//! A receiver allocates its blocks on one thread and the CPU pool frees them on others,
//! batch after batch, while millions of small records come and go. glibc's malloc
//! then holds far more memory than the job uses: every thread gets an arena of its own
//! (up to 8 per core) that keeps what was freed in it, and after the first multi-MiB
//! block is freed it stops mapping such blocks separately (its mmap threshold rises
//! with them), so blocks and small records share, and fragment, the same heaps.
//! [`tune_allocator`] fixes both. Measured with `sluice bench wordcount` (BENCHMARKS.md):
//! peak resident memory 257–285 MB before, 149–174 MB after, at the same speed.

/// The arenas and mmap threshold [`tune_allocator`] set (`None`: left as they were).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocatorTuning {
    /// `M_ARENA_MAX`: at most this many malloc arenas.
    pub arena_max: Option<usize>,
    /// `M_MMAP_THRESHOLD`: allocations of at least this many bytes get their own
    /// mapping, returned to the system when freed.
    pub mmap_threshold: Option<usize>,
}

/// Blocks of at least this size are mapped on their own (1 MiB: a receiver block is
/// about 4 MiB; records are far smaller).
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Tunes glibc's malloc for a streaming job (see the module docs): at most one arena
/// per core (at least 2), and blocks of [`MMAP_THRESHOLD`] or more in mappings of their
/// own. The `sluice` command does this at start; call it first thing in the `main` of
/// your own job, before other threads start. A setting the environment already gives
/// (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`) is kept. Does nothing on other C
/// libraries. Returns what it set.
pub fn tune_allocator() -> AllocatorTuning {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    tune_with(
        std::env::var_os("MALLOC_ARENA_MAX")
            .is_none()
            .then_some(cores),
        std::env::var_os("MALLOC_MMAP_THRESHOLD_")
            .is_none()
            .then_some(MMAP_THRESHOLD),
    )
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_with(arena_max: Option<usize>, mmap_threshold: Option<usize>) -> AllocatorTuning {
    let set = |param: libc::c_int, value: usize| -> Option<usize> {
        let v = libc::c_int::try_from(value).ok()?;
        // SAFETY: `mallopt` only changes malloc's parameters; glibc takes its own lock,
        // so it is sound at any time, also with other threads running.
        (unsafe { libc::mallopt(param, v) } == 1).then_some(value)
    };
    AllocatorTuning {
        arena_max: arena_max.and_then(|n| set(libc::M_ARENA_MAX, n)),
        mmap_threshold: mmap_threshold.and_then(|n| set(libc::M_MMAP_THRESHOLD, n)),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_with(_arena_max: Option<usize>, _mmap_threshold: Option<usize>) -> AllocatorTuning {
    AllocatorTuning::default()
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_both_settings_and_large_blocks_still_work() {
        let t = tune_with(Some(2), Some(MMAP_THRESHOLD));
        assert_eq!(
            t,
            AllocatorTuning {
                arena_max: Some(2),
                mmap_threshold: Some(MMAP_THRESHOLD)
            }
        );
        // A value a C int cannot hold is not set.
        assert_eq!(tune_with(None, Some(usize::MAX)).mmap_threshold, None);
        let big = vec![7u8; 4 * MMAP_THRESHOLD];
        assert_eq!(
            big.iter().map(|&b| b as usize).sum::<usize>(),
            28 * MMAP_THRESHOLD
        );
    }
}
