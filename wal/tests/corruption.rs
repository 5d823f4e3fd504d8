//! Damage on a real disk: garbage appended, a frame cut short, a CRC byte flipped, a
//! length field overwritten, a header never finished; each reopened several times.

use std::path::{Path, PathBuf};

use sluice_wal::{Lsn, RecoveryMode, Wal, WalError, WalOptions};

const N: u64 = 10;
const FRAME: u64 = 108; // 8-byte frame header + 100-byte payload
const HDR: u64 = 40;

fn record(i: u64) -> Vec<u8> {
    vec![i as u8 + 1; 100]
}

/// A log with one segment of N records; returns the segment's path.
fn make(dir: &Path) -> PathBuf {
    let wal = Wal::open(dir, WalOptions::default()).unwrap();
    for i in 0..N {
        wal.append(&record(i)).unwrap();
    }
    wal.close().unwrap();
    segment_files(dir).pop().unwrap()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

fn with_mode(mode: RecoveryMode) -> WalOptions {
    WalOptions {
        recovery: mode,
        ..WalOptions::default()
    }
}

fn all(wal: &Wal) -> Vec<(Lsn, Vec<u8>)> {
    wal.iter_from(wal.first_lsn())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn garbage_appended_is_cut_and_reported_then_reopens_clean() {
    let dir = tempfile::tempdir().unwrap();
    let seg = make(dir.path());
    edit(&seg, |b| b.extend_from_slice(&[0xAB; 37]));
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!(rep.truncated.len(), 1);
    assert_eq!(rep.truncated[0].0, seg);
    assert_eq!(rep.truncated[0].1, HDR + N * FRAME);
    assert_eq!(rep.truncated[0].2, 37);
    assert_eq!(all(&wal).len() as u64, N);
    drop(wal);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), HDR + N * FRAME);
    for _ in 0..3 {
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert!(wal.recovery_report().is_clean());
        assert_eq!(wal.next_lsn(), Lsn(N));
        assert_eq!(all(&wal)[9].1, record(9));
    }
}

#[test]
fn zeroes_after_the_last_frame_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let seg = make(dir.path());
    edit(&seg, |b| b.extend_from_slice(&[0; 4096]));
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(wal.recovery_report().truncated[0].2, 4096);
    assert_eq!(wal.next_lsn(), Lsn(N));
}

#[test]
fn a_frame_cut_short_is_truncated_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let seg = make(dir.path());
    edit(&seg, |b| b.truncate((HDR + N * FRAME - 50) as usize));
    for round in 0..3 {
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(
            wal.recovery_report().truncated.len(),
            usize::from(round == 0)
        );
        let got = all(&wal);
        assert_eq!(got.len() as u64, N - 1 + round);
        assert_eq!(got[8].1, record(8));
        // The next record takes the torn one's LSN: it was never acknowledged.
        assert_eq!(wal.append(b"next").unwrap().lsn, Lsn(N - 1 + round));
    }
}

#[test]
fn a_flipped_crc_byte_inside_the_log_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let seg = make(dir.path());
    let at = HDR + 3 * FRAME + 4; // the stored CRC of record 3
    edit(&seg, |b| b[at as usize] ^= 0x01);
    for _ in 0..3 {
        let err = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
        match &err {
            WalError::ChecksumMismatch { path, offset, .. } => {
                assert_eq!(path, &seg);
                assert_eq!(*offset, HDR + 3 * FRAME);
            }
            other => panic!("expected a checksum mismatch, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&seg.display().to_string()) && msg.contains("offset 364"),
            "{msg}"
        );
    }
    // Nothing was changed by the failed opens.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), HDR + N * FRAME);
    // Point-in-time recovery cuts at the damage and says so.
    let wal = Wal::open(dir.path(), with_mode(RecoveryMode::PointInTime)).unwrap();
    assert_eq!(wal.recovery_report().truncated[0].1, HDR + 3 * FRAME);
    assert_eq!(wal.next_lsn(), Lsn(3));
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(wal.recovery_report().is_clean());
    assert_eq!(all(&wal).len(), 3);
}

#[test]
fn a_flipped_payload_byte_is_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let seg = make(dir.path());
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let handle = sluice_wal::RecordHandle {
        lsn: Lsn(6),
        segment: sluice_wal::SegmentId(1),
        offset: HDR + 6 * FRAME,
        len: 100,
    };
    assert_eq!(wal.read(handle).unwrap(), record(6));
    edit(&seg, |b| b[(HDR + 6 * FRAME + 8 + 50) as usize] ^= 0x80);
    assert!(matches!(
        wal.read(handle),
        Err(WalError::ChecksumMismatch { offset, .. }) if offset == HDR + 6 * FRAME
    ));
    let res: Result<Vec<_>, _> = wal.iter_from(Lsn(0)).unwrap().collect();
    assert!(matches!(res, Err(WalError::ChecksumMismatch { .. })));
}

#[test]
fn an_overwritten_length_field_is_an_error() {
    for (len, impossible) in [(u32::MAX, true), (50u32, false), (200u32, false)] {
        let dir = tempfile::tempdir().unwrap();
        let seg = make(dir.path());
        let at = (HDR + 5 * FRAME) as usize;
        edit(&seg, |b| b[at..at + 4].copy_from_slice(&len.to_le_bytes()));
        for _ in 0..2 {
            let err = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
            match err {
                WalError::Corruption {
                    offset, ref reason, ..
                } if impossible => {
                    assert_eq!(offset, at as u64);
                    assert!(reason.contains("impossible record length"), "{reason}");
                }
                WalError::ChecksumMismatch { offset, .. } if !impossible => {
                    assert_eq!(offset, at as u64)
                }
                other => panic!("len {len}: unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn absolute_consistency_refuses_even_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let seg = make(dir.path());
    edit(&seg, |b| b.truncate(b.len() - 1));
    let err = Wal::open(dir.path(), with_mode(RecoveryMode::AbsoluteConsistency)).unwrap_err();
    assert!(err.to_string().contains("cut short"), "{err}");
    // The default mode accepts it.
    assert_eq!(
        Wal::open(dir.path(), WalOptions::default())
            .unwrap()
            .next_lsn(),
        Lsn(N - 1)
    );
}

#[test]
fn damage_in_a_sealed_segment_is_found_on_read_and_by_verify_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let first = make(dir.path());
    {
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        wal.append(b"in the second segment").unwrap();
    }
    assert_eq!(segment_files(dir.path()).len(), 2);
    edit(&first, |b| b[(HDR + 2 * FRAME + 20) as usize] ^= 0xFF);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let res: Result<Vec<_>, _> = wal.iter_from(Lsn(0)).unwrap().collect();
    match res {
        Err(WalError::ChecksumMismatch { path, offset, .. }) => {
            assert_eq!(path, first);
            assert_eq!(offset, HDR + 2 * FRAME);
        }
        other => panic!("{other:?}"),
    }
    drop(wal);
    let opts = WalOptions {
        verify_on_open: true,
        ..WalOptions::default()
    };
    assert!(matches!(
        Wal::open(dir.path(), opts),
        Err(WalError::ChecksumMismatch { .. })
    ));
    // Point-in-time: the first segment is cut, the later one set aside.
    let wal = Wal::open(dir.path(), with_mode(RecoveryMode::PointInTime)).unwrap();
    assert_eq!(wal.next_lsn(), Lsn(2));
    assert_eq!(wal.recovery_report().discarded.len(), 1);
    assert!(wal.recovery_report().discarded[0]
        .to_string_lossy()
        .ends_with(".wal.discarded"));
}

#[test]
fn a_segment_whose_header_never_made_it_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path());
    let unfinished = dir
        .path()
        .join(sluice_wal::segment_file_name(sluice_wal::SegmentId(2)));
    std::fs::write(&unfinished, [0u8; 12]).unwrap();
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(
        wal.recovery_report().removed_unfinished,
        vec![unfinished.clone()]
    );
    assert!(!unfinished.exists());
    assert_eq!(wal.next_lsn(), Lsn(N));
}

#[test]
fn a_damaged_header_of_a_sealed_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = make(dir.path());
    Wal::open(dir.path(), WalOptions::default())
        .unwrap()
        .append(b"x")
        .unwrap();
    edit(&first, |b| b[0] = b'X');
    let err = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
    assert!(
        matches!(err, WalError::Corruption { offset: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad magic"), "{err}");
}

#[test]
fn a_missing_middle_segment_is_found_by_verify_on_open() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path());
    for _ in 0..2 {
        Wal::open(dir.path(), WalOptions::default())
            .unwrap()
            .append(b"x")
            .unwrap();
    }
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 3);
    std::fs::remove_file(&segs[1]).unwrap();
    let opts = WalOptions {
        verify_on_open: true,
        ..WalOptions::default()
    };
    let err = Wal::open(dir.path(), opts).unwrap_err();
    assert!(err.to_string().contains("a segment is missing"), "{err}");
}
