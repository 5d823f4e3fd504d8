//! A property test: random appends, batches, reads, cleanups, restarts, power losses
//! (with torn tails) and failed fsyncs, checked against a plain vector of records.

use std::sync::Arc;

use proptest::prelude::*;
use sluice_wal::fs::{Fault, SimFs};
use sluice_wal::{Appended, Lsn, Wal, WalOptions};

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Batch(usize),
    Read(usize),
    Iter(usize),
    DeleteBefore(usize),
    Restart,
    Crash { keep_torn: bool },
    FailNextSync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..300).prop_map(Op::Append),
        2 => (1usize..6).prop_map(Op::Batch),
        3 => any::<usize>().prop_map(Op::Read),
        1 => any::<usize>().prop_map(Op::Iter),
        1 => any::<usize>().prop_map(Op::DeleteBefore),
        1 => Just(Op::Restart),
        1 => any::<bool>().prop_map(|keep_torn| Op::Crash { keep_torn }),
        1 => Just(Op::FailNextSync),
    ]
}

struct Model {
    /// Acknowledged records by LSN (`None`: deleted by cleanup).
    records: Vec<Option<Vec<u8>>>,
    handles: Vec<Option<Appended>>,
    /// Records whose append failed: each may or may not be in the log after a restart,
    /// but only as a prefix, in order.
    uncertain: Vec<Vec<u8>>,
    poisoned: bool,
}

fn payload(n: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as usize ^ i) as u8).collect()
}

fn opts() -> WalOptions {
    WalOptions {
        segment_max_bytes: 700,
        ..WalOptions::default()
    }
}

fn reopen(fs: &SimFs, m: &mut Model) -> Wal {
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", opts()).unwrap();
    let next = wal.next_lsn().0 as usize;
    let known = m.records.len();
    assert!(
        next >= known && next <= known + m.uncertain.len(),
        "next LSN {next}, acknowledged {known}, uncertain {}",
        m.uncertain.len()
    );
    // Unacknowledged records that did survive become part of the log.
    let survivors: Vec<Vec<u8>> = m.uncertain.drain(..).take(next - known).collect();
    for (k, r) in survivors.into_iter().enumerate() {
        let lsn = Lsn((known + k) as u64);
        let got = wal.iter_from(lsn).unwrap().next().unwrap().unwrap();
        assert_eq!(got, (lsn, r.clone()), "a surviving unacknowledged record");
        m.records.push(Some(r));
        m.handles.push(None);
    }
    m.poisoned = false;
    check_all(&wal, m);
    wal
}

fn check_all(wal: &Wal, m: &Model) {
    let first = wal.first_lsn();
    let got: Vec<(Lsn, Vec<u8>)> = wal.iter_from(first).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), m.records.len() - first.0 as usize);
    for (lsn, bytes) in got {
        assert_eq!(
            m.records[lsn.0 as usize].as_ref(),
            Some(&bytes),
            "record {lsn}"
        );
    }
    for lsn in 0..first.0 as usize {
        assert!(
            m.records[lsn].is_none(),
            "record {lsn} lost without cleanup"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn wal_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

#[test]
fn a_failed_fsync_then_a_restart() {
    run(vec![
        Op::Append(0),
        Op::FailNextSync,
        Op::Append(0),
        Op::Restart,
    ])
    .unwrap();
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    {
        let fs = SimFs::new();
        let mut m = Model {
            records: vec![],
            handles: vec![],
            uncertain: vec![],
            poisoned: false,
        };
        let mut wal = reopen(&fs, &mut m);
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Append(len) | Op::Batch(len) if m.poisoned => {
                    let _ = len;
                    prop_assert!(wal.append(b"refused").is_err());
                }
                Op::Append(len) => {
                    counter += 1;
                    let p = payload(counter, len);
                    match wal.append(&p) {
                        Ok(a) => {
                            prop_assert_eq!(a.lsn, Lsn(m.records.len() as u64));
                            m.records.push(Some(p));
                            m.handles.push(Some(a));
                        }
                        Err(_) => {
                            m.uncertain.push(p);
                            m.poisoned = true;
                        }
                    }
                }
                Op::Batch(n) => {
                    let ps: Vec<Vec<u8>> = (0..n)
                        .map(|i| {
                            counter += 1;
                            payload(counter, 20 + i * 50)
                        })
                        .collect();
                    match wal.append_batch(&ps) {
                        Ok(appended) => {
                            for (a, p) in appended.into_iter().zip(ps) {
                                prop_assert_eq!(a.lsn, Lsn(m.records.len() as u64));
                                m.records.push(Some(p));
                                m.handles.push(Some(a));
                            }
                        }
                        Err(_) => {
                            m.uncertain.extend(ps);
                            m.poisoned = true;
                        }
                    }
                }
                Op::Read(i) if !m.records.is_empty() => {
                    let i = i % m.records.len();
                    if let (Some(r), Some(a)) = (&m.records[i], &m.handles[i]) {
                        prop_assert_eq!(&wal.read(a.handle).unwrap(), r);
                    }
                }
                Op::Read(_) => {}
                Op::Iter(i) => {
                    let first = wal.first_lsn().0 as usize;
                    let n = wal.next_lsn().0 as usize;
                    if n > first && !m.poisoned {
                        let from = first + i % (n - first);
                        let got: Vec<_> = wal
                            .iter_from(Lsn(from as u64))
                            .unwrap()
                            .map(|r| r.unwrap())
                            .collect();
                        prop_assert_eq!(got.len(), m.records.len() - from);
                    }
                }
                Op::DeleteBefore(i) if !m.records.is_empty() => {
                    let lsn = i % (m.records.len() + 1);
                    let before = wal.first_lsn().0 as usize;
                    if m.poisoned {
                        prop_assert!(wal.delete_before(Lsn(lsn as u64)).is_err());
                        continue;
                    }
                    wal.delete_before(Lsn(lsn as u64)).unwrap();
                    let first = wal.first_lsn().0 as usize;
                    // Cleanup never goes past the LSN asked for, nor backwards.
                    prop_assert!(
                        first >= before && first <= lsn.max(before),
                        "{before} -> {first} for {lsn}"
                    );
                    for r in &mut m.records[..first] {
                        *r = None;
                    }
                }
                Op::DeleteBefore(_) => {}
                Op::Restart => {
                    drop(wal);
                    fs.clear_faults();
                    wal = reopen(&fs, &mut m);
                }
                Op::Crash { keep_torn } => {
                    drop(wal);
                    let mut seed = counter;
                    fs.crash_keeping(|_, unsynced| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        if keep_torn && unsynced > 0 {
                            (seed >> 33) as usize % (unsynced + 1)
                        } else {
                            0
                        }
                    });
                    wal = reopen(&fs, &mut m);
                }
                Op::FailNextSync => fs.inject(Fault::FailSync { nth: 1 }),
            }
        }
        drop(wal);
        fs.clear_faults();
        fs.crash();
        reopen(&fs, &mut m);
    }
    Ok(())
}
