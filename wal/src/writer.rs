//! The writer thread: the only code that writes segment data.
//!
//! It drains the request channel (memory bounded by the appenders' byte
//! backpressure) into a batch (up to
//! [`BATCH_MAX_BYTES`] / [`BATCH_MAX_RECORDS`]), writes every frame of the
//! batch with one `write` per segment touched, issues one `fdatasync`, and only
//! then answers each request with its lsn (group commit). While it is syncing,
//! new requests queue up in the channel and form the next batch.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::Lsn;
use crate::error::{WalError, io_err};
use crate::format;
use crate::segment;
use crate::wal::{Shared, take_dead};

/// A batch stops growing once its frames total this many bytes (the write
/// buffer is pre-sized to it).
pub(crate) const BATCH_MAX_BYTES: u64 = 4 << 20;
/// ... or once it holds this many records.
pub(crate) const BATCH_MAX_RECORDS: usize = 4096;

pub(crate) enum Msg {
    Append(AppendReq),
    /// Stop accepting, flush what is queued, exit.
    Close,
    /// Start a new segment if the active one holds records, so that a fully trimmed
    /// active segment can be deleted (sent by `close` when everything is trimmed).
    Roll,
}

pub(crate) struct AppendReq {
    pub(crate) kind: u8,
    /// Assigned at submission; always the writer's next lsn (channel order).
    pub(crate) lsn: u64,
    pub(crate) parts: Vec<Bytes>,
    /// `FRAME_HEADER_LEN + payload length`, already reserved against
    /// backpressure by the appender.
    pub(crate) frame_len: u64,
    pub(crate) reply: oneshot::Sender<Result<Lsn, WalError>>,
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) rx: mpsc::UnboundedReceiver<Msg>,
    pub(crate) file: File,
    pub(crate) seg_path: PathBuf,
    /// Bytes in the active segment (header included).
    pub(crate) seg_len: u64,
    /// Records in the active segment.
    pub(crate) seg_records: u64,
    pub(crate) next_lsn: u64,
    /// Logical end position (sum of frame lengths) of the last durable record;
    /// same coordinates as `State::trimmed_pos` / `State::admitted`.
    pub(crate) pos: u64,
    pub(crate) buf: Vec<u8>,
    pub(crate) exited: watch::Sender<bool>,
    /// A [`Msg::Roll`] arrived and is handled once the current batch is written.
    pub(crate) roll_requested: bool,
    /// Deletes dead segments off the write path; exits when the writer drops this.
    pub(crate) reaper: std::sync::mpsc::Sender<Vec<PathBuf>>,
}

impl Writer {
    pub(crate) fn run(mut self) {
        let mut batch: Vec<AppendReq> = Vec::new();
        while let Some(msg) = self.rx.blocking_recv() {
            let mut bytes = 0u64;
            self.take(msg, &mut batch, &mut bytes);
            while bytes < BATCH_MAX_BYTES && batch.len() < BATCH_MAX_RECORDS {
                match self.rx.try_recv() {
                    Ok(msg) => self.take(msg, &mut batch, &mut bytes),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                if std::mem::take(&mut self.roll_requested)
                    && self.seg_records > 0
                    && let Err(e) = self.roll()
                {
                    self.fail(e, batch);
                    return;
                }
                continue;
            }
            if let Err(e) = self.commit(&mut batch) {
                self.fail(e, batch);
                return;
            }
        }
        // The channel is closed and drained: close() or every handle dropped.
        self.finish();
    }

    fn take(&mut self, msg: Msg, batch: &mut Vec<AppendReq>, bytes: &mut u64) {
        match msg {
            Msg::Append(req) => {
                *bytes += req.frame_len;
                batch.push(req);
            }
            // Appends already queued are still delivered by recv and written.
            Msg::Close => self.rx.close(),
            Msg::Roll => self.roll_requested = true,
        }
    }

    /// Writes and syncs the batch, publishes it, answers every request.
    fn commit(&mut self, batch: &mut Vec<AppendReq>) -> Result<(), WalError> {
        self.buf.clear();
        let first_lsn = self.next_lsn;
        for req in batch.iter() {
            if self.seg_records > 0
                && self.seg_len + self.buf.len() as u64 >= self.shared.segment_target
            {
                self.write_buf()?;
                self.sync()?;
                self.roll()?;
            }
            if req.lsn != self.next_lsn {
                return Err(WalError::Corrupt {
                    path: self.seg_path.clone(),
                    offset: self.seg_len,
                    reason: format!(
                        "submitted lsn {} does not follow {} (bug: submission order broken)",
                        req.lsn,
                        self.next_lsn - 1
                    ),
                });
            }
            format::encode_frame(&mut self.buf, req.kind, self.next_lsn, &req.parts);
            self.next_lsn += 1;
            self.seg_records += 1;
        }
        self.write_buf()?;
        self.sync()?;

        {
            let mut st = self.shared.lock();
            for (lsn, req) in (first_lsn..).zip(batch.iter()) {
                self.pos += req.frame_len;
                st.index.push_back((lsn, self.pos));
            }
            st.last_lsn = self.next_lsn - 1;
        }
        for (i, req) in batch.drain(..).enumerate() {
            // The appender may have given up waiting; the record is durable
            // regardless.
            let _ = req.reply.send(Ok(Lsn(first_lsn + i as u64)));
        }
        if self.buf.capacity() as u64 > 2 * BATCH_MAX_BYTES {
            self.buf = Vec::with_capacity(BATCH_MAX_BYTES as usize);
        }
        Ok(())
    }

    fn write_buf(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(io_err("write", &self.seg_path))?;
        self.seg_len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WalError> {
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        if self.shared.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(WalError::io(
                "fdatasync",
                &self.seg_path,
                std::io::Error::other("injected fault"),
            ));
        }
        self.file
            .sync_data()
            .map_err(io_err("fdatasync", &self.seg_path))
    }

    /// Seals the active segment (already synced) and starts a new one.
    fn roll(&mut self) -> Result<(), WalError> {
        let (file, meta) =
            segment::create_segment(&self.shared.dir, self.next_lsn, self.next_lsn - 1)?;
        // create_segment syncs the header and the directory.
        self.shared.fsyncs.fetch_add(2, Ordering::Relaxed);
        tracing::debug!(segment = %meta.path.display(), "rolled wal segment");
        self.file = file;
        self.seg_path = meta.path.clone();
        self.seg_len = format::SEGMENT_HEADER_LEN as u64;
        self.seg_records = 0;
        let dead = {
            let mut st = self.shared.lock();
            st.segments.push(meta);
            take_dead(&mut st)
        };
        // Unlinking a large file can take long (synchronous discard on some file
        // systems), so the reaper thread does it and appends never wait on it. Failing
        // to delete an already-trimmed segment is not a durability problem (it is
        // logged, and recovery removes it later).
        if !dead.is_empty() && self.reaper.send(dead.clone()).is_err() {
            let _ = segment::remove_files(&dead);
        }
        Ok(())
    }

    /// Fail closed: this and every later append gets `err`.
    fn fail(mut self, err: WalError, batch: Vec<AppendReq>) {
        tracing::error!(error = %err, "wal writer failed; the wal is now closed for appends");
        {
            let mut st = self.shared.lock();
            st.failed = Some(err.clone());
            st.closing = true;
        }
        self.shared.space.notify_waiters();
        for req in batch {
            let _ = req.reply.send(Err(err.clone()));
        }
        self.rx.close();
        while let Some(msg) = self.rx.blocking_recv() {
            if let Msg::Append(req) = msg {
                let _ = req.reply.send(Err(err.clone()));
            }
        }
        self.finish();
    }

    fn finish(&mut self) {
        self.shared.lock().closing = true;
        self.shared.space.notify_waiters();
        self.exited.send_replace(true);
    }
}
