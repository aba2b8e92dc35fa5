//! Storage end to end, on embedded SQLite and on the real PostgreSQL (`WF_TEST_POSTGRES_URL`):
//! migrations, the database steps behind HTTP routes with typed parameters and JSON columns,
//! constraint errors as 400s, and configuration mistakes as located errors.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use serde_json::{Value, json};
use wf_tests::{TempDir, client, invalid_yaml, server_addr, start_yaml, unique_name};

fn app_yaml(dsn: &str, migrations: &str, table: &str) -> String {
    format!(
        r#"
modules:
  - name: web
    type: http.server
    config: {{address: "127.0.0.1:0"}}
  - name: routes
    type: http.router
  - name: db
    type: database.workflow
    config:
      dsn: "{dsn}"
      migrationsDir: "{migrations}"
      migrationSet: "{table}"
pipelines:
  add-item:
    trigger: {{type: http, config: {{path: /items, method: POST}}}}
    steps:
      - name: insert
        type: step.db_exec
        config:
          query: "INSERT INTO {table} (sku, quantity, price, attrs) VALUES (?, ?, ?, ?) RETURNING id"
          params: ["{{{{ .sku }}}}", "{{{{ .quantity }}}}", "{{{{ .price }}}}", "{{{{ .attrs }}}}"]
          returning: true
      - name: respond
        type: step.json_response
        config:
          status: 201
          body: {{id: "{{{{ .steps.insert.last_id }}}}", affected: "{{{{ .steps.insert.affected_rows }}}}"}}
  get-item:
    trigger: {{type: http, config: {{path: "/items/{{id}}", method: GET}}}}
    steps:
      - name: parse
        type: step.request_parse
        config: {{path_params: [id]}}
      - name: find
        type: step.db_query
        config:
          query: "SELECT sku, quantity, price, attrs FROM {table} WHERE id = ?"
          params: ["{{{{ .steps.parse.path_params.id }}}}"]
          mode: single
      - name: respond
        type: step.json_response
        config:
          body: "{{{{ .steps.find }}}}"
  list-items:
    trigger: {{type: http, config: {{path: /items, method: GET}}}}
    steps:
      - name: all
        type: step.db_query
        config:
          query: "SELECT sku, quantity FROM {table} ORDER BY id"
      - name: respond
        type: step.json_response
        config:
          body: "{{{{ .steps.all }}}}"
"#
    )
}

fn migration(backend: &str, table: &str) -> String {
    match backend {
        "postgres" => format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, sku TEXT NOT NULL UNIQUE, quantity INT4 NOT NULL, price NUMERIC(10,2), attrs JSONB);"
        ),
        _ => format!(
            "-- items\nCREATE TABLE {table} (id INTEGER PRIMARY KEY AUTOINCREMENT, sku TEXT NOT NULL UNIQUE, quantity INTEGER NOT NULL, price REAL, attrs TEXT) STRICT;"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_steps_keep_types_and_json_on_both_backends() {
    let dir = TempDir::new("storage");
    for (backend, dsn) in wf_tests::database_backends(&dir) {
        let table = unique_name("items_");
        let migrations = dir.0.join(format!("migrations-{backend}"));
        std::fs::create_dir_all(&migrations).unwrap();
        std::fs::write(migrations.join("001_items.sql"), migration(backend, &table)).unwrap();
        let app = start_yaml(&app_yaml(&dsn, &migrations.to_string_lossy(), &table)).await;
        let base = format!("http://{}", server_addr(&app, "web"));
        let http = client();

        let created = http
            .post(format!("{base}/items"))
            .json(&json!({"sku": "A-1'; DROP TABLE x; --", "quantity": "3", "price": 9.5, "attrs": {"color": "red", "tags": [1, 2]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{backend}");
        let created: Value = created.json().await.unwrap();
        assert_eq!(created["affected"], json!(1), "{backend}: {created}");
        let id = created["id"].as_str().unwrap().to_string();

        let found: Value = http
            .get(format!("{base}/items/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(found["found"], json!(true), "{backend}: {found}");
        // The text "3" went into an integer column and comes back as the number 3; the
        // object went into a JSON column and comes back as the object.
        assert_eq!(
            found["row"],
            json!({"sku": "A-1'; DROP TABLE x; --", "quantity": 3, "price": 9.5, "attrs": {"color": "red", "tags": [1, 2]}}),
            "{backend}"
        );

        let missing: Value = http
            .get(format!("{base}/items/999999"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(missing, json!({"found": false, "row": {}}), "{backend}");

        // The same sku again breaks the UNIQUE constraint: the caller's mistake, a 400.
        let duplicate = http
            .post(format!("{base}/items"))
            .json(&json!({"sku": "A-1'; DROP TABLE x; --", "quantity": 1, "price": null, "attrs": null}))
            .send()
            .await
            .unwrap();
        assert_eq!(duplicate.status(), 400, "{backend}");
        let body = duplicate.text().await.unwrap();
        assert!(body.to_ascii_lowercase().contains("unique"), "{body}");

        // A quantity that is not a number is the caller's mistake: refused before PostgreSQL
        // sees it, refused by SQLite's STRICT table.
        let bad = http
            .post(format!("{base}/items"))
            .json(&json!({"sku": "B-2", "quantity": "many", "price": 1, "attrs": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{backend}");

        let list: Value = http
            .get(format!("{base}/items"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            list["rows"][0],
            json!({"sku": "A-1'; DROP TABLE x; --", "quantity": 3}),
            "{backend}: {list}"
        );
        app.stop(std::time::Duration::from_secs(5)).await;

        // Started again, the migration is not re-run (it would fail: the table exists) and the
        // row is still there.
        let app = start_yaml(&app_yaml(&dsn, &migrations.to_string_lossy(), &table)).await;
        let base = format!("http://{}", server_addr(&app, "web"));
        let found: Value = http
            .get(format!("{base}/items/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(found["row"]["quantity"], json!(3), "{backend}");
        app.stop(std::time::Duration::from_secs(5)).await;

        // An applied migration that was edited is refused at start, naming it.
        std::fs::write(
            migrations.join("001_items.sql"),
            format!("{} -- edited", migration(backend, &table)),
        )
        .unwrap();
        let error =
            wf_tests::start_error(&app_yaml(&dsn, &migrations.to_string_lossy(), &table)).await;
        assert!(
            error.contains("migration 1 `items` of set `items_") && error.contains("was changed"),
            "{backend}: {error}"
        );
    }
}

#[test]
fn sql_templates_and_bad_drivers_are_located_errors() {
    let rendered = invalid_yaml(
        r#"
modules:
  - name: db
    type: database.workflow
    config: {driver: oracle, dsn: "x"}
pipelines:
  p:
    steps:
      - name: q
        type: step.db_query
        config:
          query: "SELECT * FROM t WHERE id = {{ .id }}"
"#,
    );
    assert!(
        rendered.contains("`oracle` is not a supported database driver"),
        "{rendered}"
    );
    assert!(rendered.contains("write `?` in the query"), "{rendered}");
    assert!(rendered.contains("app.yaml:5"), "{rendered}");

    let rendered = invalid_yaml(
        r#"
modules:
  - name: db
    type: database.workflow
    config: {driver: postgres, dsn: "data/app.db"}
"#,
    );
    assert!(
        rendered.contains("PostgreSQL needs a `postgres://` DSN"),
        "{rendered}"
    );
}

#[tokio::test]
async fn an_unreachable_postgres_stops_the_start_without_showing_the_password() {
    let yaml = r#"
modules:
  - name: db
    type: database.workflow
    config: {dsn: "postgres://wf:sup3rs3cret@127.0.0.1:1/nothing", connectTimeout: 2s}
"#;
    let error = wf_tests::start_error(yaml).await;
    assert!(
        error.contains("database `db` (postgres://127.0.0.1:1/nothing)"),
        "{error}"
    );
    assert!(!error.contains("sup3rs3cret"), "{error}");
}
