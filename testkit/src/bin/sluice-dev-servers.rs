//! `sluice-dev-servers start|stop|status`: the test harness's servers, started once
//! and left running for trying the examples by hand (`scripts/dev-servers.sh` runs
//! this). `start` prints the variables to export; the tests honour them too.
//!
//! State lives in `$SLUICE_TEST_SERVERS_DIR` (default `$HOME/.cache/sluice/dev-servers`):
//! `servers.env` (the exports) and `servers.pids` (name, PID, folder per server).

use std::path::PathBuf;
use std::process::ExitCode;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sluice_testkit::{KafkaServer, MariaDbServer, MotoServer, PostgresServer, RedisServer};

const KINDS: [&str; 5] = ["postgres", "mysql", "redis", "kafka", "s3"];
const BUCKET: &str = "sluice";

fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SLUICE_TEST_SERVERS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/sluice/dev-servers")
}

struct Started {
    kind: &'static str,
    pid: u32,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

fn start_one(kind: &'static str) -> std::io::Result<Started> {
    let one = |var: &str, value: String, (pid, dir): (u32, PathBuf)| Started {
        kind,
        pid,
        dir,
        env: vec![(var.to_owned(), value)],
    };
    Ok(match kind {
        "postgres" => {
            let s = PostgresServer::start()?;
            one("SLUICE_TEST_POSTGRES_URL", s.url(), s.detach())
        }
        "mysql" => {
            let s = MariaDbServer::start()?;
            one("SLUICE_TEST_MYSQL_URL", s.url(), s.detach())
        }
        "redis" => {
            let s = RedisServer::start()?;
            one("SLUICE_TEST_REDIS_URL", s.url(), s.detach())
        }
        "kafka" => {
            let s = KafkaServer::start()?;
            one("SLUICE_TEST_KAFKA_BROKERS", s.brokers(), s.detach())
        }
        _ => {
            let s = MotoServer::start()?;
            s.create_bucket(BUCKET)?;
            let env = sluice_testkit::s3_env(&s, BUCKET);
            let (pid, dir) = s.detach();
            Started {
                kind,
                pid,
                dir,
                env,
            }
        }
    })
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'))
}

/// `(kind, pid, dir)` of each server `start` left.
fn recorded() -> Vec<(String, u32, PathBuf)> {
    let text = std::fs::read_to_string(state_dir().join("servers.pids")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            Some((
                f.next()?.to_owned(),
                f.next()?.parse().ok()?,
                PathBuf::from(f.next()?),
            ))
        })
        .collect()
}

fn stop() -> ExitCode {
    for (kind, pid, dir) in recorded() {
        if running(pid) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            println!("stopped {kind} (pid {pid})");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_file(state_dir().join("servers.pids"));
    let _ = std::fs::remove_file(state_dir().join("servers.env"));
    ExitCode::SUCCESS
}

fn status() -> ExitCode {
    let servers = recorded();
    if servers.is_empty() {
        println!("no dev servers (start them with `scripts/dev-servers.sh start`)");
        return ExitCode::from(1);
    }
    let mut all = true;
    for (kind, pid, _) in &servers {
        let up = running(*pid);
        all &= up;
        println!(
            "{kind:9} pid {pid:7} {}",
            if up { "running" } else { "DEAD" }
        );
    }
    if all {
        print!(
            "{}",
            std::fs::read_to_string(state_dir().join("servers.env")).unwrap_or_default()
        );
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn start(kinds: &[&'static str]) -> ExitCode {
    if !recorded().is_empty() {
        eprintln!("dev servers are recorded already; stopping them first");
        stop();
    }
    let dir = state_dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("sluice-dev-servers: {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let (mut pids, mut env) = (String::new(), String::new());
    for kind in kinds {
        eprintln!("starting {kind} ...");
        match start_one(kind) {
            Ok(s) => {
                pids.push_str(&format!("{} {} {}\n", s.kind, s.pid, s.dir.display()));
                for (k, v) in s.env {
                    env.push_str(&format!("export {k}={v}\n"));
                }
                // Written as each starts, so that `stop` finds what did start.
                let _ = std::fs::write(dir.join("servers.pids"), &pids);
            }
            Err(e) => {
                eprintln!("sluice-dev-servers: cannot start {kind}: {e}");
                stop();
                return ExitCode::from(1);
            }
        }
    }
    if let Err(e) = std::fs::write(dir.join("servers.env"), &env) {
        eprintln!("sluice-dev-servers: {e}");
        return ExitCode::from(2);
    }
    eprintln!(
        "started; to use them: eval \"$(scripts/dev-servers.sh env)\" (or source {})",
        dir.join("servers.env").display()
    );
    print!("{env}");
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: sluice-dev-servers start [postgres|mysql|redis|kafka|s3 ...] | stop | status | env"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("start") => {
            let mut kinds = Vec::new();
            for a in &args[1..] {
                match KINDS.iter().find(|k| **k == a.as_str()) {
                    Some(k) => kinds.push(*k),
                    None => {
                        eprintln!("sluice-dev-servers: unknown server {a:?} (one of {KINDS:?})");
                        return ExitCode::from(2);
                    }
                }
            }
            if kinds.is_empty() {
                kinds = KINDS.to_vec();
            }
            start(&kinds)
        }
        Some("stop") => stop(),
        Some("status") => status(),
        Some("env") => match std::fs::read_to_string(state_dir().join("servers.env")) {
            Ok(env) => {
                print!("{env}");
                ExitCode::SUCCESS
            }
            Err(_) => {
                eprintln!("no dev servers (start them with `scripts/dev-servers.sh start`)");
                ExitCode::from(1)
            }
        },
        _ => usage(),
    }
}
