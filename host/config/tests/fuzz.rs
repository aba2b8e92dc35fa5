//! Property tests of the configuration loader (issue #16): arbitrary text and YAML-shaped text
//! built from the loader's own syntax — `${…}` references with defaults, providers, escapes
//! and secrets, imports that chain and cycle — never panic, and every diagnostic is located
//! and bounded. `WF_FUZZ_CASES` sets the number of cases (CI runs the default).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::collections::HashMap;

use proptest::prelude::*;
use wf_config::expand::expand;
use wf_config::{load_files, load_str, pointer_to_path};

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("WF_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // Shrinking a failure is worth a few seconds, not minutes.
        max_shrink_iters: 256,
        // No regression files written into the source tree; a failure prints its input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn vars() -> HashMap<String, String> {
    [
        ("HOST", "127.0.0.1"),
        ("PORT", "8080"),
        ("EMPTY", ""),
        ("DOLLAR", "${PORT}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Pieces of the loader's syntax, for strings that reach its interesting paths.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("${".to_string()),
        Just("}".to_string()),
        Just("$$".to_string()),
        Just("$${PORT}".to_string()),
        Just("${PORT}".to_string()),
        Just("${MISSING}".to_string()),
        Just("${PORT:-9}".to_string()),
        Just("${MISSING:-}".to_string()),
        Just("${env:HOST}".to_string()),
        Just("${vault:a/b#c}".to_string()),
        Just("${secret:x}".to_string()),
        Just("${secret:m:k}".to_string()),
        Just("${nope:x}".to_string()),
        Just("${${PORT}}".to_string()),
        Just("${DOLLAR}".to_string()),
        Just(":-".to_string()),
        Just("\n".to_string()),
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just("  ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("#".to_string()),
        Just("[".to_string()),
        Just("{".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("<<: *a".to_string()),
        Just("!!binary ".to_string()),
        Just("modules:".to_string()),
        Just("name: web".to_string()),
        Just("type: http.server".to_string()),
        Just("config:".to_string()),
        Just("imports:".to_string()),
        Just("pipelines:".to_string()),
        Just("workflows:".to_string()),
        "[a-z]{1,8}".prop_map(|s| s),
        "\\PC{0,12}".prop_map(|s| s),
    ]
}

fn shaped_text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..60).prop_map(|parts| parts.concat())
}

/// A plausible app whose values are drawn from the fragments.
fn app_text() -> impl Strategy<Value = String> {
    (shaped_text(), shaped_text(), shaped_text(), shaped_text()).prop_map(|(a, b, c, d)| {
        format!(
            "modules:\n  - name: \"{}\"\n    type: http.server\n    config:\n      address: \"{}\"\n      readTimeout: {}\npipelines:\n  p:\n    steps:\n      - {{name: s, type: step.set, config: {{values: {{x: \"{}\"}}}}}}\n",
            a.escape_default(),
            b.escape_default(),
            c.replace('\n', " "),
            d.escape_default()
        )
    })
}

fn check_diagnostics(loaded: &wf_config::Loaded) {
    for d in loaded.diagnostics.iter() {
        let rendered = d.render(&loaded.config.sources);
        // Quoted lines and messages are bounded whatever the input.
        assert!(rendered.len() < 16 * 1024, "{} bytes", rendered.len());
        let json = d.to_json(&loaded.config.sources);
        assert!(json["message"].is_string());
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn expansion_never_panics_and_leaves_plain_text_alone(text in shaped_text()) {
        let vars = vars();
        match expand(&text, &vars) {
            None => prop_assert!(!text.contains("${"), "{}", text),
            Some(Ok(_)) => {}
            Some(Err(errors)) => prop_assert!(!errors.is_empty()),
        }
    }

    #[test]
    fn arbitrary_text_loads_without_panicking(text in "\\PC{0,400}") {
        let loaded = load_str("app.yaml", &text, &vars());
        check_diagnostics(&loaded);
    }

    #[test]
    fn yaml_shaped_text_loads_without_panicking(text in shaped_text()) {
        let loaded = load_str("app.yaml", &text, &vars());
        check_diagnostics(&loaded);
    }

    #[test]
    fn apps_with_odd_values_load_with_located_errors(text in app_text()) {
        let loaded = load_str("app.yaml", &text, &vars());
        check_diagnostics(&loaded);
        for d in loaded.diagnostics.iter() {
            prop_assert!(d.location.is_some(), "{d:?}");
        }
    }

    #[test]
    fn pointers_read_as_paths_without_panicking(pointer in "(/(\\PC{0,6}|~0|~1|~|[0-9]{1,3})){0,8}") {
        let path = pointer_to_path(&pointer);
        prop_assert!(!path.is_empty());
    }
}

proptest! {
    #![proptest_config(cases(64))]

    /// Three files importing each other in any pattern, with any content after the imports:
    /// cycles and bad files are diagnostics, never a hang or a panic.
    #[test]
    fn import_graphs_load_without_panicking(
        edges in prop::collection::vec((0usize..3, 0usize..3), 0..6),
        bodies in prop::collection::vec(shaped_text(), 3),
    ) {
        static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wf-config-fuzz-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, body) in bodies.iter().enumerate() {
            let imports: Vec<String> = edges
                .iter()
                .filter(|(from, _)| *from == i)
                .map(|(_, to)| format!("f{to}.yaml"))
                .collect();
            let text = format!("imports: [{}]\n{body}", imports.join(", "));
            std::fs::write(dir.join(format!("f{i}.yaml")), text).unwrap();
        }
        let loaded = load_files(&[dir.join("f0.yaml")], &vars());
        check_diagnostics(&loaded);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
