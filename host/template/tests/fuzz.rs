//! Property tests of templates (issue #16): strings built from both dialects' syntax — tera
//! expressions and statements, the original's Go-template actions (translated to tera), pipes,
//! `index`, trim markers, paths with hyphens and indexes — compile or fail with an error, and
//! whatever compiles renders (or fails) without panicking, in bounded time and output.
//! `WF_FUZZ_CASES` sets the number of cases.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use wf_template::{Scope, Template, TemplateValue};

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("WF_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        max_shrink_iters: 256,
        // No regression files written into the source tree; a failure prints its input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn data() -> Map<String, Value> {
    json!({
        "name": "Ada",
        "count": 5,
        "ratio": 0.5,
        "flag": true,
        "nothing": null,
        "items": [1, "two", {"three": 3}],
        "nested": {"a": {"b": [10, 20]}},
        "steps": {"parse-request": {"body": {"id": 42}}, "fetch": {"status": 200}},
        "trigger": {"body": {"x": 1}},
    })
    .as_object()
    .cloned()
    .unwrap()
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        // Actions of both dialects.
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{{-".to_string()),
        Just("-}}".to_string()),
        Just("{%".to_string()),
        Just("%}".to_string()),
        Just("{#".to_string()),
        Just("#}".to_string()),
        Just(" if ".to_string()),
        Just(" else ".to_string()),
        Just(" end ".to_string()),
        Just(" endif ".to_string()),
        Just(" range ".to_string()),
        Just(" for x in items ".to_string()),
        Just(" endfor ".to_string()),
        Just(" with ".to_string()),
        Just(" set y = 1 ".to_string()),
        Just(" include \"x\" ".to_string()),
        Just(" macro m() ".to_string()),
        // Paths.
        Just(".name".to_string()),
        Just(" .count ".to_string()),
        Just(".steps.parse-request.body.id".to_string()),
        Just("steps.fetch.status".to_string()),
        Just(".items.1".to_string()),
        Just("items[0]".to_string()),
        Just(".nested.a.b".to_string()),
        Just(".missing.deep".to_string()),
        Just("$".to_string()),
        Just(".".to_string()),
        // Functions, filters and operators.
        Just(" | ".to_string()),
        Just("index .steps \"parse-request\" \"body\" ".to_string()),
        Just(" default \"d\" ".to_string()),
        Just(" | default(value=1)".to_string()),
        Just(" | lower".to_string()),
        Just(" | upper".to_string()),
        Just(" | json".to_string()),
        Just(" | json_encode()".to_string()),
        Just(" | length".to_string()),
        Just(" | round".to_string()),
        Just(" | int".to_string()),
        Just(" | split(pat=\",\")".to_string()),
        Just(" uuidv4 ".to_string()),
        Just(" now ".to_string()),
        Just(" eq .count 5 ".to_string()),
        Just(" not ".to_string()),
        Just(" and ".to_string()),
        Just(" or ".to_string()),
        Just(" + 1".to_string()),
        Just(" * 1000000".to_string()),
        Just(" / 0".to_string()),
        Just(" ~ ".to_string()),
        Just(" range(end=100000000) ".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("`".to_string()),
        Just("\\".to_string()),
        "[a-z]{1,6}".prop_map(|s| s),
        "\\PC{0,8}".prop_map(|s| s),
    ]
}

fn template_text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..24).prop_map(|parts| parts.concat())
}

/// A template's action as one of the common well-formed shapes, over odd parts.
fn action() -> impl Strategy<Value = String> {
    (template_text(), template_text()).prop_map(|(a, b)| format!("x {{{{ {a} }}}} y {{{{ {b} }}}}"))
}

fn render_all(text: &str) {
    let data = data();
    if let Ok(template) = Template::compile(text) {
        let started = std::time::Instant::now();
        if let Ok(value) = template.render(&Scope::of(&data)) {
            // `range` is capped: nothing renders huge output from a short template.
            assert!(value.to_string().len() < 4 << 20, "{text}");
        }
        let _ = template.render_string(&Scope::of(&data));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{text}"
        );
    }
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn arbitrary_text_compiles_or_fails_cleanly(text in "\\PC{0,200}") {
        render_all(&text);
    }

    #[test]
    fn template_shaped_text_never_panics(text in template_text()) {
        render_all(&text);
    }

    #[test]
    fn well_formed_actions_over_odd_parts_never_panic(text in action()) {
        render_all(&text);
    }

    #[test]
    fn a_compile_error_never_panics_at_render_of_values(texts in prop::collection::vec(template_text(), 0..4)) {
        let value = Value::Array(texts.into_iter().map(Value::String).collect());
        if let Ok(compiled) = TemplateValue::compile(&value) {
            let _ = compiled.render(&Scope::of(&data()));
        }
    }

    #[test]
    fn dotted_paths_look_up_without_panicking(path in "(\\.|\\[|\\]|[a-z]{1,4}|[0-9]{1,2}|-|\\PC){0,16}") {
        let data = data();
        let _ = Scope::of(&data).lookup(&path);
    }
}
