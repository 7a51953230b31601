//! The errors of the group coordinator, and the one place where they become Kafka codes.

use cirrus_controller::MetaError;
use kafka_protocol::ResponseError;

/// Why a group request failed. Each variant is exactly one Kafka error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("this broker is not the coordinator of the group (now)")]
    NotCoordinator,
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("the member id is not known to the group")]
    UnknownMemberId,
    #[error("the generation is not the group's current generation")]
    IllegalGeneration,
    #[error("the group is rebalancing; rejoin")]
    RebalanceInProgress,
    #[error("a member id is required to join; rejoin with the member id given")]
    MemberIdRequired,
    #[error("another member with the same group.instance.id has joined")]
    FencedInstanceId,
    #[error("the protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("the session timeout is outside the broker's allowed range")]
    InvalidSessionTimeout,
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("the group does not exist")]
    GroupIdNotFound,
    #[error("the group is not empty")]
    NonEmptyGroup,
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("the offset metadata is too large")]
    OffsetMetadataTooLarge,
    #[error("the committed offsets are too large to store")]
    InvalidCommitOffsetSize,
    #[error("invalid request")]
    InvalidRequest,
    #[error("the member epoch is fenced; abandon the partitions and rejoin")]
    FencedMemberEpoch,
    #[error("the member epoch is stale")]
    StaleMemberEpoch,
    #[error("the instance id is still used by another member")]
    UnreleasedInstanceId,
    #[error("the assignor is not supported")]
    UnsupportedAssignor,
    #[error("the regular expression is not valid")]
    InvalidRegularExpression,
    #[error("the group has reached its maximum size")]
    GroupMaxSizeReached,
}

impl GroupError {
    /// The Kafka error this maps to.
    pub fn kafka(self) -> ResponseError {
        use ResponseError as R;
        match self {
            GroupError::NotCoordinator => R::NotCoordinator,
            GroupError::CoordinatorNotAvailable => R::CoordinatorNotAvailable,
            GroupError::UnknownMemberId => R::UnknownMemberId,
            GroupError::IllegalGeneration => R::IllegalGeneration,
            GroupError::RebalanceInProgress => R::RebalanceInProgress,
            GroupError::MemberIdRequired => R::MemberIdRequired,
            GroupError::FencedInstanceId => R::FencedInstanceId,
            GroupError::InconsistentGroupProtocol => R::InconsistentGroupProtocol,
            GroupError::InvalidSessionTimeout => R::InvalidSessionTimeout,
            GroupError::InvalidGroupId => R::InvalidGroupId,
            GroupError::GroupIdNotFound => R::GroupIdNotFound,
            GroupError::NonEmptyGroup => R::NonEmptyGroup,
            GroupError::GroupSubscribedToTopic => R::GroupSubscribedToTopic,
            GroupError::UnknownTopicOrPartition => R::UnknownTopicOrPartition,
            GroupError::OffsetMetadataTooLarge => R::OffsetMetadataTooLarge,
            GroupError::InvalidCommitOffsetSize => R::InvalidCommitOffsetSize,
            GroupError::InvalidRequest => R::InvalidRequest,
            GroupError::FencedMemberEpoch => R::FencedMemberEpoch,
            GroupError::StaleMemberEpoch => R::StaleMemberEpoch,
            GroupError::UnreleasedInstanceId => R::UnreleasedInstanceId,
            GroupError::UnsupportedAssignor => R::UnsupportedAssignor,
            GroupError::InvalidRegularExpression => R::InvalidRegularExpression,
            GroupError::GroupMaxSizeReached => R::GroupMaxSizeReached,
        }
    }

    pub fn code(self) -> i16 {
        self.kafka().code()
    }

    /// A failed or timed-out metadata call of the coordinator. A fenced coordinator is
    /// no longer the coordinator; anything else is a retriable unavailability.
    pub fn from_meta(e: &MetaError) -> GroupError {
        match e {
            MetaError::Fenced { .. } | MetaError::LeaseExpired => GroupError::NotCoordinator,
            MetaError::TooLarge(_) => GroupError::InvalidCommitOffsetSize,
            MetaError::InvalidTopicName { .. } => GroupError::UnknownTopicOrPartition,
            MetaError::InvalidArgument(_) => GroupError::InvalidRequest,
            _ => GroupError::CoordinatorNotAvailable,
        }
    }
}

/// The code of an optional error (0 for none).
pub fn code(e: Option<GroupError>) -> i16 {
    e.map_or(0, GroupError::code)
}
