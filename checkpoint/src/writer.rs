//! An asynchronous checkpoint writer: the engine queues a checkpoint and goes on; a
//! background thread publishes it, applies retention, and reports every outcome as a
//! [`WriterEvent`]. Nothing is lost silently: a full queue refuses the submission
//! with [`CheckpointError::QueueFull`], and a failed publish comes back as
//! [`WriterEvent::Failed`] with the location and the cause. (Transient object-store
//! errors are retried with backoff inside the backend before they surface.)

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{CheckpointError, Result};
use crate::store::{CheckpointId, CheckpointStore, PutOutcome, DEFAULT_RETAINED};

/// Writer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Checkpoints that may wait in the queue.
    pub capacity: usize,
    /// Checkpoints to keep ([`CheckpointStore::retain_newest`]) after each publish;
    /// `None` turns retention off.
    pub retain: Option<usize>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            capacity: 4,
            retain: Some(DEFAULT_RETAINED),
        }
    }
}

/// What happened to a queued checkpoint.
#[derive(Debug)]
#[non_exhaustive]
pub enum WriterEvent {
    /// The put finished (see [`PutOutcome`]: published, already there, or superseded);
    /// `retired` lists the checkpoints retention then deleted.
    Done {
        id: CheckpointId,
        outcome: PutOutcome,
        retired: Vec<CheckpointId>,
    },
    /// The put failed; the checkpoint is not stored.
    Failed {
        id: CheckpointId,
        error: CheckpointError,
    },
    /// The checkpoint is stored, but retention afterwards failed.
    RetentionFailed {
        id: CheckpointId,
        error: CheckpointError,
    },
}

enum Job {
    Put(CheckpointId, Vec<u8>),
    Flush(SyncSender<()>),
}

/// The asynchronous writer. Dropping it finishes the queued checkpoints first.
#[derive(Debug)]
pub struct CheckpointWriter {
    tx: Option<SyncSender<Job>>,
    events: Mutex<Receiver<WriterEvent>>,
    worker: Option<JoinHandle<()>>,
    capacity: usize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Put(id, p) => write!(f, "Put({id}, {} bytes)", p.len()),
            Job::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl CheckpointWriter {
    /// Starts a writer thread over `store`.
    pub fn spawn(store: Arc<dyn CheckpointStore>, opts: WriterOptions) -> Result<Self> {
        if opts.capacity == 0 || opts.retain == Some(0) {
            return Err(CheckpointError::InvalidArgument(
                "writer capacity and retention must be at least 1".into(),
            ));
        }
        let (tx, rx) = mpsc::sync_channel::<Job>(opts.capacity);
        let (etx, erx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("sluice-ckpt-writer".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                        Job::Put(id, payload) => {
                            let event = match store.put_checkpoint(id, &payload) {
                                Err(error) => {
                                    tracing::error!(
                                        "checkpoint {id} at {} failed: {error}",
                                        store.location()
                                    );
                                    WriterEvent::Failed { id, error }
                                }
                                Ok(outcome) => match opts.retain.map(|n| store.retain_newest(n)) {
                                    Some(Err(error)) => WriterEvent::RetentionFailed { id, error },
                                    Some(Ok(retired)) => WriterEvent::Done {
                                        id,
                                        outcome,
                                        retired,
                                    },
                                    None => WriterEvent::Done {
                                        id,
                                        outcome,
                                        retired: Vec::new(),
                                    },
                                },
                            };
                            if etx.send(event).is_err() {
                                return;
                            }
                        }
                    }
                }
            })
            .map_err(|e| CheckpointError::io("<checkpoint writer thread>", e))?;
        Ok(CheckpointWriter {
            tx: Some(tx),
            events: Mutex::new(erx),
            worker: Some(worker),
            capacity: opts.capacity,
        })
    }

    fn sender(&self) -> Result<&SyncSender<Job>> {
        self.tx
            .as_ref()
            .ok_or_else(|| CheckpointError::WriterClosed("already closed".into()))
    }

    /// Queues a checkpoint without waiting. A full queue refuses it
    /// ([`CheckpointError::QueueFull`]): the caller decides (wait, skip this one).
    pub fn submit(&self, id: CheckpointId, payload: Vec<u8>) -> Result<()> {
        match self.sender()?.try_send(Job::Put(id, payload)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(CheckpointError::QueueFull {
                id,
                capacity: self.capacity,
            }),
            Err(TrySendError::Disconnected(_)) => Err(CheckpointError::WriterClosed(
                "the writer thread has stopped".into(),
            )),
        }
    }

    /// Queues a checkpoint, waiting for room in the queue.
    pub fn submit_blocking(&self, id: CheckpointId, payload: Vec<u8>) -> Result<()> {
        self.sender()?
            .send(Job::Put(id, payload))
            .map_err(|_| CheckpointError::WriterClosed("the writer thread has stopped".into()))
    }

    /// Waits until everything queued before this call has been processed.
    pub fn flush(&self) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.sender()?
            .send(Job::Flush(tx))
            .map_err(|_| CheckpointError::WriterClosed("the writer thread has stopped".into()))?;
        rx.recv()
            .map_err(|_| CheckpointError::WriterClosed("the writer thread has stopped".into()))
    }

    /// The events reported so far (each is returned once).
    pub fn events(&self) -> Vec<WriterEvent> {
        let rx = self.events.lock().unwrap_or_else(|e| e.into_inner());
        rx.try_iter().collect()
    }

    /// Finishes the queued checkpoints, stops the thread, and returns the events not
    /// yet collected.
    pub fn close(mut self) -> Result<Vec<WriterEvent>> {
        self.shutdown()?;
        Ok(self.events())
    }

    fn shutdown(&mut self) -> Result<()> {
        self.tx = None;
        if let Some(w) = self.worker.take() {
            w.join()
                .map_err(|_| CheckpointError::WriterClosed("the writer thread panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
