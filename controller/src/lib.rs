//! Cirrus metadata: the [`MetaStore`] trait (small, strongly consistent, etcd-shaped),
//! its single-node implementation [`EmbeddedMetaStore`], its cluster implementation
//! [`EtcdMetaStore`] and test implementation [`MemoryMetaStore`], and the [`Metadata`]
//! model (cluster, topics, object index, producer ids) built on it.
//!
//! This crate knows nothing of the Kafka wire protocol. Modules:
//!
//! - [`store`]: the trait, its transaction types, its contract and limits.
//! - [`embedded`], [`memory`], and `etcd` (cargo feature `etcd`): implementations.
//! - [`records`]: every persisted key and JSON value layout.
//! - [`metadata`]: the model and the rules for changing metadata, including the bound
//!   on live metadata size.
//! - [`conformance`]: the one test suite every [`MetaStore`] must pass.

pub mod embedded;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
pub mod metadata;
pub mod records;
pub mod store;

#[doc(hidden)]
pub mod conformance;

pub use embedded::EmbeddedMetaStore;
pub use error::{Entity, MetaError};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdMetaStore, EtcdOptions};
pub use memory::MemoryMetaStore;
pub use metadata::{Clock, IndexSnapshot, Metadata, SystemClock, validate_topic_name};
pub use records::{
    CheckpointRecord, ClusterRecord, ObjectRecord, PartitionRecord, ProducerRecord, RunRecord,
    TopicRecord,
};
pub use store::{Compare, KeyValue, MAX_TXN_OPS, MAX_VALUE_BYTES, MetaStore, Op, Txn};
