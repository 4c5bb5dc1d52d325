//! Build script: makes the `pyrs` binary (and its tests) find the exact libpython it
//! was linked against, without `LD_LIBRARY_PATH`, by embedding that library's folder
//! as an rpath. Without it the loader may pick a different system libpython whose
//! `sys.prefix` does not see the packages installed with the building `python3`'s pip.
fn main() {
    let config = pyo3_build_config::get();
    if let (Some(lib_dir), true) = (config.lib_dir(), config.shared()) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=PYRS_PYTHON_EXECUTABLE={exe}");
    }
    println!("cargo:rustc-env=PYRS_PYTHON_VERSION={}", config.version());
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
}
