//! What `sluice inspect LOCATION` reports: checkpoints, state snapshots, the driver
//! log and its pending batches, the graph descriptor; every CRC verified; read-only.

use std::collections::BTreeSet;

use serde::Serialize;
use sluice_checkpoint::snapshot::{SnapshotOptions, StateSnapshots};
use sluice_checkpoint::CheckpointStore;
use sluice_recovery::graph::NodeInfo;
use sluice_recovery::log::DriverEvent;

use crate::durable::{driver_log_url, snapshot_operator_name, CheckpointData};

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
    pub damaged: bool,
}

/// Inspects a checkpoint location without changing it.
pub fn inspect(location: &str) -> Result<Report, String> {
    let store = sluice_checkpoint::open_location(location).map_err(|e| e.to_string())?;
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
                CheckpointData::decode(&c.payload)
                    .map(|d| (c.payload.len(), d))
                    .map_err(|e| e.to_string())
            }) {
            Err(e) => {
                damaged = true;
                row.problem = Some(e);
            }
            Ok((len, d)) => {
                row.readable = true;
                row.bytes = Some(len);
                for (name, r) in &d.states {
                    row.states.push(check_state(&store, name, *r, &mut damaged));
                }
                if graph.is_empty() {
                    graph = d.graph.clone();
                }
            }
        }
        rows.push(row);
    }
    let driver_log = inspect_log(location, &mut damaged);
    Ok(Report {
        location: location.into(),
        checkpoints: rows,
        driver_log,
        graph,
        damaged,
    })
}

fn check_state(
    store: &std::sync::Arc<dyn CheckpointStore>,
    name: &str,
    r: sluice_checkpoint::snapshot::SnapshotRef,
    damaged: &mut bool,
) -> StateRow {
    let mut row = StateRow {
        operator: name.into(),
        snapshot_id: r.id,
        layers: 0,
        keys: None,
        problem: None,
    };
    let res = StateSnapshots::new(
        store.clone(),
        &snapshot_operator_name(name),
        SnapshotOptions::default(),
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

fn inspect_log(location: &str, damaged: &mut bool) -> Option<LogReport> {
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
                    Ok(DriverEvent::BatchPlanned { time, .. }) => {
                        planned.insert(time.0);
                    }
                    Ok(DriverEvent::BatchCompleted { time }) => {
                        completed.insert(time.0);
                    }
                    Ok(DriverEvent::Started { .. }) => {}
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
