//! Cirrus object storage: the data object format and the object-store access layer.
//!
//! This crate knows nothing of Kafka. A partition is an opaque [`StreamId`]; its data is
//! opaque bytes with an offset range and a max timestamp.
//!
//! - [`format`] owns the byte layout of a data object (`[runs][footer][trailer]`):
//!   [`ObjectBuilder`] writes it, [`decode_index`] reads the footer back.
//! - [`storage`] owns every request to the bucket: [`ObjectStorage`] puts whole objects
//!   (single PUT or multipart), does ranged GETs and footer reads, with a per-request
//!   timeout and retries of timed-out requests.
//! - [`instrumented`] owns request accounting: [`InstrumentedStore`] wraps a store and
//!   counts requests by kind, bytes, errors and latency, and prices them
//!   ([`RequestCounts`]).
//! - [`latency`] owns latency and fault injection: [`LatencyStore`] delays requests and
//!   fails some, following a [`LatencyProfile`]. The broker stacks the wrappers as
//!   `Instrumented(Latency(S3))`, so injected failures are counted as errors.
//! - [`open`] turns a URL (`file://`, `memory://`, `s3://`) into an `ObjectStore`.
//! - [`error`] is the one error type of the crate, [`StorageError`].

pub mod error;
pub mod format;
pub mod instrumented;
pub mod latency;
pub mod open;
pub mod storage;

pub use error::StorageError;
pub use format::{
    EncodedObject, FORMAT_VERSION, MAGIC, ObjectBuilder, RunEntry, TRAILER_LEN, decode_index,
};
pub use instrumented::{InstrumentedStore, RequestCounter, RequestCounts};
pub use latency::{Distribution, LatencyProfile, LatencyStore};
pub use object_store::{ObjectMeta, ObjectStore, path::Path};
pub use open::{S3Options, open_object_store};
pub use storage::{ObjectStorage, StorageOptions};

/// Opaque identifier of one stream (a Kafka partition, to the broker).
pub type StreamId = u64;
