//! `docs/modules/` must match the registry: every type, its description and its config keys.
//! Run with `BLESS=1` to rewrite the pages.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::path::Path;

#[test]
fn the_type_reference_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/modules");
    let registry = wf_host::registry().unwrap();
    let pages = wf_host::commands::reference_pages(&registry, &dir);
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

/// Variables the examples read, with stand-in values.
fn example_vars() -> std::collections::HashMap<String, String> {
    [
        ("JWT_SECRET", "an-example-secret-of-at-least-32-bytes"),
        ("API_KEY", "example-api-key-0123456789abcdef"),
        ("GCS_ACCESS_TOKEN", "ya29.example"),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "example-secret-key"),
        ("BILLING_TOKEN", "example-token"),
        ("WEBHOOK_SECRET", "example-webhook-secret"),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/x",
        ),
        ("VAULT_TOKEN", "example-vault-token"),
        ("DATABASE_URL", "postgres://app@127.0.0.1:5432/app"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Every module type has a hand-written example in `docs/modules/examples/<type>.yaml`, which
/// declares a module of that type and validates (as `wf-host validate` does).
#[test]
fn every_module_type_has_an_example_that_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/modules/examples");
    let registry = wf_host::registry().unwrap();
    let mut problems = Vec::new();
    for t in registry.types() {
        if t.kind != wf_engine::Kind::Module {
            continue;
        }
        let file = dir.join(format!("{}.yaml", t.name));
        let Ok(text) = std::fs::read_to_string(&file) else {
            problems.push(format!("{}: no example at {}", t.name, file.display()));
            continue;
        };
        if !text.contains(&format!("type: {}\n", t.name))
            && !text.contains(&format!("type: {},", t.name))
            && !text.contains(&format!("type: {}}}", t.name))
        {
            problems.push(format!(
                "{}: the example declares no module of the type",
                t.name
            ));
        }
        let (code, out) = wf_host::commands::validate_with(
            std::slice::from_ref(&file),
            &registry,
            false,
            &example_vars(),
        );
        if code != 0 {
            problems.push(format!("{}:\n{out}", t.name));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
