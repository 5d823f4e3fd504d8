//! State snapshots for keyed state (key bytes → value bytes, or any serde types through
//! bincode).
//!
//! A snapshot of one stateful operator at checkpoint id `N` is a set of **chunk files**
//! and one **manifest**, stored in the same [`CheckpointStore`] as the checkpoints:
//!
//! ```text
//! state-<operator>-<N, 20 digits>-<f|d>-p<partition, 4 digits>-c<chunk, 6 digits>
//! state-<operator>-<N, 20 digits>-<f|d>.manifest
//! ```
//!
//! `f` is a **full** snapshot (every key), `d` an **incremental** one (keys changed or
//! removed since its base). A full snapshot's keys are split into partitions by CRC32
//! of the key, and each partition into chunks of at most
//! [`SnapshotOptions::chunk_bytes`]. A delta is one unpartitioned run of chunks; a
//! delta of at most [`SnapshotOptions::inline_delta_bytes`] is stored inside its
//! manifest instead (one object, one publish). Every file is wrapped in the
//! CRC-checked envelope of [`crate::format`].
//!
//! Chunk payload: u32 partition, u32 chunk index, u64 entry count, then per entry a tag
//! byte (1 = put, 0 = remove), u32 key length, key, and for a put u32 value length and
//! value (little-endian).
//!
//! The manifest (bincode) lists the **layers** to apply, oldest first: one full
//! snapshot, then each delta on top of it, and for every file its name, length and
//! CRC32 of the whole file. A manifest is self-contained: restoring needs nothing else.
//!
//! Publish rule: every chunk file is durable before the manifest that names it is
//! written, and the manifest is durable before the caller may reference it from a
//! metadata checkpoint. So a manifest that exists names a whole, consistent snapshot.
//!
//! Garbage collection ([`StateSnapshots::gc`]) deletes every file of the operator that
//! no live manifest names: manifests first, then chunks, each deletion made durable
//! before the next, so a crash at any step leaves every live manifest restorable.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{CheckpointError, Result};
use crate::format::{self, CHUNK_MAGIC, MANIFEST_MAGIC};
use crate::store::{CheckpointId, CheckpointStore};

/// How snapshots are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Number of partitions keys are hashed into (fixed for an operator's lifetime).
    pub partitions: u32,
    /// Target size of one chunk file's payload.
    pub chunk_bytes: usize,
    /// After this many deltas on top of a full snapshot, [`StateSnapshots::needs_compaction`]
    /// says to write a full one.
    pub max_deltas: usize,
    /// An incremental snapshot whose changes fit in this many bytes is stored inside
    /// its manifest (one object, one publish) instead of in chunk files.
    pub inline_delta_bytes: usize,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            partitions: 8,
            chunk_bytes: 4 << 20,
            max_deltas: 8,
            inline_delta_bytes: 1 << 20,
        }
    }
}

/// Whether a layer holds every key or only changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LayerKind {
    /// Every key.
    Full,
    /// Keys changed or removed since the previous layer.
    Delta,
}

impl LayerKind {
    fn tag(self) -> &'static str {
        match self {
            LayerKind::Full => "f",
            LayerKind::Delta => "d",
        }
    }
}

/// One file named by a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Object name.
    pub name: String,
    /// Length of the whole file.
    pub len: u64,
    /// CRC32 of the whole file.
    pub crc: u32,
    /// Number of entries in it.
    pub entries: u64,
}

/// One snapshot (full or delta) within a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The checkpoint id it was taken at.
    pub id: u64,
    /// Full or delta.
    pub kind: LayerKind,
    /// Its chunk files.
    pub files: Vec<FileRef>,
    /// A small delta's entries, stored in the manifest itself (chunk payload format,
    /// covered by the manifest's CRC); empty otherwise.
    pub inline: Vec<u8>,
}

/// What the engine stores in its metadata checkpoint to name a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The checkpoint id it was taken at.
    pub id: u64,
    /// The kind of its newest layer.
    pub kind: LayerKind,
}

/// Names the files of one consistent snapshot of one operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// The operator.
    pub operator: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Layers to apply, oldest (the full one) first.
    pub layers: Vec<Layer>,
}

impl SnapshotManifest {
    /// The reference to store in a metadata checkpoint.
    pub fn reference(&self) -> SnapshotRef {
        let top = self
            .layers
            .last()
            .expect("a manifest has at least one layer");
        SnapshotRef {
            id: top.id,
            kind: top.kind,
        }
    }

    /// Deltas on top of the full snapshot.
    pub fn delta_count(&self) -> usize {
        self.layers.len().saturating_sub(1)
    }

    /// Every file this manifest names.
    pub fn files(&self) -> impl Iterator<Item = &FileRef> {
        self.layers.iter().flat_map(|l| l.files.iter())
    }
}

/// What [`StateSnapshots::gc`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Manifests deleted.
    pub manifests: Vec<String>,
    /// Chunk files deleted.
    pub chunks: Vec<String>,
}

/// Restored keyed state.
pub type State = HashMap<Vec<u8>, Vec<u8>>;

/// Writes, restores and garbage-collects the snapshots of one stateful operator.
#[derive(Debug, Clone)]
pub struct StateSnapshots {
    store: Arc<dyn CheckpointStore>,
    operator: String,
    opts: SnapshotOptions,
}

fn partition_of(key: &[u8], partitions: u32) -> u32 {
    crc32fast::hash(key) % partitions
}

struct ChunkBuf {
    partition: u32,
    index: u32,
    entries: u64,
    buf: Vec<u8>,
}

impl ChunkBuf {
    const HEAD: usize = 16;
    fn new(partition: u32, index: u32) -> Self {
        let buf = vec![0; Self::HEAD];
        ChunkBuf {
            partition,
            index,
            entries: 0,
            buf,
        }
    }
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.buf.push(1);
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
        self.entries += 1;
    }
    fn remove(&mut self, key: &[u8]) {
        self.buf.push(0);
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.entries += 1;
    }
    fn finish_body(mut self) -> Vec<u8> {
        self.buf[0..4].copy_from_slice(&self.partition.to_le_bytes());
        self.buf[4..8].copy_from_slice(&self.index.to_le_bytes());
        self.buf[8..16].copy_from_slice(&self.entries.to_le_bytes());
        self.buf
    }
    fn finish(self) -> (Vec<u8>, u64) {
        let entries = self.entries;
        (format::encode(CHUNK_MAGIC, &self.finish_body()), entries)
    }
}

enum Change<'a> {
    Put(&'a [u8], &'a [u8]),
    Remove(&'a [u8]),
}

impl StateSnapshots {
    /// Snapshots of `operator` (ASCII letters, digits, `-`, `_`) in `store`.
    pub fn new(
        store: Arc<dyn CheckpointStore>,
        operator: &str,
        opts: SnapshotOptions,
    ) -> Result<Self> {
        let ok = !operator.is_empty()
            && operator.len() <= 100
            && operator
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(CheckpointError::InvalidName {
                name: operator.to_owned(),
                reason:
                    "operator names for state snapshots are 1-100 ASCII letters, digits, '-' or '_'"
                        .into(),
            });
        }
        if opts.partitions == 0 || opts.chunk_bytes == 0 {
            return Err(CheckpointError::InvalidArgument(
                "partitions and chunk_bytes must be at least 1".into(),
            ));
        }
        Ok(StateSnapshots {
            store,
            operator: operator.to_owned(),
            opts,
        })
    }

    fn base_name(&self, id: u64, kind: LayerKind) -> String {
        format!("state-{}-{id:020}-{}", self.operator, kind.tag())
    }

    /// The manifest's object name for a snapshot.
    pub fn manifest_name(&self, r: SnapshotRef) -> String {
        format!("{}.manifest", self.base_name(r.id, r.kind))
    }

    fn chunk_name(&self, id: u64, kind: LayerKind, partition: u32, index: u32) -> String {
        format!("{}-p{partition:04}-c{index:06}", self.base_name(id, kind))
    }

    /// True when `base` has enough deltas that the next snapshot should be full.
    pub fn needs_compaction(&self, base: &SnapshotManifest) -> bool {
        base.delta_count() >= self.opts.max_deltas
    }

    /// Writes a full snapshot of every `(key, value)` at checkpoint `id` and returns
    /// its manifest (already durable). If this snapshot already exists, returns the
    /// existing manifest and writes nothing.
    pub fn write_full<K, V>(
        &self,
        id: CheckpointId,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<SnapshotManifest>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut it = entries.into_iter();
        self.write_layer(id, LayerKind::Full, Vec::new(), &mut |f| {
            for (k, v) in it.by_ref() {
                f(Change::Put(k.as_ref(), v.as_ref()))?;
            }
            Ok(())
        })
    }

    /// Writes an incremental snapshot at checkpoint `id` on top of `base`: `changed`
    /// keys get their new values, `removed` keys are deleted. Returns its manifest
    /// (which names `base`'s layers too).
    pub fn write_incremental<K, V, R>(
        &self,
        id: CheckpointId,
        base: &SnapshotManifest,
        changed: impl IntoIterator<Item = (K, V)>,
        removed: impl IntoIterator<Item = R>,
    ) -> Result<SnapshotManifest>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
        R: AsRef<[u8]>,
    {
        if base.operator != self.operator || base.partitions != self.opts.partitions {
            return Err(CheckpointError::InvalidArgument(format!(
                "base snapshot is of operator {:?} with {} partitions, not {:?} with {}",
                base.operator, base.partitions, self.operator, self.opts.partitions
            )));
        }
        let base_id = base.reference().id;
        if id.0 <= base_id {
            return Err(CheckpointError::InvalidArgument(format!(
                "an incremental snapshot at {id} must be newer than its base at {}ms",
                base_id
            )));
        }
        let mut changed = changed.into_iter();
        let mut removed = removed.into_iter();
        self.write_layer(id, LayerKind::Delta, base.layers.clone(), &mut |f| {
            for r in removed.by_ref() {
                f(Change::Remove(r.as_ref()))?;
            }
            for (k, v) in changed.by_ref() {
                f(Change::Put(k.as_ref(), v.as_ref()))?;
            }
            Ok(())
        })
    }

    /// Restores `base` and writes it as a full snapshot at the same id (beside the
    /// delta, which stays valid). Returns the new manifest.
    pub fn compact(&self, base: &SnapshotManifest) -> Result<SnapshotManifest> {
        let state = self.restore(base)?;
        self.write_full(CheckpointId(base.reference().id), state)
    }

    #[allow(clippy::type_complexity)]
    fn write_layer(
        &self,
        id: CheckpointId,
        kind: LayerKind,
        mut layers: Vec<Layer>,
        feed: &mut dyn FnMut(&mut dyn FnMut(Change<'_>) -> Result<()>) -> Result<()>,
    ) -> Result<SnapshotManifest> {
        let r = SnapshotRef { id: id.0, kind };
        let manifest_name = self.manifest_name(r);
        if self.store.get(&manifest_name)?.is_some() {
            return self.read_manifest(r);
        }
        let parts = self.opts.partitions;
        // Full snapshots are partitioned by key hash; a delta is one unpartitioned
        // sequence of chunks (restore merges every layer into one map anyway), so a
        // small delta costs one object rather than one per partition.
        let lanes = if kind == LayerKind::Full { parts } else { 1 };
        let mut bufs: Vec<ChunkBuf> = (0..lanes).map(|p| ChunkBuf::new(p, 0)).collect();
        let mut files: Vec<FileRef> = Vec::new();
        let flush = |b: ChunkBuf, files: &mut Vec<FileRef>| -> Result<()> {
            let name = self.chunk_name(id.0, kind, b.partition, b.index);
            let (bytes, entries) = b.finish();
            // Rule: every chunk is durable before the manifest that names it is written.
            let mut published = self.store.put_new(&name, &bytes)?;
            if !published {
                // Left by an attempt that crashed before writing its manifest (checked
                // absent above), so nothing names it: replace it.
                self.store.delete(&name)?;
                published = self.store.put_new(&name, &bytes)?;
            }
            if !published {
                return Err(CheckpointError::InvalidArgument(format!(
                    "{} appeared while writing it: another writer is snapshotting operator {:?}",
                    self.store.object_path(&name),
                    self.operator
                )));
            }
            files.push(FileRef {
                name,
                len: bytes.len() as u64,
                crc: crc32fast::hash(&bytes),
                entries,
            });
            Ok(())
        };
        let chunk_bytes = self.opts.chunk_bytes;
        feed(&mut |change| {
            let key = match change {
                Change::Put(k, _) | Change::Remove(k) => k,
            };
            let p = partition_of(key, lanes) as usize;
            let b = &mut bufs[p];
            match change {
                Change::Put(k, v) => b.put(k, v),
                Change::Remove(k) => b.remove(k),
            }
            if b.buf.len() >= chunk_bytes {
                let next = ChunkBuf::new(b.partition, b.index + 1);
                let full = std::mem::replace(b, next);
                flush(full, &mut files)?;
            }
            Ok(())
        })?;
        let mut inline = Vec::new();
        for b in bufs {
            if kind == LayerKind::Delta
                && b.index == 0
                && b.buf.len() <= self.opts.inline_delta_bytes
            {
                inline = b.finish_body();
            } else if b.entries > 0 || (kind == LayerKind::Full && b.index == 0) {
                // No empty trailing chunks, except that a full snapshot writes chunk 0
                // of every partition (so an empty state still has files to verify).
                flush(b, &mut files)?;
            }
        }
        if kind == LayerKind::Full {
            layers.clear();
        }
        layers.push(Layer {
            id: id.0,
            kind,
            files,
            inline,
        });
        let manifest = SnapshotManifest {
            operator: self.operator.clone(),
            partitions: parts,
            layers,
        };
        let body = bincode::serde::encode_to_vec(&manifest, bincode::config::standard())
            .map_err(|e| CheckpointError::Serialization(e.to_string()))?;
        // Rule: the manifest is published last, whole and durable; only then may a
        // metadata checkpoint reference it.
        if !self
            .store
            .put_new(&manifest_name, &format::encode(MANIFEST_MAGIC, &body))?
        {
            return self.read_manifest(r);
        }
        Ok(manifest)
    }

    /// Reads and verifies a manifest.
    pub fn read_manifest(&self, r: SnapshotRef) -> Result<SnapshotManifest> {
        let name = self.manifest_name(r);
        let path = self.store.object_path(&name);
        let bytes = self
            .store
            .get(&name)?
            .ok_or_else(|| CheckpointError::NotFound {
                path: path.clone(),
                hint: "the snapshot manifest is missing".into(),
            })?;
        let body = format::decode(MANIFEST_MAGIC, &path, &bytes)?;
        let (m, used): (SnapshotManifest, usize) = sluice_wal::codec::decode_bounded(body)
            .map_err(|e| {
                CheckpointError::corruption(
                    &path,
                    format::HEADER_LEN as u64,
                    format!("manifest does not decode: {e}"),
                )
            })?;
        if used != body.len() || m.operator != self.operator || m.layers.is_empty() {
            return Err(CheckpointError::corruption(
                &path,
                format::HEADER_LEN as u64,
                "manifest is not a snapshot of this operator",
            ));
        }
        if m.reference() != r {
            return Err(CheckpointError::corruption(
                &path,
                format::HEADER_LEN as u64,
                format!(
                    "manifest describes snapshot {:?}, its name says {r:?}",
                    m.reference()
                ),
            ));
        }
        Ok(m)
    }

    /// Restores the state a manifest names: its full snapshot, then each delta. Every
    /// file is checked against the manifest (length, CRC) and its own envelope; a
    /// missing or damaged file is an error naming it, never a partial state.
    pub fn restore(&self, manifest: &SnapshotManifest) -> Result<State> {
        let full_entries: u64 = manifest
            .layers
            .first()
            .map_or(0, |l| l.files.iter().map(|f| f.entries).sum());
        let mut state = State::with_capacity(full_entries as usize);
        for layer in &manifest.layers {
            self.apply_layer(layer, &mut |key, value| {
                match value {
                    Some(v) => state.insert(key.to_vec(), v.to_vec()),
                    None => state.remove(key),
                };
            })?;
        }
        Ok(state)
    }

    /// The entries of the state a manifest names, as [`SnapshotStore::restore`] gives
    /// them, in no particular order, without a map of every key: the full snapshot's
    /// entries are taken as they are and only the deltas' keys go into a map, which
    /// then patches them (1M keys with 1% deltas: the deltas' 10k keys hashed, not
    /// 1M keys inserted).
    pub fn restore_entries(&self, manifest: &SnapshotManifest) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some((base, deltas)) = manifest.layers.split_first() else {
            return Ok(Vec::new());
        };
        let mut entries =
            Vec::with_capacity(base.files.iter().map(|f| f.entries).sum::<u64>() as usize);
        let mut removal = false;
        self.apply_layer(base, &mut |key, value| match value {
            Some(v) => entries.push((key.to_vec(), v.to_vec())),
            None => removal = true,
        })?;
        if removal {
            // Not a snapshot this store writes (a full layer holds no removals): the
            // general path keeps the layer's own order.
            return Ok(self.restore(manifest)?.into_iter().collect());
        }
        let mut patch: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        for layer in deltas {
            self.apply_layer(layer, &mut |key, value| {
                patch.insert(key.to_vec(), value.map(<[u8]>::to_vec));
            })?;
        }
        if patch.is_empty() {
            return Ok(entries);
        }
        entries.retain_mut(|(k, v)| match patch.remove(k.as_slice()) {
            None => true,
            Some(Some(new)) => {
                *v = new;
                true
            }
            Some(None) => false,
        });
        entries.extend(patch.into_iter().filter_map(|(k, v)| Some((k, v?))));
        Ok(entries)
    }

    /// Applies every file of `layer` and its inline delta, entry by entry, to `sink`
    /// (`None`: the key was removed).
    fn apply_layer(&self, layer: &Layer, sink: &mut dyn FnMut(&[u8], Option<&[u8]>)) -> Result<()> {
        for f in &layer.files {
            self.apply_file(f, sink)?;
        }
        if !layer.inline.is_empty() {
            let path = format!(
                "{} (inline delta)",
                self.store.object_path(&self.manifest_name(SnapshotRef {
                    id: layer.id,
                    kind: layer.kind
                }))
            );
            let entries = layer
                .inline
                .get(8..16)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            apply_entries(&path, 0, &layer.inline, entries, sink)?;
        }
        Ok(())
    }

    fn apply_file(&self, f: &FileRef, sink: &mut dyn FnMut(&[u8], Option<&[u8]>)) -> Result<()> {
        let path = self.store.object_path(&f.name);
        let bytes = self.store.get(&f.name)?.ok_or_else(|| CheckpointError::NotFound {
            path: path.clone(),
            hint: "a snapshot chunk named by the manifest is missing; restore from an older checkpoint".into(),
        })?;
        if bytes.len() as u64 != f.len {
            return Err(CheckpointError::corruption(
                &path,
                bytes.len() as u64,
                format!(
                    "chunk is {} bytes, the manifest says {}",
                    bytes.len(),
                    f.len
                ),
            ));
        }
        let computed = crc32fast::hash(&bytes);
        if computed != f.crc {
            return Err(CheckpointError::ChecksumMismatch {
                path,
                offset: 0,
                stored: f.crc,
                computed,
            });
        }
        let body = format::decode(CHUNK_MAGIC, &path, &bytes)?;
        apply_entries(&path, format::HEADER_LEN as u64, body, f.entries, sink)
    }

    /// Deletes every snapshot file of this operator that no manifest in `live` names,
    /// among snapshots no newer than the newest live one (a newer one may be being
    /// written). Manifests go first, then chunks. A live manifest that cannot be read
    /// stops the collection before anything is deleted.
    ///
    /// Do not run it concurrently with a write of the same operator.
    pub fn gc(&self, live: &[SnapshotRef]) -> Result<GcReport> {
        let mut keep = BTreeSet::new();
        let mut newest = None;
        for r in live {
            let m = self.read_manifest(*r)?;
            keep.insert(self.manifest_name(*r));
            keep.extend(m.files().map(|f| f.name.clone()));
            newest = newest.max(Some(r.id));
        }
        let prefix = format!("state-{}-", self.operator);
        let mut report = GcReport::default();
        let mut doomed_chunks = Vec::new();
        let mut names = self.store.list_names()?;
        names.sort();
        for name in names {
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Some(id) = parse_snapshot_file(rest) else {
                continue;
            };
            if keep.contains(&name) || Some(id.0) > newest {
                continue;
            }
            if id.1 {
                // Rule: a manifest goes before the chunks it names, so no manifest that
                // survives a crash names a deleted chunk.
                self.store.delete(&name)?;
                report.manifests.push(name);
            } else {
                doomed_chunks.push(name);
            }
        }
        for name in doomed_chunks {
            self.store.delete(&name)?;
            report.chunks.push(name);
        }
        Ok(report)
    }

    /// Writes a full snapshot of serde-typed state (bincode, standard config).
    pub fn write_full_typed<'a, K, V>(
        &self,
        id: CheckpointId,
        entries: impl IntoIterator<Item = (&'a K, &'a V)>,
    ) -> Result<SnapshotManifest>
    where
        K: Serialize + 'a,
        V: Serialize + 'a,
    {
        let encoded = entries
            .into_iter()
            .map(|(k, v)| Ok((encode(k)?, encode(v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.write_full(id, encoded)
    }

    /// Restores serde-typed state written with bincode.
    pub fn restore_typed<K, V>(&self, manifest: &SnapshotManifest) -> Result<HashMap<K, V>>
    where
        K: DeserializeOwned + Hash + Eq,
        V: DeserializeOwned,
    {
        self.restore(manifest)?
            .into_iter()
            .map(|(k, v)| Ok((decode(&k)?, decode(&v)?)))
            .collect()
    }
}

/// Applies the entries of a chunk payload (`body`, found at `base` in `path`) that
/// should hold `expected` entries.
fn apply_entries(
    path: &str,
    base: u64,
    body: &[u8],
    expected: u64,
    sink: &mut dyn FnMut(&[u8], Option<&[u8]>),
) -> Result<()> {
    let bad = |at: usize, why: &str| CheckpointError::corruption(path, base + at as u64, why);
    if body.len() < ChunkBuf::HEAD {
        return Err(bad(0, "chunk header truncated"));
    }
    let entries = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
    if entries != expected {
        return Err(bad(8, "entry count differs from the manifest"));
    }
    let mut at = ChunkBuf::HEAD;
    let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
        let end = at.checked_add(n).filter(|e| *e <= body.len());
        let end = end.ok_or_else(|| bad(*at, "entry runs past the end of the chunk"))?;
        let s = &body[*at..end];
        *at = end;
        Ok(s)
    };
    let read_len = |at: &mut usize| -> Result<usize> {
        Ok(u32::from_le_bytes(take(at, 4)?.try_into().expect("4 bytes")) as usize)
    };
    for _ in 0..entries {
        let tag = take(&mut at, 1)?[0];
        let klen = read_len(&mut at)?;
        let key = take(&mut at, klen)?;
        match tag {
            1 => {
                let vlen = read_len(&mut at)?;
                sink(key, Some(take(&mut at, vlen)?));
            }
            0 => sink(key, None),
            _ => return Err(bad(at, "unknown entry tag")),
        }
    }
    if at != body.len() {
        return Err(bad(at, "bytes after the last entry"));
    }
    Ok(())
}

/// Encodes a value with bincode (standard config), as the typed helpers do.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| CheckpointError::Serialization(e.to_string()))
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    let (v, used) = sluice_wal::codec::decode_bounded(b)
        .map_err(|e| CheckpointError::Serialization(e.to_string()))?;
    if used != b.len() {
        return Err(CheckpointError::Serialization(format!(
            "{} trailing bytes after the value",
            b.len() - used
        )));
    }
    Ok(v)
}

/// Parses `<id 20>-<f|d>.manifest` or `<id 20>-<f|d>-pNNNN-cNNNNNN`: (id, is_manifest).
fn parse_snapshot_file(rest: &str) -> Option<(u64, bool)> {
    let digits = rest.get(..20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = digits.parse().ok()?;
    let tail = rest.get(20..)?;
    let tail = tail
        .strip_prefix("-f")
        .or_else(|| tail.strip_prefix("-d"))?;
    if tail == ".manifest" {
        return Some((id, true));
    }
    let t = tail.strip_prefix("-p")?;
    let ok = t.len() == 12
        && t[..4].bytes().all(|b| b.is_ascii_digit())
        && &t[4..6] == "-c"
        && t[6..].bytes().all(|b| b.is_ascii_digit());
    ok.then_some((id, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;
    use sluice_wal::fs::SimFs;

    fn snaps(opts: SnapshotOptions) -> (SimFs, Arc<dyn CheckpointStore>, StateSnapshots) {
        let fs = SimFs::new();
        let store: Arc<dyn CheckpointStore> =
            Arc::new(LocalStore::open_with(Arc::new(fs.clone()), "/s").unwrap());
        let s = StateSnapshots::new(store.clone(), "counts", opts).unwrap();
        (fs, store, s)
    }

    fn kv(n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                (
                    format!("key{i}").into_bytes(),
                    (i as u64).to_le_bytes().to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn full_roundtrip_with_many_chunks() {
        let opts = SnapshotOptions {
            partitions: 3,
            chunk_bytes: 200,
            max_deltas: 2,
            ..Default::default()
        };
        let (_fs, _st, s) = snaps(opts);
        let data = kv(500);
        let m = s.write_full(CheckpointId(1), data.clone()).unwrap();
        assert!(m.layers[0].files.len() > 3, "{}", m.layers[0].files.len());
        assert_eq!(m.files().map(|f| f.entries).sum::<u64>(), 500);
        let restored = s.restore(&m).unwrap();
        assert_eq!(restored, data.into_iter().collect::<State>());
        assert_eq!(s.read_manifest(m.reference()).unwrap(), m);
    }

    #[test]
    fn empty_state_roundtrips() {
        let (_fs, _st, s) = snaps(SnapshotOptions::default());
        let m = s
            .write_full(CheckpointId(1), Vec::<(Vec<u8>, Vec<u8>)>::new())
            .unwrap();
        assert_eq!(m.layers[0].files.len(), 8);
        assert!(s.restore(&m).unwrap().is_empty());
    }

    #[test]
    fn incremental_applies_changes_and_removals_and_compacts() {
        let (_fs, _st, s) = snaps(SnapshotOptions {
            max_deltas: 2,
            ..Default::default()
        });
        let mut model: State = kv(100).into_iter().collect();
        let m1 = s.write_full(CheckpointId(10), model.clone()).unwrap();
        let changed = vec![
            (b"key1".to_vec(), b"new".to_vec()),
            (b"fresh".to_vec(), b"v".to_vec()),
        ];
        let removed = vec![b"key2".to_vec(), b"absent".to_vec()];
        let m2 = s
            .write_incremental(CheckpointId(20), &m1, changed.clone(), removed.clone())
            .unwrap();
        for (k, v) in changed {
            model.insert(k, v);
        }
        for k in removed {
            model.remove(&k);
        }
        assert_eq!(m2.layers.len(), 2);
        assert_eq!(m2.layers[1].kind, LayerKind::Delta);
        assert_eq!(s.restore(&m2).unwrap(), model);
        // Re-adding a removed key in a later delta.
        let m3 = s
            .write_incremental(
                CheckpointId(30),
                &m2,
                vec![(b"key2", b"back")],
                Vec::<&[u8]>::new(),
            )
            .unwrap();
        model.insert(b"key2".to_vec(), b"back".to_vec());
        assert_eq!(s.restore(&m3).unwrap(), model);
        // The entries without a map of every key: the same state.
        for m in [&m1, &m2, &m3] {
            let entries = s.restore_entries(m).unwrap();
            let n = entries.len();
            let as_map: State = entries.into_iter().collect();
            assert_eq!(as_map.len(), n, "no key twice");
            assert_eq!(as_map, s.restore(m).unwrap());
        }
        assert!(s.needs_compaction(&m3));
        assert!(!s.needs_compaction(&m2));
        let c = s.compact(&m3).unwrap();
        assert_eq!(c.layers.len(), 1);
        assert_eq!(
            c.reference(),
            SnapshotRef {
                id: 30,
                kind: LayerKind::Full
            }
        );
        assert_eq!(s.restore(&c).unwrap(), model);
        // The delta manifest at 30 is still valid beside the full one.
        assert_eq!(
            s.restore(&s.read_manifest(m3.reference()).unwrap())
                .unwrap(),
            model
        );
        // Incremental must be newer than its base.
        assert!(s
            .write_incremental(
                CheckpointId(30),
                &c,
                Vec::<(&[u8], &[u8])>::new(),
                Vec::<&[u8]>::new()
            )
            .is_err());
    }

    #[test]
    fn small_deltas_are_inlined_and_large_ones_chunked() {
        let (_fs, st, s) = snaps(SnapshotOptions {
            inline_delta_bytes: 1000,
            chunk_bytes: 500,
            ..Default::default()
        });
        let m1 = s.write_full(CheckpointId(1), kv(10)).unwrap();
        let small = s
            .write_incremental(
                CheckpointId(2),
                &m1,
                vec![(b"a", b"b")],
                Vec::<&[u8]>::new(),
            )
            .unwrap();
        assert!(small.layers[1].files.is_empty());
        assert!(!small.layers[1].inline.is_empty());
        let names_before = st.list_names().unwrap().len();
        let big = s
            .write_incremental(CheckpointId(3), &small, kv(200), Vec::<Vec<u8>>::new())
            .unwrap();
        assert!(big.layers[2].inline.is_empty());
        assert!(big.layers[2].files.len() > 1);
        assert!(st.list_names().unwrap().len() > names_before + 1);
        let mut want: State = kv(200).into_iter().collect();
        want.insert(b"a".to_vec(), b"b".to_vec());
        assert_eq!(s.restore(&big).unwrap(), want);
        // The inline delta is covered by the manifest's CRC.
        let name = s.manifest_name(small.reference());
        let mut bytes = st.get(&name).unwrap().unwrap();
        let n = bytes.len();
        bytes[n - 30] ^= 1;
        st.delete(&name).unwrap();
        st.put_new(&name, &bytes).unwrap();
        assert!(s.read_manifest(small.reference()).is_err());
    }

    #[test]
    fn writing_an_existing_snapshot_returns_it_unchanged() {
        let (_fs, _st, s) = snaps(SnapshotOptions::default());
        let m = s.write_full(CheckpointId(5), kv(10)).unwrap();
        let again = s.write_full(CheckpointId(5), kv(3)).unwrap();
        assert_eq!(again, m);
        assert_eq!(s.restore(&again).unwrap().len(), 10);
    }

    #[test]
    fn damaged_or_missing_chunk_fails_with_its_name() {
        let (fs, st, s) = snaps(SnapshotOptions::default());
        let m = s.write_full(CheckpointId(5), kv(50)).unwrap();
        let victim = m.layers[0].files[3].name.clone();
        let path = std::path::PathBuf::from("/s").join(&victim);
        let orig = fs.read_file(&path).unwrap();
        let mut bad = orig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        fs.write_file(&path, bad);
        let err = s.restore(&m).unwrap_err();
        assert!(err.to_string().contains(&victim), "{err}");
        assert!(
            matches!(err, CheckpointError::ChecksumMismatch { .. }),
            "{err}"
        );
        fs.write_file(&path, orig[..orig.len() - 4].to_vec());
        let err = s.restore(&m).unwrap_err();
        assert!(err.to_string().contains(&victim), "{err}");
        st.delete(&victim).unwrap();
        let err = s.restore(&m).unwrap_err();
        assert!(matches!(err, CheckpointError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains(&victim), "{err}");
    }

    #[test]
    fn gc_keeps_live_files_and_deletes_the_rest() {
        let (_fs, st, s) = snaps(SnapshotOptions {
            partitions: 2,
            ..Default::default()
        });
        let m1 = s.write_full(CheckpointId(10), kv(20)).unwrap();
        let m2 = s
            .write_incremental(
                CheckpointId(20),
                &m1,
                vec![(b"a", b"b")],
                Vec::<&[u8]>::new(),
            )
            .unwrap();
        let m3 = s.write_full(CheckpointId(30), kv(5)).unwrap();
        // Another operator's files and checkpoints are never touched.
        let other =
            StateSnapshots::new(st.clone(), "counts-2", SnapshotOptions::default()).unwrap();
        let o = other.write_full(CheckpointId(1), kv(3)).unwrap();
        st.put_checkpoint(CheckpointId(1), b"c").unwrap();

        // Live: the delta at 20 (which needs the full at 10) and the full at 30.
        // The manifest of 10 is not needed (the delta's manifest names its chunks).
        let report = s.gc(&[m2.reference(), m3.reference()]).unwrap();
        assert_eq!(report.manifests, vec![s.manifest_name(m1.reference())]);
        assert!(report.chunks.is_empty(), "{report:?}");
        assert_eq!(s.restore(&m2).unwrap().len(), 21);
        // Live: only 30. Everything of 10 and 20 goes.
        let report = s.gc(&[m3.reference()]).unwrap();
        assert_eq!(report.manifests.len(), 1);
        assert_eq!(report.chunks.len(), m2.files().count());
        assert_eq!(s.restore(&m3).unwrap().len(), 5);
        assert!(s.read_manifest(m1.reference()).is_err());
        assert_eq!(other.restore(&o).unwrap().len(), 3);
        assert!(st.read_checkpoint(CheckpointId(1)).is_ok());
        // A snapshot newer than every live one is never collected.
        let m4 = s.write_full(CheckpointId(40), kv(1)).unwrap();
        s.gc(&[m3.reference()]).unwrap();
        assert_eq!(s.restore(&m4).unwrap().len(), 1);
        // An unreadable live manifest stops GC before it deletes anything.
        st.delete(&s.manifest_name(m3.reference())).unwrap();
        assert!(s.gc(&[m3.reference()]).is_err());
        assert_eq!(s.restore(&m4).unwrap().len(), 1);
    }

    #[test]
    fn typed_roundtrip() {
        let (_fs, _st, s) = snaps(SnapshotOptions::default());
        let state: HashMap<String, u64> = (0..100).map(|i| (format!("w{i}"), i)).collect();
        let m = s.write_full_typed(CheckpointId(1), state.iter()).unwrap();
        let back: HashMap<String, u64> = s.restore_typed(&m).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn snapshot_file_names_parse() {
        assert_eq!(
            parse_snapshot_file("00000000000000000007-f.manifest"),
            Some((7, true))
        );
        assert_eq!(
            parse_snapshot_file("00000000000000000007-d-p0001-c000002"),
            Some((7, false))
        );
        assert_eq!(parse_snapshot_file("00000000000000000007-x.manifest"), None);
        assert_eq!(parse_snapshot_file("7-f.manifest"), None);
        assert!(StateSnapshots::new(
            Arc::new(LocalStore::open_with(Arc::new(SimFs::new()), "/x").unwrap()),
            "bad/name",
            SnapshotOptions::default()
        )
        .is_err());
    }
}
