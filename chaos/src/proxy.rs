//! A TCP proxy in front of the S3 server that injects object-store faults at the
//! network level, where a real outage happens: added latency on every chunk, or an
//! outage (connections refused mid-request and new ones closed at once). The driver's
//! S3 client and sluice's retry policy see real I/O errors, not mocks.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward as is.
    Pass,
    /// Delay every chunk each way by this long.
    Latency(Duration),
    /// Cut every open connection and close new ones at once.
    Down,
}

/// The proxy (runs until the process ends).
#[derive(Debug, Clone)]
pub struct Proxy {
    addr: String,
    mode: Arc<Mutex<Mode>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`HOST:PORT`).
    pub fn start(upstream: String) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let proxy = Proxy {
            addr: listener.local_addr()?.to_string(),
            mode: Arc::new(Mutex::new(Mode::Pass)),
            conns: Arc::default(),
        };
        let p = proxy.clone();
        std::thread::Builder::new()
            .name("chaos-proxy".into())
            .spawn(move || {
                for client in listener.incoming().flatten() {
                    if p.mode() == Mode::Down {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    p.pump(client, server);
                }
            })?;
        Ok(proxy)
    }

    /// `HOST:PORT` to point the S3 client at.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the mode; `Down` cuts every open connection.
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if mode == Mode::Down {
            for c in conns.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    fn pump(&self, client: TcpStream, server: TcpStream) {
        let pairs = [
            (client.try_clone(), server.try_clone()),
            (server.try_clone(), client.try_clone()),
        ];
        {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.retain(|c| c.peer_addr().is_ok());
            conns.extend([client, server]);
        }
        for pair in pairs {
            let (Ok(mut from), Ok(mut to)) = pair else {
                continue;
            };
            let p = self.clone();
            let _ = std::thread::Builder::new()
                .name("chaos-proxy-pump".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        match p.mode() {
                            Mode::Down => break,
                            Mode::Latency(d) => std::thread::sleep(d),
                            Mode::Pass => {}
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                    let _ = from.shutdown(Shutdown::Read);
                });
        }
    }
}
