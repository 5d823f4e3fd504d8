//! What `sluice inspect LOCATION` reports: checkpoints, state snapshots, the driver
//! log and its pending batches, the graph descriptor; every CRC verified; read-only.

use std::collections::BTreeSet;

use serde::Serialize;
use sluice_checkpoint::snapshot::StateSnapshots;
use sluice_checkpoint::CheckpointStore;
use sluice_recovery::graph::NodeInfo;
use sluice_recovery::log::DriverEvent;

use sluice_recovery::plan::DownTime;
use sluice_recovery::resolve::{resolve, RestartInputs, Unusable};

use crate::durable::checkpoint::StateRef;
use crate::durable::{driver_log_url, CheckpointData};
use crate::BatchTime;

/// One checkpoint.
#[derive(Debug, Serialize)]
pub struct CheckpointRow {
    pub time_ms: u64,
    pub bytes: Option<usize>,
    pub readable: bool,
    pub problem: Option<String>,
    /// `(operator, snapshot id, layers, keys or the problem)`.
    pub states: Vec<StateRow>,
}

/// One state snapshot named by a checkpoint.
#[derive(Debug, Serialize)]
pub struct StateRow {
    pub operator: String,
    pub snapshot_id: u64,
    pub layers: usize,
    pub keys: Option<usize>,
    pub problem: Option<String>,
}

/// The driver log.
#[derive(Debug, Default, Serialize)]
pub struct LogReport {
    pub location: String,
    pub segments: Vec<sluice_wal::inspect::SegmentScan>,
    pub records: usize,
    pub planned: usize,
    pub completed: usize,
    /// Planned but not completed: what a restart re-runs at least.
    pub pending_batches: Vec<u64>,
    pub problem: Option<String>,
}

/// Everything `sluice inspect` reports.
#[derive(Debug, Serialize)]
pub struct Report {
    pub location: String,
    pub checkpoints: Vec<CheckpointRow>,
    pub driver_log: Option<LogReport>,
    /// The graph descriptor of the newest readable checkpoint.
    pub graph: Vec<NodeInfo>,
    /// The decision a restart of the same job would take now (`sluice_recovery::resolve`,
    /// with the newest readable checkpoint's graph as the rebuilt one).
    pub decision: String,
    pub damaged: bool,
}

/// Inspects a checkpoint location without changing it.
pub fn inspect(location: &str) -> Result<Report, String> {
    // A local location that does not exist is not opened (opening creates it).
    let local = match location.strip_prefix("rocksdb://") {
        Some(path) => Some(path),
        None if !location.contains("://") => Some(location),
        None => location.strip_prefix("file://"),
    };
    if let Some(path) = local {
        if !std::path::Path::new(path).exists() {
            return Err(format!(
                "{location} does not exist: there is nothing to inspect"
            ));
        }
    }
    let store = sluice_checkpoint::open_location(location).map_err(|e| e.to_string())?;
    let mut unusable = Vec::new();
    let mut usable = Vec::new();
    let mut damaged = false;
    let mut rows = Vec::new();
    let mut graph = Vec::new();
    let ids = store.list_checkpoints().map_err(|e| e.to_string())?;
    for id in ids.iter().rev() {
        let mut row = CheckpointRow {
            time_ms: id.0,
            bytes: None,
            readable: false,
            problem: None,
            states: Vec::new(),
        };
        match store
            .read_checkpoint(*id)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                CheckpointData::decode(&c.payload, None)
                    .map(|d| (c.payload.len(), d))
                    .map_err(|e| e.to_string())
            }) {
            Err(e) => {
                damaged = true;
                unusable.push(Unusable {
                    time: BatchTime(id.0),
                    reason: e.clone(),
                });
                row.problem = Some(e);
            }
            Ok((len, d)) => {
                row.readable = true;
                row.bytes = Some(len);
                for s in &d.states {
                    row.states.push(check_state(&store, s, &mut damaged));
                }
                match row.states.iter().find_map(|s| s.problem.clone()) {
                    Some(problem) => unusable.push(Unusable {
                        time: BatchTime(id.0),
                        reason: problem,
                    }),
                    None => usable.push(d.view()),
                }
                if graph.is_empty() {
                    graph = d.graph.clone();
                }
            }
        }
        rows.push(row);
    }
    let mut events = Vec::new();
    let driver_log = inspect_log(location, &mut damaged, &mut events);
    if rows.is_empty() && driver_log.is_none() && local.is_none() {
        return Err(format!(
            "{location} holds no checkpoint and no driver log: there is nothing to inspect"
        ));
    }
    let batch_ms = usable
        .first()
        .map(|v| v.batch_ms)
        .or_else(|| {
            events.iter().find_map(|e| match e {
                DriverEvent::Started { batch_ms, .. } => Some(*batch_ms),
                _ => None,
            })
        })
        .unwrap_or(1000);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let decision = resolve(&RestartInputs {
        checkpoints: &usable,
        unusable: &unusable,
        log: &events,
        graph: &graph,
        batch_ms,
        drop_incompatible_state: false,
        down_time: DownTime::RunEach,
        now_ms,
    })
    .summary();
    Ok(Report {
        location: location.into(),
        checkpoints: rows,
        driver_log,
        graph,
        decision,
        damaged,
    })
}

fn check_state(
    store: &std::sync::Arc<dyn CheckpointStore>,
    state: &StateRef,
    damaged: &mut bool,
) -> StateRow {
    let r = state.reference;
    let mut row = StateRow {
        operator: state.name.clone(),
        snapshot_id: r.id,
        layers: 0,
        keys: None,
        problem: None,
    };
    let res = StateSnapshots::new(
        store.clone(),
        &state.snapshots,
        crate::durable::snapshot_options(),
    )
    .and_then(|s| {
        let m = s.read_manifest(r)?;
        row.layers = m.layers.len();
        s.restore(&m)
    });
    match res {
        Ok(state) => row.keys = Some(state.len()),
        Err(e) => {
            *damaged = true;
            row.problem = Some(e.to_string());
        }
    }
    row
}

fn inspect_log(
    location: &str,
    damaged: &mut bool,
    events: &mut Vec<DriverEvent>,
) -> Option<LogReport> {
    let url = driver_log_url(location);
    let path = url.strip_prefix("file://").unwrap_or(&url);
    if url.contains("://") && !url.starts_with("file://") {
        return Some(LogReport {
            location: url.clone(),
            problem: Some("driver logs on object stores are not inspected yet".into()),
            ..LogReport::default()
        });
    }
    let dir = std::path::Path::new(path);
    if !dir.exists() {
        return None;
    }
    let mut rep = LogReport {
        location: url.clone(),
        ..LogReport::default()
    };
    match sluice_wal::inspect::scan_dir(dir) {
        Err(e) => {
            *damaged = true;
            rep.problem = Some(e.to_string());
        }
        Ok(scan) => {
            *damaged |= scan.damaged();
            rep.records = scan.records.len();
            let mut planned = BTreeSet::new();
            let mut completed = BTreeSet::new();
            for (lsn, bytes) in &scan.records {
                match crate::runtime::graph::decode::<DriverEvent>(bytes) {
                    Ok(e) => {
                        if let Some(time) = e.planned_time() {
                            planned.insert(time.0);
                        }
                        if let DriverEvent::BatchCompleted { time } = &e {
                            completed.insert(time.0);
                        }
                        events.push(e);
                    }
                    Err(e) => {
                        *damaged = true;
                        rep.problem = Some(format!("record {lsn} does not decode: {e}"));
                    }
                }
            }
            rep.planned = planned.len();
            rep.completed = completed.len();
            rep.pending_batches = planned.difference(&completed).copied().collect();
            rep.segments = scan.segments;
        }
    }
    Some(rep)
}
