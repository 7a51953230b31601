//! The one error type of this crate, [`MetaError`].
//!
//! Variants are coarse enough for the broker to map each to one Kafka error code
//! (`AlreadyExists { kind: Topic }` → `TOPIC_ALREADY_EXISTS`, `InvalidTopicName` →
//! `INVALID_TOPIC_EXCEPTION`, …) and detailed enough in their `Display` text for an
//! operator to act on without reading code.

use std::path::PathBuf;

/// What kind of metadata entity an [`MetaError::AlreadyExists`] or
/// [`MetaError::NotFound`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    /// A topic (`topics/{name}`).
    Topic,
    /// A partition of an existing topic.
    Partition,
    /// A committed object record (`objects/{writer}/{seq}`).
    Object,
    /// A broker registration (`brokers/{id}`).
    Broker,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Topic => "topic",
            Entity::Partition => "partition",
            Entity::Object => "object record",
            Entity::Broker => "broker",
        })
    }
}

/// Errors from a [`crate::MetaStore`] or from the [`crate::Metadata`] model.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The backend (redb, etcd) failed; the operation may or may not have applied
    /// (see the retry rules on [`crate::MetaStore`]).
    #[error("metadata backend failed while {context}: {source}")]
    Backend {
        /// What the store was doing, e.g. "committing a transaction".
        context: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A file-system error on the embedded store's file.
    #[error("metadata store I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored value could not be decoded; names the key so the operator can inspect it.
    #[error("corrupt metadata at key {key:?}: {reason}")]
    Corrupt {
        /// Full key of the bad value.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The entity exists already (e.g. create of an existing topic).
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// Which kind of entity.
        kind: Entity,
        /// Its name (topic name, `topic/partition`, object sequence number).
        name: String,
    },
    /// The entity does not exist.
    #[error("{kind} {name:?} does not exist")]
    NotFound {
        /// Which kind of entity.
        kind: Entity,
        /// Its name.
        name: String,
    },
    /// A topic name Kafka would reject.
    #[error(
        "invalid topic name {name:?}: {reason} (names are 1 to 249 characters of [a-zA-Z0-9._-], not \".\" or \"..\")"
    )]
    InvalidTopicName {
        /// The rejected name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A partition count or index that is out of range.
    #[error("invalid partitions for topic {topic:?}: {reason}")]
    InvalidPartitions {
        /// The topic.
        topic: String,
        /// What was wrong.
        reason: String,
    },
    /// An argument outside its documented range (e.g. a non-positive producer-id count,
    /// or the same key twice in one transaction).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A compare-and-swap loop gave up after its bounded number of attempts, or a
    /// caller-supplied expected version no longer matches.
    #[error("metadata conflict: {0}; retry the operation")]
    Conflict(String),
    /// A fence compare supplied by the caller failed: another owner has taken over.
    #[error("fenced: the fence compare on key {key:?} failed, another writer owns this state")]
    Fenced {
        /// The key of the fence compare.
        key: String,
    },
    /// A value or transaction above the limits in [`crate::store`].
    #[error("metadata too large: {0}")]
    TooLarge(String),
    /// A transaction put a key with a lease that has expired, was revoked, or never
    /// existed (etcd: "requested lease not found"); nothing was applied. The session that
    /// owned the lease is gone: its lease-bound keys (broker registration, controller
    /// key) were deleted, and the holder must start a new session.
    #[error(
        "the metadata lease has expired or was revoked (requested lease not found); the session is lost and must be restarted"
    )]
    LeaseExpired,
}

impl MetaError {
    /// Wraps a backend error with what the store was doing.
    pub fn backend(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        MetaError::Backend {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// A decoding failure at `key`.
    pub fn corrupt(key: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        MetaError::Corrupt {
            key: key.into(),
            reason: reason.to_string(),
        }
    }
}
