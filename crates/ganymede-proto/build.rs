//! Generates the gRPC code from `proto/` with a vendored protoc, so that no machine needs
//! protoc installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: a build script is single-threaded here, so nothing reads the environment
    // concurrently; PROTOC is how prost-build is told which protoc to run.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("PROTOC", protoc)
    };
    // Read at run time, not baked in with env!(): the compiled build script may be reused
    // from another checkout that shares the target directory.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        root.join("ganymede/raft/v1/raft.proto"),
        root.join("ganymede/edge/v1/edge.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    tonic_prost_build::configure().compile_protos(&files, &[root])?;
    Ok(())
}
