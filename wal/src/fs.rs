//! The file-system seam.
//!
//! Everything the local WAL writes goes through [`FileSystem`] and [`WalFile`], so a
//! test can swap in [`SimFs`]: an in-memory file system that remembers which bytes and
//! which directory entries were made durable, and can simulate a crash (unsynced bytes
//! and unsynced directory entries vanish, optionally leaving a torn prefix), fail the
//! n-th fsync, tear a write, or fill the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A file opened through a [`FileSystem`]. All I/O is positional, so one handle can be
/// shared by a writer and concurrent readers.
pub trait WalFile: Send + Sync + fmt::Debug {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at EOF).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// `fdatasync`: makes the file's data (and its size) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// The current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Cuts the file to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;

    /// Reads the whole file from `offset` to its end.
    fn read_to_end_from(&self, offset: u64) -> io::Result<Vec<u8>> {
        let len = self.len()?;
        let mut buf = vec![0u8; len.saturating_sub(offset) as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                buf.truncate(done);
                break;
            }
            done += n;
        }
        Ok(buf)
    }
}

/// The operations the WAL needs from a file system.
pub trait FileSystem: Send + Sync + fmt::Debug + 'static {
    /// Creates a new file; fails with `AlreadyExists` if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn WalFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// The names of the entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// `fsync` on a directory: makes creations, removals and renames in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Locks a directory against other processes until the returned guard is dropped.
    /// File systems that no other process can see take no lock.
    fn lock_dir(&self, _dir: &Path) -> io::Result<Option<DirLock>> {
        Ok(None)
    }
}

/// An exclusive lock on a directory (a held `flock` on its `LOCK` file).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(File);

impl WalFile for StdFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.0, buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl FileSystem for StdFs {
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<DirLock>> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DirLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is held by another process: the directory is already in use",
                    path.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A fault to inject into a [`SimFs`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The n-th `sync_data` from now (1 = the next one) fails with EIO.
    FailSync { nth: u64 },
    /// The n-th write from now writes only its first `keep` bytes, then fails with EIO.
    TornWrite { nth: u64, keep: usize },
    /// The disk holds only `bytes` more bytes; a write past that writes what fits and
    /// fails with ENOSPC.
    DiskFull { bytes: u64 },
    /// The n-th open from now of a file whose path contains `path_contains` fails with
    /// EIO (a read that fails, for the code reading it).
    FailOpen { path_contains: String, nth: u64 },
}

/// Armed [`Fault`]s and their countdowns: the one piece of fault logic [`SimFs`] and
/// [`FaultyFs`] share.
#[derive(Debug, Default)]
struct Faults {
    armed: Vec<Fault>,
    free_bytes: Option<u64>,
}

impl Faults {
    fn arm(&mut self, fault: Fault) {
        if let Fault::DiskFull { bytes } = fault {
            self.free_bytes = Some(bytes);
        } else {
            self.armed.push(fault);
        }
    }

    fn clear(&mut self) {
        self.armed.clear();
        self.free_bytes = None;
    }

    /// A write of `len` bytes at `offset` into a file of `current` bytes: how many bytes
    /// of it reach the file, and the error to report after writing them.
    fn write(&mut self, len: usize, offset: u64, current: u64) -> (usize, Option<io::Error>) {
        let mut len = len;
        let mut err = None;
        let mut torn = None;
        self.armed.retain_mut(|f| match f {
            Fault::TornWrite { nth, keep } if *nth <= 1 => {
                torn = Some(*keep);
                false
            }
            Fault::TornWrite { nth, .. } => {
                *nth -= 1;
                true
            }
            _ => true,
        });
        if let Some(keep) = torn {
            len = keep.min(len);
            err = Some(eio("torn write"));
        }
        if let Some(free) = self.free_bytes {
            let growth = (offset + len as u64).saturating_sub(current);
            if growth > free {
                len = len.saturating_sub((growth - free) as usize);
                err = Some(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let growth = (offset + len as u64).saturating_sub(current);
            self.free_bytes = Some(free.saturating_sub(growth));
        }
        (len, err)
    }

    /// An open of `path`: the error to report, if one is due.
    fn open(&mut self, path: &Path) -> Option<io::Error> {
        let path = path.to_string_lossy();
        let mut failed = false;
        self.armed.retain_mut(|f| match f {
            Fault::FailOpen { path_contains, nth } if path.contains(path_contains.as_str()) => {
                if *nth <= 1 {
                    failed = true;
                    false
                } else {
                    *nth -= 1;
                    true
                }
            }
            _ => true,
        });
        failed.then(|| eio(&format!("cannot open {path}")))
    }

    /// An fsync: the error to report, if one is due.
    fn sync(&mut self) -> Option<io::Error> {
        let mut failed = false;
        self.armed.retain_mut(|f| match f {
            Fault::FailSync { nth } if *nth <= 1 => {
                failed = true;
                false
            }
            Fault::FailSync { nth } => {
                *nth -= 1;
                true
            }
            _ => true,
        });
        failed.then(|| eio("fsync failed"))
    }
}

/// A [`FileSystem`] that passes everything to another one (the real disk, usually) and
/// injects [`Fault`]s on the way: a failed fsync, a torn write, a full disk. Unlike
/// [`SimFs`] the bytes land on the inner file system, so a process running on it can
/// be killed and its files inspected and recovered by a later process, as after a real
/// fault. `sluice-chaos` runs drivers on it (see [`install_default_fs`]).
#[derive(Debug, Clone)]
pub struct FaultyFs {
    inner: Arc<dyn FileSystem>,
    faults: Arc<Mutex<Faults>>,
}

impl FaultyFs {
    /// Wraps `inner` with no faults armed.
    pub fn new(inner: Arc<dyn FileSystem>) -> Self {
        FaultyFs {
            inner,
            faults: Arc::default(),
        }
    }

    /// Arms a fault (counted over every file of this file system).
    pub fn inject(&self, fault: Fault) {
        lock(&self.faults).arm(fault);
    }

    /// Removes every armed fault and the disk-full limit.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn WalFile>,
    faults: Arc<Mutex<Faults>>,
}

impl WalFile for FaultyFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let current = self.inner.len()?;
        let (len, err) = lock(&self.faults).write(buf.len(), offset, current);
        if len > 0 {
            self.inner.write_all_at(&buf[..len], offset)?;
        }
        err.map_or(Ok(()), Err)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if let Some(e) = lock(&self.faults).sync() {
            return Err(e);
        }
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

impl FaultyFs {
    fn wrap(&self, f: Arc<dyn WalFile>) -> Arc<dyn WalFile> {
        Arc::new(FaultyFile {
            inner: f,
            faults: self.faults.clone(),
        })
    }
}

impl FileSystem for FaultyFs {
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        self.inner.create_new(path).map(|f| self.wrap(f))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        if let Some(e) = lock(&self.faults).open(path) {
            return Err(e);
        }
        self.inner.open(path).map(|f| self.wrap(f))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<DirLock>> {
        self.inner.lock_dir(dir)
    }
}

static DEFAULT_FS: std::sync::OnceLock<Arc<dyn FileSystem>> = std::sync::OnceLock::new();

/// Makes `fs` the file system of every local WAL and local checkpoint store this process
/// opens without naming one ([`crate::Wal::open`], `LocalStore::open`): the seam through
/// which a chaos run injects disk faults into a whole driver. Once per process, before
/// anything is opened; a second call is refused (returns `false`).
pub fn install_default_fs(fs: Arc<dyn FileSystem>) -> bool {
    DEFAULT_FS.set(fs).is_ok()
}

/// The process's default file system: [`StdFs`] unless [`install_default_fs`] chose
/// another.
pub fn default_fs() -> Arc<dyn FileSystem> {
    DEFAULT_FS.get().cloned().unwrap_or_else(|| Arc::new(StdFs))
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a crash: the content at the last `sync_data`.
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<PathBuf, Arc<Mutex<SimFile>>>,
    /// Directory entries that survive a crash (made durable by `sync_dir`).
    durable_entries: BTreeMap<PathBuf, Arc<Mutex<SimFile>>>,
    dirs: BTreeSet<PathBuf>,
    faults: Faults,
    /// The power was cut ([`SimFs::power_cut`]): every operation fails.
    dead: bool,
}

impl SimState {
    /// EIO once the power is cut.
    fn alive(&self) -> io::Result<()> {
        if self.dead {
            return Err(eio("the power is off"));
        }
        Ok(())
    }
}

/// An in-memory file system that simulates crashes and injects faults.
///
/// A crash ([`SimFs::crash`]) keeps only what a real disk would keep: the content of
/// each file as of its last `sync_data`, and only the directory entries that existed
/// at the last `sync_dir` of their directory (a file created but whose directory was
/// never synced disappears). With [`SimFs::crash_keeping`], a prefix of the unsynced
/// bytes of each file survives too, as a torn write would leave them.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

#[derive(Debug)]
struct SimHandle {
    fs: SimFs,
    file: Arc<Mutex<SimFile>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimFs {
    /// An empty simulated file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).faults.arm(fault);
    }

    /// Removes every armed fault and the disk-full limit.
    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    /// How many armed faults have not fired yet.
    pub fn faults_pending(&self) -> usize {
        lock(&self.state).faults.armed.len()
    }

    /// Simulates power loss: unsynced bytes and unsynced directory entries vanish.
    pub fn crash(&self) {
        self.crash_keeping(|_, _| 0);
    }

    /// Simulates power loss where, for each file, `keep(path, unsynced_len)` bytes of
    /// the unsynced tail survive (a torn write). Handles opened before the crash keep
    /// pointing at the pre-crash files; reopen after a crash.
    pub fn crash_keeping(&self, mut keep: impl FnMut(&Path, usize) -> usize) {
        let mut st = lock(&self.state);
        let mut files = BTreeMap::new();
        for (path, file) in st.durable_entries.clone() {
            let f = lock(&file);
            let durable_len = f.durable.len();
            let mut data = f.durable.clone();
            if f.data.len() > durable_len && f.data[..durable_len] == f.durable[..] {
                let unsynced = f.data.len() - durable_len;
                let k = keep(&path, unsynced).min(unsynced);
                data.extend_from_slice(&f.data[durable_len..durable_len + k]);
            }
            drop(f);
            files.insert(
                path,
                Arc::new(Mutex::new(SimFile {
                    durable: data.clone(),
                    data,
                })),
            );
        }
        st.durable_entries = files.clone();
        st.files = files;
        st.faults.clear();
    }

    /// Cuts the power: every operation through this file system (and the handles it
    /// opened) fails from now on, as on a machine that went dark; returns the file
    /// system as it comes back up, holding only what was durable (see
    /// [`SimFs::crash`]). A process that keeps running on the old one writes nothing
    /// the new one sees.
    pub fn power_cut(&self) -> SimFs {
        let mut st = lock(&self.state);
        st.dead = true;
        let mut files = BTreeMap::new();
        for (path, file) in &st.durable_entries {
            let durable = lock(file).durable.clone();
            files.insert(
                path.clone(),
                Arc::new(Mutex::new(SimFile {
                    data: durable.clone(),
                    durable,
                })),
            );
        }
        SimFs {
            state: Arc::new(Mutex::new(SimState {
                durable_entries: files.clone(),
                files,
                dirs: st.dirs.clone(),
                faults: Faults::default(),
                dead: false,
            })),
        }
    }

    /// The current content of a file (for tests that damage files on purpose).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = lock(&self.state);
        st.files.get(path).map(|f| lock(f).data.clone())
    }

    /// Replaces the content of a file, durably (for tests that damage files on purpose).
    pub fn write_file(&self, path: &Path, data: Vec<u8>) {
        let st = lock(&self.state);
        if let Some(f) = st.files.get(path) {
            let mut f = lock(f);
            f.durable = data.clone();
            f.data = data;
        }
    }
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error: {what}"))
}

impl WalFile for SimHandle {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        // State before file, never both: `crash_keeping` takes them in that order.
        let current = lock(&self.file).data.len() as u64;
        let (len, err) = {
            let mut st = lock(&self.fs.state);
            st.alive()?;
            st.faults.write(buf.len(), offset, current)
        };
        let mut file = lock(&self.file);
        let end = offset as usize + len;
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        file.data[offset as usize..end].copy_from_slice(&buf[..len]);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        lock(&self.fs.state).alive()?;
        let file = lock(&self.file);
        let start = (offset as usize).min(file.data.len());
        let n = buf.len().min(file.data.len() - start);
        buf[..n].copy_from_slice(&file.data[start..start + n]);
        Ok(n)
    }

    fn sync_data(&self) -> io::Result<()> {
        let sync = {
            let mut st = lock(&self.fs.state);
            st.alive()?;
            st.faults.sync()
        };
        if let Some(e) = sync {
            return Err(e);
        }
        let mut file = lock(&self.file);
        file.durable = file.data.clone();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.file).data.len() as u64)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        lock(&self.fs.state).alive()?;
        let mut file = lock(&self.file);
        file.data.truncate(len as usize);
        Ok(())
    }
}

impl FileSystem for SimFs {
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let mut st = lock(&self.state);
        st.alive()?;
        if st.files.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        let file = Arc::new(Mutex::new(SimFile::default()));
        st.files.insert(path.to_path_buf(), file.clone());
        Ok(Arc::new(SimHandle {
            fs: self.clone(),
            file,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn WalFile>> {
        let mut st = lock(&self.state);
        st.alive()?;
        if let Some(e) = st.faults.open(path) {
            return Err(e);
        }
        let file = st.files.get(path).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", path.display()),
            )
        })?;
        Ok(Arc::new(SimHandle {
            fs: self.clone(),
            file,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.alive()?;
        st.files.remove(path).map(|_| ()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", path.display()),
            )
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.alive()?;
        let f = st.files.remove(from).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", from.display()),
            )
        })?;
        st.files.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = lock(&self.state);
        st.alive()?;
        if !st.dirs.contains(dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", dir.display()),
            ));
        }
        Ok(st
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.alive()?;
        let mut d = Some(dir);
        while let Some(p) = d {
            st.dirs.insert(p.to_path_buf());
            d = p.parent();
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = lock(&self.state);
        st.alive()?;
        let keep: Vec<(PathBuf, Arc<Mutex<SimFile>>)> = st
            .files
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, f)| (p.clone(), f.clone()))
            .collect();
        st.durable_entries.retain(|p, _| p.parent() != Some(dir));
        st.durable_entries.extend(keep);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_power_cut_the_old_fs_is_dead_and_the_new_one_holds_what_was_durable() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let synced = fs.create_new(&dir.join("a")).unwrap();
        synced.write_all_at(b"kept", 0).unwrap();
        synced.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        synced.write_all_at(b" lost", 4).unwrap();
        let unsynced_entry = fs.create_new(&dir.join("b")).unwrap();
        unsynced_entry.write_all_at(b"x", 0).unwrap();
        unsynced_entry.sync_data().unwrap();

        let back = fs.power_cut();
        // The machine that went dark writes nothing more, through any handle.
        assert!(synced.write_all_at(b"zz", 0).is_err());
        assert!(fs.create_new(&dir.join("c")).is_err());
        assert!(fs.list(dir).is_err());
        // What comes back up: the synced bytes of the synced entry, nothing else.
        assert_eq!(back.read_file(&dir.join("a")).unwrap(), b"kept");
        assert!(back.read_file(&dir.join("b")).is_none());
        assert!(back.read_file(&dir.join("c")).is_none());
        assert_eq!(back.list(dir).unwrap(), vec!["a".to_string()]);
    }
}
