//! The baseline for HTTP benchmarks: bare axum answering the same JSON the benchmarked pipeline
//! produces, on the same machine in the same run. Usage: `wf-bench-baseline 127.0.0.1:PORT`.
//! It also takes trace exports (`POST /v1/traces`) from the traced scenario, as a collector
//! would, so that scenario pays for real exports.

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{Response, header};
use axum::routing::{get, post};

async fn order(Path(id): Path<String>) -> Response<Body> {
    let body = serde_json::json!({"id": id, "status": "accepted", "source": "bench"});
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .unwrap_or_default()
}

fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new()
            .route("/orders/{id}", get(order))
            .route("/v1/traces", post(|_: axum::body::Bytes| async { "{}" }));
        let listener = tokio::net::TcpListener::bind(&address).await?;
        axum::serve(listener, app).await
    })
}
