//! `jsonschema.modular` with `step.validate`'s `schema_ref`: named schemas inline and from a
//! YAML file, every violation reported, mistakes located.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use serde_json::json;
use wf_engine::{ErrorKind, Extensions};
use wf_tests::{TempDir, start_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_schemas_validate_pipeline_data() {
    let dir = TempDir::new("schemas");
    let file = dir.0.join("customer.yaml");
    std::fs::write(
        &file,
        "type: object\nrequired: [email]\nproperties:\n  email: {type: string, format: email}\n",
    )
    .unwrap();
    let app = start_yaml(&format!(
        r#"
modules:
  - name: schemas
    type: jsonschema.modular
    config:
      schemas:
        order: {{type: object, required: [id, items], properties: {{items: {{type: array, minItems: 1}}}}}}
        customer: "{}"
pipelines:
  place:
    steps:
      - {{name: order, type: step.validate, config: {{schema_ref: order}}}}
      - {{name: buyer, type: step.validate, config: {{schema_ref: customer, source: customer}}}}
"#,
        file.display()
    ))
    .await;
    let pipeline = app.state().pipelines().get("place").unwrap();
    let run = |data: serde_json::Value| {
        let pipeline = pipeline.clone();
        async move {
            pipeline
                .run(data.as_object().cloned().unwrap(), Extensions::default())
                .await
        }
    };
    run(json!({"id": 1, "items": [1], "customer": {"email": "ada@example.com"}}))
        .await
        .unwrap();
    let error = run(json!({"items": [], "customer": {"email": "ada@example.com"}}))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(
        error.message.contains("\"id\" is a required property"),
        "{error}"
    );
    assert!(
        error.message.contains("/items"),
        "every violation, with its path: {error}"
    );
    let error = run(json!({"id": 1, "items": [1], "customer": {"email": "not an address"}}))
        .await
        .unwrap_err();
    assert_eq!(error.step.as_deref(), Some("buyer"));
    assert!(error.message.contains("/email"), "{error}");
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[test]
fn schema_mistakes_are_located() {
    let rendered = wf_tests::invalid_yaml(
        r#"
modules:
  - name: schemas
    type: jsonschema.modular
    config:
      schemas:
        order: {type: objekt}
        list: 42
pipelines:
  p:
    steps:
      - {name: a, type: step.validate, config: {schema_ref: ordr}}
      - {name: b, type: step.validate, config: {schema_ref: order, schema: {type: object}}}
"#,
    );
    for expected in [
        "not a valid JSON Schema",
        "a schema is an object (inline) or a file path",
        "`schemas` has no schema named `ordr`",
        "did you mean `order`?",
        "give either `schema` or `schema_ref`, not both",
    ] {
        assert!(
            rendered.contains(expected),
            "missing {expected:?} in\n{rendered}"
        );
    }
}
