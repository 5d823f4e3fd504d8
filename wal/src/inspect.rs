//! A read-only look at a local WAL directory, for `sluice inspect`: every segment's
//! header and frames checked, nothing truncated or removed, no lock taken.

use std::path::{Path, PathBuf};

use crate::format::{self, SegmentHeader, HEADER_LEN};
use crate::{Lsn, Result, WalError};

/// What one segment holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentScan {
    pub path: PathBuf,
    pub bytes: u64,
    pub first_lsn: Option<u64>,
    pub records: u64,
    /// What is wrong, with the offset (a torn tail of the newest segment included).
    pub problem: Option<String>,
    /// The problem is a torn tail that recovery would cut (not damage).
    pub torn_tail: bool,
}

/// What a scan of a WAL directory found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanReport {
    pub segments: Vec<SegmentScan>,
    /// Every readable record, in order.
    #[serde(skip)]
    pub records: Vec<(Lsn, Vec<u8>)>,
}

impl ScanReport {
    /// Whether anything other than a torn tail is wrong.
    pub fn damaged(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.problem.is_some() && !s.torn_tail)
    }
}

/// Scans the segments of the WAL in `dir` without changing anything.
pub fn scan_dir(dir: &Path) -> Result<ScanReport> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| WalError::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 && n.ends_with(".wal"))
        .collect();
    names.sort();
    let mut report = ScanReport::default();
    let n = names.len();
    for (i, name) in names.iter().enumerate() {
        let path = dir.join(name);
        let data = std::fs::read(&path).map_err(|e| WalError::io(&path, e))?;
        let mut seg = SegmentScan {
            path: path.clone(),
            bytes: data.len() as u64,
            first_lsn: None,
            records: 0,
            problem: None,
            torn_tail: false,
        };
        match SegmentHeader::decode(&data) {
            Err(reason) => {
                seg.torn_tail =
                    i + 1 == n && (data.len() < HEADER_LEN || data.iter().all(|b| *b == 0));
                seg.problem = Some(format!("offset 0: {reason}"));
            }
            Ok(h) => {
                seg.first_lsn = Some(h.first_lsn.0);
                let scan = format::scan_frames(&data[HEADER_LEN..]);
                for (k, (off, len)) in scan.frames.iter().enumerate() {
                    let at = HEADER_LEN + off + format::FRAME_HEADER_LEN;
                    report
                        .records
                        .push((Lsn(h.first_lsn.0 + k as u64), data[at..at + len].to_vec()));
                }
                seg.records = scan.frames.len() as u64;
                if let Some(stop) = scan.stop {
                    seg.torn_tail = i + 1 == n && stop.tail;
                    seg.problem =
                        Some(format!("offset {}: {}", HEADER_LEN + stop.offset, stop.bad));
                }
            }
        }
        report.segments.push(seg);
    }
    Ok(report)
}
