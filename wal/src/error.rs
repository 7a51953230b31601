use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors returned by the WAL.
///
/// The type is `Clone` because one writer failure is reported to every
/// pending and later append (the IO error itself is shared through an `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An operating-system IO error. Once the writer hits one, the WAL fails
    /// closed: every pending and later append returns a clone of this error.
    #[error("wal io error while trying to {op} {}: {source}", path.display())]
    Io {
        /// What the WAL was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Damage that recovery cannot repair by truncating the tail (e.g. a
    /// corrupt header of a segment that is not the last one, or a segment
    /// missing from the middle of the log). Nothing was modified on disk.
    #[error("wal segment {} is corrupt at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged segment file.
        path: PathBuf,
        /// Byte offset of the damage within the file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A segment written by an unknown (newer) format version. Nothing was
    /// modified on disk.
    #[error("wal segment {} has unsupported format version {version} (flags {flags:#06x})", path.display())]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// Its format version.
        version: u16,
        /// Its flags field.
        flags: u16,
    },
    /// The WAL was closed (or its writer is gone).
    #[error("wal is closed")]
    Closed,
    /// The record payload exceeds [`MAX_RECORD_PAYLOAD`](crate::MAX_RECORD_PAYLOAD).
    #[error("wal record payload of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Payload length of the rejected record.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// [`WalOptions`](crate::WalOptions) are unusable.
    #[error("invalid wal options: {0}")]
    InvalidOptions(String),
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        WalError::Io {
            op,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }
}

/// `map_err` helper: `.map_err(io_err("read", &path))`.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |e| WalError::io(op, path, e)
}
