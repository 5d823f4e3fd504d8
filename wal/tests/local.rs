//! The local-directory backend: conformance, durability modes, rolling, locking.

mod common;

use std::sync::Arc;
use std::time::Duration;

use sluice_wal::fs::SimFs;
use sluice_wal::{Durability, Lsn, Wal, WalOptions};

#[test]
fn conformance_on_the_real_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    common::conformance(&|| Wal::open(&path, WalOptions::default()).unwrap());
}

#[test]
fn conformance_on_the_simulated_file_system() {
    let fs = SimFs::new();
    common::conformance(&|| {
        Wal::open_with_fs(Arc::new(fs.clone()), "/wal", WalOptions::default()).unwrap()
    });
}

#[test]
fn conformance_in_every_durability_mode_with_small_segments() {
    for durability in [
        Durability::PerAppend,
        Durability::GroupCommit {
            max_wait: Duration::from_micros(200),
        },
        Durability::Interval(Duration::from_millis(5)),
        Durability::NoSync,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            durability,
            segment_max_bytes: 1024,
            ..WalOptions::default()
        };
        common::conformance(&|| Wal::open(dir.path(), opts.clone()).unwrap());
    }
}

#[test]
fn segments_roll_by_size_and_names_sort() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_max_bytes: 4096,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir.path(), opts).unwrap();
    for i in 0..100u32 {
        wal.append(&[i as u8; 500]).unwrap();
    }
    let segs = wal.segments();
    // 7 frames of 508 bytes fit after the 40-byte header in 4096 bytes.
    assert_eq!(segs.len(), 100usize.div_ceil(7));
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    let sorted = {
        let mut s = names.clone();
        s.sort();
        s
    };
    names.sort_by_key(|n| n.trim_end_matches(".wal").parse::<u64>().unwrap());
    assert_eq!(names, sorted, "zero-padded names sort numerically");
    for name in &names {
        let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(len <= 4096, "{name} is {len} bytes");
    }
    // The first LSN of each segment follows from the frames before it.
    for (k, (_, first)) in segs.iter().enumerate() {
        assert_eq!(*first, Lsn(k as u64 * 7));
    }
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_max_age: Some(Duration::from_millis(30)),
        ..WalOptions::default()
    };
    let wal = Wal::open(dir.path(), opts).unwrap();
    wal.append(b"a").unwrap();
    wal.append(b"b").unwrap();
    assert_eq!(wal.segments().len(), 1);
    std::thread::sleep(Duration::from_millis(60));
    wal.append(b"c").unwrap();
    assert_eq!(wal.segments().len(), 2);
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    // flock locks are per open file description: a second open in this process
    // conflicts just as another process would.
    let err = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("LOCK"), "{msg}");
    assert!(msg.contains("already in use"), "{msg}");
}

#[test]
fn interval_mode_becomes_durable_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        durability: Durability::Interval(Duration::from_millis(10)),
        ..WalOptions::default()
    };
    let wal = Wal::open(dir.path(), opts).unwrap();
    let a = wal.append(b"soon durable").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while wal.durable_lsn() <= a.lsn {
        assert!(std::time::Instant::now() < deadline, "never became durable");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pipelined_submits_are_acknowledged_by_one_wait() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let subs: Vec<_> = (0..50u8).map(|i| wal.submit(&[i]).unwrap()).collect();
    assert_eq!(
        wal.durable_lsn(),
        Lsn(0),
        "nothing acknowledged before a wait"
    );
    wal.wait(subs.last().unwrap().lsn).unwrap();
    assert_eq!(wal.durable_lsn(), Lsn(50));
    for s in &subs {
        assert_eq!(wal.read(s.handle).unwrap(), vec![s.lsn.0 as u8]);
    }
}
