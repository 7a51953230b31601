//! Cirrus broker: the Kafka protocol gateway over the WAL, object storage and the
//! metadata store, and the `cirrus` binary's start-up and shutdown.
//!
//! Request path: [`server`] reads frames and dispatches to [`handlers`]; produce goes
//! through [`log::LogManager::append_start`] (offsets, WAL, uploader) and
//! [`log::LogManager::append_finish`] (durability); fetch reads the in-memory tail of a
//! [`partition::Partition`] or a committed run through [`read_cache`]. Consumer groups
//! (coordinator, offsets) are in [`groups`].

pub mod admin_cli;
pub mod admin_service;
pub mod batch;
pub mod cleaner;
pub mod cluster;
pub mod config;
pub mod error;
pub mod groups;
pub mod handlers;
pub mod http;
pub mod lag;
pub mod lifecycle;
pub mod load;
pub mod log;
pub mod metrics;
pub mod partition;
pub mod read_cache;
pub mod runtime;
pub mod server;
pub mod topic_config;
pub mod uploader;
