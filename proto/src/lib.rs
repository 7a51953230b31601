//! The internal and admin gRPC APIs of Cirrus.
//!
//! The single-node engine has no gRPC surface yet; the admin API (cluster status,
//! partition moves, drains) is defined here when cluster mode lands, so that the
//! broker and the controller share one generated definition.
