//! Recovery on open: reads what storage holds, cuts a torn tail (or stops, by the
//! recovery mode) and decides where the log ends.

use std::collections::BTreeMap;

use super::{frame_error, RecoveryMode, RecoveryReport, SegMeta, Storage, WalOptions};
use crate::format::{self, SegmentHeader, HEADER_LEN};
use crate::{Lsn, Result, SegmentId, WalError};

/// Recovery: reads what storage holds and decides where the log ends.
pub(super) fn recover(
    storage: &dyn Storage,
    opts: &WalOptions,
) -> Result<(BTreeMap<SegmentId, SegMeta>, Lsn, RecoveryReport)> {
    let mut ids = storage.list()?;
    ids.sort();
    let mut report = RecoveryReport::default();
    let mut segments = BTreeMap::new();
    let mut next_lsn = Lsn(0);
    let scan_all = opts.verify_on_open || opts.recovery == RecoveryMode::PointInTime;
    let tolerate_tail = opts.recovery != RecoveryMode::AbsoluteConsistency;
    // A newest segment shorter than a header (or all zero) is one whose creation was cut
    // off by a crash: it never held an acknowledged record, so it goes.
    while let Some(&last) = ids.last() {
        let head = storage.read_at(last, 0, HEADER_LEN)?;
        let unfinished = head.len() < HEADER_LEN || head.iter().all(|b| *b == 0);
        if !(tolerate_tail && unfinished) {
            break;
        }
        storage.delete(&[last])?;
        report.removed_unfinished.push(storage.location(last));
        ids.pop();
    }
    let mut i = 0;
    while i < ids.len() {
        let id = ids[i];
        let newest = i + 1 == ids.len();
        let path = storage.location(id);
        let data = if newest || scan_all {
            storage.read_all(id)?
        } else {
            storage.read_at(id, 0, HEADER_LEN)?
        };
        let header = SegmentHeader::decode(&data).map_err(|reason| WalError::Corruption {
            path: path.clone(),
            offset: 0,
            reason,
        })?;
        if header.segment != id {
            return Err(WalError::Corruption {
                path,
                offset: 0,
                reason: format!(
                    "header names segment {} but the file is {}",
                    header.segment, id
                ),
            });
        }
        if header.first_lsn < next_lsn {
            return Err(WalError::Corruption {
                path,
                offset: 0,
                reason: format!(
                    "first LSN {} overlaps the previous segment, which ends at {}",
                    header.first_lsn, next_lsn
                ),
            });
        }
        if scan_all && !segments.is_empty() && header.first_lsn != next_lsn {
            return Err(WalError::Corruption {
                path,
                offset: 0,
                reason: format!(
                    "first LSN {} does not follow the previous segment, which ends at {} (a segment is missing)",
                    header.first_lsn, next_lsn
                ),
            });
        }
        segments.insert(
            id,
            SegMeta {
                first_lsn: header.first_lsn,
                created_ms: header.created_ms,
            },
        );
        next_lsn = header.first_lsn;
        if newest || scan_all {
            let scan = format::scan_frames(&data[HEADER_LEN..]);
            next_lsn = Lsn(header.first_lsn.0 + scan.frames.len() as u64);
            if let Some(stop) = scan.stop {
                let offset = (HEADER_LEN + stop.offset) as u64;
                let cut = (newest && tolerate_tail && stop.tail)
                    || opts.recovery == RecoveryMode::PointInTime;
                if !cut {
                    return Err(frame_error(storage, id, offset, &stop.bad));
                }
                // Rule: cut the bad tail and make the cut durable before any new record
                // can be appended after it.
                storage.truncate(id, offset)?;
                report.truncated.push((
                    path,
                    offset,
                    data.len() as u64 - offset,
                    stop.bad.to_string(),
                ));
                if !newest {
                    // PointInTime: everything after the first damage is set aside.
                    for later in &ids[i + 1..] {
                        report.discarded.push(storage.discard(*later)?);
                    }
                    break;
                }
            }
        }
        i += 1;
    }
    // Rule: what recovery found is what later records build on, so it must be durable
    // before anything is appended: after a process crash, the tail of a segment may sit
    // in the page cache unsynced (its fsync failed or never ran), and power loss would
    // then open a hole below records acknowledged later.
    // The same holds for their directory entries (a segment created just before the
    // crash may never have had its directory synced).
    for id in segments.keys() {
        storage.sync_segment(*id)?;
    }
    storage.sync()?;
    Ok((segments, next_lsn, report))
}
