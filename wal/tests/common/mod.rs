//! A conformance suite run against every WAL backend.
#![allow(dead_code)]

use std::sync::Arc;
use std::thread;

use sluice_wal::{Lsn, Wal, WalError};

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

/// `open` opens the same log again each time it is called (after the previous handle
/// was dropped).
pub fn conformance(open: &dyn Fn() -> Wal) {
    let wal = open();
    assert_eq!(wal.next_lsn(), Lsn(0));
    let mut handles = Vec::new();
    for i in 0..20u64 {
        let a = wal.append(&payload(i, (i as usize * 37) % 300)).unwrap();
        assert_eq!(a.lsn, Lsn(i), "LSNs are dense");
        handles.push(a.handle);
    }
    let batch: Vec<Vec<u8>> = (20..40).map(|i| payload(i, 10)).collect();
    let appended = wal.append_batch(&batch).unwrap();
    assert_eq!(appended.first().unwrap().lsn, Lsn(20));
    assert_eq!(appended.last().unwrap().lsn, Lsn(39));
    handles.extend(appended.iter().map(|a| a.handle));
    // Random reads by handle.
    for (i, h) in handles.iter().enumerate().rev() {
        let len = if i < 20 { (i * 37) % 300 } else { 10 };
        assert_eq!(wal.read(*h).unwrap(), payload(i as u64, len));
    }
    // Iteration from the middle.
    let got: Vec<(Lsn, Vec<u8>)> = wal
        .iter_from(Lsn(15))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got.len(), 25);
    assert_eq!(got[0].0, Lsn(15));
    assert_eq!(got[24].0, Lsn(39));
    assert_eq!(got[5].1, payload(20, 10));
    // Concurrent appenders.
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let wal = wal.clone();
            thread::spawn(move || {
                (0..25)
                    .map(|i| wal.append(format!("t{t}-{i}").as_bytes()).unwrap().lsn)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut lsns: Vec<Lsn> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    lsns.sort();
    assert_eq!(lsns, (40..140).map(Lsn).collect::<Vec<_>>());
    let wal = Arc::try_unwrap(wal).unwrap();
    // Too large a record is refused with the sizes.
    let big = vec![0u8; wal.options().max_record_bytes + 1];
    assert!(matches!(
        wal.append(&big),
        Err(WalError::RecordTooLarge { .. })
    ));
    // An LSN past the end is out of range.
    assert!(matches!(
        wal.iter_from(Lsn(1000)),
        Err(WalError::LsnOutOfRange { .. })
    ));
    wal.close().unwrap();
    assert!(matches!(wal.append(b"x"), Err(WalError::Closed)));
    drop(wal);

    // Reopen: everything is there and LSNs continue.
    let wal = open();
    assert!(
        wal.recovery_report().is_clean(),
        "{:?}",
        wal.recovery_report()
    );
    assert_eq!(wal.next_lsn(), Lsn(140));
    assert_eq!(wal.read(handles[7]).unwrap(), payload(7, 7 * 37));
    let all: Vec<_> = wal.iter_from(Lsn(0)).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(all.len(), 140);
    let per_thread = all.iter().filter(|(_, p)| p.starts_with(b"t2-")).count();
    assert_eq!(per_thread, 25);
    let a = wal.append(b"after reopen").unwrap();
    assert_eq!(a.lsn, Lsn(140));

    // Cleanup: delete sealed segments below an LSN; the log keeps its LSNs.
    let segs_before = wal.segments();
    assert!(segs_before.len() >= 2, "reopen starts a new segment");
    let deleted = wal.delete_before(Lsn(140)).unwrap();
    assert!(deleted >= 1);
    assert_eq!(wal.first_lsn(), Lsn(140));
    assert!(matches!(
        wal.read(handles[0]),
        Err(WalError::LsnOutOfRange { .. })
    ));
    assert!(matches!(
        wal.iter_from(Lsn(3)),
        Err(WalError::LsnOutOfRange { .. })
    ));
    let rest: Vec<_> = wal
        .iter_from(Lsn(140))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rest, vec![(Lsn(140), b"after reopen".to_vec())]);
    drop(wal);
    let wal = open();
    assert_eq!(wal.next_lsn(), Lsn(141), "LSNs survive cleanup and reopen");
    assert_eq!(wal.first_lsn(), Lsn(140));
    // Deleting by age: everything sealed before now goes, the newest segment stays.
    wal.append(b"x").unwrap();
    wal.delete_older_than(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
        .unwrap();
    assert_eq!(wal.segments().len(), 1);
    assert_eq!(wal.next_lsn(), Lsn(142));
}
