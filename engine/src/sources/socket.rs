//! Socket sources: a receiver that connects to a TCP server and decodes records from
//! the byte stream (`socket_text_stream`: UTF-8 lines; `socket_stream`: any decoder).
//!
//! The receiver is unreliable (a TCP server cannot redeliver): records are stored with
//! `store` and buffered into blocks. When the connection cannot be made or is lost
//! (the server closes it, a read fails), the receiver reconnects after the restart
//! delay, doubled per failed attempt in a row (see [`crate::Receiver`]).
//!
//! Decoders and malformed records: a decoder returns `Ok(Some(record))`, `Ok(None)` at
//! the end of the stream, or an error. An error of kind
//! [`std::io::ErrorKind::InvalidData`] means "this record is malformed and has been
//! consumed": it is **skipped with a warning** naming the source (and counted in the
//! receiver's status), and decoding goes on, because a live socket cannot replay the
//! record and dropping the connection would lose more. Any other error means the
//! stream is broken: the receiver reconnects.
//!
//! Memory: the receiver counts the bytes it read against the receiver's buffer bound
//! (`receiver_max_buffered`); over it, the receiver stops reading until a batch
//! completes, so the server's writes block (TCP flow control) and nothing is dropped.
//! `socket_text_stream` splits lines straight out of the read buffer into one packed
//! buffer per block: a line becomes a `String` when a batch takes its block.

use std::io::{self, BufRead, BufReader, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use crate::sources::lines::PackedLines;
use crate::sources::receiver::{Receiver, ReceiverContext};
use crate::{DStream, Data, EngineError, Result, StreamingContext};

/// Decodes the next record from a byte stream: `Ok(None)` at its end; an
/// [`io::ErrorKind::InvalidData`] error for a malformed record it consumed (skipped by
/// sockets, an error for files); any other error for a broken stream.
pub trait Decoder<T>:
    Fn(&mut dyn BufRead) -> io::Result<Option<T>> + Send + Sync + 'static
{
}
impl<T, F: Fn(&mut dyn BufRead) -> io::Result<Option<T>> + Send + Sync + 'static> Decoder<T> for F {}

/// The line decoder of `socket_text_stream` and `text_file_stream`: UTF-8 lines ended
/// by `\n` (a `\r` before it is dropped too). A last line without `\n` counts as a line.
/// A line that is not UTF-8 is consumed and reported as
/// [`io::ErrorKind::InvalidData`].
pub fn decode_lines(r: &mut dyn BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    if r.read_until(b'\n', &mut buf)? == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    String::from_utf8(buf).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a line is not valid UTF-8 ({})", e.utf8_error()),
        )
    })
}

/// How a socket receiver turns bytes into records.
enum Decode<T> {
    /// A user decoder, one record per call.
    Records(Arc<dyn Fn(&mut dyn BufRead) -> io::Result<Option<T>> + Send + Sync>),
    /// UTF-8 lines as [`decode_lines`] reads them, split from the read buffer and
    /// stored packed (only a `String` stream has this; the function stores them).
    Lines(fn(&ReceiverContext<T>, &mut PackedLines, u64)),
}

/// A receiver that reads records from a TCP server (see the module docs).
pub struct SocketReceiver<T> {
    host: String,
    port: u16,
    decode: Decode<T>,
}

impl<T> std::fmt::Debug for SocketReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketReceiver")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

impl<T: Data> SocketReceiver<T> {
    /// A receiver for `host:port` decoding records with `decoder`.
    pub fn new(host: impl Into<String>, port: u16, decoder: impl Decoder<T>) -> Self {
        SocketReceiver {
            host: host.into(),
            port,
            decode: Decode::Records(Arc::new(decoder)),
        }
    }
}

impl SocketReceiver<String> {
    /// A receiver for UTF-8 lines from `host:port` (as [`decode_lines`] reads them).
    pub fn text(host: impl Into<String>, port: u16) -> Self {
        SocketReceiver {
            host: host.into(),
            port,
            decode: Decode::Lines(ReceiverContext::<String>::store_lines),
        }
    }
}

/// A reader that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Records decoded and not yet stored: decoded records, or packed lines.
trait Chunk {
    fn count(&self) -> usize;
}

impl<T> Chunk for Vec<T> {
    fn count(&self) -> usize {
        self.len()
    }
}

impl Chunk for PackedLines {
    fn count(&self) -> usize {
        self.len()
    }
}

/// Records decoded from what has been read, stored together (one call into the
/// receiver context per chunk), with the bytes they were decoded from.
struct Pending<'a, T, C> {
    ctx: &'a ReceiverContext<T>,
    records: C,
    /// Stores a chunk (and leaves it empty).
    store: fn(&ReceiverContext<T>, &mut C, u64),
    /// Bytes consumed from the socket when the last chunk was stored.
    stored_at: u64,
}

impl<T: Data, C: Chunk> Pending<'_, T, C> {
    /// Stores the records decoded so far; `consumed` is the bytes consumed from the
    /// socket up to now. May block on the buffer bound: the socket is not read then.
    fn flush(&mut self, consumed: u64) {
        if self.records.count() > 0 {
            let bytes = consumed.saturating_sub(self.stored_at);
            self.stored_at = consumed;
            (self.store)(self.ctx, &mut self.records, bytes);
        }
    }

    /// The most records to decode before storing them (a tenth of the rate limit).
    fn full(&self) -> bool {
        let max = self
            .ctx
            .rate_limit()
            .map_or(MAX_CHUNK, |r| (r as usize / 10).clamp(1, MAX_CHUNK));
        self.records.count() >= max
    }
}

/// Bytes consumed from `reader`: read from the socket minus what is still buffered.
fn consumed(reader: &BufReader<Counting<TcpStream>>) -> u64 {
    reader.get_ref().bytes - reader.buffer().len() as u64
}

/// Why decoding stopped: the server closed the connection, or a read failed.
enum Ended {
    Eof,
    Failed(io::Error),
}

/// A line's bytes (without its `\n`) as text: a `\r` before the `\n` is dropped; not
/// UTF-8 is [`io::ErrorKind::InvalidData`], as in [`decode_lines`].
fn line_str(mut line: &[u8]) -> io::Result<&str> {
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    std::str::from_utf8(line).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a line is not valid UTF-8 ({e})"),
        )
    })
}

/// Decodes records with the user's decoder until the stream ends or breaks.
fn decode_records<T: Data>(
    decoder: &(dyn Fn(&mut dyn BufRead) -> io::Result<Option<T>> + Send + Sync),
    reader: &mut BufReader<Counting<TcpStream>>,
    pending: &mut Pending<'_, T, Vec<T>>,
    malformed: &mut dyn FnMut(io::Error),
    oversized: &mut dyn FnMut(u64),
) -> Ended {
    let ctx = pending.ctx;
    let max = ctx.max_record_bytes();
    loop {
        if ctx.is_stopped() {
            return Ended::Eof;
        }
        let before = consumed(reader);
        match decoder(&mut *reader) {
            // A decoder reads as much as it likes; a record it took more than the
            // maximum record size to decode is discarded all the same.
            Ok(Some(_)) if consumed(reader) - before > max => oversized(consumed(reader) - before),
            Ok(Some(record)) => pending.records.push(record),
            Ok(None) => return Ended::Eof,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => malformed(e),
            Err(e) => return Ended::Failed(e),
        }
        if pending.full() || reader.buffer().is_empty() {
            pending.flush(consumed(reader));
        }
    }
}

/// Splits UTF-8 lines out of the read buffer into packed lines until the stream ends
/// or breaks, a line cut by the buffer's end carried over. A line longer than the
/// receiver's maximum record size is discarded while it is read: a carried-over part
/// is never kept past the limit (only its length is counted, up to its `\n`).
fn decode_lines_fast<T: Data>(
    reader: &mut BufReader<Counting<TcpStream>>,
    pending: &mut Pending<'_, T, PackedLines>,
    malformed: &mut dyn FnMut(io::Error),
    oversized: &mut dyn FnMut(u64),
) -> Ended {
    let ctx = pending.ctx;
    let max = usize::try_from(ctx.max_record_bytes()).unwrap_or(usize::MAX);
    let mut partial: Vec<u8> = Vec::new();
    // The length so far of a line being discarded (over the limit), until its `\n`.
    let mut discarding: Option<u64> = None;
    let mut push =
        |line: &[u8], pending: &mut Pending<'_, T, PackedLines>, oversized: &mut dyn FnMut(u64)| {
            if line.len() > max {
                return oversized(line.len() as u64);
            }
            match line_str(line) {
                Ok(l) => pending.records.push(l),
                Err(e) => malformed(e),
            }
        };
    loop {
        if ctx.is_stopped() {
            return Ended::Eof;
        }
        // Bytes consumed before this read; a chunk stored mid-buffer ends at a line.
        let at = consumed(reader);
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ended::Failed(e),
        };
        if buf.is_empty() {
            // A last line without `\n` counts as a line.
            if let Some(n) = discarding.take() {
                oversized(n);
            } else if !partial.is_empty() {
                push(&std::mem::take(&mut partial), pending, oversized);
            }
            return Ended::Eof;
        }
        let mut start = 0;
        if let Some(n) = discarding {
            match memchr::memchr(b'\n', buf) {
                Some(nl) => {
                    discarding = None;
                    oversized(n + nl as u64);
                    start = nl + 1;
                }
                None => {
                    // Still inside the long line: count it, keep nothing.
                    discarding = Some(n + buf.len() as u64);
                    let len = buf.len();
                    reader.consume(len);
                    pending.flush(consumed(reader));
                    continue;
                }
            }
        }
        if !partial.is_empty() {
            if let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
                partial.extend_from_slice(&buf[start..start + nl]);
                push(&std::mem::take(&mut partial), pending, oversized);
                start += nl + 1;
            }
        }
        // The complete lines, up to the last `\n`: checked as UTF-8 in one pass when
        // they all are, else line by line (a bad line is skipped, the rest kept).
        let last = if partial.is_empty() {
            memchr::memrchr(b'\n', &buf[start..]).map(|i| start + i + 1)
        } else {
            None
        };
        if let Some(end) = last {
            match std::str::from_utf8(&buf[start..end]) {
                Ok(text) => {
                    let mut s = 0;
                    for nl in memchr::memchr_iter(b'\n', text.as_bytes()) {
                        let line = &text[s..nl];
                        let line = line.strip_suffix('\r').unwrap_or(line);
                        if line.len() > max {
                            oversized(line.len() as u64);
                        } else {
                            pending.records.push(line);
                        }
                        s = nl + 1;
                        if pending.full() {
                            pending.flush(at + (start + s) as u64);
                        }
                    }
                }
                Err(_) => {
                    let mut s = start;
                    for nl in memchr::memchr_iter(b'\n', &buf[start..end]) {
                        push(&buf[s..start + nl], pending, oversized);
                        s = start + nl + 1;
                        if pending.full() {
                            pending.flush(at + s as u64);
                        }
                    }
                }
            }
            start = end;
        }
        if partial.len() + (buf.len() - start) > max {
            // The carried-over line is already over the limit: drop what is held.
            discarding = Some((partial.len() + buf.len() - start) as u64);
            partial = Vec::new();
        } else {
            partial.extend_from_slice(&buf[start..]);
        }
        let n = buf.len();
        reader.consume(n);
        // Bytes of a carried-over partial line count with the chunk that ends it.
        pending.flush(consumed(reader) - partial.len() as u64);
    }
}

impl<T: Data> Receiver<T> for SocketReceiver<T> {
    fn describe(&self) -> String {
        format!("socket {}:{}", self.host, self.port)
    }

    fn run(&mut self, ctx: &ReceiverContext<T>) -> Result<()> {
        let source = format!("socket {}:{}", self.host, self.port);
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .map_err(|e| EngineError::io(format!("connecting to {source}"), e))?;
        tracing::info!(%source, "connected");
        let closer = stream
            .try_clone()
            .map_err(|e| EngineError::io(source.clone(), e))?;
        // A stop or restart shuts the socket down, which ends a blocked read.
        ctx.on_stop(move || {
            let _ = closer.shutdown(Shutdown::Both);
        });
        let mut reader = BufReader::with_capacity(
            READ_BUFFER,
            Counting {
                inner: stream,
                bytes: 0,
            },
        );
        let mut skipped = 0u64;
        let mut malformed = |e: io::Error| {
            skipped += 1;
            ctx.report_error(EngineError::Malformed {
                source_name: source.clone(),
                reason: format!("{e}; skipped (record {skipped} skipped so far)"),
            });
        };
        let mut oversized = |bytes: u64| ctx.dropped_oversized(&source, bytes);
        // What was decoded is stored, also on a stop: nothing read is dropped.
        let ended = match &self.decode {
            Decode::Records(d) => {
                let mut pending = Pending {
                    ctx,
                    records: Vec::new(),
                    store: |ctx, v, bytes| ctx.store_all_sized(std::mem::take(v), bytes),
                    stored_at: 0,
                };
                let ended = decode_records(
                    &**d,
                    &mut reader,
                    &mut pending,
                    &mut malformed,
                    &mut oversized,
                );
                pending.flush(reader.get_ref().bytes);
                ended
            }
            Decode::Lines(store) => {
                let mut pending = Pending {
                    ctx,
                    records: PackedLines::default(),
                    store: *store,
                    stored_at: 0,
                };
                let ended =
                    decode_lines_fast(&mut reader, &mut pending, &mut malformed, &mut oversized);
                pending.flush(reader.get_ref().bytes);
                ended
            }
        };
        if ctx.is_stopped() {
            return Ok(());
        }
        let e = match ended {
            Ended::Eof => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ),
            Ended::Failed(e) => e,
        };
        Err(EngineError::io(source, e))
    }
}

/// The most records a socket receiver decodes before storing them.
const MAX_CHUNK: usize = 4096;

/// The socket receiver's read buffer: lines are split out of one read of up to this.
const READ_BUFFER: usize = 256 * 1024;

impl StreamingContext {
    /// UTF-8 lines from a TCP server at `host:port`, as Spark's `socketTextStream`
    /// (feed it with `nc -lk 9999`). Reconnects when the connection is lost; a line
    /// that is not UTF-8 is skipped with a warning (see [`crate::sources::socket`]).
    pub fn socket_text_stream(&self, host: &str, port: u16) -> Result<DStream<String>> {
        self.add_receiver("socket", Box::new(SocketReceiver::text(host, port)))
            .map(|(s, _)| s)
    }

    /// Records decoded by `decoder` from a TCP server at `host:port`.
    pub fn socket_stream<T: Data>(
        &self,
        host: &str,
        port: u16,
        decoder: impl Decoder<T>,
    ) -> Result<DStream<T>> {
        self.add_receiver("socket", Box::new(SocketReceiver::new(host, port, decoder)))
            .map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_decode_and_bad_utf8_is_invalid_data() {
        let mut r: &[u8] = b"a b\r\nc\n\xff\xfe\nlast";
        let r: &mut dyn BufRead = &mut r;
        assert_eq!(decode_lines(r).unwrap().as_deref(), Some("a b"));
        assert_eq!(decode_lines(r).unwrap().as_deref(), Some("c"));
        let e = decode_lines(r).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("UTF-8"), "{e}");
        // The bad line was consumed: decoding goes on with the next one.
        assert_eq!(decode_lines(r).unwrap().as_deref(), Some("last"));
        assert_eq!(decode_lines(r).unwrap(), None);
    }
}
