//! Generates the agent protocol from `proto/` with protox (pure Rust, so no
//! `protoc` is needed on the build machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["tenantconfig/v1/config.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Its Debug (hand-written beside the generated code) hides the value.
        .skip_debug(["tenantconfig.v1.GetSecretResponse"])
        .compile_fds(descriptors)?;
    Ok(())
}
