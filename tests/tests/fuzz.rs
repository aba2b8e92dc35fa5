//! Property tests across the engine (issue #16): whole configurations through the validator,
//! cron expressions, integration transforms, query strings and request bodies, and the
//! component upload path — arbitrary input never panics, and bytes that are not a valid
//! component never change the component registry. `WF_FUZZ_CASES` sets the number of cases
//! (`WF_FUZZ_WASM_CASES` for the upload path, whose cases each compile a component).

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn cases(default: u32) -> ProptestConfig {
    cases_from("WF_FUZZ_CASES", default)
}

fn cases_from(var: &str, default: u32) -> ProptestConfig {
    let cases = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        max_shrink_iters: 128,
        // No regression files written into the source tree; a failure prints its input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn registry() -> &'static wf_engine::Registry {
    static REGISTRY: std::sync::OnceLock<wf_engine::Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| wf_host::registry().unwrap())
}

/// Module and step entries of real types with values drawn from odd ones: every type's
/// checks see strings where numbers go, empty names, references to nothing, huge numbers.
fn module_entry() -> impl Strategy<Value = String> {
    let types = registry()
        .types()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect::<Vec<_>>();
    (
        prop::sample::select(types),
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "address",
                    "router",
                    "server",
                    "broker",
                    "topic",
                    "dsn",
                    "path",
                    "url",
                    "secret",
                    "secretKey",
                    "timeout",
                    "maxBytes",
                    "rootDir",
                    "prefix",
                    "dir",
                    "schedule",
                    "cron",
                    "handler",
                    "database",
                    "driver",
                    "table",
                    "key",
                ]),
                odd_value(),
            ),
            0..4,
        ),
    )
        .prop_map(|(ty, config)| {
            let config: Vec<String> = config
                .into_iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            format!(
                "  - {{name: m{}, type: {ty}, config: {{{}}}}}\n",
                ty.len(),
                config.join(", ")
            )
        })
}

fn odd_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1e309".to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("\":0\"".to_string()),
        Just("\"127.0.0.1:0\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"99999h\"".to_string()),
        Just("\"* * * * *\"".to_string()),
        Just("\"../../etc/passwd\"".to_string()),
        Just("\"{{ .x }}\"".to_string()),
        Just("\"${secret:x}\"".to_string()),
        Just("\"http://[::1]:0/\"".to_string()),
        "\"[a-z]{0,8}\"".prop_map(|s| s),
    ]
}

fn app() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(module_entry(), 0..6),
        prop::collection::vec(odd_value(), 0..3),
    )
        .prop_map(|(modules, steps)| {
            let steps: Vec<String> = steps
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    format!(
                        "      - {{name: s{i}, type: step.set, config: {{values: {{x: {v}}}}}}}\n"
                    )
                })
                .collect();
            format!(
                "modules:\n{}pipelines:\n  p:\n    steps:\n{}",
                modules.concat(),
                if steps.is_empty() {
                    "      []\n".to_string()
                } else {
                    steps.concat()
                }
            )
        })
}

proptest! {
    #![proptest_config(cases(128))]

    /// The validator and, when it passes, the build: every type's checks on odd values.
    #[test]
    fn odd_configurations_validate_and_build_without_panicking(text in app()) {
        let loaded = wf_config::load_str("app.yaml", &text, &wf_tests::example_vars());
        match wf_engine::validate(loaded, registry()) {
            Ok(validated) => {
                let _ = wf_engine::build(&validated, registry());
            }
            Err(invalid) => {
                for d in invalid.diagnostics.iter() {
                    let _ = d.render(&invalid.config.sources);
                }
            }
        }
    }

    #[test]
    fn cron_expressions_parse_or_fail_cleanly(
        fields in prop::collection::vec("(\\*|[0-9]{1,3}|[0-9]{1,2}-[0-9]{1,2}|\\*/[0-9]{1,3}|[A-Z]{3}|L|W|#|\\?|,|\\PC{0,3})", 0..8),
        timezone in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/St_Johns", "Nowhere/Else", ""]),
    ) {
        let pattern = fields.join(" ");
        if let Ok(schedule) = wf_scheduler::cron::Schedule::parse(&pattern, timezone) {
            let now = chrono::Utc::now();
            let upcoming = schedule.upcoming(now, 3);
            prop_assert!(upcoming.len() <= 3);
        }
    }

    #[test]
    fn transform_expressions_parse_and_evaluate_without_panicking(
        text in prop::collection::vec(
            prop::sample::select(vec![
                "data", "steps", "crm", ".", "[", "]", "0", "\"k\"", "{", "}", ":", ",", "||",
                "??", "null", "true", "1.5", "\"s\"", " ", "(", ")", "'", "\\",
            ]),
            0..30,
        )
    ) {
        let text = text.concat();
        if let Ok(expr) = wf_outbound::transform_expr::parse(&text) {
            let data: Map<String, Value> = json!({"a": [1, {"b": 2}], "k": "v"}).as_object().cloned().unwrap();
            let _ = expr.roots();
            let _ = expr.eval(&data, &|_| Some(json!({"x": 1})));
        }
    }

    #[test]
    fn deeply_nested_transforms_are_refused_not_overflowed(depth in 0usize..5000) {
        let text = format!("{}data{}", "[".repeat(depth), "]".repeat(depth));
        let _ = wf_outbound::transform_expr::parse(&text);
    }

    #[test]
    fn query_strings_parse_without_panicking(query in "([a-z%+=&;]|%[0-9a-fA-F]{0,2}|\\PC){0,64}") {
        let _ = wf_http::exchange::parse_query(&query);
    }

    #[test]
    fn plain_query_pairs_come_back_as_written(pairs in prop::collection::vec(("[a-z]{1,6}", "[a-z0-9]{0,6}"), 1..6)) {
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let parsed = wf_http::exchange::parse_query(&query.join("&"));
        prop_assert_eq!(parsed, pairs);
    }
}

/// The component registry a test installs into: no app, one runtime, no cache on disk.
fn component_registry() -> Arc<wf_wasm::ComponentRegistry> {
    let runtime = wf_wasm::Runtime::new(wf_wasm::RuntimeConfig {
        cache_dir: None,
        max_instances: 8,
        pooling: false,
    })
    .unwrap();
    Arc::new(wf_wasm::ComponentRegistry::new(
        runtime,
        wf_wasm::HostServices::default(),
        wf_wasm::Limits::default(),
        Default::default(),
        None,
    ))
}

/// Tries to install `bytes` as `hello`; whether it went live.
async fn try_install(registry: &Arc<wf_wasm::ComponentRegistry>, bytes: Vec<u8>) -> bool {
    let expect = wf_wasm::Expect::Name("hello");
    if wf_wasm::component::check_format(&bytes).is_err() {
        return false;
    }
    match registry.spec(&expect, Arc::new(bytes), wf_wasm::ExtraGrant::None) {
        Ok(spec) => registry
            .install(&expect, spec, wf_wasm::Origin::Upload)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

proptest! {
    // Each case compiles a component (~100 ms): few cases in `make test`; `make soak` sets
    // `WF_FUZZ_WASM_CASES`.
    #![proptest_config(cases_from("WF_FUZZ_WASM_CASES", 24))]

    /// A valid component with bytes flipped, cut or appended: refused, or (when the damage
    /// left a valid component, e.g. in a custom section) installed — but the live version
    /// only ever changes to something that passed every check, and keeps serving.
    #[test]
    fn damaged_uploads_never_replace_a_good_component(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
        garbage in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let registry = component_registry();
            let good = wf_tests::plugin("hello");
            assert!(try_install(&registry, good.clone()).await);
            let live = registry.get("hello").unwrap().live().unwrap().digest.clone();

            let mut bytes = good.clone();
            for (at, byte) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            if let Some(at) = cut {
                bytes.truncate(at.index(bytes.len()));
            }
            bytes.extend_from_slice(&garbage);
            let installed = try_install(&registry, bytes.clone()).await;
            let now = registry.get("hello").unwrap().live().unwrap();
            if installed {
                assert_eq!(now.digest, wf_wasm::cache::sha256_hex(&bytes));
            } else {
                assert_eq!(now.digest, live, "a refused upload changed the live version");
            }
            // Whatever is live still answers.
            let output = now
                .run_step(&Default::default(), &json!({"name": "ada"}))
                .await;
            assert!(output.is_ok(), "{output:?}");
        });
    }

    #[test]
    fn arbitrary_bytes_are_never_installed(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let registry = component_registry();
            let mut with_header = b"\0asm\x0d\0\x01\0".to_vec();
            with_header.extend_from_slice(&bytes);
            for candidate in [bytes.clone(), with_header] {
                assert!(!try_install(&registry, candidate).await);
            }
            assert!(registry.get("hello").and_then(|s| s.live()).is_none());
        });
    }
}
