//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the
//! same checks the fuzz targets run, on stable, so the corpus guards the parser in
//! every `cargo test`. The `conn` corpus needs the `pyrs` crate (and libpython) and
//! is replayed only by `cargo fuzz run conn` (see fuzz/README.md).

mod fuzz_checks;

use std::path::PathBuf;

/// Runs `check` on every file of one target's corpus; returns how many there were.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            eprintln!("corpus file {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files.len()
}

#[test]
fn parse_request_corpus() {
    replay("parse_request", fuzz_checks::check_parse_request);
}

#[test]
fn split_invariance_corpus() {
    replay("split_invariance", fuzz_checks::check_split_invariance);
}

#[test]
fn chunked_body_corpus() {
    replay("chunked_body", fuzz_checks::check_chunked);
}
