//! Build script: the `conn` target links the `pyrs` library, which links libpython
//! through pyo3. Embedding the folder of the exact libpython pyo3 linked against as
//! an rpath lets `cargo fuzz run conn` start without `LD_LIBRARY_PATH` (the same
//! reason as the root build.rs).
fn main() {
    let config = pyo3_build_config::get();
    if let (Some(lib_dir), true) = (config.lib_dir(), config.shared()) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
}
