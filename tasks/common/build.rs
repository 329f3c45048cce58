//! Generates the Rust types of `proto/taxi_trip.proto` (prost), compiling the schema with protox
//! (a protobuf compiler in Rust) so that the build needs no system `protoc`.

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = dir.join("taxi_trip.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = match protox::compile([&file], [&dir]) {
        Ok(set) => set,
        Err(err) => panic!("{}: {err:?}", file.display()),
    };
    if let Err(err) = prost_build::Config::new().compile_fds(descriptors) {
        panic!("generating the types of {}: {err}", file.display());
    }
}
