//! Backends under test and the conformance suite every one of them must pass.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sluice_checkpoint::snapshot::{SnapshotOptions, State, StateSnapshots};
use sluice_checkpoint::{
    CheckpointError, CheckpointId, CheckpointStore, LocalStore, ObjectCheckpointStore, PutOutcome,
    RocksStore, StartMode,
};
use sluice_testkit::{s3_env, MotoServer};
use sluice_wal::fs::{SimFs, StdFs};

/// A fresh, empty store plus a way to replace an object's bytes behind the store's
/// back (to simulate damage).
/// Replaces an object's bytes behind the store's back.
pub type Damage = Box<dyn Fn(&str, Vec<u8>) + Send + Sync>;

pub struct Backend {
    pub store: Arc<dyn CheckpointStore>,
    pub damage: Damage,
    /// Keeps temporary directories alive.
    _keep: Option<tempfile::TempDir>,
}

impl Backend {
    pub fn raw(&self, name: &str) -> Vec<u8> {
        self.store.get(name).unwrap().expect("object exists")
    }
}

pub fn local_std() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt");
    let store = Arc::new(LocalStore::open_with(Arc::new(StdFs), &path).unwrap());
    Backend {
        store,
        damage: Box::new(move |name, data| std::fs::write(path.join(name), data).unwrap()),
        _keep: Some(dir),
    }
}

pub fn local_sim() -> Backend {
    let fs = SimFs::new();
    let store = Arc::new(LocalStore::open_with(Arc::new(fs.clone()), "/ckpt").unwrap());
    Backend {
        store,
        damage: Box::new(move |name, data| fs.write_file(&PathBuf::from("/ckpt").join(name), data)),
        _keep: None,
    }
}

fn object_backend(raw: Arc<dyn ObjectStore>, prefix: String, display: String) -> Backend {
    let store = Arc::new(ObjectCheckpointStore::new(raw.clone(), &prefix, &display).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Backend {
        store,
        damage: Box::new(move |name, data| {
            let path = ObjPath::from(prefix.as_str()).join(name);
            rt.block_on(raw.put(&path, PutPayload::from(data))).unwrap();
        }),
        _keep: None,
    }
}

pub fn in_memory() -> Backend {
    object_backend(
        Arc::new(InMemory::new()),
        "jobs/a".into(),
        "memory://jobs/a".into(),
    )
}

pub fn rocks() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksStore::open(dir.path().join("db")).unwrap());
    let s2 = store.clone();
    Backend {
        store,
        damage: Box::new(move |name, data| s2.raw_put(name, &data).unwrap()),
        _keep: Some(dir),
    }
}

pub const BUCKET: &str = "sluice-checkpoints";

/// One moto server per test binary (started on first use, killed at exit by its
/// parent-death watchdog).
pub fn moto() -> &'static MotoServer {
    static MOTO: OnceLock<MotoServer> = OnceLock::new();
    MOTO.get_or_init(|| {
        let m = MotoServer::start().unwrap_or_else(|e| panic!("{e}"));
        m.create_bucket(BUCKET).unwrap();
        m
    })
}

pub fn s3_store(server: &MotoServer) -> Arc<dyn ObjectStore> {
    let mut b = object_store::aws::AmazonS3Builder::new();
    for (k, v) in s3_env(server, BUCKET) {
        if k == "AWS_DEFAULT_REGION" {
            continue;
        }
        b = b.with_config(k.to_ascii_lowercase().parse().unwrap(), v);
    }
    Arc::new(b.build().unwrap())
}

pub fn s3() -> Backend {
    static N: AtomicUsize = AtomicUsize::new(0);
    let server = moto();
    let prefix = format!(
        "run-{}/p{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let display = format!("s3://{BUCKET}/{prefix}");
    object_backend(s3_store(server), prefix, display)
}

fn truncate(mut v: Vec<u8>, n: usize) -> Vec<u8> {
    v.truncate(v.len() - n);
    v
}

fn flip(mut v: Vec<u8>, at: usize) -> Vec<u8> {
    let i = at.min(v.len() - 1);
    v[i] ^= 0x01;
    v
}

/// The conformance suite: every backend must pass all of it.
pub fn conformance(make: &dyn Fn() -> Backend) {
    empty_store(&make());
    put_list_read(&make());
    never_replaces(&make());
    fallback_on_damage(&make());
    none_readable(&make());
    delete_and_retention(&make());
    retention_ignores_damaged(&make());
    concurrent_puts(&make());
    state_snapshots(&make());
}

fn empty_store(b: &Backend) {
    let s = &b.store;
    assert!(s.list_checkpoints().unwrap().is_empty());
    let r = s.read_newest(StartMode::FreshIfEmpty).unwrap();
    assert_eq!(r.checkpoint, None);
    assert!(r.skipped.is_empty());
    let err = s.read_newest(StartMode::RequireCheckpoint).unwrap_err();
    assert!(
        matches!(err, CheckpointError::NoReadableCheckpoint { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no checkpoint"), "{err}");
    let err = s.read_checkpoint(CheckpointId(1)).unwrap_err();
    assert!(matches!(err, CheckpointError::NotFound { .. }), "{err}");
}

fn put_list_read(b: &Backend) {
    let s = &b.store;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        s.put_checkpoint(CheckpointId(10), b"ten").unwrap(),
        PutOutcome::Published
    );
    assert_eq!(
        s.put_checkpoint(CheckpointId(20), b"").unwrap(),
        PutOutcome::Published
    );
    assert_eq!(
        s.put_checkpoint(CheckpointId(30), &big).unwrap(),
        PutOutcome::Published
    );
    // A non-checkpoint object does not show up as a checkpoint.
    assert!(s.put_new("state-op-x.manifest", b"other").unwrap());
    assert_eq!(
        s.list_checkpoints().unwrap(),
        vec![CheckpointId(10), CheckpointId(20), CheckpointId(30)]
    );
    assert_eq!(s.read_checkpoint(CheckpointId(10)).unwrap().payload, b"ten");
    assert!(s
        .read_checkpoint(CheckpointId(20))
        .unwrap()
        .payload
        .is_empty());
    assert_eq!(s.read_checkpoint(CheckpointId(30)).unwrap().payload, big);
    let r = s.read_newest(StartMode::RequireCheckpoint).unwrap();
    assert_eq!(r.checkpoint.unwrap().id, CheckpointId(30));
    assert!(r.skipped.is_empty());
    assert!(s
        .list_names()
        .unwrap()
        .contains(&"checkpoint-00000000000000000030".to_owned()));
}

fn never_replaces(b: &Backend) {
    let s = &b.store;
    s.put_checkpoint(CheckpointId(10), b"a").unwrap();
    s.put_checkpoint(CheckpointId(30), b"c").unwrap();
    assert_eq!(
        s.put_checkpoint(CheckpointId(30), b"c").unwrap(),
        PutOutcome::AlreadyExists { identical: true }
    );
    assert_eq!(
        s.put_checkpoint(CheckpointId(30), b"changed").unwrap(),
        PutOutcome::AlreadyExists { identical: false }
    );
    assert_eq!(s.read_checkpoint(CheckpointId(30)).unwrap().payload, b"c");
    // An older batch finishing after a newer one never replaces it.
    assert_eq!(
        s.put_checkpoint(CheckpointId(20), b"late").unwrap(),
        PutOutcome::Superseded {
            newest: CheckpointId(30)
        }
    );
    assert_eq!(
        s.list_checkpoints().unwrap(),
        vec![CheckpointId(10), CheckpointId(30)]
    );
    let r = s.read_newest(StartMode::RequireCheckpoint).unwrap();
    assert_eq!(r.checkpoint.unwrap().payload, b"c");
}

fn fallback_on_damage(b: &Backend) {
    let s = &b.store;
    for (id, p) in [(10, "ten"), (20, "twenty"), (30, "thirty")] {
        s.put_checkpoint(CheckpointId(id), p.as_bytes()).unwrap();
    }
    let n30 = CheckpointId(30).file_name();
    let n20 = CheckpointId(20).file_name();
    // Newest truncated: falls back to 20 and says why.
    (b.damage)(&n30, truncate(b.raw(&n30), 3));
    let r = s.read_newest(StartMode::RequireCheckpoint).unwrap();
    let c = r.checkpoint.unwrap();
    assert_eq!(
        (c.id, c.payload.as_slice()),
        (CheckpointId(20), &b"twenty"[..])
    );
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].id, CheckpointId(30));
    assert!(r.skipped[0].path.ends_with(&n30), "{}", r.skipped[0].path);
    assert!(
        r.skipped[0].reason.contains("length mismatch"),
        "{}",
        r.skipped[0].reason
    );
    // A byte flipped in the payload of the next one: falls back to 10.
    let len20 = b.raw(&n20).len();
    (b.damage)(&n20, flip(b.raw(&n20), len20 - 2));
    let r = s.read_newest(StartMode::RequireCheckpoint).unwrap();
    assert_eq!(r.checkpoint.unwrap().payload, b"ten");
    assert_eq!(
        r.skipped.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![CheckpointId(30), CheckpointId(20)]
    );
    assert!(
        r.skipped[1].reason.contains("checksum mismatch"),
        "{}",
        r.skipped[1].reason
    );
    // Damaged reads name the file.
    let err = s.read_checkpoint(CheckpointId(20)).unwrap_err();
    assert!(err.to_string().contains(&n20), "{err}");
    // A re-run batch may checkpoint again below a damaged newest one.
    assert_eq!(
        s.put_checkpoint(CheckpointId(25), b"rerun").unwrap(),
        PutOutcome::Published
    );
    let r = s.read_newest(StartMode::RequireCheckpoint).unwrap();
    assert_eq!(r.checkpoint.unwrap().payload, b"rerun");
    // Garbage of every shape is rejected, never returned.
    for junk in [vec![], b"SLUICECP".to_vec(), vec![0u8; 4096]] {
        (b.damage)(&n30, junk);
        assert!(s.read_checkpoint(CheckpointId(30)).is_err());
    }
}

fn none_readable(b: &Backend) {
    let s = &b.store;
    s.put_checkpoint(CheckpointId(1), b"one").unwrap();
    s.put_checkpoint(CheckpointId(2), b"two").unwrap();
    for id in [1, 2] {
        let n = CheckpointId(id).file_name();
        (b.damage)(&n, flip(b.raw(&n), 5));
    }
    for mode in [StartMode::RequireCheckpoint, StartMode::FreshIfEmpty] {
        let err = s.read_newest(mode).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, CheckpointError::NoReadableCheckpoint { .. }),
            "{msg}"
        );
        assert!(msg.contains(&CheckpointId(1).file_name()), "{msg}");
        assert!(msg.contains(&CheckpointId(2).file_name()), "{msg}");
        assert!(msg.contains("FreshIfNone"), "{msg}");
    }
    let r = s.read_newest(StartMode::FreshIfNone).unwrap();
    assert_eq!(r.checkpoint, None);
    assert_eq!(r.skipped.len(), 2);
}

fn delete_and_retention(b: &Backend) {
    let s = &b.store;
    for id in 1..=15u64 {
        s.put_checkpoint(CheckpointId(id * 100), &id.to_le_bytes())
            .unwrap();
    }
    s.delete_checkpoint(CheckpointId(100)).unwrap();
    s.delete_checkpoint(CheckpointId(100)).unwrap(); // deleting a missing one is fine
    assert_eq!(s.list_checkpoints().unwrap().len(), 14);
    let deleted = s.retain_newest(10).unwrap();
    assert_eq!(
        deleted,
        (2..=5).map(|i| CheckpointId(i * 100)).collect::<Vec<_>>()
    );
    assert_eq!(
        s.list_checkpoints().unwrap(),
        (6..=15).map(|i| CheckpointId(i * 100)).collect::<Vec<_>>()
    );
    assert!(s.retain_newest(10).unwrap().is_empty());
    assert!(s.retain_newest(0).is_err());
}

fn retention_ignores_damaged(b: &Backend) {
    let s = &b.store;
    for id in 1..=5u64 {
        s.put_checkpoint(CheckpointId(id), b"x").unwrap();
    }
    // The two newest are damaged: keeping 2 must keep the two newest *readable* ones.
    for id in [4, 5] {
        let n = CheckpointId(id).file_name();
        (b.damage)(&n, truncate(b.raw(&n), 1));
    }
    let deleted = s.retain_newest(2).unwrap();
    assert_eq!(deleted, vec![CheckpointId(1)]);
    let r = s.read_newest(StartMode::RequireCheckpoint).unwrap();
    assert_eq!(r.checkpoint.unwrap().id, CheckpointId(3));
    // Fewer readable than asked for: nothing is deleted.
    assert!(s.retain_newest(5).unwrap().is_empty());
    assert_eq!(s.list_checkpoints().unwrap().len(), 4);
}

fn concurrent_puts(b: &Backend) {
    let s = &b.store;
    // Distinct ids from several threads: all published.
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            sc.spawn(move || {
                for i in 0..5u64 {
                    let id = CheckpointId(1000 + i * 4 + t);
                    let _ = s.put_checkpoint(id, &id.0.to_le_bytes()).unwrap();
                }
            });
        }
    });
    let ids = s.list_checkpoints().unwrap();
    assert!(!ids.is_empty());
    for id in &ids {
        assert_eq!(s.read_checkpoint(*id).unwrap().payload, id.0.to_le_bytes());
    }
    // The same new id from several threads: exactly one publish wins.
    let published = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for t in 0..4u8 {
            let published = &published;
            sc.spawn(move || {
                if s.put_checkpoint(CheckpointId(5000), &[t]).unwrap() == PutOutcome::Published {
                    published.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(published.load(Ordering::SeqCst), 1);
    assert_eq!(
        s.read_checkpoint(CheckpointId(5000)).unwrap().payload.len(),
        1
    );
}

fn state_snapshots(b: &Backend) {
    let opts = SnapshotOptions {
        partitions: 4,
        chunk_bytes: 2048,
        max_deltas: 3,
        inline_delta_bytes: 64,
    };
    let snaps = StateSnapshots::new(b.store.clone(), "word-counts", opts).unwrap();
    let mut model: State = (0..1000u32)
        .map(|i| {
            (
                format!("w{i}").into_bytes(),
                u64::from(i).to_le_bytes().to_vec(),
            )
        })
        .collect();
    let full = snaps.write_full(CheckpointId(100), model.clone()).unwrap();
    assert!(full.files().count() > 4, "{}", full.files().count());
    let changed: Vec<(Vec<u8>, Vec<u8>)> = (0..10u32)
        .map(|i| (format!("w{i}").into_bytes(), b"changed".to_vec()))
        .collect();
    let removed: Vec<Vec<u8>> = (10..15u32).map(|i| format!("w{i}").into_bytes()).collect();
    let delta = snaps
        .write_incremental(CheckpointId(200), &full, changed.clone(), removed.clone())
        .unwrap();
    model.extend(changed);
    for k in &removed {
        model.remove(k);
    }
    // The manifest reads back from the store and restores the model exactly.
    let m = snaps.read_manifest(delta.reference()).unwrap();
    assert_eq!(m, delta);
    assert_eq!(snaps.restore(&m).unwrap(), model);
    // Compaction gives the same state in one layer.
    let compacted = snaps.compact(&m).unwrap();
    assert_eq!(compacted.layers.len(), 1);
    assert_eq!(snaps.restore(&compacted).unwrap(), model);
    // GC with only the compacted snapshot live removes everything else of the operator.
    let report = snaps.gc(&[compacted.reference()]).unwrap();
    assert_eq!(report.manifests.len(), 2, "{report:?}");
    assert_eq!(
        report.chunks.len(),
        full.files().count() + delta.layers[1].files.len()
    );
    assert_eq!(snaps.restore(&compacted).unwrap(), model);
    assert!(snaps.restore(&delta).is_err());
    // A chunk replaced by another valid chunk is caught by the manifest's CRC.
    let victim = compacted.layers[0].files[1].name.clone();
    let other = compacted.layers[0].files[2].name.clone();
    (b.damage)(&victim, b.raw(&other));
    let err = snaps.restore(&compacted).unwrap_err();
    assert!(err.to_string().contains(&victim), "{err}");
    // A missing chunk: a clear error naming it, never a partial state.
    b.store.delete(&victim).unwrap();
    let err = snaps.restore(&compacted).unwrap_err();
    assert!(matches!(err, CheckpointError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(&victim), "{err}");
}
