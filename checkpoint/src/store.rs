//! The [`CheckpointStore`] trait: a few durable object primitives each backend
//! implements, and the checkpoint protocol (publish, list, verified read, fallback,
//! retention) built on them once, so every backend behaves the same.

use std::fmt;

use crate::error::{CheckpointError, Result};
use crate::format::{self, CHECKPOINT_MAGIC};

/// How many checkpoints [`CheckpointStore::retain_newest`] keeps by default.
pub const DEFAULT_RETAINED: usize = 10;

const CHECKPOINT_PREFIX: &str = "checkpoint-";

/// Identifies a metadata checkpoint: the batch time it was taken at, in milliseconds.
/// Larger is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckpointId(pub u64);

impl CheckpointId {
    /// The batch time in milliseconds.
    pub fn batch_time_ms(self) -> u64 {
        self.0
    }

    /// `checkpoint-<batch time ms, zero-padded to 20 digits>`, so names sort by time.
    pub fn file_name(self) -> String {
        format!("{CHECKPOINT_PREFIX}{:020}", self.0)
    }

    /// The id named by a checkpoint file name, if it is one.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let digits = name.strip_prefix(CHECKPOINT_PREFIX)?;
        (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok().map(CheckpointId))
            .flatten()
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A metadata checkpoint that read back whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its id (batch time).
    pub id: CheckpointId,
    /// The engine's opaque payload, exactly as it was put.
    pub payload: Vec<u8>,
}

/// A checkpoint that [`CheckpointStore::read_newest`] skipped because it did not read
/// back whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its id.
    pub id: CheckpointId,
    /// Where it is, as the backend names it.
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

/// What [`CheckpointStore::read_newest`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The newest checkpoint that read back whole; `None` only when starting fresh.
    pub checkpoint: Option<Checkpoint>,
    /// Newer checkpoints that were skipped, newest first, with the reason.
    pub skipped: Vec<Skipped>,
}

/// What to do when no checkpoint can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMode {
    /// Start fresh when the location holds no checkpoint at all (a first start), but
    /// fail when checkpoints exist and none reads back whole.
    #[default]
    FreshIfEmpty,
    /// Start fresh even when every checkpoint is damaged (the damaged ones are still
    /// reported in [`Recovered::skipped`]). This drops all state.
    FreshIfNone,
    /// Always require a readable checkpoint.
    RequireCheckpoint,
}

/// What [`CheckpointStore::put_checkpoint`] did.
///
/// A put never replaces anything: a checkpoint for an id that exists, or for an id
/// older than the newest readable checkpoint (an older batch finishing after a newer
/// one), writes nothing and says so. These are not errors: the store already holds
/// something at least as new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// Written and durable.
    Published,
    /// A checkpoint with this id exists and was kept. `identical` tells whether it
    /// holds the same payload (a retried put that had already been applied).
    AlreadyExists { identical: bool },
    /// A newer checkpoint that reads back whole exists; nothing was written.
    Superseded { newest: CheckpointId },
}

/// Checks that `name` can be stored by every backend: 1–200 ASCII letters, digits,
/// `.`, `-`, `_`, not starting with `.` (those are temporary files).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(CheckpointError::InvalidName {
            name: name.to_owned(),
            reason: "use 1-200 ASCII letters, digits, '.', '-' or '_', not starting with '.'"
                .into(),
        })
    }
}

/// A place that durably stores checkpoints and state-snapshot files.
///
/// Backends implement five object primitives over a flat namespace of names (see
/// [`validate_name`]); the checkpoint protocol is provided on top of them. All calls
/// block; object-store backends run their I/O on their own runtime, so they can be
/// called from any thread, inside or outside a tokio runtime.
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    /// The location, for messages (`/var/ckpt`, `s3://bucket/prefix`, `rocksdb:///db`).
    fn location(&self) -> String;

    /// Where `name` lives, for messages.
    fn object_path(&self, name: &str) -> String;

    /// Publishes `data` under `name` atomically and durably, without ever replacing an
    /// existing object: returns `Ok(true)` once the object is durable, `Ok(false)` if
    /// `name` already existed (nothing written). A reader sees either no object or the
    /// whole of it.
    fn put_new(&self, name: &str, data: &[u8]) -> Result<bool>;

    /// The bytes stored under `name`, or `None` if there is no such object.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// The names of all stored objects (temporary files excluded), in no order.
    fn list_names(&self) -> Result<Vec<String>>;

    /// Removes `name` durably; removing a missing object succeeds.
    fn delete(&self, name: &str) -> Result<()>;

    // ---- the checkpoint protocol -------------------------------------------------

    /// Publishes a metadata checkpoint (see [`PutOutcome`] for what is refused).
    fn put_checkpoint(&self, id: CheckpointId, payload: &[u8]) -> Result<PutOutcome> {
        let name = id.file_name();
        let file = encode_checkpoint(id, payload);
        let present = self.list_checkpoints()?;
        if present.contains(&id) {
            // Rule: a put never replaces anything (a retried put finds its own bytes).
            let identical = self.get(&name)?.is_some_and(|b| b == file);
            return Ok(PutOutcome::AlreadyExists { identical });
        }
        // Rule: a checkpoint for an older batch never replaces a newer one. Only a
        // newer checkpoint that reads back whole counts: after a fallback past a
        // damaged newest file, re-run batches must be able to checkpoint again.
        let mut newer: Vec<CheckpointId> = present.into_iter().filter(|c| *c > id).collect();
        newer.sort_unstable_by(|a, b| b.cmp(a));
        for n in newer {
            if self.read_checkpoint(n).is_ok() {
                return Ok(PutOutcome::Superseded { newest: n });
            }
        }
        if self.put_new(&name, &file)? {
            return Ok(PutOutcome::Published);
        }
        let identical = self.get(&name)?.is_some_and(|b| b == file);
        Ok(PutOutcome::AlreadyExists { identical })
    }

    /// The ids of all checkpoints present (readable or not), oldest first.
    fn list_checkpoints(&self) -> Result<Vec<CheckpointId>> {
        let mut ids: Vec<CheckpointId> = self
            .list_names()?
            .iter()
            .filter_map(|n| CheckpointId::from_file_name(n))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Reads one checkpoint and verifies it (magic, version, length, CRC, id).
    fn read_checkpoint(&self, id: CheckpointId) -> Result<Checkpoint> {
        let name = id.file_name();
        let path = self.object_path(&name);
        let bytes = self.get(&name)?.ok_or_else(|| CheckpointError::NotFound {
            path: path.clone(),
            hint: String::new(),
        })?;
        decode_checkpoint(&path, id, &bytes)
    }

    /// Reads the newest checkpoint that reads back whole, falling back to older ones;
    /// every newer one that was skipped is reported with its path and the reason.
    /// What happens when none is usable depends on `mode`.
    fn read_newest(&self, mode: StartMode) -> Result<Recovered> {
        let ids = self.list_checkpoints()?;
        let mut skipped = Vec::new();
        for id in ids.iter().rev() {
            match self.read_checkpoint(*id) {
                Ok(c) => {
                    for s in &skipped {
                        let s: &Skipped = s;
                        tracing::warn!(
                            "skipped checkpoint {} ({}): {}; using {}",
                            s.id,
                            s.path,
                            s.reason,
                            c.id
                        );
                    }
                    return Ok(Recovered {
                        checkpoint: Some(c),
                        skipped,
                    });
                }
                // An I/O or connection error is not damage: stop rather than fall back
                // past a checkpoint that may be fine.
                Err(e) if !e.is_damage() => return Err(e),
                Err(e) => skipped.push(Skipped {
                    id: *id,
                    path: self.object_path(&id.file_name()),
                    reason: e.to_string(),
                }),
            }
        }
        let fresh = match mode {
            StartMode::FreshIfNone => true,
            StartMode::FreshIfEmpty => ids.is_empty(),
            StartMode::RequireCheckpoint => false,
        };
        if fresh {
            return Ok(Recovered {
                checkpoint: None,
                skipped,
            });
        }
        let detail = if skipped.is_empty() {
            "the location holds no checkpoint".to_owned()
        } else {
            skipped
                .iter()
                .map(|s| format!("{}: {}", s.path, s.reason))
                .collect::<Vec<_>>()
                .join("; ")
        };
        Err(CheckpointError::NoReadableCheckpoint {
            location: self.location(),
            detail,
        })
    }

    /// Deletes one checkpoint (a missing one is not an error).
    fn delete_checkpoint(&self, id: CheckpointId) -> Result<()> {
        self.delete(&id.file_name())
    }

    /// Keeps the newest `keep` checkpoints that read back whole and everything newer
    /// than the oldest of them; deletes the rest, oldest first. Returns what was
    /// deleted.
    ///
    /// Rule: an old checkpoint is deleted only once `keep` newer ones are durable and
    /// verified, so retention can never remove the last readable checkpoint. If fewer
    /// than `keep` read back whole, nothing is deleted.
    fn retain_newest(&self, keep: usize) -> Result<Vec<CheckpointId>> {
        if keep == 0 {
            return Err(CheckpointError::InvalidArgument(
                "retain_newest(0) would delete every checkpoint; keep at least 1".into(),
            ));
        }
        let ids = self.list_checkpoints()?;
        let mut verified = 0;
        let mut cutoff = None;
        for id in ids.iter().rev() {
            match self.read_checkpoint(*id) {
                Ok(_) => {
                    verified += 1;
                    if verified == keep {
                        cutoff = Some(*id);
                        break;
                    }
                }
                Err(e) if !e.is_damage() => return Err(e),
                Err(_) => {}
            }
        }
        let Some(cutoff) = cutoff else {
            return Ok(Vec::new());
        };
        let doomed: Vec<CheckpointId> = ids.into_iter().filter(|id| *id < cutoff).collect();
        for id in &doomed {
            self.delete_checkpoint(*id)?;
        }
        Ok(doomed)
    }
}

/// The bytes of a checkpoint file: the envelope around `id` (8 bytes, LE) + payload.
pub fn encode_checkpoint(id: CheckpointId, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + payload.len());
    body.extend_from_slice(&id.0.to_le_bytes());
    body.extend_from_slice(payload);
    format::encode(CHECKPOINT_MAGIC, &body)
}

/// Verifies a checkpoint file read from `path` that should hold `id`.
pub fn decode_checkpoint(path: &str, id: CheckpointId, bytes: &[u8]) -> Result<Checkpoint> {
    let body = format::decode(CHECKPOINT_MAGIC, path, bytes)?;
    if body.len() < 8 {
        return Err(CheckpointError::corruption(
            path,
            format::HEADER_LEN as u64,
            "payload too short to hold the checkpoint id",
        ));
    }
    let stored = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    if stored != id.0 {
        return Err(CheckpointError::corruption(
            path,
            format::HEADER_LEN as u64,
            format!(
                "the file holds checkpoint {}, but its name says {id}",
                CheckpointId(stored)
            ),
        ));
    }
    Ok(Checkpoint {
        id,
        payload: body[8..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_and_parse() {
        let a = CheckpointId(5).file_name();
        let b = CheckpointId(40).file_name();
        assert_eq!(a, "checkpoint-00000000000000000005");
        assert!(a < b);
        assert_eq!(CheckpointId::from_file_name(&b), Some(CheckpointId(40)));
        assert_eq!(CheckpointId::from_file_name("checkpoint-12"), None);
        assert_eq!(
            CheckpointId::from_file_name("checkpoint-0000000000000000000x"),
            None
        );
        assert_eq!(
            CheckpointId::from_file_name(&CheckpointId(u64::MAX).file_name()),
            Some(CheckpointId(u64::MAX))
        );
    }

    #[test]
    fn decode_rejects_a_file_renamed_to_another_id() {
        let f = encode_checkpoint(CheckpointId(7), b"p");
        assert_eq!(
            decode_checkpoint("x", CheckpointId(7), &f).unwrap().payload,
            b"p"
        );
        let err = decode_checkpoint("x", CheckpointId(8), &f).unwrap_err();
        assert!(err.to_string().contains("name says"), "{err}");
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("state-op_1.m").is_ok());
        for bad in ["", ".tmp", "a/b", "a b", "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
