//! The error type of `cirrus-storage`.
//!
//! One enum for the crate. `Display` messages are written for an operator: they name the
//! object key, URL or stream involved and say what was expected. Backend errors keep the
//! underlying `object_store::Error` as their `source`.

use std::time::Duration;

use crate::StreamId;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The object does not exist.
    #[error("object {key} not found")]
    NotFound {
        /// Key of the missing object.
        key: String,
    },

    /// The object store backend failed (after its own retries, for S3).
    #[error("object store {op} of {key} failed: {source}")]
    Backend {
        /// The operation attempted (`put`, `get`, `list`, ...).
        op: &'static str,
        /// The key (or URL, for failures opening a store) involved.
        key: String,
        /// The backend error.
        #[source]
        source: object_store::Error,
    },

    /// A request did not complete within `StorageOptions::request_timeout`, on every attempt.
    #[error("object store {op} of {key} timed out after {after:?} on each of {attempts} attempts")]
    Timeout {
        /// The operation attempted.
        op: &'static str,
        /// The key involved.
        key: String,
        /// The per-attempt timeout.
        after: Duration,
        /// How many attempts were made.
        attempts: u32,
    },

    /// The bytes of a data object are not a valid object (bad magic, checksum, layout).
    #[error("corrupt data object{}: {reason}", key_suffix(key))]
    Corrupt {
        /// Key of the object, when known.
        key: Option<String>,
        /// What is wrong.
        reason: String,
    },

    /// A data object written by a newer (or unknown) format version.
    #[error(
        "data object{} has format version {version}, but this build only reads version {supported}",
        key_suffix(key)
    )]
    UnsupportedVersion {
        /// Key of the object, when known.
        key: Option<String>,
        /// The version found in the trailer.
        version: u16,
        /// The version this build reads.
        supported: u16,
    },

    /// A ranged read returned fewer or more bytes than asked for.
    #[error("object {key}: asked for {expected} bytes at position {position}, got {got}")]
    ShortRead {
        /// Key of the object.
        key: String,
        /// Start of the requested range.
        position: u64,
        /// Requested length.
        expected: u64,
        /// Bytes actually returned.
        got: u64,
    },

    /// A requested range does not fit in a u64.
    #[error("object {key}: range of {length} bytes at position {position} overflows")]
    InvalidRange {
        /// Key of the object.
        key: String,
        /// Start of the requested range.
        position: u64,
        /// Requested length.
        length: u64,
    },

    /// A chunk pushed into an `ObjectBuilder` does not follow the previous chunk of its stream.
    #[error(
        "stream {stream}: chunk starting at offset {first_offset} does not follow the previous \
         chunk ending at offset {previous_last_offset}; chunks of one stream must be contiguous \
         and in offset order"
    )]
    NonContiguous {
        /// The stream.
        stream: StreamId,
        /// Last offset of the stream's previous chunk.
        previous_last_offset: i64,
        /// First offset of the rejected chunk.
        first_offset: i64,
    },

    /// A chunk whose offset range is reversed.
    #[error(
        "stream {stream}: chunk offset range {first_offset}..={last_offset} is reversed \
         (first offset must not exceed last offset)"
    )]
    InvalidChunk {
        /// The stream.
        stream: StreamId,
        /// First offset of the rejected chunk.
        first_offset: i64,
        /// Last offset of the rejected chunk.
        last_offset: i64,
    },

    /// An `ObjectBuilder` already holds the maximum number of streams.
    #[error(
        "data object already holds {max} streams, the most one object may index; seal it and start another"
    )]
    TooManyRuns {
        /// The limit.
        max: usize,
    },

    /// An object store URL that cannot be used.
    #[error("invalid object store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The root directory of a `file://` store could not be created.
    #[error("cannot create directory {path} for the local object store: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A latency-injection setting (`LatencyProfile::parse`) that cannot be used.
    #[error(
        "invalid latency profile {setting:?}: {part:?} {reason}; expected none, s3-standard, \
         fixed:<duration> or lognormal:<p50>:<p99>, optionally followed by ,per-mib:<duration> \
         and/or ,errors:<fraction 0..1> (durations like 20ms, 1.5s, 500us)"
    )]
    InvalidLatencyProfile {
        /// The whole setting as given.
        setting: String,
        /// The part of it that is wrong.
        part: String,
        /// What is wrong with that part.
        reason: String,
    },
}

fn key_suffix(key: &Option<String>) -> String {
    match key {
        Some(k) => format!(" {k}"),
        None => String::new(),
    }
}

impl StorageError {
    /// Maps an `object_store` error for `op` on `key`: `NotFound` becomes
    /// [`StorageError::NotFound`], everything else [`StorageError::Backend`].
    pub(crate) fn from_store(op: &'static str, key: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound {
                key: key.to_owned(),
            },
            source => StorageError::Backend {
                op,
                key: key.to_owned(),
                source,
            },
        }
    }

    /// Attaches an object key to format errors that were decoded without one.
    pub(crate) fn with_key(self, k: &str) -> Self {
        match self {
            StorageError::Corrupt { key: None, reason } => StorageError::Corrupt {
                key: Some(k.to_owned()),
                reason,
            },
            StorageError::UnsupportedVersion {
                key: None,
                version,
                supported,
            } => StorageError::UnsupportedVersion {
                key: Some(k.to_owned()),
                version,
                supported,
            },
            other => other,
        }
    }
}
