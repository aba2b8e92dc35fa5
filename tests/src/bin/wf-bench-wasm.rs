//! Wasm runtime costs, in process: call overhead with warm (`reuse`) and fresh instances
//! (p50/p99), a cold compile against a cached load, and a hot swap (validate + swap) with the
//! code cached and cold while another task calls the component in a loop.
//! Usage: `wf-bench-wasm [CALLS]`; needs `make plugins`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, json};
use wf_wasm::component::{CallInfo, ComponentSpec, LoadedComponent};
use wf_wasm::{
    Capabilities, ComponentRegistry, Expect, ExtraGrant, HostServices, Limits, Origin, Policy,
    Runtime, RuntimeConfig,
};

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[((sorted.len() - 1) * p) / 100]
}

fn spec(bytes: &Arc<Vec<u8>>, policy: Policy) -> ComponentSpec {
    ComponentSpec {
        bytes: bytes.clone(),
        config: Map::new(),
        capabilities: Capabilities::default(),
        limits: Limits {
            policy,
            ..Limits::default()
        },
        services: HostServices::default(),
    }
}

/// A different file with the same code: a custom section appended.
fn variant(bytes: &[u8], tag: u32) -> Vec<u8> {
    let payload = format!("\x05bench{tag}");
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(payload.as_bytes());
    out
}

fn main() -> anyhow::Result<()> {
    let calls: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let path = wf_tests::repo_root().join("plugins/dist/hello.wasm");
    let bytes = Arc::new(
        std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e} (run `make plugins`)", path.display()))?,
    );
    let cache = std::env::temp_dir().join(format!("wf-bench-wasm-cache-{}", std::process::id()));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    tokio.block_on(async {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.clone()),
            ..RuntimeConfig::default()
        })?;
        println!(
            "wasm: {} KiB component, pooling allocator: {}",
            bytes.len() / 1024,
            runtime.pooling()
        );
        let input = json!({"name": "bench"});
        let call = CallInfo {
            pipeline: "bench".into(),
            run_id: "bench".into(),
            step: "greet".into(),
            attempt: 1,
            ..CallInfo::default()
        };
        for policy in [Policy::Reuse, Policy::Fresh] {
            let component = LoadedComponent::load(&runtime, spec(&bytes, policy)).await?;
            for _ in 0..calls / 10 {
                component.run_step(&call, &input).await?;
            }
            let mut times = Vec::with_capacity(calls);
            for _ in 0..calls {
                let started = Instant::now();
                component.run_step(&call, &input).await?;
                times.push(started.elapsed());
            }
            times.sort_unstable();
            println!(
                "call {:<6} p50 {:>9.2?}  p99 {:>9.2?}  ({calls} calls)",
                format!("{policy:?}").to_lowercase(),
                percentile(&times, 50),
                percentile(&times, 99)
            );
        }

        // Compile from scratch (a new digest each round) against loading the cached code.
        let rounds = 5;
        let mut cold = Vec::new();
        let mut cached = Vec::new();
        for round in 0..rounds {
            let fresh_bytes = Arc::new(variant(&bytes, 1000 + round));
            let digest = wf_wasm::cache::sha256_hex(&fresh_bytes);
            let started = Instant::now();
            runtime.compile(fresh_bytes.clone(), digest.clone()).await?;
            cold.push(started.elapsed());
            let started = Instant::now();
            let (_, was_cached) = runtime.compile(fresh_bytes, digest).await?;
            cached.push(started.elapsed());
            anyhow::ensure!(was_cached, "the second compile should hit the cache");
        }
        cold.sort_unstable();
        cached.sort_unstable();
        println!(
            "compile cold   median {:>9.2?}   cached load median {:>9.2?}",
            cold[rounds as usize / 2],
            cached[rounds as usize / 2]
        );

        // Hot swap through the registry: compile (or cache) + instantiate_pre + describe +
        // validate-config + the pointer swap.
        let registry = Arc::new(ComponentRegistry::new(
            runtime.clone(),
            HostServices::default(),
            Limits::default(),
            Default::default(),
            None,
        ));
        registry
            .install(
                &Expect::Name("hello"),
                registry.spec(&Expect::Name("hello"), bytes.clone(), ExtraGrant::None)?,
                Origin::Upload,
            )
            .await?;
        // Load while swapping: a task calling the live version in a loop, as requests would.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let (registry, stop, call, input) = (registry.clone(), stop.clone(), call.clone(), input.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let live = registry.get("hello").and_then(|s| s.live());
                    match live {
                        Some(c) if c.run_step(&call, &input).await.is_ok() => ok += 1,
                        _ => failed += 1,
                    }
                    tokio::task::yield_now().await;
                }
                (ok, failed)
            })
        };
        let mut swap_cold = Vec::new();
        let mut swap_cached = Vec::new();
        for round in 0..rounds {
            let new_bytes = Arc::new(variant(&bytes, 2000 + round));
            for (times, b) in [
                (&mut swap_cold, new_bytes.clone()),
                (&mut swap_cached, new_bytes),
            ] {
                // The second install of the same bytes after a different one is a real swap
                // served from the code cache.
                let other = Arc::new(variant(&bytes, 9000 + round));
                registry
                    .install(
                        &Expect::Name("hello"),
                        registry.spec(&Expect::Name("hello"), other, ExtraGrant::None)?,
                        Origin::Upload,
                    )
                    .await?;
                let started = Instant::now();
                registry
                    .install(
                        &Expect::Name("hello"),
                        registry.spec(&Expect::Name("hello"), b, ExtraGrant::None)?,
                        Origin::Upload,
                    )
                    .await?;
                times.push(started.elapsed());
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (calls_ok, calls_failed) = load.await?;
        swap_cold.sort_unstable();
        swap_cached.sort_unstable();
        println!(
            "hot swap under load: cold median {:>9.2?}   cached median {:>9.2?}   ({calls_ok} calls meanwhile, {calls_failed} failed)",
            swap_cold[rounds as usize / 2],
            swap_cached[rounds as usize / 2]
        );
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}
