//! Power loss at every step of a publish, of a snapshot write and of garbage
//! collection (on the simulated file system) leaves a readable store.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sluice_checkpoint::snapshot::{SnapshotOptions, State, StateSnapshots};
use sluice_checkpoint::{CheckpointId, CheckpointStore, LocalStore, PutOutcome, StartMode};
use sluice_wal::fs::{DirLock, FileSystem, SimFs, WalFile};

/// A [`SimFs`] that loses power just before its n-th mutating operation once armed;
/// every operation after that fails.
#[derive(Debug)]
struct CrashingFs {
    sim: SimFs,
    /// Mutating operations left before the crash; `u64::MAX` = disarmed.
    left: Arc<AtomicU64>,
    crashed: Arc<AtomicBool>,
    keep_unsynced: bool,
}

#[derive(Debug)]
struct CrashingFile {
    inner: Arc<dyn WalFile>,
    fs: Arc<CrashingFs>,
}

impl CrashingFs {
    fn new(sim: SimFs, keep_unsynced: bool) -> Arc<Self> {
        Arc::new(CrashingFs {
            sim,
            left: Arc::new(AtomicU64::new(u64::MAX)),
            crashed: Arc::default(),
            keep_unsynced,
        })
    }

    fn arm(&self, steps: u64) {
        self.left.store(steps, Ordering::SeqCst);
    }

    fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    fn step(&self) -> io::Result<()> {
        if self.crashed() {
            return Err(io::Error::other("power lost"));
        }
        let left = self.left.load(Ordering::SeqCst);
        if left == u64::MAX {
            return Ok(());
        }
        if left == 0 {
            self.crashed.store(true, Ordering::SeqCst);
            let keep = self.keep_unsynced;
            self.sim
                .crash_keeping(|_, unsynced| if keep { unsynced } else { 0 });
            return Err(io::Error::other("power lost"));
        }
        self.left.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

struct Fs(Arc<CrashingFs>);

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl WalFile for CrashingFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.fs.step()?;
        self.inner.write_all_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.fs.step()?;
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.fs.step()?;
        self.inner.truncate(len)
    }
}

impl FileSystem for Fs {
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        self.0.step()?;
        let inner = self.0.sim.create_new(path)?;
        Ok(Arc::new(CrashingFile {
            inner,
            fs: self.0.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let inner = self.0.sim.open(path)?;
        Ok(Arc::new(CrashingFile {
            inner,
            fs: self.0.clone(),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.step()?;
        self.0.sim.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.step()?;
        self.0.sim.rename(from, to)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.sim.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.sim.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.step()?;
        self.0.sim.sync_dir(dir)
    }
    fn lock_dir(&self, _dir: &Path) -> io::Result<Option<DirLock>> {
        Ok(None)
    }
}

const DIR: &str = "/ckpt";

fn reopen(sim: &SimFs) -> LocalStore {
    LocalStore::open_with(Arc::new(sim.clone()), DIR).unwrap()
}

#[test]
fn crash_at_each_publish_step_leaves_a_readable_store() {
    for keep_unsynced in [false, true] {
        let mut steps_seen = 0;
        for k in 0.. {
            let sim = SimFs::new();
            reopen(&sim)
                .put_checkpoint(CheckpointId(1), b"one")
                .unwrap();
            let cfs = CrashingFs::new(sim.clone(), keep_unsynced);
            let store = LocalStore::open_with(Arc::new(Fs(cfs.clone())), DIR).unwrap();
            cfs.arm(k);
            let res = store.put_checkpoint(CheckpointId(2), b"two");
            if !cfs.crashed() {
                assert_eq!(res.unwrap(), PutOutcome::Published);
                steps_seen = k;
                break;
            }
            assert!(
                res.is_err(),
                "a put interrupted by a crash reported success"
            );
            drop(store);
            // After the power loss: either the old or the new checkpoint, whole.
            let store = reopen(&sim);
            let r = store.read_newest(StartMode::RequireCheckpoint).unwrap();
            assert!(r.skipped.is_empty(), "k={k}: {:?}", r.skipped);
            let c = r.checkpoint.unwrap();
            match c.id.0 {
                1 => assert_eq!(c.payload, b"one"),
                2 => assert_eq!(c.payload, b"two"),
                other => panic!("unexpected checkpoint {other}"),
            }
            // No temporary file survives reopening, and the put can be redone.
            assert!(sim
                .list(Path::new(DIR))
                .unwrap()
                .iter()
                .all(|n| !n.starts_with(".tmp")));
            let again = store.put_checkpoint(CheckpointId(2), b"two").unwrap();
            assert!(
                matches!(
                    again,
                    PutOutcome::Published | PutOutcome::AlreadyExists { identical: true }
                ),
                "{again:?}"
            );
            let newest = store.read_newest(StartMode::RequireCheckpoint).unwrap();
            assert_eq!(newest.checkpoint.unwrap().payload, b"two");
        }
        // create, write, fsync, rename, fsync dir: every step was crashed at.
        assert!(steps_seen >= 5, "only {steps_seen} steps");
    }
}

#[test]
fn published_checkpoint_survives_power_loss() {
    let sim = SimFs::new();
    let store = reopen(&sim);
    store.put_checkpoint(CheckpointId(7), b"seven").unwrap();
    sim.crash();
    let r = reopen(&sim)
        .read_newest(StartMode::RequireCheckpoint)
        .unwrap();
    assert_eq!(r.checkpoint.unwrap().payload, b"seven");
}

fn kv(n: u32, tag: &str) -> State {
    (0..n)
        .map(|i| {
            (
                format!("k{i}").into_bytes(),
                format!("{tag}{i}").into_bytes(),
            )
        })
        .collect()
}

fn opts() -> SnapshotOptions {
    SnapshotOptions {
        partitions: 2,
        chunk_bytes: 64,
        max_deltas: 4,
        // Chunk files even for tiny deltas, so every step of a chunked write is hit.
        inline_delta_bytes: 0,
    }
}

#[test]
fn crash_at_each_step_of_a_snapshot_write_keeps_the_previous_one() {
    let mut steps = 0;
    for k in 0.. {
        let sim = SimFs::new();
        let base: Arc<dyn CheckpointStore> = Arc::new(reopen(&sim));
        let s = StateSnapshots::new(base, "op", opts()).unwrap();
        let m1 = s.write_full(CheckpointId(10), kv(20, "a")).unwrap();

        let cfs = CrashingFs::new(sim.clone(), true);
        let crashing: Arc<dyn CheckpointStore> =
            Arc::new(LocalStore::open_with(Arc::new(Fs(cfs.clone())), DIR).unwrap());
        let cs = StateSnapshots::new(crashing, "op", opts()).unwrap();
        cfs.arm(k);
        let res = cs.write_incremental(
            CheckpointId(20),
            &m1,
            vec![(b"k1".to_vec(), b"new".to_vec())],
            vec![b"k2".to_vec()],
        );
        if !cfs.crashed() {
            res.unwrap();
            steps = k;
            break;
        }
        assert!(res.is_err());
        let store: Arc<dyn CheckpointStore> = Arc::new(reopen(&sim));
        let s = StateSnapshots::new(store, "op", opts()).unwrap();
        assert_eq!(s.restore(&m1).unwrap(), kv(20, "a"), "k={k}");
        // Redoing the interrupted snapshot works and gives the right state.
        let m2 = s
            .write_incremental(
                CheckpointId(20),
                &m1,
                vec![(b"k1".to_vec(), b"new".to_vec())],
                vec![b"k2".to_vec()],
            )
            .unwrap();
        let mut want = kv(20, "a");
        want.insert(b"k1".to_vec(), b"new".to_vec());
        want.remove(b"k2".as_slice());
        assert_eq!(s.restore(&m2).unwrap(), want, "k={k}");
    }
    assert!(steps >= 10, "only {steps} steps");
}

#[test]
fn crash_at_each_step_of_gc_keeps_live_snapshots_restorable() {
    let mut steps = 0;
    for k in 0.. {
        let sim = SimFs::new();
        let base: Arc<dyn CheckpointStore> = Arc::new(reopen(&sim));
        let s = StateSnapshots::new(base, "op", opts()).unwrap();
        let m1 = s.write_full(CheckpointId(10), kv(20, "a")).unwrap();
        let m2 = s
            .write_incremental(
                CheckpointId(20),
                &m1,
                vec![(b"x", b"y")],
                Vec::<&[u8]>::new(),
            )
            .unwrap();
        let m3 = s.write_full(CheckpointId(30), kv(15, "c")).unwrap();

        let cfs = CrashingFs::new(sim.clone(), false);
        let crashing: Arc<dyn CheckpointStore> =
            Arc::new(LocalStore::open_with(Arc::new(Fs(cfs.clone())), DIR).unwrap());
        let cs = StateSnapshots::new(crashing, "op", opts()).unwrap();
        cfs.arm(k);
        let res = cs.gc(&[m3.reference()]);
        if !cfs.crashed() {
            let report = res.unwrap();
            assert_eq!(report.manifests.len(), 2);
            steps = k;
            break;
        }
        let store: Arc<dyn CheckpointStore> = Arc::new(reopen(&sim));
        let s = StateSnapshots::new(store.clone(), "op", opts()).unwrap();
        assert_eq!(s.restore(&m3).unwrap(), kv(15, "c"), "k={k}");
        // Manifests go before chunks, so a manifest that survived still restores whole.
        if let Ok(m) = s.read_manifest(m2.reference()) {
            assert_eq!(s.restore(&m).unwrap().len(), 21, "k={k}");
        }
        // The interrupted collection finishes on the next run.
        s.gc(&[m3.reference()]).unwrap();
        let left: Vec<String> = store
            .list_names()
            .unwrap()
            .into_iter()
            .filter(|n| {
                n.contains("-00000000000000000010-") || n.contains("-00000000000000000020-")
            })
            .collect();
        assert!(left.is_empty(), "k={k}: {left:?}");
    }
    assert!(steps >= 4, "only {steps} steps");
}
