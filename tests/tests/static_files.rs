//! `static.fileserver` over real HTTP: content types and cache headers, revalidation, byte
//! ranges, single-page-app fallback, and every way out of the root refused.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::time::Duration;

use wf_tests::{TempDir, client, raw_get, server_addr, start_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_served_with_validators_ranges_and_no_way_out() {
    let dir = TempDir::new("static-files");
    let site = dir.0.join("site");
    std::fs::create_dir_all(site.join("docs")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>app</h1>").unwrap();
    std::fs::write(site.join("app.js"), "console.log('hello, world');").unwrap();
    std::fs::write(site.join("docs/index.html"), "<h1>docs</h1>").unwrap();
    std::fs::write(site.join("my file.txt"), "spaced").unwrap();
    std::fs::write(site.join(".env"), "SECRET=hunter2").unwrap();
    std::fs::write(dir.0.join("outside.txt"), "outside the root").unwrap();
    std::os::unix::fs::symlink(dir.0.join("outside.txt"), site.join("escape.txt")).unwrap();
    // A link to a hidden file inside the root (it was served: #16).
    std::os::unix::fs::symlink(site.join(".env"), site.join("config.txt")).unwrap();
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router}}
  - {{name: site, type: static.fileserver, config: {{root: "{}", cacheMaxAge: 60}}}}
  - {{name: assets, type: static.fileserver, config: {{root: "{}", prefix: /assets, spa: false, cache_max_age: 5, security_headers: true}}}}
"#,
        site.display(),
        site.display()
    ))
    .await;
    let addr = server_addr(&app, "web");
    let base = format!("http://{addr}");
    let http = client();

    let js = http.get(format!("{base}/app.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    let headers = js.headers().clone();
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(headers["cache-control"], "public, max-age=60");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(js.text().await.unwrap(), "console.log('hello, world');");
    let etag = headers["etag"].to_str().unwrap().to_string();
    let modified = headers["last-modified"].to_str().unwrap().to_string();

    // Revalidation.
    let same = http
        .get(format!("{base}/app.js"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 304);
    let same = http
        .get(format!("{base}/app.js"))
        .header("If-Modified-Since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 304);
    let changed = http
        .get(format!("{base}/app.js"))
        .header("If-None-Match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);

    // Ranges: one range is served; one past the end is 416; a stale If-Range gets it whole.
    let part = http
        .get(format!("{base}/app.js"))
        .header("Range", "bytes=0-10")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 0-10/28");
    assert_eq!(part.text().await.unwrap(), "console.log");
    let tail = http
        .get(format!("{base}/app.js"))
        .header("Range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.text().await.unwrap(), "ld');");
    let past = http
        .get(format!("{base}/app.js"))
        .header("Range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], "bytes */28");
    let stale = http
        .get(format!("{base}/app.js"))
        .header("Range", "bytes=0-1")
        .header("If-Range", "\"old\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    // A range that is not valid syntax is ignored, as RFC 9110 says: the whole file (it was 416:
    // #16).
    for invalid in ["bytes=9-1", "bytes=x-5", "bytes=5"] {
        let whole = http
            .get(format!("{base}/app.js"))
            .header("Range", invalid)
            .send()
            .await
            .unwrap();
        assert_eq!(whole.status(), 200, "{invalid}");
        assert_eq!(whole.text().await.unwrap().len(), 28);
    }

    // HEAD: the headers, no body.
    let head = http.head(format!("{base}/app.js")).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "28");
    assert!(head.bytes().await.unwrap().is_empty());

    // Directories serve their index; encoded names decode; HTML is revalidated each time.
    let docs = http.get(format!("{base}/docs/")).send().await.unwrap();
    assert_eq!(docs.headers()["cache-control"], "no-cache");
    assert_eq!(docs.text().await.unwrap(), "<h1>docs</h1>");
    let spaced = http
        .get(format!("{base}/my%20file.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(spaced.text().await.unwrap(), "spaced");

    // Single-page app: unknown paths get the root's index.
    let route = http.get(format!("{base}/orders/42")).send().await.unwrap();
    assert_eq!(
        (route.status().as_u16(), route.text().await.unwrap()),
        (200, "<h1>app</h1>".to_string())
    );

    // No way out: `..` (raw and encoded) is 403; a symbolic link that leads outside and a
    // hidden file are never served.
    for path in [
        "/../outside.txt",
        "/docs/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/docs%2f..%2f..%2foutside.txt",
        "/..%5coutside.txt",
    ] {
        let (status, body) = raw_get(addr, path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(!body.contains("outside the root"));
    }
    for path in ["/escape.txt", "/.env", "/config.txt", "/assets/config.txt"] {
        let (_, body) = raw_get(addr, path).await;
        assert!(
            !body.contains("outside the root") && !body.contains("hunter2"),
            "{path}: {body}"
        );
    }

    // Under a prefix, without the fallback.
    let asset = http
        .get(format!("{base}/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 200);
    // (`spa`, `cache_max_age`, `security_headers`: the names of some of the original's examples)
    assert_eq!(asset.headers()["cache-control"], "public, max-age=5");
    assert_eq!(asset.headers()["x-frame-options"], "DENY");
    let missing = http
        .get(format!("{base}/assets/missing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let (status, _) = raw_get(addr, "/assets/.env").await;
    assert_eq!(status, 404);
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_prefix_is_stripped_too() {
    let dir = TempDir::new("static-prefixed");
    std::fs::write(dir.0.join("app.js"), "let x = 1;").unwrap();
    std::fs::write(dir.0.join("index.html"), "<h1>app</h1>").unwrap();
    let app = start_yaml(&format!(
        r#"
modules:
  - {{name: web, type: http.server, config: {{address: "127.0.0.1:0"}}}}
  - {{name: routes, type: http.router, config: {{prefix: /app}}}}
  - {{name: assets, type: static.fileserver, config: {{root: "{}", prefix: /assets}}}}
"#,
        dir.0.display()
    ))
    .await;
    let base = format!("http://{}", server_addr(&app, "web"));
    let js = client()
        .get(format!("{base}/app/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(js.text().await.unwrap(), "let x = 1;");
    assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
}
