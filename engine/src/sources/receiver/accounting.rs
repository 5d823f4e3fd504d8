//! The byte accounting of one receiver: what its buffer bound (`receiver_max_buffered`)
//! counts, and when a batch gives the bytes back.
//!
//! A record's bytes are counted from the moment it is handed to `store*` until the
//! batch that processed it has completed, never released earlier (else the bound would
//! let unprocessed input pile up). Records travel: open buffer → cut into a block →
//! queued (stored, WAL-durable with the WAL on) → taken by a batch → batch completed.
//! A batch takes the bytes queued before it took its blocks; a block queued just as a
//! batch took the queue is counted after that batch read the count, so its bytes go
//! with the next batch (later, never earlier). When the receiver has finished and its
//! queue is empty there is no next batch: [`ReceiverBytes::release_untaken`] frees them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::BatchTime;

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct ReceiverBytes {
    /// Counted and not yet released: what the bound applies to.
    buffered: AtomicU64,
    /// Of `buffered`, not yet stored (open buffer, blocks being written): with the
    /// receiver WAL read back, what the bound applies to.
    unwritten: AtomicU64,
    /// Of the records in the open buffer (changed under the buffer's lock).
    in_buffer: AtomicU64,
    /// Of every block queued so far (only grows).
    queued: AtomicU64,
    /// `queued` when the last batch took its blocks.
    taken: AtomicU64,
    /// What each batch took, until it completes.
    per_batch: Mutex<BTreeMap<BatchTime, u64>>,
}

impl ReceiverBytes {
    /// Records of `bytes` entered the open buffer; returns the bytes the buffer holds now.
    pub(crate) fn add_to_buffer(&self, bytes: u64) -> u64 {
        self.buffered.fetch_add(bytes, Ordering::SeqCst);
        self.unwritten.fetch_add(bytes, Ordering::SeqCst);
        self.in_buffer.fetch_add(bytes, Ordering::SeqCst) + bytes
    }

    /// A block of `bytes` is being stored as it is (`store_block`): counted against the
    /// bound now, queued once stored.
    pub(crate) fn storing_block(&self, bytes: u64) {
        self.buffered.fetch_add(bytes, Ordering::SeqCst);
        self.unwritten.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Blocks of `bytes` were stored (or lost): no longer unwritten.
    pub(crate) fn written(&self, bytes: u64) {
        let _ = self
            .unwritten
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    /// Not yet stored.
    pub(crate) fn unwritten(&self) -> u64 {
        self.unwritten.load(Ordering::SeqCst)
    }

    /// Stored and kept in memory, not yet released.
    pub(crate) fn kept(&self) -> u64 {
        self.buffered().saturating_sub(self.unwritten())
    }

    /// The open buffer was cut: returns its bytes, which go with the cut block.
    pub(crate) fn cut_buffer(&self) -> u64 {
        self.in_buffer.swap(0, Ordering::SeqCst)
    }

    /// Blocks of `bytes` were queued (or lost: their bytes must be freed all the same).
    pub(crate) fn queued(&self, bytes: u64) {
        self.queued.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Blocks of `bytes` were stored and left memory (read back from the WAL by their
    /// batch): released at once; returns `bytes`.
    pub(crate) fn release_now(&self, bytes: u64) -> u64 {
        self.release(bytes)
    }

    /// Batch `t` takes the bytes queued since the last batch. Call before taking the
    /// blocks, so every byte counted belongs to this batch or an earlier one.
    pub(crate) fn take_for_batch(&self, t: BatchTime) {
        let taken = self.newly_queued();
        *lock(&self.per_batch).entry(t).or_default() += taken;
    }

    /// Batches at or before `t` completed: releases their bytes; returns how many.
    pub(crate) fn release_through(&self, t: BatchTime) -> u64 {
        let done = {
            let mut m = lock(&self.per_batch);
            let later = m.split_off(&BatchTime(t.0 + 1));
            std::mem::replace(&mut *m, later)
        };
        self.release(done.values().sum())
    }

    /// The receiver has finished and every block is taken: releases what was queued
    /// after the last batch read the count; returns how many.
    pub(crate) fn release_untaken(&self) -> u64 {
        let rest = self.newly_queued();
        self.release(rest)
    }

    /// Counted and not yet released.
    pub(crate) fn buffered(&self) -> u64 {
        self.buffered.load(Ordering::SeqCst)
    }

    fn newly_queued(&self) -> u64 {
        let queued = self.queued.load(Ordering::SeqCst);
        queued.saturating_sub(self.taken.swap(queued, Ordering::SeqCst))
    }

    fn release(&self, bytes: u64) -> u64 {
        if bytes > 0 {
            let _ = self
                .buffered
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    Some(b.saturating_sub(bytes))
                });
        }
        bytes
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_stay_counted_until_the_batch_that_took_them_completes() {
        let b = ReceiverBytes::default();
        assert_eq!(b.add_to_buffer(100), 100);
        assert_eq!(b.add_to_buffer(50), 150);
        assert_eq!(b.buffered(), 150);
        let cut = b.cut_buffer();
        assert_eq!(cut, 150);
        b.queued(cut);
        assert_eq!(b.buffered(), 150, "queued is not processed");
        b.take_for_batch(BatchTime(1000));
        assert_eq!(b.buffered(), 150, "taken is not processed");
        assert_eq!(b.release_through(BatchTime(999)), 0, "an earlier batch");
        assert_eq!(b.release_through(BatchTime(1000)), 150);
        assert_eq!(b.buffered(), 0);
    }

    #[test]
    fn a_block_queued_after_a_batch_took_the_queue_goes_with_the_next_batch() {
        let b = ReceiverBytes::default();
        b.storing_block(10);
        b.queued(10);
        b.take_for_batch(BatchTime(1));
        // Stored while batch 1 runs: not batch 1's.
        b.storing_block(20);
        b.queued(20);
        assert_eq!(b.release_through(BatchTime(1)), 10);
        assert_eq!(b.buffered(), 20);
        b.take_for_batch(BatchTime(2));
        assert_eq!(b.release_through(BatchTime(2)), 20);
        assert_eq!(b.buffered(), 0);
    }

    #[test]
    fn what_no_batch_took_is_released_once_the_receiver_drained() {
        let b = ReceiverBytes::default();
        b.storing_block(7);
        b.take_for_batch(BatchTime(1));
        b.queued(7); // queued just after batch 1 read the count
        assert_eq!(b.release_through(BatchTime(1)), 0);
        assert_eq!(b.buffered(), 7);
        assert_eq!(b.release_untaken(), 7);
        assert_eq!(b.buffered(), 0);
        assert_eq!(b.release_untaken(), 0, "released once");
    }

    #[test]
    fn bytes_of_a_cut_without_records_go_with_the_next_batch() {
        let b = ReceiverBytes::default();
        b.add_to_buffer(5);
        let cut = b.cut_buffer();
        b.queued(cut); // the cut held no records: queued all the same
        assert_eq!(b.cut_buffer(), 0, "the buffer is empty after a cut");
        b.take_for_batch(BatchTime(3));
        assert_eq!(b.release_through(BatchTime(3)), 5);
    }

    #[test]
    fn concurrent_stores_and_batches_release_exactly_what_was_counted() {
        use std::sync::Arc;
        let b = Arc::new(ReceiverBytes::default());
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        let n = 1 + (i * 7 + w) % 13;
                        b.storing_block(n);
                        b.queued(n);
                    }
                })
            })
            .collect();
        let mut t = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            t += 1;
            b.take_for_batch(BatchTime(t));
            b.release_through(BatchTime(t));
        }
        for w in writers {
            w.join().unwrap();
        }
        b.take_for_batch(BatchTime(t + 1));
        b.release_through(BatchTime(t + 1));
        b.release_untaken();
        assert_eq!(b.buffered(), 0);
    }
}
