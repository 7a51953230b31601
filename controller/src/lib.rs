//! Cirrus metadata: the [`MetaStore`] trait (small, strongly consistent, etcd-shaped,
//! with leases), its single-node implementation [`EmbeddedMetaStore`], its cluster
//! implementation [`EtcdMetaStore`] and test implementation [`MemoryMetaStore`], the
//! [`Metadata`] model (cluster, topics, object index, producer ids, brokers,
//! ownership, consumer groups) built on it, and the cluster controller.
//!
//! This crate knows nothing of the Kafka wire protocol. Modules:
//!
//! - [`store`]: the trait, its transaction types, its contract and limits.
//! - [`embedded`], [`memory`], and `etcd` (cargo feature `etcd`): implementations.
//! - [`records`]: every persisted key and JSON value layout.
//! - [`metadata`]: the model and the rules for changing metadata, including the bound
//!   on live metadata size; [`cluster`]: its cluster part (brokers, controller key,
//!   owners, drains) and the full size bound; [`groups`]: durable consumer-group
//!   state (group records, committed offsets).
//! - [`session`]: a lease kept alive in the background, and whether it is still held.
//! - [`reconcile`]: the pure placement / failover / drain / rebalance rules.
//! - [`leader`]: the controller election and loop.
//! - [`autoscale`]: the recommended broker count from measured load.
//! - [`conformance`]: the one test suite every [`MetaStore`] must pass.
//!
//! The protocol is described in `docs/0006-cluster-metadata.md`.

pub mod autoscale;
pub mod cluster;
pub mod embedded;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod groups;
pub mod leader;
mod lease;
pub mod memory;
pub mod metadata;
pub mod reconcile;
pub mod records;
pub mod session;
pub mod store;

#[doc(hidden)]
pub mod conformance;

pub use autoscale::{AutoscaleTargets, Recommendation, recommend};
pub use cluster::OwnerChange;
pub use embedded::EmbeddedMetaStore;
pub use error::{Entity, MetaError};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdMetaStore, EtcdOptions};
pub use leader::{ControllerConfig, ControllerStats, read_view, run_controller};
pub use memory::MemoryMetaStore;
pub use metadata::{Clock, IndexSnapshot, Metadata, SystemClock, WriterIndex, validate_topic_name};
pub use reconcile::{ClusterView, Policy, drain_plan, place, rebalance_plan, reconcile};
pub use records::{
    BrokerLoad, BrokerRecord, ChangesRecord, CheckpointRecord, ClusterRecord, CommittedOffset,
    ControllerRecord, DrainRecord, GroupRecord, ObjectRecord, OffsetsRecord, OwnerRecord,
    PartitionRate, PartitionRecord, ProducerRecord, RunRecord, TopicRecord,
};
pub use session::Session;
pub use store::{Compare, KeyValue, LeaseId, MAX_TXN_OPS, MAX_VALUE_BYTES, MetaStore, Op, Txn};
