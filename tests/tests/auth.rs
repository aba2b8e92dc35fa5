//! Authentication end to end: sign-up, sign-in, refresh-token rotation with reuse detection,
//! sign-out and restarts on SQLite and PostgreSQL; every kind of bad token is a 401 with a
//! JSON error; RS256 and ES256 keys; roles per route; claims in pipelines; seed users (the
//! original's file format, bcrypt hashes upgraded to Argon2id); located config errors.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use wf_tests::{
    TempDir, build_error, client, invalid_yaml, repo_root, server_addr, start_yaml, unique_name,
};

const SECRET: &str = "test-secret-of-at-least-32-bytes-1234";

/// An app with users in `dsn`, the auth endpoints under `/api/auth/`, a pipeline route showing
/// the caller's claims and an admin-only route.
fn app(dsn: &str, store: &str, auth_config: &str) -> String {
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
    config: {{dsn: "{dsn}"}}
  - name: {store}
    type: auth.user-store
  - name: auth
    type: auth.jwt
    config:
{auth_config}
  - name: authn
    type: http.middleware.auth
  - name: authn-keyed
    type: http.middleware.auth
    config: {{secretKey: "{SECRET}"}}
workflows:
  http:
    routes:
      - {{method: POST, path: /api/auth/register, handler: auth}}
      - {{method: POST, path: /api/auth/login, handler: auth}}
      - {{method: POST, path: /api/auth/refresh, handler: auth}}
      - {{method: POST, path: /api/auth/logout, handler: auth}}
      - {{method: GET, path: /api/auth/me, handler: auth}}
      - {{method: PUT, path: /api/auth/me, handler: auth}}
      - {{method: GET, path: /api/auth/users, handler: auth}}
      - {{method: POST, path: /api/auth/users, handler: auth}}
      - {{method: DELETE, path: "/api/auth/users/{{id}}", handler: auth}}
      - {{method: PUT, path: "/api/auth/users/{{id}}/role", handler: auth}}
      - method: GET
        path: /api/whoami
        middlewares: [authn]
        steps:
          - name: reply
            type: step.set
            config:
              values:
                user: "{{{{ meta.auth.sub }}}}"
                email: "{{{{ meta.auth.email }}}}"
                role: "{{{{ meta.auth.role | default(value='none') }}}}"
      - method: GET
        path: /api/keyed
        middlewares: [authn-keyed]
        steps:
          - {{name: reply, type: step.set, config: {{values: {{ok: true}}}}}}
      - method: GET
        path: /api/admin
        middlewares: [authn]
        roles: [admin]
        steps:
          - name: reply
            type: step.set
            config:
              values: {{ok: true}}
"#
    )
}

fn hs256_config() -> String {
    format!(
        r#"      secret: "{SECRET}"
      responseFormat: v1
      allowRegistration: true
      tokenExpiry: 15m
      users:
        - {{id: admin-1, email: admin@example.com, name: Admin, password: "admin-password", role: admin}}"#
    )
}

/// The app's API at `base`, as one client sees it.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(running: &wf_engine::RunningApp) -> Api {
        Api {
            http: client(),
            base: format!("http://{}/api", server_addr(running, "web")),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, None, Some(body))
            .await
    }

    async fn get(&self, path: &str, bearer: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(bearer), None)
            .await
    }

    async fn login(&self, email: &str, password: &str) -> (u16, Value) {
        self.post("/auth/login", json!({"email": email, "password": password}))
            .await
    }

    async fn refresh(&self, token: &str) -> (u16, Value) {
        self.post("/auth/refresh", json!({"refresh_token": token}))
            .await
    }
}

fn token_of(body: &Value, key: &str) -> String {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_sign_in_rotation_and_sign_out_survive_restarts_on_both_backends() {
    let dir = TempDir::new("auth-flow");
    for (backend, dsn) in wf_tests::database_backends(&dir) {
        let store = unique_name("users");
        let yaml = app(&dsn, &store, &hs256_config());
        let running = start_yaml(&yaml).await;
        let api = Api::new(&running);
        let email = format!("{}@example.com", unique_name("u"));
        let password = "a-good-password";
        let sign_up = |body: Value| api.post("/auth/register", body);

        // Sign-up: bad input is a 400, a taken email a 409.
        let (status, body) = sign_up(json!({"email": email, "password": "short"})).await;
        assert_eq!(
            (status, body),
            (
                400,
                json!({"error": "password must be at least 8 characters"})
            ),
            "{backend}"
        );
        let (status, body) = sign_up(json!({"email": email})).await;
        assert_eq!(status, 400, "{backend}: {body}");
        let (status, body) =
            sign_up(json!({"email": email, "password": password, "name": "Ann"})).await;
        assert_eq!(status, 201, "{backend}: {body}");
        assert_eq!(body["user"]["email"], email.as_str());
        assert_eq!(body["expires_in"], 900);
        let fields: Vec<&String> = body["user"].as_object().unwrap().keys().collect();
        assert_eq!(
            fields,
            ["id", "email", "name", "createdAt"],
            "no password hash"
        );
        let (status, _) =
            sign_up(json!({"email": email.to_uppercase(), "password": password})).await;
        assert_eq!(status, 409, "{backend}: emails are compared without case");

        // Sign-in: a wrong password and an unknown email look the same.
        let invalid = (401, json!({"error": "invalid credentials"}));
        assert_eq!(
            api.login(&email, "wrong-password").await,
            invalid,
            "{backend}"
        );
        assert_eq!(
            api.login("nobody@example.com", password).await,
            invalid,
            "{backend}"
        );
        let (status, login) = api.login(&email, password).await;
        assert_eq!(status, 200, "{backend}: {login}");
        let access = token_of(&login, "access_token");
        let refresh = token_of(&login, "refresh_token");

        // The claims reach pipelines; a refresh token is no access token.
        let (status, me) = api.get("/whoami", &access).await;
        assert_eq!(status, 200, "{backend}: {me}");
        assert_eq!(me["email"], email.as_str());
        assert_eq!(me["user"], login["user"]["id"]);
        assert_eq!(
            api.get("/whoami", &refresh).await,
            (401, json!({"error": "Invalid credentials"})),
            "{backend}"
        );

        // Roles per route: a user is refused, the seeded admin let in.
        assert_eq!(
            api.get("/admin", &access).await,
            (403, json!({"error": "forbidden: requires role admin"})),
            "{backend}"
        );
        let (_, admin) = api.login("admin@example.com", "admin-password").await;
        let admin_access = token_of(&admin, "access_token");
        assert_eq!(api.get("/admin", &admin_access).await.0, 200, "{backend}");
        let (status, users) = api.get("/auth/users", &admin_access).await;
        assert_eq!(status, 200, "{backend}");
        assert_eq!(users.as_array().unwrap().len(), 2, "{backend}: {users}");
        assert_eq!(
            api.get("/auth/users", &access).await,
            (403, json!({"error": "admin role required"})),
            "{backend}"
        );

        // Rotation: a refresh token works once; used again, the whole session is revoked.
        let (status, rotated) = api.refresh(&refresh).await;
        assert_eq!(status, 200, "{backend}: {rotated}");
        let next_refresh = token_of(&rotated, "refresh_token");
        let next_access = token_of(&rotated, "access_token");
        assert_ne!(next_refresh, refresh);
        assert_eq!(api.get("/whoami", &next_access).await.0, 200, "{backend}");
        let (status, body) = api.refresh(&refresh).await;
        assert_eq!(status, 401, "{backend}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("already used"),
            "{body}"
        );
        let revoked = (401, json!({"error": "token revoked"}));
        assert_eq!(api.refresh(&next_refresh).await, revoked, "{backend}");
        assert_eq!(api.get("/whoami", &next_access).await, revoked, "{backend}");
        assert_eq!(
            api.refresh("garbage").await,
            (401, json!({"error": "invalid refresh token"})),
            "{backend}"
        );

        // Sign-out ends the session's access and refresh tokens; other sessions live on.
        let (_, second) = api.login(&email, password).await;
        let (_, third) = api.login(&email, password).await;
        let second_access = token_of(&second, "access_token");
        let signed_out = api
            .call(
                reqwest::Method::POST,
                "/auth/logout",
                Some(&second_access),
                None,
            )
            .await;
        assert_eq!(signed_out, (200, json!({"status": "ok"})), "{backend}");
        assert_eq!(api.get("/whoami", &second_access).await.0, 401, "{backend}");
        // Also where the middleware holds the same secret itself.
        assert_eq!(
            api.get("/keyed", &second_access).await,
            (401, json!({"error": "token revoked"})),
            "{backend}"
        );
        let second_refresh = token_of(&second, "refresh_token");
        assert_eq!(api.refresh(&second_refresh).await.0, 401, "{backend}");
        let third_access = token_of(&third, "access_token");
        assert_eq!(api.get("/keyed", &third_access).await.0, 200, "{backend}");
        assert_eq!(
            api.get("/whoami", &third_access).await.0,
            200,
            "{backend}: others live on"
        );

        // One refresh token sent four times at once: exactly one answer carries new tokens.
        let (_, fourth) = api.login(&email, password).await;
        let racing = token_of(&fourth, "refresh_token");
        let statuses: Vec<u16> = futures::future::join_all((0..4).map(|_| api.refresh(&racing)))
            .await
            .into_iter()
            .map(|(status, _)| status)
            .collect();
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [200, 401, 401, 401], "{backend}: {statuses:?}");
        assert_eq!(running.stop(Duration::from_secs(5)).await, 0);

        // A restart keeps the users, the seeded admin once, and the revocations.
        let running = start_yaml(&yaml).await;
        let api = Api::new(&running);
        assert_eq!(
            api.get("/whoami", &second_access).await.0,
            401,
            "{backend}: revoked before"
        );
        assert_eq!(
            api.get("/whoami", &third_access).await.0,
            200,
            "{backend}: still signed in"
        );
        let (status, user) = api.login(&email, password).await;
        assert_eq!(status, 200, "{backend}: {user}");
        let (_, admin) = api.login("admin@example.com", "admin-password").await;
        let admin_access = token_of(&admin, "access_token");
        let (_, users) = api.get("/auth/users", &admin_access).await;
        assert_eq!(users.as_array().unwrap().len(), 2, "{backend}: {users}");

        // Removing a user ends their sessions at once; an admin cannot remove themself.
        let user_id = user["user"]["id"].as_str().unwrap();
        let delete = reqwest::Method::DELETE;
        let path = format!("/auth/users/{user_id}");
        let (status, _) = api
            .call(delete.clone(), &path, Some(&admin_access), None)
            .await;
        assert_eq!(status, 204, "{backend}");
        let user_access = token_of(&user, "access_token");
        assert_eq!(api.get("/whoami", &user_access).await.0, 401, "{backend}");
        assert_eq!(
            api.call(delete, "/auth/users/admin-1", Some(&admin_access), None)
                .await,
            (400, json!({"error": "cannot delete yourself"})),
            "{backend}"
        );
        assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
    }
}

fn jwt(algorithm: Algorithm, key: &EncodingKey, claims: Value) -> String {
    encode(&Header::new(algorithm), &claims, key).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_a_401_with_a_json_error() {
    let dir = TempDir::new("auth-bad-tokens");
    let dsn = dir.0.join("app.db").to_string_lossy().into_owned();
    let running = start_yaml(&app(&dsn, "users", &hs256_config())).await;
    let api = Api::new(&running);
    let (_, login) = api.login("admin@example.com", "admin-password").await;
    let good = token_of(&login, "access_token");
    let (status, _) = api.get("/admin", &good).await;
    assert_eq!(status, 200);

    // Claims of a real token, re-signed in every wrong way.
    let payload = good.split('.').nth(1).unwrap();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let secret = EncodingKey::from_secret(SECRET.as_bytes());
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let public_pem =
        std::fs::read(repo_root().join("tests/fixtures/jwt/rs256-public.pem")).unwrap();
    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 3600);
    let mut forged_role = claims.clone();
    forged_role["role"] = json!("admin");
    // Signed with the right key, but its session is gone (it was accepted: #16).
    let mut gone_session = claims.clone();
    gone_session["sid"] = json!("a-session-that-no-longer-exists");
    gone_session["iat"] = json!(now() - 60);
    claims["role"] = json!("admin");
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "Authorization header required"),
        (
            "another scheme",
            Some("Basic YWRtaW46YWRtaW4=".into()),
            "Bearer authorization required",
        ),
        (
            "garbled",
            Some("Bearer not.a.jwt".into()),
            "Invalid credentials",
        ),
        (
            "truncated",
            Some(format!("Bearer {}", &good[..good.len() - 5])),
            "Invalid credentials",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                jwt(Algorithm::HS256, &secret, expired)
            )),
            "token expired",
        ),
        (
            "another HMAC algorithm",
            Some(format!(
                "Bearer {}",
                jwt(Algorithm::HS512, &secret, claims.clone())
            )),
            "Invalid credentials",
        ),
        (
            "another key",
            Some(format!(
                "Bearer {}",
                jwt(
                    Algorithm::HS256,
                    &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
                    forged_role
                )
            )),
            "Invalid credentials",
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims)
            )),
            "Invalid credentials",
        ),
        (
            "a session that no longer exists",
            Some(format!(
                "Bearer {}",
                jwt(Algorithm::HS256, &secret, gone_session)
            )),
            "token revoked",
        ),
        // Algorithm confusion: the RSA public key used as an HMAC secret.
        (
            "public key as HMAC secret",
            Some(format!(
                "Bearer {}",
                jwt(
                    Algorithm::HS256,
                    &EncodingKey::from_secret(&public_pem),
                    claims.clone()
                )
            )),
            "Invalid credentials",
        ),
    ];
    for (case, header, message) in cases {
        let mut req = api.http.get(format!("{}/admin", api.base));
        if let Some(header) = header {
            req = req.header("authorization", header);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{case}");
        assert_eq!(res.headers()["content-type"], "application/json", "{case}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer", "{case}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body, json!({"error": message}), "{case}");
    }
    // The endpoints that read the token themselves refuse the same way.
    let (status, body) = api
        .call(reqwest::Method::GET, "/auth/me", Some("not.a.jwt"), None)
        .await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "Invalid credentials"}))
    );
    let (status, body) = api
        .call(reqwest::Method::POST, "/auth/login", None, None)
        .await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "invalid request body"}))
    );
    assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
}

fn key_file(name: &str) -> String {
    repo_root()
        .join("tests/fixtures/jwt")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_are_signed_with_the_private_key_and_checked_with_the_public_one() {
    for algorithm in ["RS256", "ES256"] {
        let lower = algorithm.to_lowercase();
        let config = format!(
            r#"      algorithm: {algorithm}
      privateKeyFile: "{}"
      publicKeyFile: "{}"
      issuer: wf-test
      audience: orders-api
      users:
        - {{email: ops@example.com, password: "ops-password", role: admin}}"#,
            key_file(&format!("{lower}-private.pem")),
            key_file(&format!("{lower}-public.pem")),
        );
        let dsn = TempDir::new("auth-keys")
            .0
            .join("app.db")
            .to_string_lossy()
            .into_owned();
        let running = start_yaml(&app(&dsn, "users", &config)).await;
        let api = Api::new(&running);
        let (status, login) = api.login("ops@example.com", "ops-password").await;
        assert_eq!(status, 200, "{algorithm}: {login}");
        let access = token_of(&login, "token");
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(access.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], algorithm);
        let (status, _) = api.get("/admin", &access).await;
        assert_eq!(status, 200, "{algorithm}");
        assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
    }

    // A middleware holding only the public key accepts the issuer's tokens and no others.
    let yaml = format!(
        r#"
modules:
  - name: web
    type: http.server
    config: {{address: "127.0.0.1:0"}}
  - name: routes
    type: http.router
  - name: authn
    type: http.middleware.auth
    config: {{algorithm: ES256, publicKeyFile: "{}", issuer: issuer-a}}
workflows:
  http:
    routes:
      - method: GET
        path: /api/orders
        middlewares: [authn]
        roles: [reader]
        steps:
          - {{name: reply, type: step.set, config: {{values: {{who: "{{{{ meta.auth.sub }}}}"}}}}}}
"#,
        key_file("es256-public.pem")
    );
    let running = start_yaml(&yaml).await;
    let api = Api::new(&running);
    let sign = |file: &str, claims: Value| {
        let pem = std::fs::read(key_file(file)).unwrap();
        jwt(
            Algorithm::ES256,
            &EncodingKey::from_ec_pem(&pem).unwrap(),
            claims,
        )
    };
    let claims = json!({"sub": "svc-1", "iss": "issuer-a", "roles": ["reader"], "exp": now() + 60});
    let (status, body) = api
        .get("/orders", &sign("es256-private.pem", claims.clone()))
        .await;
    assert_eq!((status, body), (200, json!({"who": "svc-1"})));
    let (status, _) = api
        .get("/orders", &sign("es256-other-private.pem", claims.clone()))
        .await;
    assert_eq!(status, 401, "signed by another key");
    let mut other_issuer = claims.clone();
    other_issuer["iss"] = json!("issuer-b");
    let (status, _) = api
        .get("/orders", &sign("es256-private.pem", other_issuer))
        .await;
    assert_eq!(status, 401, "another issuer");
    let mut no_role = claims;
    no_role["roles"] = json!(["writer"]);
    let (status, body) = api
        .get("/orders", &sign("es256-private.pem", no_role))
        .await;
    assert_eq!(
        (status, body),
        (403, json!({"error": "forbidden: requires role reader"}))
    );
    assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_users_in_the_original_format_and_imported_bcrypt_hashes_sign_in() {
    let dir = TempDir::new("auth-seed");
    let legacy_hash = bcrypt::hash("imported-password", 4).unwrap();
    std::fs::write(
        dir.0.join("users.json"),
        json!([
            {"id": "user-001", "data": {"email": "responder1@example.com", "name": "Alex", "role": "responder", "affiliateId": "aff-001", "programIds": ["prog-001"], "password": "demo123"}, "state": "active"},
            {"id": "user-002", "data": {"email": "old@example.com", "name": "Old", "passwordHash": legacy_hash}}
        ])
        .to_string(),
    )
    .unwrap();
    let db_path = dir.0.join("app.db").to_string_lossy().into_owned();
    let config = format!(
        r#"      secret: "{SECRET}"
      seedFile: "{}""#,
        dir.0.join("users.json").display()
    );
    let running = start_yaml(&app(&db_path, "users", &config)).await;
    let api = Api::new(&running);
    let (status, login) = api.login("responder1@example.com", "demo123").await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["user"]["id"], "user-001");
    assert_eq!(login["user"]["affiliateId"], "aff-001");
    let (_, me) = api.get("/whoami", &token_of(&login, "token")).await;
    assert_eq!(me["role"], "responder");
    // Registration is closed once users exist (the original's rule).
    let (status, body) = api
        .post(
            "/auth/register",
            json!({"email": "new@example.com", "password": "a-good-password"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"error": "registration is disabled; contact an administrator"})
        )
    );

    let (status, _) = api.login("old@example.com", "imported-password").await;
    assert_eq!(status, 200);
    assert_eq!(running.stop(Duration::from_secs(5)).await, 0);

    // The bcrypt hash was replaced by an Argon2id one at that sign-in.
    let db = wf_storage::Database::new(
        "check",
        &wf_storage::Target::Sqlite {
            path: db_path.clone(),
            wal: true,
        },
        &wf_storage::PoolSettings {
            max_connections: 1,
            min_connections: 0,
            connect_timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    let rows = db
        .query(
            "SELECT password_hash FROM wf_auth_users WHERE email = ?",
            &[json!("old@example.com")],
        )
        .await
        .unwrap();
    let hash = rows[0]["password_hash"].as_str().unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    db.close().await;
}

#[tokio::test]
async fn configuration_mistakes_are_located() {
    let short = invalid_yaml(
        "modules:\n  - name: auth\n    type: auth.jwt\n    config:\n      secret: too-short\n",
    );
    assert!(short.contains("app.yaml:5:"), "{short}");
    assert!(short.contains("at least 32 bytes"), "{short}");

    let no_keys = invalid_yaml(
        "modules:\n  - name: auth\n    type: auth.jwt\n    config:\n      algorithm: RS256\n",
    );
    assert!(no_keys.contains("needs `privateKey`"), "{no_keys}");

    let format = invalid_yaml(&format!(
        "modules:\n  - name: auth\n    type: auth.jwt\n    config:\n      secret: \"{SECRET}\"\n      responseFormat: v2\n"
    ));
    assert!(format.contains("unknown response format `v2`"), "{format}");

    let roles = invalid_yaml(
        r#"
modules:
  - {name: web, type: http.server, config: {address: "127.0.0.1:0"}}
  - {name: routes, type: http.router}
  - {name: hello, type: http.handler}
workflows:
  http:
    routes:
      - {method: GET, path: /x, handler: hello, roles: [admin]}
"#,
    );
    assert!(
        roles.contains("`roles` needs an authentication middleware"),
        "{roles}"
    );

    let mismatched = build_error(&format!(
        r#"
modules:
  - name: auth
    type: auth.jwt
    config:
      algorithm: ES256
      privateKeyFile: "{}"
      publicKeyFile: "{}"
"#,
        key_file("es256-other-private.pem"),
        key_file("es256-public.pem")
    ));
    assert!(mismatched.contains("do not match"), "{mismatched}");
}

/// Copies `from` into `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_users_and_products_service_signs_users_up_and_in() {
    // A copy, since the service keeps its SQLite file beside its config. The seed examples
    // lack the original's `seed/products.json`; a small one stands in.
    let dir = TempDir::new("users-products");
    copy_dir(&wf_tests::seed_examples().join("ecommerce-app"), &dir.0);
    std::fs::create_dir_all(dir.0.join("seed")).unwrap();
    std::fs::write(
        dir.0.join("seed/products.json"),
        json!([{"id": "p-1", "data": {"name": "Kettle", "price": 25}}]).to_string(),
    )
    .unwrap();
    let registry = wf_host::registry().unwrap();
    let built = wf_tests::build_on_loopback(&dir.0.join("configs/users-products.yaml"), &registry);
    let running = built.start(Duration::from_secs(10)).await.unwrap();
    let api = Api {
        http: client(),
        base: format!("http://{}/api", server_addr(&running, "web-server")),
    };

    let (status, products) = api
        .call(reqwest::Method::GET, "/products", None, None)
        .await;
    assert_eq!(status, 200, "{products}");
    assert_eq!(products.as_array().map(Vec::len), Some(1), "{products}");

    // The first user may sign up; the token opens the profile behind the auth middleware.
    let (status, body) = api
        .post(
            "/auth/register",
            json!({"email": "ann@example.com", "password": "a-good-password", "name": "Ann"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, login) = api.login("ann@example.com", "a-good-password").await;
    assert_eq!(status, 200, "{login}");
    let token = token_of(&login, "token");
    let (status, profile) = api.get("/auth/profile", &token).await;
    assert_eq!(
        (status, profile["email"].as_str()),
        (200, Some("ann@example.com"))
    );
    let (status, _) = api
        .call(reqwest::Method::GET, "/auth/profile", None, None)
        .await;
    assert_eq!(status, 401);
    let (status, updated) = api
        .call(
            reqwest::Method::PUT,
            "/auth/profile",
            Some(&token),
            Some(json!({"name": "Ann B"})),
        )
        .await;
    assert_eq!((status, updated["name"].as_str()), (200, Some("Ann B")));

    // The middleware chain: a request id comes back, and preflights are answered.
    let res = api
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/auth/login", api.base))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let res = api
        .http
        .get(format!("{}/products", api.base))
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(running.stop(Duration::from_secs(5)).await, 0);
}
