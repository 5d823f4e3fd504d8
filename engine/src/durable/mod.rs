//! The durability protocol of DESIGN.md: the only code that writes durable state.
//!
//! Owns, per batch: the driver log (`BatchPlanned` durable before any job of the batch
//! runs, `BatchCompleted` after every output); every checkpoint interval the state
//! snapshots and the metadata checkpoint, then cleanup (`checkpoint`); on restart
//! `get_or_create` (`restore`); and reading all of it back for `sluice inspect`
//! (`inspect`). What a checkpoint holds is `CheckpointData` in `checkpoint.rs`.
//! Uses: the checkpoint stores, the WAL and the pure restart decisions of
//! `sluice-recovery`; the runtime calls in here, sources and operators never do.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_checkpoint::CheckpointStore;
use sluice_recovery::log::{DriverEvent, InputPlan};
use sluice_recovery::resolve::Resume;
use sluice_wal::{Durability, TypedWal, Wal, WalOptions};

mod checkpoint;
pub mod inspect;
mod restore;

pub(crate) use checkpoint::{input_keys, CheckpointData};

use crate::runtime::graph::ExecutionEnv;
use crate::{BatchTime, EngineError, Result, StreamingConf};

/// The durable side of a running context.
pub(crate) struct DriverStore {
    pub(crate) location: String,
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) log: TypedWal<DriverEvent>,
    /// How often to checkpoint, in ms (a multiple of the batch interval).
    pub(crate) every_ms: u64,
    /// Set by `get_or_create`, taken by the scheduler on start.
    pub(crate) plan: Mutex<Option<Resume>>,
    /// Whether the log already holds a `Started` record.
    pub(crate) started_logged: Mutex<bool>,
    /// Per state snapshot prefix, the last snapshot written and a digest of each of its
    /// entries: what the next checkpoint writes an incremental snapshot against.
    pub(crate) snapshot_bases: Mutex<std::collections::HashMap<String, SnapshotBase>>,
    /// Whether checkpoints are written on a thread of their own (`async_checkpoints`).
    pub(crate) async_checkpoints: bool,
    /// The checkpoint being written, if any.
    pub(crate) in_flight: Mutex<Option<std::thread::JoinHandle<Result<()>>>>,
    /// A checkpoint fell due while the previous one was still being written: the
    /// first batch that completes after that one is done takes it.
    pub(crate) deferred: std::sync::atomic::AtomicBool,
}

/// How the engine writes state snapshots: the store's defaults, except that only a
/// delta of at most 16 KiB is held inside its manifest. An inline delta is carried by
/// every later manifest of its chain, so a large inline threshold would make each
/// incremental checkpoint rewrite all earlier deltas (1%, 2%, 3%… of the state).
pub(crate) fn snapshot_options() -> sluice_checkpoint::snapshot::SnapshotOptions {
    sluice_checkpoint::snapshot::SnapshotOptions {
        inline_delta_bytes: 16 << 10,
        ..sluice_checkpoint::snapshot::SnapshotOptions::default()
    }
}

/// The last state snapshot of one operator this driver wrote, as the base of the next.
pub(crate) struct SnapshotBase {
    pub(crate) manifest: sluice_checkpoint::snapshot::SnapshotManifest,
    /// Key bytes to a 128-bit digest of the value bytes (SipHash-1-3, zero keys).
    pub(crate) digests: std::collections::HashMap<Vec<u8>, u128>,
}

impl std::fmt::Debug for DriverStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverStore")
            .field("location", &self.location)
            .finish()
    }
}

fn ckpt_err(e: sluice_checkpoint::CheckpointError) -> EngineError {
    EngineError::Checkpoint(e)
}

/// The location of a log kept beside the checkpoints (`name` under a directory or
/// prefix; next to a RocksDB directory).
pub(crate) fn sibling_location(location: &str, name: &str) -> String {
    if let Some(path) = location.strip_prefix("rocksdb://") {
        format!("{}-{name}", path.trim_end_matches('/'))
    } else {
        format!("{}/{name}", location.trim_end_matches('/'))
    }
}

/// Whether the log at `url` exists and holds records. A local location that does not
/// exist is not created.
pub(crate) fn location_holds_records(
    url: &str,
    opts: &WalOptions,
    fs: Option<Arc<dyn sluice_wal::fs::FileSystem>>,
) -> Result<bool> {
    let local = url.strip_prefix("file://").unwrap_or(url);
    if !url.contains("://") || url.starts_with("file://") {
        let path = std::path::Path::new(local);
        let exists = match &fs {
            Some(fs) => fs.list(path).is_ok(),
            None => path.exists(),
        };
        if !exists {
            return Ok(false);
        }
    }
    let wal = Wal::open_url_with_fs(url, opts.clone(), fs)?;
    let holds = wal.next_lsn().0 > wal.first_lsn().0;
    drop(wal);
    Ok(holds)
}

/// The driver log's location for a checkpoint location.
pub(crate) fn driver_log_url(location: &str) -> String {
    sibling_location(location, "driver-log")
}

/// A state snapshot operator name (ASCII letters, digits, `-`, `_`) for any user name:
/// other characters become `_`, and a hash of the original keeps names apart.
pub(crate) fn snapshot_operator_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .take(60)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // The fixed persisted hash (sluice_recovery::identity): the same name in every
    // build, so a toolchain upgrade between a crash and the restart finds the snapshots.
    format!(
        "{clean}-{:08x}",
        sluice_recovery::identity::name_hash(name) as u32
    )
}

impl DriverStore {
    pub(crate) fn open(conf: &StreamingConf) -> Result<Option<DriverStore>> {
        let Some(location) = conf.checkpoint.clone() else {
            return Ok(None);
        };
        let store =
            sluice_checkpoint::open_location_on(&location, &[], conf.fs()).map_err(ckpt_err)?;
        let opts = WalOptions {
            durability: Durability::GroupCommit {
                max_wait: Duration::ZERO,
            },
            recovery: conf.wal_recovery_mode,
            ..WalOptions::default()
        };
        let wal = Wal::open_url_with_fs(&driver_log_url(&location), opts, conf.fs())?;
        let report = wal.recovery_report();
        if !report.is_clean() {
            tracing::warn!(?report, "the driver log was repaired on open");
        }
        let batch = conf.batch_interval.as_millis() as u64;
        let every_ms = conf
            .checkpoint_interval
            .map_or(batch.max(10_000).div_ceil(batch) * batch, |d| {
                d.as_millis() as u64
            });
        Ok(Some(DriverStore {
            location,
            store,
            log: TypedWal::new(wal),
            every_ms,
            plan: Mutex::new(None),
            started_logged: Mutex::new(false),
            snapshot_bases: Mutex::default(),
            async_checkpoints: conf.async_checkpoints,
            in_flight: Mutex::new(None),
            deferred: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Rule: `BatchPlanned` is durable before any job of the batch runs.
    pub(crate) fn planned(&self, t: BatchTime, inputs: Vec<InputPlan>) -> Result<()> {
        // Crash mid append: the record is queued (maybe written) but not yet durable.
        let a = self.log.inner().submit(&TypedWal::<DriverEvent>::encode(
            &DriverEvent::BatchPlanned { time: t, inputs },
        )?)?;
        crate::failpoints::point("driver-log-append");
        self.log.inner().wait(a.lsn)?;
        crate::failpoints::point("after-batch-planned");
        Ok(())
    }

    /// Rule: `BatchCompleted` after every output of the batch committed. It need not be
    /// durable at once: if it is lost, the batch is replayed and exactly-once sinks skip
    /// it; it becomes durable with the next batch's `BatchPlanned`.
    pub(crate) fn completed(&self, t: BatchTime) -> Result<()> {
        self.log.inner().submit(&TypedWal::<DriverEvent>::encode(
            &DriverEvent::BatchCompleted { time: t },
        )?)?;
        Ok(())
    }

    pub(crate) fn log_started(&self, zero: BatchTime, batch: Duration) -> Result<()> {
        let mut logged = self
            .started_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !*logged {
            self.log.append(&DriverEvent::Started {
                zero,
                batch_ms: batch.as_millis() as u64,
            })?;
            *logged = true;
        }
        Ok(())
    }

    /// Whether batch `t` takes a checkpoint: at every multiple of the interval, and at
    /// the first batch after one was deferred while its predecessor was being written.
    pub(crate) fn due(&self, t: BatchTime, env: &ExecutionEnv) -> bool {
        (t.0 - env.zero.0).is_multiple_of(self.every_ms.max(1))
            || self.deferred.load(std::sync::atomic::Ordering::Relaxed)
    }
}
