//! The `sluice` binary; the commands live in the `sluice_cli` library.

/// mimalloc rather than glibc's malloc. A batch of millions of small records (a Kafka
/// range, a stateful operator's keys cloned into its next state) is allocated and
/// freed from several threads at once: glibc's arenas, capped at one per core by
/// [`sluice::tune_allocator`] to bound memory, then contend on their locks. Measured
/// with `sluice bench kafka`, `checkpoint`, `restart` and `wordcount` (BENCHMARKS.md).
/// A job binary of your own picks its allocator the same way.
///
/// The C libraries use mimalloc too: libmimalloc-sys's `override` feature makes it the
/// process's `malloc`. librdkafka allocates an op per fetched message on its broker
/// threads and the reading threads free it; on glibc those frees waited on the
/// allocating thread's arena lock, and each 8 MB fetch buffer came from a fresh
/// mapping (`sluice bench kafka`'s client ceiling: 3.3–3.4M records/s with glibc for
/// librdkafka, 4.5–4.7M with mimalloc). RocksDB's allocations go the same way.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's `mi_option_purge_delay` (mimalloc.h; libmimalloc-sys does not name it):
/// how long freed memory is kept before it is returned to the system (default 1 s).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Returns freed memory to the system after 10 ms rather than after a second: a
/// batch's records are freed together, and keeping them a second holds a second
/// batch's worth (peak RSS of the 300M-word count at 200 ms batches: 284–300 MB kept
/// a second, 212 MB not). Not at once either: memory freed and taken again within a
/// few ms — a Kafka partition read piece by piece, librdkafka's fetch buffers — would
/// be cleared by the kernel each time (the Kafka count: 1.7–2.0M records/s at 0 ms,
/// 2.4–2.9M at 10 ms). `MIMALLOC_PURGE_DELAY` in the environment wins.
#[allow(unsafe_code)]
fn tune_mimalloc() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one option's value; mimalloc reads it at every purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// The purge delay [`tune_mimalloc`] sets, in ms.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

fn main() -> std::process::ExitCode {
    tune_mimalloc();
    sluice_cli::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_mimallocs_and_is_set() {
        // SAFETY: reads and sets one option's value.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc 3's default for purge_delay: the index names that option (a new
        // mimalloc that renumbers its options fails here, not silently).
        assert_eq!(get(), 1000);
        tune_mimalloc();
        assert_eq!(get(), PURGE_DELAY_MS);
    }
}
