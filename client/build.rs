//! Generates the agent protocol's client from the one proto the agent is
//! built from (`shared/proto`), with protox: no `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../shared/proto");
    let descriptors = protox::compile(["tenantconfig/v1/config.proto"], ["../shared/proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // Its Debug (hand-written beside the generated code) hides the value.
        .skip_debug(["tenantconfig.v1.GetSecretResponse"])
        .compile_fds(descriptors)?;
    Ok(())
}
