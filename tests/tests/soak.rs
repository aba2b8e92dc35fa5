//! Soak (issue #16): steady mixed load on the bundled hello, orders and wasm examples while the
//! wasm example's component is swapped (uploads and its watched folder, alternately) and whole
//! apps are started and stopped beside them. No request may fail, and resident memory, open
//! file descriptors and live tasks must come back to where they were after the warm-up.
//!
//! `WF_SOAK_SECS` sets the length: 20 s in `make test`, 10 minutes in `make soak`.
//! wf has no in-process config reload; starting and stopping whole apps exercises the same
//! build, start and stop paths for leaks.

#![allow(clippy::unwrap_used)] // test helpers may panic: that is how a test fails

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use wf_engine::RunningApp;
use wf_tests::{TempDir, build_file, plugin, repo_root, server_addr, wasm_variant};

/// What resident memory may grow between the warm-up and the end: allocator slack and the
/// instance pools filling, not a leak (a leak of a few hundred bytes per request shows as
/// tens of MiB over a soak).
const RSS_MARGIN_KIB: u64 = 48 * 1024;
/// Open file descriptors and tasks may differ by a few (a pooled connection, a timer).
const FD_MARGIN: usize = 8;
const TASK_MARGIN: usize = 16;

fn soak_length() -> Duration {
    Duration::from_secs(
        std::env::var("WF_SOAK_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    )
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
    tasks: usize,
}

fn usage() -> Usage {
    let rss_kib = wf_tests::rss_kib();
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    Usage {
        rss_kib,
        fds,
        tasks,
    }
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn start(path: &std::path::Path, vars: &HashMap<String, String>) -> RunningApp {
    build_file(path, vars)
        .start(Duration::from_secs(10))
        .await
        .unwrap()
}

/// The three examples, running.
struct Apps {
    hello: RunningApp,
    orders: RunningApp,
    wasm: RunningApp,
    wasm_dir: std::path::PathBuf,
}

/// Counts of what the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    swaps: AtomicU64,
    churned: AtomicU64,
}

/// Runs the load, the swaps and the churn for `length`, then stops them all and drops their
/// HTTP client, so its pooled connections close.
async fn run_load(apps: &Apps, length: Duration, tally: &Arc<Tally>) {
    let http = wf_tests::client();
    let stop = Arc::new(AtomicBool::new(false));
    let hello = format!("http://{}/hello", server_addr(&apps.hello, "web"));
    let orders = format!("http://{}/orders", server_addr(&apps.orders, "web"));
    let wasm = format!("http://{}", server_addr(&apps.wasm, "web"));
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let (http, stop, tally) = (http.clone(), stop.clone(), tally.clone());
        let (hello, orders, wasm) = (hello.clone(), orders.clone(), wasm.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (request, expected) = match worker % 3 {
                    0 => (http.get(&hello), 200),
                    1 => (
                        http.post(&orders)
                            .json(&json!({"sku": format!("S-{worker}"), "quantity": 1})),
                        202,
                    ),
                    _ => (
                        http.post(format!("{wasm}/greet"))
                            .json(&json!({"name": "soak"})),
                        200,
                    ),
                };
                match request.send().await {
                    Ok(response) if response.status().as_u16() == expected => {
                        let _ = response.bytes().await;
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => {
                        let status = response.status();
                        let body = response.text().await.unwrap_or_default();
                        eprintln!("soak: worker {worker} got {status}: {body}");
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("soak: worker {worker}: {e}");
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Swaps: an upload, then a file in the watched folder, alternately, each with new bytes.
    {
        let (http, stop, tally) = (http.clone(), stop.clone(), tally.clone());
        let (wasm, dir) = (wasm.clone(), apps.wasm_dir.join("components"));
        tasks.push(tokio::spawn(async move {
            let base = plugin("hello");
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let bytes = wasm_variant(&base, &round.to_string());
                if round.is_multiple_of(2) {
                    let response = http
                        .post(format!("{wasm}/api/dynamic/components?name=hello"))
                        .header("authorization", "Bearer soak-token")
                        .body(bytes)
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                } else {
                    // Written aside and renamed in, as a build tool does.
                    let tmp = dir.join(".hello.wasm.tmp");
                    std::fs::write(&tmp, bytes).unwrap();
                    std::fs::rename(&tmp, dir.join("hello.wasm")).unwrap();
                }
                tally.swaps.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }));
    }
    // Churn: a whole app built, started, asked once and stopped, again and again.
    {
        let (http, stop, tally) = (http.clone(), stop.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let path = repo_root().join("example/hello/app.yaml");
            let vars = vars(&[("HOST", "127.0.0.1"), ("PORT", "0")]);
            while !stop.load(Ordering::Relaxed) {
                let app = start(&path, &vars).await;
                let url = format!("http://{}/hello", server_addr(&app, "web"));
                let status = http.get(url).send().await.unwrap().status();
                assert_eq!(status, 200);
                assert_eq!(app.stop(Duration::from_secs(5)).await, 0);
                tally.churned.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    drop(http);
    // Connections close, retired instances drop, idle timers end.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// A webhook receiver that only counts (one that kept every request would grow by itself).
async fn counting_receiver() -> (Arc<AtomicU64>, String) {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            seen.fetch_add(1, Ordering::Relaxed);
            async { axum::http::StatusCode::OK }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (count, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_with_swaps_and_churn_fails_nothing_and_leaks_nothing() {
    let dir = TempDir::new("soak");
    let (delivered, webhook) = counting_receiver().await;
    let wasm_dir = dir.0.join("wasm");
    std::fs::create_dir_all(wasm_dir.join("components")).unwrap();
    // The example's route runs `greeter`; the soak swaps the first-party `hello` in its place.
    let example = std::fs::read_to_string(repo_root().join("example/wasm/app.yaml")).unwrap();
    std::fs::write(
        wasm_dir.join("app.yaml"),
        example.replace("component: greeter", "component: hello"),
    )
    .unwrap();
    std::fs::write(wasm_dir.join("components/hello.wasm"), plugin("hello")).unwrap();
    let dead_letters = dir.0.join("dead-letters");
    let apps = Apps {
        hello: start(
            &repo_root().join("example/hello/app.yaml"),
            &vars(&[("HOST", "127.0.0.1"), ("PORT", "0")]),
        )
        .await,
        orders: start(
            &repo_root().join("example/orders/memory.yaml"),
            &vars(&[
                ("ORDERS_ADDRESS", "127.0.0.1:0"),
                ("ORDERS_WEBHOOK_URL", &webhook),
                ("ORDERS_WEBHOOK_SECRET", "soak-secret"),
                ("ORDERS_DEAD_LETTERS", dead_letters.to_str().unwrap()),
            ]),
        )
        .await,
        wasm: start(
            &wasm_dir.join("app.yaml"),
            &vars(&[
                ("HOST", "127.0.0.1"),
                ("PORT", "0"),
                ("WF_ADMIN_TOKEN", "soak-token"),
            ]),
        )
        .await,
        wasm_dir,
    };
    let tally = Arc::new(Tally::default());
    let length = soak_length();

    run_load(&apps, length / 4, &tally).await;
    let warm = usage();
    run_load(&apps, length - length / 4, &tally).await;
    let end = usage();

    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    eprintln!(
        "soak: {ok} requests, {failed} failed, {} swaps, {} apps started and stopped in {length:?}; warm {warm:?}, end {end:?}",
        tally.swaps.load(Ordering::Relaxed),
        tally.churned.load(Ordering::Relaxed),
    );
    assert_eq!(failed, 0, "requests failed during the soak");
    assert!(ok > 100, "too little load to mean anything: {ok}");
    assert!(tally.swaps.load(Ordering::Relaxed) >= 4);
    assert!(
        end.rss_kib <= warm.rss_kib + RSS_MARGIN_KIB,
        "resident memory grew from {} KiB to {} KiB",
        warm.rss_kib,
        end.rss_kib
    );
    assert!(
        end.fds <= warm.fds + FD_MARGIN,
        "open files grew from {} to {}",
        warm.fds,
        end.fds
    );
    assert!(
        end.tasks <= warm.tasks + TASK_MARGIN,
        "live tasks grew from {} to {}",
        warm.tasks,
        end.tasks
    );
    // Orders were fulfilled and announced to the webhook.
    assert!(delivered.load(Ordering::Relaxed) > 0);
    for app in [apps.hello, apps.orders, apps.wasm] {
        assert_eq!(app.stop(Duration::from_secs(10)).await, 0);
    }
}
