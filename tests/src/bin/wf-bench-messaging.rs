//! Messaging throughput and latency: messages published to a topic start a pipeline
//! (`event` trigger → `step.set` → `step.publish` to a reply topic) on the in-memory broker,
//! core NATS and NATS JetStream; the baseline is the same pipeline called directly, in the same
//! run. Usage: `wf-bench-messaging [MESSAGES] [NATS_URL]` (NATS is skipped when unreachable).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, json};
use tokio::sync::Notify;
use wf_engine::{Extensions, build, validate};
use wf_messaging::{MessageBroker, MessageHandler};

/// Counts replies and records each one's latency (the payload carries its send time).
struct Replies {
    count: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u64>>,
    epoch: Instant,
    arrived: Notify,
}

#[wf_engine::async_trait]
impl MessageHandler for Replies {
    async fn handle(&self, _topic: &str, payload: Bytes) -> anyhow::Result<()> {
        let sent: u64 = serde_json::from_slice::<serde_json::Value>(&payload)?["sent_us"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        let now = self.epoch.elapsed().as_micros() as u64;
        if let Ok(mut l) = self.latencies_us.lock() {
            l.push(now.saturating_sub(sent));
        }
        self.count.fetch_add(1, Ordering::AcqRel);
        self.arrived.notify_waiters();
        Ok(())
    }
}

impl Replies {
    async fn wait_for(&self, n: u64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while self.count.load(Ordering::Acquire) < n {
            let notified = self.arrived.notified();
            if self.count.load(Ordering::Acquire) >= n {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "only {} of {n} replies arrived",
                    self.count.load(Ordering::Acquire)
                );
            }
        }
        Ok(())
    }
}

fn app_yaml(broker: &str) -> String {
    format!(
        r#"
modules:
  - {{name: bus, {broker}}}
pipelines:
  work:
    trigger: {{type: event, config: {{topic: bench.in}}}}
    steps:
      - {{name: enrich, type: step.set, config: {{values: {{seen: true}}}}}}
      - {{name: reply, type: step.publish, config: {{topic: bench.out, payload: {{id: "{{{{ .id }}}}", sent_us: "{{{{ .sent_us }}}}"}}}}}}
"#
    )
}

/// Validates and builds an app from YAML text.
fn build_app(yaml: &str) -> anyhow::Result<wf_engine::App> {
    let registry = wf_host::registry()?;
    let loaded = wf_config::load_str(
        "bench.yaml",
        yaml,
        &std::collections::HashMap::<String, String>::new(),
    );
    let validated = validate(loaded, &registry)
        .map_err(|i| anyhow::anyhow!(i.diagnostics.render(&i.config.sources)))?;
    build(&validated, &registry).map_err(|d| anyhow::anyhow!("{d:?}"))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Publishes `messages` as fast as possible and waits for every reply; then 500 one at a time
/// for latency. Returns messages per second.
async fn measure(
    label: &str,
    broker_yaml: &str,
    messages: u64,
    baseline: Option<f64>,
) -> anyhow::Result<f64> {
    let app = build_app(&app_yaml(broker_yaml))?;
    let replies = Arc::new(Replies {
        count: AtomicU64::new(0),
        latencies_us: Default::default(),
        epoch: Instant::now(),
        arrived: Notify::new(),
    });
    let bus = app.services().get::<dyn MessageBroker>("bus")?;
    bus.subscribe("bench.out", "bench", replies.clone())?;
    let running = app
        .start(Duration::from_secs(10))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let payload = |i: u64| {
        Bytes::from(
            json!({"id": i, "sent_us": replies.epoch.elapsed().as_micros().to_string()})
                .to_string(),
        )
    };

    // Warm-up, then throughput.
    for i in 0..messages / 10 {
        bus.publish("bench.in", payload(i)).await?;
    }
    replies.wait_for(messages / 10).await?;
    let base = replies.count.load(Ordering::Acquire);
    let started = Instant::now();
    for i in 0..messages {
        bus.publish("bench.in", payload(i)).await?;
    }
    replies.wait_for(base + messages).await?;
    let rate = messages as f64 / started.elapsed().as_secs_f64();

    // Latency: one message in flight at a time.
    if let Ok(mut l) = replies.latencies_us.lock() {
        l.clear();
    }
    let mut expected = replies.count.load(Ordering::Acquire);
    for i in 0..500 {
        bus.publish("bench.in", payload(i)).await?;
        expected += 1;
        replies.wait_for(expected).await?;
    }
    let mut latencies = replies
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort_unstable();
    let ratio = baseline
        .map(|b| format!("  ({:.0}% of the direct call)", rate / b * 100.0))
        .unwrap_or_default();
    println!(
        "{label:<28} {rate:>9.0} msg/s{ratio}   latency p50 {} µs, p99 {} µs",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    running.stop(Duration::from_secs(10)).await;
    Ok(rate)
}

/// The same pipeline run directly (its publish going to an in-memory broker): the baseline.
async fn direct(messages: u64) -> anyhow::Result<f64> {
    let app = build_app(&app_yaml(
        "type: messaging.broker, config: {delivery: sync}",
    ))?;
    let pipeline = app
        .state()
        .pipelines()
        .get("work")
        .ok_or_else(|| anyhow::anyhow!("no pipeline"))?;
    let mut input = Map::new();
    input.insert("id".into(), json!(1));
    input.insert("sent_us".into(), json!("0"));
    for _ in 0..messages / 10 {
        pipeline.run(input.clone(), Extensions::default()).await?;
    }
    let started = Instant::now();
    for _ in 0..messages {
        pipeline.run(input.clone(), Extensions::default()).await?;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    println!(
        "{:<28} {rate:>9.0} msg/s  (baseline: the pipeline called directly)",
        "direct"
    );
    Ok(rate)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let messages: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let nats = args
        .next()
        .or_else(|| std::env::var("WF_TEST_NATS_URL").ok())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let baseline = direct(messages).await?;
        measure("in-memory, async delivery", "type: messaging.broker", messages, Some(baseline)).await?;
        measure("in-memory, sync delivery", "type: messaging.broker, config: {delivery: sync}", messages, Some(baseline)).await?;
        let core = format!("type: messaging.nats, config: {{url: \"{nats}\", connectTimeout: 2s}}");
        match measure("NATS core", &core, messages, Some(baseline)).await {
            Ok(_) => {
                let stream = format!("WFBENCH{}", std::process::id());
                let js = format!("type: messaging.nats, config: {{url: \"{nats}\", jetstream: {{stream: {stream}, subjects: [\"bench.>\"], storage: memory}}}}");
                measure("NATS JetStream (memory)", &js, messages / 4, Some(baseline)).await?;
                if let Ok(client) = async_nats::connect(nats.as_str()).await {
                    let _ = async_nats::jetstream::new(client).delete_stream(&stream).await;
                }
            }
            Err(e) => println!("NATS skipped: {e:#}"),
        }
        anyhow::Ok(())
    })
}
