//! Generates the prost types for `proto/messages.proto` with protox, a pure-Rust protobuf
//! compiler, so building the crate never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/messages.proto");
    let descriptors = protox::compile(["proto/messages.proto"], ["proto"])?;
    prost_build::Config::new()
        // `data` fields decode as slices of the input buffer instead of fresh Vec<u8>s.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
