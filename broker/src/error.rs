//! Broker errors, and the one place where they become Kafka error codes.

use kafka_protocol::ResponseError;

use crate::batch::BatchError;

/// Everything a request can fail with inside the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("topic already exists")]
    TopicAlreadyExists,
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("leader epoch {requested} is older than the current epoch {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },
    #[error("leader epoch {requested} is newer than the current epoch {current}")]
    UnknownLeaderEpoch { requested: i32, current: i32 },
    #[error("producer sequence out of order: expected {expected}, got {got}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than the current epoch {current}")]
    InvalidProducerEpoch { got: i16, current: i16 },
    #[error("the write-ahead log failed: {0}")]
    Wal(#[from] cirrus_wal::WalError),
    #[error("object storage failed: {0}")]
    Storage(#[from] cirrus_storage::StorageError),
    #[error("metadata store failed: {0}")]
    Meta(cirrus_controller::MetaError),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("this broker does not own the partition (now)")]
    NotLeaderOrFollower,
    #[error("the partition has no live owner")]
    LeaderNotAvailable,
    #[error("request timed out")]
    Timeout,
}

impl From<cirrus_controller::MetaError> for BrokerError {
    fn from(e: cirrus_controller::MetaError) -> Self {
        use cirrus_controller::MetaError as M;
        match e {
            M::AlreadyExists {
                kind: cirrus_controller::Entity::Topic,
                ..
            } => BrokerError::TopicAlreadyExists,
            // This incarnation's session is gone: another broker may own the partition.
            M::LeaseExpired | M::Fenced { .. } => BrokerError::NotLeaderOrFollower,
            M::NotFound { .. } => BrokerError::UnknownTopicOrPartition,
            M::InvalidTopicName { .. } => BrokerError::InvalidTopic(e.to_string()),
            M::InvalidPartitions { .. } => BrokerError::InvalidPartitions(e.to_string()),
            other => BrokerError::Meta(other),
        }
    }
}

impl BrokerError {
    /// The Kafka error this maps to: the only place broker errors become wire codes.
    pub fn kafka(&self) -> ResponseError {
        use ResponseError as R;
        match self {
            BrokerError::UnknownTopicOrPartition => R::UnknownTopicOrPartition,
            BrokerError::TopicAlreadyExists => R::TopicAlreadyExists,
            BrokerError::InvalidTopic(_) => R::InvalidTopicException,
            BrokerError::InvalidPartitions(_) => R::InvalidPartitions,
            BrokerError::InvalidReplicationFactor(_) => R::InvalidReplicationFactor,
            BrokerError::InvalidConfig(_) => R::InvalidConfig,
            BrokerError::InvalidRequest(_) => R::InvalidRequest,
            BrokerError::Batch(b) => match b {
                BatchError::Corrupt | BatchError::CrcMismatch => R::CorruptMessage,
                BatchError::TooLarge { .. } => R::MessageTooLarge,
                BatchError::UnsupportedMagic(_) => R::UnsupportedForMessageFormat,
                BatchError::Invalid(_) => R::InvalidRecord,
            },
            BrokerError::OffsetOutOfRange { .. } => R::OffsetOutOfRange,
            BrokerError::FencedLeaderEpoch { .. } => R::FencedLeaderEpoch,
            BrokerError::UnknownLeaderEpoch { .. } => R::UnknownLeaderEpoch,
            BrokerError::OutOfOrderSequence { .. } => R::OutOfOrderSequenceNumber,
            BrokerError::InvalidProducerEpoch { .. } => R::InvalidProducerEpoch,
            BrokerError::Wal(_) => R::KafkaStorageError,
            // Retriable: the client backs off and tries again while the dependency recovers.
            BrokerError::Storage(_) | BrokerError::Meta(_) => R::KafkaStorageError,
            BrokerError::ShuttingDown | BrokerError::NotLeaderOrFollower => R::NotLeaderOrFollower,
            BrokerError::LeaderNotAvailable => R::LeaderNotAvailable,
            BrokerError::Timeout => R::RequestTimedOut,
        }
    }

    pub fn code(&self) -> i16 {
        self.kafka().code()
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
