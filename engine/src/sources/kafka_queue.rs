//! A consumer's fetched messages taken many at a time.
//!
//! `BaseConsumer::poll` hands out one message per call, and each call locks the
//! queue, reads the clock and serves the queue's other events: measured here
//! (`examples/kafka_read_ceiling.rs`), librdkafka gives about 3.3M records/s that way
//! and about 4.5M through `rd_kafka_consume_batch_queue`, which takes up to a
//! buffer's worth of messages per lock. rdkafka wraps the one-message API only, so
//! this module holds the few FFI calls of the batched one behind a safe interface:
//! [`MessageQueue::next`] lends one [`RawMessage`] at a time out of a buffer it
//! refills with a single call.
//!
//! The queue read is the partition's own, split from the consumer's (as rdkafka's
//! `split_partition_queue` does): a batch call serves every other event it meets on
//! its way — client errors, logs — through librdkafka's callbacks, which rdkafka does
//! not set, so on the consumer's queue those would be lost. The consumer's queue keeps
//! them, and the reader polls it with rdkafka's `poll` whenever it waits.

// The module's FFI: every pointer comes from librdkafka and lives until the module
// destroys it; see the SAFETY notes.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Timestamp;

/// The messages taken per call.
const BATCH: usize = 4096;

/// The message queue of one consumer, read in batches. Dropped before its consumer
/// (it holds a reference to the consumer's queue, which the consumer's close uses).
pub(crate) struct MessageQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    /// Messages taken from librdkafka: `buf[next..len]` are not handed out yet.
    buf: Vec<*mut rd::rd_kafka_message_t>,
    next: usize,
    len: usize,
}

// SAFETY: librdkafka's queues and messages may be used from any thread; the struct
// is used by one thread at a time (`&mut self`).
unsafe impl Send for MessageQueue {}

impl MessageQueue {
    /// The messages of `partition` of `topic`, split from `consumer`'s queue. Call it
    /// before the partition is first assigned, and move the consumer with `seek`
    /// after that: a new assignment stops the partition's fetcher, which ends the
    /// split (librdkafka forwards a restarted fetcher to the consumer's queue).
    pub(crate) fn of_partition(
        consumer: &BaseConsumer,
        topic: &str,
        partition: i32,
    ) -> Option<Self> {
        let topic = CString::new(topic).ok()?;
        // SAFETY: the client pointer is valid while `consumer` is; the call returns a
        // new reference to the partition's fetch queue (or null), released in `drop`.
        let q = unsafe {
            rd::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            )
        };
        let queue = NonNull::new(q)?;
        // SAFETY: a valid queue; forwarding it nowhere marks the split as the
        // application's, which a starting fetcher respects.
        unsafe { rd::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut()) };
        Some(MessageQueue {
            queue,
            buf: vec![std::ptr::null_mut(); BATCH],
            next: 0,
            len: 0,
        })
    }

    /// Whether a message is at hand without waiting: one taken already, or else
    /// any librdkafka holds now (taken then).
    pub(crate) fn ready(&mut self) -> bool {
        if self.next == self.len {
            self.refill(Duration::ZERO);
        }
        self.next < self.len
    }

    /// The next message: one at hand (see [`ready`](Self::ready)), or else the first
    /// to come within `wait`. `None` when nothing came in that time.
    pub(crate) fn next(&mut self, wait: Duration) -> Option<RawMessage<'_>> {
        if !self.ready() && !wait.is_zero() {
            self.refill(wait);
        }
        if self.next == self.len {
            return None;
        }
        let m = NonNull::new(self.buf[self.next])?;
        self.next += 1;
        // `m` came from librdkafka and is destroyed only by `clear`, which takes
        // `&mut self`: the lent message's borrow ends before it.
        Some(RawMessage {
            m,
            _queue: std::marker::PhantomData,
        })
    }

    /// Takes what librdkafka holds, up to a buffer's worth. With a `wait`, returns
    /// as soon as one message came (librdkafka would wait to fill the buffer).
    fn refill(&mut self, wait: Duration) {
        self.clear();
        let (size, ms) = if wait.is_zero() {
            (self.buf.len(), 0)
        } else {
            (1, wait.as_millis().clamp(1, i32::MAX as u128) as i32)
        };
        // SAFETY: the queue is valid; `buf` has room for `size` pointers.
        let got = unsafe {
            rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), ms, self.buf.as_mut_ptr(), size)
        };
        self.len = usize::try_from(got).unwrap_or(0).min(size);
    }

    /// Destroys every taken message, handed out or not (after a seek those not
    /// handed out belong to the old position).
    pub(crate) fn clear(&mut self) {
        for m in &mut self.buf[..self.len] {
            // SAFETY: each of `buf[..len]` is a message librdkafka gave and nothing
            // destroyed yet; no `RawMessage` borrow is alive (`&mut self`).
            unsafe { rd::rd_kafka_message_destroy(*m) };
            *m = std::ptr::null_mut();
        }
        self.next = 0;
        self.len = 0;
    }
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        self.clear();
        // SAFETY: releases the reference taken in `of_partition`, once.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// One message lent by a [`MessageQueue`] (a pointer, not a reference: librdkafka
/// writes into the message when it first parses its headers).
pub(crate) struct RawMessage<'a> {
    m: NonNull<rd::rd_kafka_message_t>,
    _queue: std::marker::PhantomData<&'a mut MessageQueue>,
}

impl RawMessage<'_> {
    /// The message's public fields.
    fn fields(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: the message is alive while lent (see `MessageQueue::next`), and
        // librdkafka writes none of the public fields after handing it out.
        unsafe { self.m.as_ref() }
    }

    /// The error this "message" carries instead of a record, if any.
    pub(crate) fn error(&self) -> Option<KafkaError> {
        if self.fields().err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        let code = RDKafkaErrorCode::from(self.fields().err);
        Some(if code == RDKafkaErrorCode::PartitionEOF {
            KafkaError::PartitionEOF(self.fields().partition)
        } else {
            KafkaError::MessageConsumption(code)
        })
    }

    pub(crate) fn offset(&self) -> i64 {
        self.fields().offset
    }

    pub(crate) fn payload(&self) -> Option<&[u8]> {
        // SAFETY: librdkafka's payload pointer and length describe one buffer that
        // lives as long as the message.
        unsafe { bytes(self.fields().payload, self.fields().len) }
    }

    pub(crate) fn key(&self) -> Option<&[u8]> {
        // SAFETY: as for the payload.
        unsafe { bytes(self.fields().key, self.fields().key_len) }
    }

    pub(crate) fn timestamp(&self) -> Timestamp {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: reads the message's timestamp into `kind` and the return value.
        let ts = unsafe { rd::rd_kafka_message_timestamp(self.m.as_ptr(), &mut kind) };
        match kind {
            _ if ts == -1 => Timestamp::NotAvailable,
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => {
                Timestamp::CreateTime(ts)
            }
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => {
                Timestamp::LogAppendTime(ts)
            }
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => {
                Timestamp::NotAvailable
            }
        }
    }

    /// The headers, in order (names as text, lossily if not UTF-8). A message whose
    /// headers librdkafka cannot parse gets none, and a warning naming its offset.
    pub(crate) fn headers(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut hdrs: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: asks for the message's headers (librdkafka parses them into the
        // message on the first call); they belong to the message.
        let err = unsafe { rd::rd_kafka_message_headers(self.m.as_ptr(), &mut hdrs) };
        if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__NOENT {
            return Vec::new();
        }
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
            tracing::warn!(partition = self.fields().partition, offset = self.fields().offset,
                error = %RDKafkaErrorCode::from(err), "kafka record headers unreadable; read without them");
            return Vec::new();
        }
        // SAFETY: `hdrs` is valid while the message is.
        let n = unsafe { rd::rd_kafka_header_cnt(hdrs) };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
            // SAFETY: `i < n`; the name is a NUL-terminated string and the value a
            // buffer of `size` bytes (or null), both owned by the headers.
            let err =
                unsafe { rd::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                continue;
            }
            // SAFETY: as above.
            let name = unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned();
            let value = unsafe { bytes(value.cast_mut(), size) }.map(<[u8]>::to_vec);
            out.push((name, value));
        }
        out
    }
}

/// The bytes at `p` (`None` for a null pointer).
///
/// # Safety
/// `p` is null or points to `len` readable bytes that outlive `'a`.
unsafe fn bytes<'a>(p: *mut std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    if p.is_null() {
        None
    } else {
        // SAFETY: the caller's promise.
        Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
    }
}
