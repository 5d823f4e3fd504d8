//! A tiny message broker with acknowledgements, and the reliable receiver that reads
//! it: the "reliable receiver with the WAL on" of the reference job.
//!
//! Protocol (text lines over TCP): the client sends `FROM <offset>` or `FROM ACKED`;
//! the broker answers `AT <offset>` and then streams its lines from there, one per
//! line, as they are produced; the client sends `ACK <offset>` (the offset after the
//! last line it made durable). Like a real broker it redelivers from the last
//! acknowledgement to a client that asks `FROM ACKED`, so a receiver that relied on
//! acknowledgements alone would see duplicates after a crash between its WAL write and
//! its `ACK`. The receiver here resumes from the position stored with its blocks
//! instead ([`sluice::ReceiverContext::stored_position`]), which is what makes it
//! exactly-once.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice::prelude::*;
use sluice::Result;

/// The broker (harness side).
#[derive(Debug, Clone)]
pub struct Broker {
    lines: Arc<Mutex<Vec<String>>>,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    addr: String,
}

impl Broker {
    /// Listens on a free loopback port.
    pub fn start() -> io::Result<Broker> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let broker = Broker {
            lines: Arc::default(),
            acked: Arc::default(),
            stop: Arc::default(),
            addr: listener.local_addr()?.to_string(),
        };
        let b = broker.clone();
        std::thread::Builder::new()
            .name("chaos-broker".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if b.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(conn) = conn {
                        let b = b.clone();
                        let _ = std::thread::Builder::new()
                            .name("chaos-broker-conn".into())
                            .spawn(move || {
                                let _ = b.serve(conn);
                            });
                    }
                }
            })?;
        Ok(broker)
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Appends a line.
    pub fn push(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// Lines produced so far.
    pub fn produced(&self) -> u64 {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    /// The highest offset acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }

    fn serve(&self, conn: TcpStream) -> io::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        let from = match first.trim().strip_prefix("FROM ") {
            Some("ACKED") => self.acked(),
            Some(n) => n
                .parse()
                .map_err(|_| io::Error::other(format!("bad request {first:?}")))?,
            None => return Err(io::Error::other(format!("bad request {first:?}"))),
        };
        let acked = self.acked.clone();
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                if let Some(Ok(n)) = line.trim().strip_prefix("ACK ").map(str::parse::<u64>) {
                    acked.fetch_max(n, Ordering::SeqCst);
                }
                line.clear();
            }
            d2.store(true, Ordering::SeqCst);
        });
        let mut out = io::BufWriter::new(conn);
        writeln!(out, "AT {from}")?;
        out.flush()?;
        let mut next = from as usize;
        while !done.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
            let chunk: Vec<String> = {
                let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
                lines[next.min(lines.len())..].to_vec()
            };
            if chunk.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            for l in &chunk {
                writeln!(out, "{l}")?;
            }
            out.flush()?;
            next += chunk.len();
        }
        Ok(())
    }
}

/// The reliable receiver (driver side): stores blocks of at most `max_block` lines or
/// 50 ms, each with the broker offset after it, then acknowledges.
#[derive(Debug)]
pub struct BrokerReceiver {
    /// The broker's `HOST:PORT`.
    pub addr: String,
}

const MAX_BLOCK: usize = 500;
const BLOCK_TIME: Duration = Duration::from_millis(50);

fn position(p: &[u8]) -> Result<u64> {
    p.try_into()
        .map(u64::from_le_bytes)
        .map_err(|_| EngineError::User(format!("a stored broker position of {} bytes", p.len())))
}

impl Receiver<String> for BrokerReceiver {
    fn describe(&self) -> String {
        format!("broker {}", self.addr)
    }

    fn run(&mut self, ctx: &ReceiverContext<String>) -> Result<()> {
        let io = |what: &str, e: io::Error| {
            EngineError::User(format!("broker {}: {what}: {e}", self.addr))
        };
        let from = ctx.stored_position().map(|p| position(&p)).transpose()?;
        let conn = TcpStream::connect(&self.addr).map_err(|e| io("connect", e))?;
        conn.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|e| io("set timeout", e))?;
        let mut writer = conn.try_clone().map_err(|e| io("clone", e))?;
        match from {
            Some(n) => writeln!(writer, "FROM {n}"),
            None => writeln!(writer, "FROM ACKED"),
        }
        .map_err(|e| io("request", e))?;
        let mut reader = BufReader::new(conn);
        let mut partial = Vec::new();
        let mut offset: Option<u64> = None;
        let mut block = Vec::new();
        let mut since = Instant::now();
        loop {
            if ctx.is_stopped() {
                return Ok(());
            }
            match reader.read_until(b'\n', &mut partial) {
                Ok(0) => {
                    return Err(EngineError::User(format!(
                        "broker {}: connection closed",
                        self.addr
                    )))
                }
                Ok(_) if partial.ends_with(b"\n") => {
                    partial.pop();
                    let line = String::from_utf8(std::mem::take(&mut partial))
                        .map_err(|e| EngineError::User(format!("broker {}: {e}", self.addr)))?;
                    match offset {
                        None => {
                            let at = line.strip_prefix("AT ").and_then(|n| n.parse().ok());
                            offset = Some(at.ok_or_else(|| {
                                EngineError::User(format!(
                                    "broker {}: expected AT, got {line:?}",
                                    self.addr
                                ))
                            })?);
                        }
                        Some(_) => {
                            if block.is_empty() {
                                since = Instant::now();
                            }
                            block.push(line);
                        }
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(io("read", e)),
            }
            if !block.is_empty() && (block.len() >= MAX_BLOCK || since.elapsed() >= BLOCK_TIME) {
                let end = offset.unwrap_or(0) + block.len() as u64;
                // Durable (with the position) before the acknowledgement.
                ctx.store_block_at(std::mem::take(&mut block), end.to_le_bytes())?;
                offset = Some(end);
                writeln!(writer, "ACK {end}").map_err(|e| io("ack", e))?;
            }
        }
    }
}
