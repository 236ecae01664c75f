//! Compile containerd's snapshots API from `proto/` with protox (pure Rust,
//! no system protoc) and generate the tonic client and server.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let proto = manifest.parent().unwrap().parent().unwrap().join("proto");
    let files = [proto.join("containerd/services/snapshots/v1/snapshots.proto")];
    let fds = protox::compile(files, [&proto]).expect("compile proto/");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generate gRPC code");
    println!("cargo:rerun-if-changed={}", proto.display());
}
