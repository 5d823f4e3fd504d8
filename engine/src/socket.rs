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

use std::io::{self, BufRead, BufReader};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use crate::receiver::{Receiver, ReceiverContext};
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

/// A receiver that reads records from a TCP server (see the module docs).
pub struct SocketReceiver<T> {
    host: String,
    port: u16,
    decoder: Arc<dyn Fn(&mut dyn BufRead) -> io::Result<Option<T>> + Send + Sync>,
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
            decoder: Arc::new(decoder),
        }
    }
}

impl SocketReceiver<String> {
    /// A receiver for UTF-8 lines from `host:port`.
    pub fn text(host: impl Into<String>, port: u16) -> Self {
        Self::new(host, port, decode_lines)
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
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut skipped = 0u64;
        // Records decoded from what has been read, stored together when the reader's
        // buffer runs dry (the next decode may block) or the chunk is full.
        let mut pending: Vec<T> = Vec::new();
        let flush = |pending: &mut Vec<T>| {
            if !pending.is_empty() {
                ctx.store_all(std::mem::take(pending));
            }
        };
        loop {
            if ctx.is_stopped() {
                flush(&mut pending);
                return Ok(());
            }
            match (self.decoder)(&mut reader) {
                Ok(Some(record)) => pending.push(record),
                Ok(None) => {
                    flush(&mut pending);
                    if ctx.is_stopped() {
                        return Ok(());
                    }
                    return Err(EngineError::io(
                        source,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    skipped += 1;
                    ctx.report_error(EngineError::Malformed {
                        source_name: source.clone(),
                        reason: format!("{e}; skipped (record {skipped} skipped so far)"),
                    });
                }
                Err(e) => {
                    flush(&mut pending);
                    if ctx.is_stopped() {
                        return Ok(());
                    }
                    return Err(EngineError::io(source, e));
                }
            }
            let max = ctx
                .rate_limit()
                .map_or(MAX_CHUNK, |r| (r as usize / 10).clamp(1, MAX_CHUNK));
            if pending.len() >= max || reader.buffer().is_empty() {
                flush(&mut pending);
            }
        }
    }
}

/// The most records a socket receiver decodes before storing them.
const MAX_CHUNK: usize = 4096;

impl StreamingContext {
    /// UTF-8 lines from a TCP server at `host:port`, as Spark's `socketTextStream`
    /// (feed it with `nc -lk 9999`). Reconnects when the connection is lost; a line
    /// that is not UTF-8 is skipped with a warning (see [`crate::socket`]).
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
