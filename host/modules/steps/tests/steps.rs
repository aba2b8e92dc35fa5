//! Each step's outputs and errors, driven from YAML pipelines, in both template dialects.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use wf_engine::{Extensions, PipelineContext, PipelineError, Registry, build, validate};

fn registry() -> Registry {
    let mut r = Registry::new();
    wf_http::register(&mut r).unwrap();
    wf_messaging::register(&mut r).unwrap();
    wf_steps::register(&mut r).unwrap();
    r
}

fn app(yaml: &str) -> wf_engine::App {
    let registry = registry();
    let loaded =
        wf_engine::wf_config::load_str("app.yaml", yaml, &HashMap::<String, String>::new());
    let validated = validate(loaded, &registry)
        .unwrap_or_else(|i| panic!("{}", i.diagnostics.render(&i.config.sources)));
    build(&validated, &registry).unwrap_or_else(|d| panic!("{d:?}"))
}

async fn run_with(yaml: &str, input: Value) -> Result<PipelineContext, PipelineError> {
    let app = app(yaml);
    let pipeline = app.state().pipelines().get("p").unwrap();
    let Value::Object(input) = input else {
        panic!("input must be an object")
    };
    pipeline
        .run(input, Extensions::default())
        .await
        .map(|o| o.context)
}

async fn run(steps: &str, input: Value) -> Result<PipelineContext, PipelineError> {
    run_with(&format!("pipelines:\n  p:\n    steps:\n{steps}"), input).await
}

/// Validation diagnostics of a pipeline (expected to be invalid).
fn invalid(steps: &str) -> Vec<String> {
    let registry = registry();
    let yaml = format!("pipelines:\n  p:\n    steps:\n{steps}");
    let loaded =
        wf_engine::wf_config::load_str("app.yaml", &yaml, &HashMap::<String, String>::new());
    match validate(loaded, &registry) {
        Err(i) => i.diagnostics.iter().map(|d| d.message.clone()).collect(),
        Ok(v) => match build(&v, &registry) {
            Err(d) => d.iter().map(|d| d.message.clone()).collect(),
            Ok(_) => panic!("expected problems"),
        },
    }
}

#[tokio::test]
async fn set_renders_both_dialects_and_keeps_types() {
    let ctx = run(
        r#"      - name: first
        type: step.set
        config:
          values:
            id: "{{ .order.id }}"
            copy: "{{ order.id }}"
            label: "order-{{ .order.id }}"
            nested: {when: "{{ now }}", tags: ["{{ lower .order.kind }}"]}
            literal: 3
      - name: second
        type: step.set
        config:
          values:
            from_step: "{{ .steps.first.id }}"
            hyphen: "{{ index .steps \"first\" \"label\" }}"
"#,
        json!({"order": {"id": 42, "kind": "EXPRESS"}}),
    )
    .await
    .unwrap();
    assert_eq!(ctx.current["id"], 42);
    assert_eq!(ctx.current["copy"], 42);
    assert_eq!(ctx.current["label"], "order-42");
    assert_eq!(ctx.current["nested"]["tags"], json!(["express"]));
    assert_eq!(ctx.current["literal"], 3);
    assert_eq!(ctx.current["from_step"], 42);
    assert_eq!(ctx.current["hyphen"], "order-42");
}

#[tokio::test]
async fn set_fails_naming_a_missing_key_and_bad_templates_fail_at_load() {
    let err = run(
        "      - {name: s, type: step.set, config: {values: {x: \"{{ .order.id }}\"}}}\n",
        json!({}),
    )
    .await
    .unwrap_err();
    // The caller learns what its data lacked; the template's text is only in the detail.
    assert_eq!(
        err.message,
        "step `s` failed: `order.id` is missing from the data"
    );
    assert!(
        err.detail
            .as_deref()
            .is_some_and(|d| d.starts_with("step `s` failed: template `{{ .order.id }}` failed")),
        "{:?}",
        err.detail
    );

    let problems =
        invalid("      - {name: s, type: step.set, config: {values: {x: \"{{ .order | }}\"}}}\n");
    assert!(
        problems
            .iter()
            .any(|m| m.contains("step `s` (`step.set`): `values`: at `/x`: invalid template")),
        "{problems:?}"
    );
    let problems = invalid("      - {name: s, type: step.set, config: {values: {}}}\n");
    assert!(
        problems.iter().any(|m| m == "`values` is empty"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn log_renders_and_outputs_nothing() {
    let ctx = run(
        "      - {name: l, type: step.log, config: {level: warn, message: \"hello {{ .name }} / {{ name | upper }}\"}}\n",
        json!({"name": "ada"}),
    )
    .await
    .unwrap();
    assert_eq!(ctx.steps["l"], json!({}));
    let problems =
        invalid("      - {name: l, type: step.log, config: {level: loud, message: x}}\n");
    assert!(
        problems.iter().any(|m| m.contains("`level` is \"loud\"")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn validate_required_fields_and_json_schema() {
    let steps = "      - {name: v, type: step.validate, config: {strategy: required_fields, required_fields: [a, b, c]}}\n";
    let err = run(steps, json!({"b": null})).await.unwrap_err();
    assert_eq!(
        err.message,
        "step `v` failed: validate step \"v\": missing required fields: a, c"
    );
    assert_eq!(err.kind, wf_engine::ErrorKind::InvalidInput);
    run(steps, json!({"a": 1, "b": 2, "c": 3})).await.unwrap();

    let schema_steps = r#"      - name: v
        type: step.validate
        config:
          source: steps.parse.body
          schema:
            type: object
            required: [email]
            properties:
              email: {type: string, format: email}
              age: {type: integer, minimum: 0}
"#;
    let yaml_prefix =
        "      - {name: parse, type: step.set, config: {values: {body: \"{{ .input }}\"}}}\n";
    let err = run(
        &format!("{yaml_prefix}{schema_steps}"),
        json!({"input": {"age": -1}}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("/: \"email\" is a required property"),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("/age: -1 is less than the minimum of 0"),
        "{}",
        err.message
    );
    run(
        &format!("{yaml_prefix}{schema_steps}"),
        json!({"input": {"email": "a@b.c", "age": 3}}),
    )
    .await
    .unwrap();

    let problems =
        invalid("      - {name: v, type: step.validate, config: {schema: {type: nonsense}}}\n");
    assert!(
        problems
            .iter()
            .any(|m| m.contains("not a valid JSON Schema")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn conditional_routes_without_falling_through() {
    let steps = r#"      - name: route
        type: step.conditional
        config:
          field: steps.check.status
          routes: {ok: success, "404": not-found}
          default: unknown
      - {name: success, type: step.set, config: {values: {result: success}}}
      - {name: not-found, type: step.set, config: {values: {result: missing}}}
      - {name: unknown, type: step.set, config: {values: {result: unknown}}}
      - {name: done, type: step.set, config: {values: {finished: true}}}
"#;
    let with = |status: Value| {
        let prefix = format!(
            "      - {{name: check, type: step.set, config: {{values: {{status: {status}}}}}}}\n"
        );
        format!("{prefix}{steps}")
    };
    let ctx = run(&with(json!("ok")), json!({})).await.unwrap();
    assert_eq!(
        (
            ctx.current["result"].clone(),
            ctx.current["finished"].clone()
        ),
        (json!("success"), json!(true))
    );
    assert_eq!(
        ctx.steps["route"],
        json!({"matched_value": "ok", "next_step": "success"})
    );
    assert!(!ctx.steps.contains_key("not-found") && !ctx.steps.contains_key("unknown"));

    let ctx = run(&with(json!(404)), json!({})).await.unwrap();
    assert_eq!(ctx.current["result"], "missing");

    let ctx = run(&with(json!("teapot")), json!({})).await.unwrap();
    assert_eq!(ctx.current["result"], "unknown");
    assert_eq!(ctx.steps["route"]["used_default"], true);

    let err = run(
        "      - {name: route, type: step.conditional, config: {field: kind, routes: {a: x}}}\n      - {name: x, type: step.log, config: {message: x}}\n",
        json!({"kind": "b"}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        "step `route` failed: value \"b\" not found in routes and no default configured"
    );

    let problems = invalid(
        "      - {name: route, type: step.conditional, config: {field: kind, routes: {a: nowhere}}}\n",
    );
    assert!(
        problems
            .iter()
            .any(|m| m == "step `route` routes to `nowhere`, which is not a step of pipeline `p`"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn json_response_without_a_request_is_the_run_output() {
    let ctx = run(
        "      - {name: r, type: step.json_response, config: {status: 201, body: {id: \"{{ .id }}\", name: \"{{ name | upper }}\"}}}\n      - {name: never, type: step.set, config: {values: {x: 1}}}\n",
        json!({"id": 7, "name": "ada"}),
    )
    .await
    .unwrap();
    assert_eq!(
        ctx.steps["r"],
        json!({"status": 201, "body": {"id": 7, "name": "ADA"}})
    );
    assert!(
        !ctx.steps.contains_key("never"),
        "json_response ends the run"
    );

    let ctx = run(
        "      - {name: r, type: step.json_response, config: {status_from: code, body_from: steps.missing}}\n",
        json!({"code": "404"}),
    )
    .await
    .unwrap();
    assert_eq!(ctx.steps["r"], json!({"status": 404, "body": null}));

    let err = run(
        "      - {name: r, type: step.json_response, config: {status_from: code}}\n",
        json!({"code": 99}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        "step `r` failed: `status_from` gave 99, which is not an HTTP status"
    );
}

#[tokio::test]
async fn request_parse_without_a_request_reads_the_trigger_data() {
    let ctx = run(
        "      - {name: parse, type: step.request_parse, config: {path_params: [id], query_params: [page, empty], parse_body: true}}\n",
        json!({"id": "42", "page": "2", "empty": "", "body": {"name": "x"}}),
    )
    .await
    .unwrap();
    assert_eq!(ctx.steps["parse"]["path_params"], json!({"id": "42"}));
    assert_eq!(ctx.steps["parse"]["query"], json!({"page": "2"}));
    assert_eq!(ctx.steps["parse"]["body"], json!({"name": "x"}));
    let _: Map<String, Value> = ctx.current;
}

#[tokio::test]
async fn transform_inline_and_named_pipelines() {
    let ctx = run(
        "      - name: t
        type: step.transform
        config:
          operations:
            - {type: extract, config: {path: order}}
            - {type: map, config: {mappings: {qty: quantity}}}
",
        json!({"order": {"id": 1, "qty": 2}}),
    )
    .await
    .unwrap();
    assert_eq!(ctx.current["data"], json!({"id": 1, "quantity": 2}));

    let ctx = run_with(
        "modules:
  - name: shapes
    type: data.transformer
    config:
      pipelines:
        public: [{type: filter, config: {fields: [id]}}]
pipelines:
  p:
    steps:
      - {name: t, type: step.transform, config: {transformer: shapes, pipeline: public}}
",
        json!({"id": 9, "secret": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(ctx.current["data"], json!({"id": 9}));

    let problems =
        invalid("      - {name: t, type: step.transform, config: {transformer: shapes}}\n");
    assert!(
        problems
            .iter()
            .any(|m| m == "`transformer` and `pipeline` go together"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn publish_reaches_the_broker_subscribers() {
    // Synchronous delivery: the subscriber has run when the step finishes; asynchronous (the
    // default): the message waits in the subscriber's queue.
    for (delivery, delivered, queued) in [("sync", 1, 0), ("async", 0, 1)] {
        let yaml = format!(
            "modules:
  - {{name: bus, type: messaging.broker, config: {{delivery: {delivery}}}}}
  - {{name: audit, type: messaging.handler, config: {{topic: orders.created}}}}
pipelines:
  p:
    steps:
      - {{name: pub, type: step.publish, config: {{topic: \"orders.{{{{ .event }}}}\", payload: {{id: \"{{{{ .id }}}}\"}}}}}}
"
        );
        let ctx = run_with(&yaml, json!({"event": "created", "id": 5}))
            .await
            .unwrap();
        assert_eq!(
            ctx.steps["pub"],
            json!({"published": true, "topic": "orders.created", "delivered": delivered, "queued": queued}),
            "{delivery}"
        );
    }
}

#[tokio::test]
async fn delegate_without_a_request_outputs_the_response() {
    let yaml = "modules:
  - {name: hello, type: http.handler, config: {status: 202, body: {ok: true}}}
pipelines:
  p:
    steps:
      - {name: d, type: step.delegate, config: {service: hello}}
";
    let ctx = run_with(yaml, json!({"method": "POST", "path": "/x"}))
        .await
        .unwrap();
    assert_eq!(
        ctx.steps["d"],
        json!({"delegated_to": "hello", "status_code": 202, "body": {"ok": true}})
    );
}

#[tokio::test]
async fn rate_limits_with_a_shared_name_use_one_bucket() {
    // Two gates, one budget of one call: the second gate of the same run is refused.
    let err = run(
        "      - {name: a, type: step.rate_limit, config: {requests_per_minute: 1, burst_size: 1, shared: crm}}
      - {name: b, type: step.rate_limit, config: {requests_per_minute: 1, burst_size: 1, shared: crm}}
",
        json!({}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, wf_engine::ErrorKind::RateLimited);
    assert_eq!(err.step.as_deref(), Some("b"));
    let problems = invalid(
        "      - {name: a, type: step.rate_limit, config: {requests_per_minute: 1, shared: crm}}
      - {name: b, type: step.rate_limit, config: {requests_per_minute: 2, shared: crm}}
",
    );
    assert!(
        problems
            .iter()
            .any(|m| m.contains("sharing `crm` disagree")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn rate_limit_denies_past_the_burst() {
    let app = app("pipelines:
  p:
    steps:
      - {name: limit, type: step.rate_limit, config: {requests_per_minute: 1, burst_size: 2, key_from: \"{{ .user }}\"}}
");
    let pipeline = app.state().pipelines().get("p").unwrap();
    let input = |user: &str| json!({"user": user}).as_object().unwrap().clone();
    for _ in 0..2 {
        pipeline
            .run(input("ada"), Extensions::default())
            .await
            .unwrap();
    }
    let err = pipeline
        .run(input("ada"), Extensions::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (
            wf_engine::ErrorKind::RateLimited,
            "step `limit` failed: rate limit exceeded for key \"ada\""
        )
    );
    pipeline
        .run(input("bob"), Extensions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn sub_workflow_runs_the_child_with_mapped_input_and_output() {
    let yaml = "pipelines:
  child:
    steps:
      - {name: double, type: step.set, config: {values: {doubled: \"{{ n * 2 }}\"}}}
  p:
    steps:
      - name: call
        type: step.sub_workflow
        config:
          workflow: pipeline:child
          input_mapping: {n: \"{{ .count }}\"}
          output_mapping: {result: doubled}
";
    let ctx = run_with(yaml, json!({"count": 21})).await.unwrap();
    assert_eq!(ctx.steps["call"], json!({"result": 42}));

    let problems =
        invalid("      - {name: call, type: step.sub_workflow, config: {workflow: nope}}\n");
    assert!(
        problems.iter().any(|m| m == "no pipeline named `nope`"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn jq_outputs_result_and_spreads_one_object() {
    let ctx = run(
        "      - {name: total, type: step.jq, config: {expression: \"{sum: (.items | map(.price) | add)}\"}}\n      - {name: ids, type: step.jq, config: {expression: \".[]\", input_from: steps.total.result}}\n",
        json!({"items": [{"price": 5}, {"price": 20}]}),
    )
    .await
    .unwrap();
    assert_eq!(
        ctx.steps["total"],
        json!({"sum": 25, "result": {"sum": 25}})
    );
    assert_eq!(ctx.current["sum"], 25);
    assert_eq!(ctx.steps["ids"]["result"], json!(25));
    let problems = invalid("      - {name: j, type: step.jq, config: {expression: \".items[\"}}\n");
    assert!(
        problems
            .iter()
            .any(|m| m.starts_with("`.items[` is not a valid jq program")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn circuit_breaker_opens_after_failures_and_half_opens_after_its_timeout() {
    // A tiny upstream: `/fail` answers 503, anything else 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            let status = if String::from_utf8_lossy(&buf[..n]).starts_with("GET /fail") {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let reply =
                format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}");
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    let app = app(&format!("pipelines:
  p:
    steps:
      - name: breaker
        type: step.circuit_breaker
        config: {{guards: [check], failure_threshold: 2, success_threshold: 1, timeout: 150ms, service_name: payments}}
      - {{name: check, type: step.http_call, config: {{url: \"http://{upstream}/{{{{ .path }}}}\"}}}}
"));
    let pipeline = app.state().pipelines().get("p").unwrap();
    let run = |input: Value| {
        let pipeline = pipeline.clone();
        async move {
            pipeline
                .run(input.as_object().unwrap().clone(), Extensions::default())
                .await
        }
    };
    for _ in 0..2 {
        let err = run(json!({"path": "fail"})).await.unwrap_err();
        assert_eq!(err.step.as_deref(), Some("check"));
    }
    // Open: even a good request is refused without calling the guarded step.
    let err = run(json!({"path": "ok"})).await.unwrap_err();
    assert_eq!(
        (err.step.as_deref(), err.kind),
        (Some("breaker"), wf_engine::ErrorKind::Unavailable)
    );
    assert!(
        err.message.contains("circuit `payments` is open"),
        "{}",
        err.message
    );

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let ctx = run(json!({"path": "ok"})).await.unwrap();
    assert_eq!(
        ctx.context.steps["breaker"]["circuit_breaker"],
        json!({"state": "half-open", "service": "payments", "allowed": true, "transitioned": true})
    );
    let ctx = run(json!({"path": "ok"})).await.unwrap();
    assert_eq!(
        ctx.context.steps["breaker"]["circuit_breaker"]["state"],
        "closed"
    );

    let problems =
        invalid("      - {name: b, type: step.circuit_breaker, config: {guards: [nowhere]}}\n");
    assert!(
        problems
            .iter()
            .any(|m| m == "step `b` watches `nowhere`, which is not a step of pipeline `p`"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_pipeline_calling_itself_stops_at_the_depth_limit() {
    let err = run_with(
        "pipelines:
  p:
    steps:
      - {name: again, type: step.sub_workflow, config: {workflow: p}}
",
        json!({}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("nested more than 16 deep"),
        "{}",
        err.message
    );
}
