//! Injected faults through the file-system seam: a failed fsync, a torn write, a full
//! disk, power loss. Acknowledged records always survive; the log says what went wrong.

use std::sync::Arc;

use sluice_wal::fs::{Fault, SimFs};
use sluice_wal::{Durability, Lsn, Wal, WalError, WalOptions};

fn open(fs: &SimFs) -> Wal {
    Wal::open_with_fs(Arc::new(fs.clone()), "/data/wal", WalOptions::default()).unwrap()
}

fn all(wal: &Wal) -> Vec<Vec<u8>> {
    wal.iter_from(wal.first_lsn())
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect()
}

#[test]
fn acknowledged_records_survive_power_loss() {
    let fs = SimFs::new();
    let wal = open(&fs);
    for i in 0..100u32 {
        wal.append(&i.to_le_bytes()).unwrap();
    }
    drop(wal);
    fs.crash();
    let wal = open(&fs);
    assert_eq!(wal.next_lsn(), Lsn(100));
    assert_eq!(all(&wal)[99], 99u32.to_le_bytes());
}

#[test]
fn without_fsync_power_loss_drops_records_as_documented() {
    let fs = SimFs::new();
    let opts = WalOptions {
        durability: Durability::NoSync,
        ..WalOptions::default()
    };
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/w", opts).unwrap();
    wal.append(b"lost").unwrap();
    drop(wal);
    fs.crash();
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/w", WalOptions::default()).unwrap();
    assert_eq!(wal.next_lsn(), Lsn(0));
}

#[test]
fn a_failed_fsync_poisons_the_log_and_is_never_retried() {
    let fs = SimFs::new();
    let wal = open(&fs);
    for i in 0..5u8 {
        wal.append(&[i]).unwrap();
    }
    fs.inject(Fault::FailSync { nth: 1 });
    let err = wal.append(b"unlucky").unwrap_err();
    assert!(
        matches!(err, WalError::Io { .. }) || matches!(err, WalError::Poisoned { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("fsync failed"), "{err}");
    // Every later append is refused: the state of the unsynced bytes is unknown.
    let err = wal.append(b"later").unwrap_err();
    assert!(matches!(err, WalError::Poisoned { .. }), "{err:?}");
    assert!(err.to_string().contains("reopen"), "{err}");
    drop(wal);
    fs.crash();
    let wal = open(&fs);
    assert_eq!(all(&wal), (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
    wal.append(b"works again").unwrap();
}

#[test]
fn a_torn_write_is_cut_on_reopen_and_reported() {
    let fs = SimFs::new();
    let wal = open(&fs);
    for i in 0..5u8 {
        wal.append(&[i; 64]).unwrap();
    }
    fs.inject(Fault::TornWrite { nth: 1, keep: 30 });
    assert!(wal.append(&[9; 64]).is_err());
    drop(wal);
    // Power loss that keeps the torn bytes on disk.
    fs.crash_keeping(|_, unsynced| unsynced);
    let wal = open(&fs);
    let rep = wal.recovery_report();
    assert_eq!(rep.truncated.len(), 1, "{rep:?}");
    assert_eq!(rep.truncated[0].2, 30);
    assert_eq!(all(&wal).len(), 5);
    assert_eq!(wal.append(b"next").unwrap().lsn, Lsn(5));
}

#[test]
fn a_full_disk_is_reported_and_loses_nothing_acknowledged() {
    let fs = SimFs::new();
    let wal = open(&fs);
    wal.append(b"first").unwrap();
    fs.inject(Fault::DiskFull { bytes: 1000 });
    let mut acked = 1;
    let err = loop {
        match wal.append(&[7u8; 100]) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
    };
    assert!((2..12).contains(&acked), "{acked}");
    assert!(err.to_string().contains("disk is full"), "{err}");
    assert!(matches!(wal.append(b"x"), Err(WalError::Poisoned { .. })));
    drop(wal);
    fs.crash_keeping(|_, unsynced| unsynced);
    let wal = open(&fs);
    assert_eq!(wal.next_lsn(), Lsn(acked));
    let got = all(&wal);
    assert_eq!(got[0], b"first");
    assert!(got[1..].iter().all(|r| r == &[7u8; 100]));
}

#[test]
fn a_segment_created_but_its_directory_not_synced_vanishes_with_no_acknowledged_loss() {
    // Open creates nothing; the first append creates a segment and syncs the directory
    // before acknowledging. Power loss right after the ack keeps the segment.
    let fs = SimFs::new();
    let wal = open(&fs);
    wal.append(b"a").unwrap();
    fs.crash();
    drop(wal);
    let wal = open(&fs);
    assert_eq!(all(&wal), vec![b"a".to_vec()]);
}

/// `FaultyFs` puts the faults on a real disk: what a faulty process left behind is
/// recovered by a later process on the plain file system.
#[test]
fn faults_on_a_real_disk_leave_files_a_later_open_recovers() {
    use sluice_wal::fs::{FaultyFs, StdFs};
    let dir = tempfile::tempdir().unwrap();
    for (i, fault) in [
        Fault::TornWrite { nth: 1, keep: 7 },
        Fault::FailSync { nth: 1 },
        Fault::DiskFull { bytes: 10 },
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("wal-{i}"));
        let fs = FaultyFs::new(Arc::new(StdFs));
        let wal = Wal::open_with_fs(Arc::new(fs.clone()), &path, WalOptions::default()).unwrap();
        for n in 0..10u32 {
            wal.append(&n.to_le_bytes()).unwrap();
        }
        fs.inject(fault.clone());
        assert!(wal.append(b"faulty").is_err(), "{fault:?} was not reported");
        assert!(
            wal.append(b"after").is_err(),
            "{fault:?}: the log must stay poisoned"
        );
        drop(wal);
        let wal = Wal::open(&path, WalOptions::default()).unwrap();
        let got = all(&wal);
        assert!(got.len() >= 10, "{fault:?}: acknowledged records lost");
        for (n, r) in got.iter().take(10).enumerate() {
            assert_eq!(r, &(n as u32).to_le_bytes(), "{fault:?}");
        }
        // The failed record may survive (its bytes were written); nothing else can.
        assert!(
            got.len() == 10 || got[10] == b"faulty",
            "{fault:?}: {got:?}"
        );
    }
}
