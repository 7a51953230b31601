//! Segment files: creation, directory syncing, removal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{WalError, io_err};
use crate::format::{self, SegmentHeader};

/// A segment file the WAL tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    /// Lsn of its first record (also its name).
    pub(crate) first_lsn: u64,
    /// Lsn of the last record of the segment before it (from the header).
    /// Every record of the *previous* segment is `<= prev_lsn`, which is what
    /// trimming uses to decide that a sealed segment can go.
    pub(crate) prev_lsn: u64,
    pub(crate) path: PathBuf,
}

/// Creates a new segment file with its header, makes it and its directory
/// entry durable, and returns it opened for appending.
pub(crate) fn create_segment(
    dir: &Path,
    first_lsn: u64,
    prev_lsn: u64,
) -> Result<(File, SegmentMeta), WalError> {
    let path = dir.join(format::segment_file_name(first_lsn));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err("create segment", &path))?;
    let header = format::encode_segment_header(SegmentHeader {
        first_lsn,
        prev_lsn,
    });
    file.write_all(&header)
        .map_err(io_err("write segment header", &path))?;
    file.sync_data().map_err(io_err("fdatasync", &path))?;
    sync_dir(dir)?;
    Ok((
        file,
        SegmentMeta {
            first_lsn,
            prev_lsn,
            path,
        },
    ))
}

/// fsyncs a directory so that entries created, renamed or removed in it are
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Removes files, ignoring ones already gone. Tries all of them and returns
/// the first error.
pub(crate) fn remove_files(paths: &[PathBuf]) -> Result<(), WalError> {
    let mut first_err = None;
    for p in paths {
        match fs::remove_file(p) {
            Ok(()) => tracing::debug!(path = %p.display(), "removed wal segment"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "failed to remove wal segment");
                first_err.get_or_insert(WalError::io("remove segment", p, e));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Lists segment files in `dir`, sorted by first lsn.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list directory", dir))? {
        let entry = entry.map_err(io_err("list directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(lsn) = format::parse_segment_file_name(name) else {
            if name.ends_with(format::SEGMENT_EXT) {
                tracing::warn!(file = %entry.path().display(), "ignoring file with a malformed wal segment name");
            }
            continue;
        };
        let ft = entry.file_type().map_err(io_err("stat", &entry.path()))?;
        if !ft.is_file() {
            tracing::warn!(file = %entry.path().display(), "ignoring non-file wal segment entry");
            continue;
        }
        out.push((lsn, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Writes the trim point as `trim.tmp` and renames it over `trim`.
///
/// Deliberately not fsynced: the trim file only filters records at recovery.
/// If a crash loses the latest version, recovery returns some records that
/// were already trimmed (at-least-once), never fewer than it should; lsn
/// uniqueness never depends on it. A torn trim file fails its checksum and is
/// ignored.
pub(crate) fn write_trim_file(dir: &Path, trimmed_through: u64) -> Result<(), WalError> {
    let tmp = dir.join(format::TRIM_TMP_FILE);
    let dst = dir.join(format::TRIM_FILE);
    fs::write(&tmp, format::encode_trim(trimmed_through)).map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &dst).map_err(io_err("rename", &tmp))?;
    Ok(())
}

/// Reads the persisted trim point: 0 if there is none or it is damaged.
pub(crate) fn read_trim_file(dir: &Path) -> Result<u64, WalError> {
    let path = dir.join(format::TRIM_FILE);
    match fs::read(&path) {
        Ok(data) => match format::decode_trim(&data) {
            Ok(v) => Ok(v),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "ignoring damaged wal trim file");
                Ok(0)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(WalError::io("read", &path, e)),
    }
}
