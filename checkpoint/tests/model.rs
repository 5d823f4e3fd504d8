//! Property test: random puts, damage, deletes, retention and power losses (with a
//! restart) against a simple model of what the store must hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use sluice_checkpoint::{CheckpointId, CheckpointStore, LocalStore, PutOutcome, StartMode};
use sluice_wal::fs::SimFs;

#[derive(Debug, Clone)]
enum Step {
    Put(u64, u8),
    Damage(u64),
    Delete(u64),
    Retain(usize),
    /// Power loss, then reopen the store.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..12u64, any::<u8>()).prop_map(|(id, p)| Step::Put(id, p)),
        1 => (0..12u64).prop_map(Step::Damage),
        1 => (0..12u64).prop_map(Step::Delete),
        1 => (1..4usize).prop_map(Step::Retain),
        1 => Just(Step::Restart),
    ]
}

/// id -> Some(payload) if it reads back whole, None if damaged.
type Model = BTreeMap<u64, Option<Vec<u8>>>;

fn open(fs: &SimFs) -> LocalStore {
    LocalStore::open_with(Arc::new(fs.clone()), "/m").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn store_matches_model(steps in proptest::collection::vec(step(), 1..40)) {
        let fs = SimFs::new();
        let mut store = open(&fs);
        let mut model = Model::new();
        for s in steps {
            match s {
                Step::Put(id, p) => {
                    let payload = vec![p; (p as usize) % 7];
                    let got = store.put_checkpoint(CheckpointId(id), &payload).unwrap();
                    let want = if let Some(existing) = model.get(&id) {
                        PutOutcome::AlreadyExists { identical: existing.as_deref() == Some(&payload[..]) }
                    } else if let Some((newest, _)) =
                        model.range(id + 1..).rev().find(|(_, v)| v.is_some())
                    {
                        PutOutcome::Superseded { newest: CheckpointId(*newest) }
                    } else {
                        model.insert(id, Some(payload));
                        PutOutcome::Published
                    };
                    prop_assert_eq!(got, want);
                }
                Step::Damage(id) => {
                    let path = Path::new("/m").join(CheckpointId(id).file_name());
                    // Only whole ones: flipping the same byte twice would repair it.
                    let whole = matches!(model.get(&id), Some(Some(_)));
                    if let Some(mut bytes) = fs.read_file(&path).filter(|_| whole) {
                        let i = bytes.len() / 2;
                        bytes[i] ^= 0x10;
                        fs.write_file(&path, bytes);
                        model.insert(id, None);
                    }
                }
                Step::Delete(id) => {
                    store.delete_checkpoint(CheckpointId(id)).unwrap();
                    model.remove(&id);
                }
                Step::Retain(n) => {
                    let deleted = store.retain_newest(n).unwrap();
                    let valid: Vec<u64> =
                        model.iter().rev().filter(|(_, v)| v.is_some()).map(|(k, _)| *k).collect();
                    let want: Vec<CheckpointId> = if valid.len() >= n {
                        let cutoff = valid[n - 1];
                        model.range(..cutoff).map(|(k, _)| CheckpointId(*k)).collect()
                    } else {
                        Vec::new()
                    };
                    prop_assert_eq!(&deleted, &want);
                    for id in want {
                        model.remove(&id.0);
                    }
                }
                Step::Restart => {
                    drop(store);
                    fs.crash();
                    store = open(&fs);
                }
            }
            // After every step: the listing and the fallback read agree with the model.
            let ids: Vec<u64> = store.list_checkpoints().unwrap().iter().map(|c| c.0).collect();
            prop_assert_eq!(ids, model.keys().copied().collect::<Vec<_>>());
            let r = store.read_newest(StartMode::FreshIfNone).unwrap();
            let newest_valid = model.iter().rev().find(|(_, v)| v.is_some());
            match newest_valid {
                Some((id, payload)) => {
                    let c = r.checkpoint.unwrap();
                    prop_assert_eq!(c.id, CheckpointId(*id));
                    prop_assert_eq!(Some(c.payload), payload.clone());
                    let skipped: Vec<u64> = r.skipped.iter().map(|s| s.id.0).collect();
                    let want: Vec<u64> = model.range(id + 1..).rev().map(|(k, _)| *k).collect();
                    prop_assert_eq!(skipped, want);
                }
                None => {
                    prop_assert!(r.checkpoint.is_none());
                    prop_assert_eq!(r.skipped.len(), model.len());
                }
            }
        }
    }
}
