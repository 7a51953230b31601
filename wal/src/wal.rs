//! The [`Wal`] handle, its shared state and the appender side of backpressure.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::error::WalError;
use crate::format::{FRAME_HEADER_LEN, MAX_RECORD_PAYLOAD};
use crate::recovery;
use crate::segment::{self, SegmentMeta};
use crate::writer::{AppendReq, BATCH_MAX_BYTES, Msg, Writer};
use crate::{Lsn, Recovered, WalOptions, WalStats};

/// State shared by the handles and the writer thread.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) segment_target: u64,
    pub(crate) max_outstanding: u64,
    pub(crate) state: Mutex<State>,
    /// Woken when outstanding bytes drop, or the WAL closes or fails.
    pub(crate) space: Notify,
    pub(crate) fsyncs: AtomicU64,
    /// Serializes writes of the trim file.
    trim_file: Mutex<()>,
    #[cfg(test)]
    pub(crate) fail_next_sync: std::sync::atomic::AtomicBool,
}

pub(crate) struct State {
    /// Segment files on disk, oldest first; the last is the active one.
    pub(crate) segments: Vec<SegmentMeta>,
    /// Highest lsn that is durable (or was consumed at recovery).
    pub(crate) last_lsn: u64,
    pub(crate) trimmed_through: u64,
    /// Logical end position of the trimmed prefix.
    pub(crate) trimmed_pos: u64,
    /// Logical end position of everything admitted (reserved by appenders,
    /// durable or not). `admitted - trimmed_pos` is the outstanding bytes.
    pub(crate) admitted: u64,
    /// `(lsn, logical end position)` of every durable, untrimmed record.
    pub(crate) index: VecDeque<(u64, u64)>,
    /// Set once the writer failed; returned to every later append.
    pub(crate) failed: Option<WalError>,
    /// Set by close() (and when the writer stops): appends fail with Closed.
    pub(crate) closing: bool,
    /// Lsn the next submitted record gets. Assigned under this lock together with the
    /// send to the writer, so channel order is lsn order.
    pub(crate) next_lsn: u64,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // No code path leaves State inconsistent across a panic; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The error for an append that cannot reach the writer any more.
    fn terminal_error(&self) -> WalError {
        self.lock().failed.clone().unwrap_or(WalError::Closed)
    }
}

/// Removes from `st.segments` every sealed segment whose records are all
/// trimmed and returns their paths (the caller unlinks them outside the lock).
/// The active (last) segment is never included.
pub(crate) fn take_dead(st: &mut State) -> Vec<PathBuf> {
    let mut n = 0;
    while n + 1 < st.segments.len() && st.segments[n + 1].prev_lsn <= st.trimmed_through {
        n += 1;
    }
    st.segments.drain(..n).map(|s| s.path).collect()
}

/// Handle to an open write-ahead log. Cheap to clone; all clones share one
/// writer. See the [crate docs](crate) for the on-disk format and guarantees.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Msg>,
    exited: watch::Receiver<bool>,
    /// Joined by `close` so a clean shutdown leaves no dead segment behind.
    reaper: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.shared.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A record submitted to the writer: its lsn is fixed; [`Submitted::durable`] waits
/// for its fsync.
pub struct Submitted {
    lsn: Lsn,
    rx: oneshot::Receiver<Result<Lsn, WalError>>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Submitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submitted").field("lsn", &self.lsn).finish()
    }
}

impl Submitted {
    /// The record's lsn (assigned at submission).
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Resolves once the record is durable (written and `fdatasync`ed).
    pub async fn durable(self) -> Result<Lsn, WalError> {
        match self.rx.await {
            Ok(result) => result,
            Err(_) => Err(self.shared.terminal_error()),
        }
    }
}

type Reaper = (
    std::sync::mpsc::Sender<Vec<PathBuf>>,
    std::thread::JoinHandle<()>,
);

/// Starts the thread that unlinks dead segments for the writer; it ends once the
/// writer (the only sender) is gone.
fn spawn_reaper(dir: &std::path::Path) -> Result<Reaper, WalError> {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<PathBuf>>();
    let handle = std::thread::Builder::new()
        .name("cirrus-wal-reaper".into())
        .spawn(move || {
            for paths in rx {
                let _ = segment::remove_files(&paths);
            }
        })
        .map_err(|e| WalError::io("spawn reaper thread for", dir, e))?;
    Ok((tx, handle))
}

impl Wal {
    /// Opens (creating the directory if needed) and recovers the WAL in
    /// `opts.dir`: replays every segment in order, truncates a torn or corrupt
    /// tail (and removes any segment after it), and returns the records that
    /// were not trimmed, in lsn order.
    ///
    /// Only one `Wal` may have a directory open at a time (not checked): to
    /// reopen in the same process, `close()` the previous one first (a writer
    /// whose handles were merely dropped finishes its queue in the
    /// background).
    ///
    /// Recovery runs on a blocking thread. The writer is a dedicated OS
    /// thread named `cirrus-wal-writer`.
    pub async fn open(opts: WalOptions) -> Result<(Wal, Recovered), WalError> {
        if opts.max_outstanding_bytes == 0 {
            return Err(WalError::InvalidOptions(
                "max_outstanding_bytes must be > 0".into(),
            ));
        }
        let dir = opts.dir.clone();
        let rec = tokio::task::spawn_blocking(move || recovery::recover(&dir))
            .await
            .map_err(|e| WalError::io("recover", &opts.dir, std::io::Error::other(e)))??;

        let mut index = VecDeque::with_capacity(rec.records.len());
        let mut pos = 0u64;
        for r in &rec.records {
            pos += FRAME_HEADER_LEN as u64 + r.payload.len() as u64;
            index.push_back((r.lsn.0, pos));
        }
        let seg_path = rec
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            dir: opts.dir.clone(),
            segment_target: opts.segment_target_bytes,
            max_outstanding: opts.max_outstanding_bytes,
            state: Mutex::new(State {
                segments: rec.segments,
                last_lsn: rec.next_lsn - 1,
                trimmed_through: rec.trimmed_through,
                trimmed_pos: 0,
                admitted: pos,
                index,
                failed: None,
                closing: false,
                next_lsn: rec.next_lsn,
            }),
            space: Notify::new(),
            fsyncs: AtomicU64::new(0),
            trim_file: Mutex::new(()),
            #[cfg(test)]
            fail_next_sync: std::sync::atomic::AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (exited_tx, exited_rx) = watch::channel(false);
        let (reaper_tx, reaper) = spawn_reaper(&opts.dir)?;
        let writer = Writer {
            shared: shared.clone(),
            rx,
            file: rec.active.file,
            seg_path,
            seg_len: rec.active.len,
            seg_records: rec.active.records,
            next_lsn: rec.next_lsn,
            pos,
            buf: Vec::with_capacity(BATCH_MAX_BYTES as usize),
            exited: exited_tx,
            roll_requested: false,
            reaper: reaper_tx,
        };
        std::thread::Builder::new()
            .name("cirrus-wal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| WalError::io("spawn writer thread for", &opts.dir, e))?;

        let wal = Wal {
            inner: Arc::new(Inner {
                shared,
                tx,
                exited: exited_rx,
                reaper: Mutex::new(Some(reaper)),
            }),
        };
        let recovered = Recovered {
            records: rec.records,
            torn_tail: rec.torn_tail,
        };
        let stats = wal.stats();
        tracing::info!(
            dir = %opts.dir.display(),
            records = recovered.records.len(),
            segments = stats.segments,
            last_lsn = stats.last_lsn.0,
            trimmed_through = stats.trimmed_through.0,
            torn_tail = recovered.torn_tail.is_some(),
            "opened wal",
        );
        Ok((wal, recovered))
    }

    /// Appends one record whose payload is the concatenation of `parts`.
    ///
    /// Resolves once the record is durable (written and `fdatasync`ed);
    /// concurrent appends share one `fdatasync`. Waits first while the
    /// outstanding (appended but untrimmed) bytes are at or above
    /// `max_outstanding_bytes`.
    ///
    /// Dropping the future after it has waited for space does not un-append the
    /// record: it is already queued for the writer.
    pub async fn append(&self, kind: u8, parts: Vec<Bytes>) -> Result<Lsn, WalError> {
        self.wait_for_space(0).await?;
        self.submit(kind, parts)?.durable().await
    }

    /// Queues one record for the writer without waiting: the lsn is assigned now, and
    /// records submitted one after another (from any thread) get increasing lsns in
    /// submission order, so a caller may submit under its own lock to tie its ordering
    /// to the log's. Does not wait for space: call [`Wal::wait_for_space`] first to
    /// honour backpressure (the bound is then exceeded at most by the records of
    /// callers that passed the check together).
    pub fn submit(&self, kind: u8, parts: Vec<Bytes>) -> Result<Submitted, WalError> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len > MAX_RECORD_PAYLOAD {
            return Err(WalError::RecordTooLarge {
                len,
                max: MAX_RECORD_PAYLOAD,
            });
        }
        let frame_len = FRAME_HEADER_LEN as u64 + len;
        let shared = &self.inner.shared;
        let (reply, rx) = oneshot::channel();
        let mut st = shared.lock();
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        if st.closing {
            return Err(WalError::Closed);
        }
        let lsn = st.next_lsn;
        let req = AppendReq {
            kind,
            lsn,
            parts,
            frame_len,
            reply,
        };
        if self.inner.tx.send(Msg::Append(req)).is_err() {
            drop(st);
            return Err(shared.terminal_error());
        }
        st.next_lsn += 1;
        // The writer owns the bytes now: they stay outstanding until trimmed.
        st.admitted += frame_len;
        Ok(Submitted {
            lsn: Lsn(lsn),
            rx,
            shared: shared.clone(),
        })
    }

    /// Waits until the outstanding bytes are below `max_outstanding_bytes`
    /// (backpressure). `_bytes` is the size the caller is about to submit; the
    /// check is against the current level, so a single record larger than the
    /// limit still gets through once the log has drained.
    pub async fn wait_for_space(&self, _bytes: u64) -> Result<(), WalError> {
        let shared = &*self.inner.shared;
        loop {
            let notified = shared.space.notified();
            tokio::pin!(notified);
            // Register before checking so a wake-up between the check and the
            // await is not lost.
            notified.as_mut().enable();
            {
                let st = shared.lock();
                if let Some(e) = &st.failed {
                    return Err(e.clone());
                }
                if st.closing {
                    return Err(WalError::Closed);
                }
                if st.admitted - st.trimmed_pos < shared.max_outstanding {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Declares every record with lsn <= `through` no longer needed.
    ///
    /// `through` is clamped to the last durable lsn; a value at or below the
    /// current trim point is a no-op. Lowers the outstanding bytes (waking
    /// backpressured appenders), deletes every sealed segment whose records
    /// are all trimmed (the active segment is deleted only after it has been
    /// rolled), and records the trim point in the `trim` file so recovery
    /// does not return these records again.
    ///
    /// Performs small blocking file-system operations (unlink, a 20-byte
    /// write and a rename; no fsync). Works after `close` too.
    pub fn trim(&self, through: Lsn) -> Result<(), WalError> {
        let shared = &*self.inner.shared;
        let dead = {
            let mut st = shared.lock();
            let through = through.0.min(st.last_lsn);
            if through <= st.trimmed_through {
                return Ok(());
            }
            while let Some(&(lsn, pos)) = st.index.front() {
                if lsn > through {
                    break;
                }
                st.trimmed_pos = pos;
                st.index.pop_front();
            }
            st.trimmed_through = through;
            take_dead(&mut st)
        };
        shared.space.notify_waiters();
        let removed = segment::remove_files(&dead);
        let persisted = {
            let _guard = shared.trim_file.lock().unwrap_or_else(|e| e.into_inner());
            let value = shared.lock().trimmed_through;
            segment::write_trim_file(&shared.dir, value)
        };
        removed.and(persisted)
    }

    /// A snapshot of the WAL's counters.
    pub fn stats(&self) -> WalStats {
        let shared = &*self.inner.shared;
        let st = shared.lock();
        WalStats {
            outstanding_bytes: st.admitted - st.trimmed_pos,
            segments: st.segments.len(),
            last_lsn: Lsn(st.last_lsn),
            trimmed_through: Lsn(st.trimmed_through),
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting appends, lets the writer write and sync everything
    /// already queued, and waits for it to stop. Later appends fail with
    /// [`WalError::Closed`]. Idempotent; returns the writer's failure if it
    /// failed.
    pub async fn close(&self) -> Result<(), WalError> {
        let shared = &*self.inner.shared;
        let fully_trimmed = {
            let mut st = shared.lock();
            st.closing = true;
            st.trimmed_through + 1 >= st.next_lsn
        };
        shared.space.notify_waiters();
        // Everything is trimmed: roll so the old active segment is deleted and a
        // clean shutdown leaves an (almost) empty WAL directory behind.
        if fully_trimmed {
            let _ = self.inner.tx.send(Msg::Roll);
        }
        // Fails only if the writer already stopped taking messages.
        let _ = self.inner.tx.send(Msg::Close);
        let mut exited = self.inner.exited.clone();
        // Err means the writer dropped its end: it has exited as well.
        let _ = exited.wait_for(|done| *done).await;
        // The writer has dropped its sender: the reaper finishes what is queued and ends.
        let reaper = self
            .inner
            .reaper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(reaper) = reaper {
            let _ = tokio::task::spawn_blocking(move || reaper.join()).await;
        }
        match &shared.lock().failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Directory of this WAL.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.shared.dir
    }

    #[cfg(test)]
    pub(crate) fn inject_sync_failure(&self) {
        self.inner
            .shared
            .fail_next_sync
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
