//! Golden tests for diagnostics: `tests/diagnostics/<case>.yaml` must produce exactly
//! `tests/diagnostics/<case>.err`. Run with `BLESS=1` to rewrite the expectations.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use wf_host::commands::validate_with;

#[test]
fn diagnostics_match_their_goldens() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Paths in messages are as given on the command line: relative to the repository root.
    std::env::set_current_dir(&root).unwrap();
    let registry = wf_host::registry().unwrap();
    let vars: HashMap<String, String> = HashMap::new();
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir("tests/diagnostics")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| Path::new("tests/diagnostics").join(p.file_name().unwrap()))
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "found {} cases", cases.len());
    let mut mismatches = Vec::new();
    for case in cases {
        let (code, output) = validate_with(std::slice::from_ref(&case), &registry, false, &vars);
        let actual = format!("exit code: {code}\n\n{output}");
        let golden = case.with_extension("err");
        if bless {
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!("--- {}\n{actual}", golden.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "diagnostics differ (BLESS=1 to update):\n{}",
        mismatches.join("\n")
    );
}
