//! Compiles the etcd v3 protobuf definitions in `proto/` (the client API and the Lock and
//! Election services) into Rust (prost messages and tonic client and server stubs). protoc
//! comes from the `protoc-bin-vendored` crate, so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Keys and values are shared, not copied, when a request moves into the store.
    config.bytes(["."]);
    tonic_prost_build::configure().build_client(true).build_server(true).compile_with_config(
        config,
        &[
            "proto/etcdserverpb/rpc.proto",
            "proto/mvccpb/kv.proto",
            "proto/authpb/auth.proto",
            "proto/v3lockpb/v3lock.proto",
            "proto/v3electionpb/v3election.proto",
        ],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
