//! The gRPC APIs of Cirrus, generated from `proto/` at build time (tonic + prost).
//!
//! Owns the wire contract of the Admin service (`proto/cirrus/admin/v1/admin.proto`,
//! package `cirrus.admin.v1`): the broker implements [`admin::v1::admin_server::Admin`],
//! `cirrus admin` uses [`admin::v1::admin_client::AdminClient`]. Invariants of the
//! contract (see the .proto): broker ids are `i32 >= 0` with `-1` for "none", unknown
//! high watermarks are `-1`, and a long operation's stream ends with a `Progress` whose
//! `finished` is true when the operation completed. Fields are only ever added, never
//! renumbered, so older clients keep working.
//!
//! The build uses the `protoc` shipped by `protoc-bin-vendored`; no system protoc is needed.

/// The Admin API.
pub mod admin {
    /// Version 1 of the Admin API (`cirrus.admin.v1`).
    pub mod v1 {
        tonic::include_proto!("cirrus.admin.v1");
    }
}
