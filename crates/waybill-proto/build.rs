//! Compiles `proto/waybill/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so building needs no system `protoc`.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "waybill/v1/events.proto",
    "waybill/v1/subscriptions.proto",
    "waybill/v1/deliveries.proto",
    "waybill/v1/tenants.proto",
    "waybill/v1/operations.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = FILES.iter().map(|f| root.join(f)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
