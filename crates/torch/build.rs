// Embeds libtorch's library directory as an rpath, so the binary, tests, benches and examples
// of this package run without LD_LIBRARY_PATH. Link arguments apply to this package's targets
// only, never to dependents.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default() != "linux" {
        return;
    }
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            // Force a NEEDED entry on libtorch.so: it pulls in libtorch_cuda.so, so CUDA is
            // registered and Cuda::is_available() works on GPU machines.
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch");
        }
        Err(_) => println!(
            "cargo:warning=DEP_TCH_LIBTORCH_LIB not set; binaries will need LD_LIBRARY_PATH"
        ),
    }
}
