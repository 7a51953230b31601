//! Generates the Admin API (messages, client and server) from `proto/` with the `protoc`
//! that `protoc-bin-vendored` ships, so that no system protoc is needed. On a platform the
//! vendored crate has no binary for, prost-build's own lookup applies (`PROTOC`, then PATH).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/cirrus/admin/v1/admin.proto";
    println!("cargo:rerun-if-changed=proto");

    let mut config = tonic_prost_build::Config::new();
    match protoc_bin_vendored::protoc_bin_path() {
        Ok(protoc) => {
            config.protoc_executable(protoc);
        }
        Err(e) => println!("cargo:warning=no vendored protoc ({e}); using PROTOC or PATH"),
    }
    // Maps as BTreeMap: deterministic iteration, so output and tests are stable.
    config.btree_map(["."]);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .compile_with_config(config, &[PathBuf::from(PROTO)], &[PathBuf::from("proto")])?;
    Ok(())
}
