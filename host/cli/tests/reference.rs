//! `docs/modules/` must match the registry: every type, its description and its config keys.
//! Run with `BLESS=1` to rewrite the pages.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::path::Path;

#[test]
fn the_type_reference_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/modules");
    let registry = wf_host::registry().unwrap();
    let pages = wf_host::commands::reference_pages(&registry);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in &pages {
            std::fs::write(dir.join(file), text).unwrap();
        }
        return;
    }
    for (file, text) in &pages {
        let written = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            written == *text,
            "docs/modules/{file} is out of date: run `BLESS=1 cargo test -p wf-host --test reference`"
        );
    }
    // Every type is in it.
    let all: String = pages.iter().map(|(_, t)| t.as_str()).collect();
    for t in registry.types() {
        assert!(
            all.contains(&format!("### `{}`", t.name)),
            "{} is missing",
            t.name
        );
    }
}
