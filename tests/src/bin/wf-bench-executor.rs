//! Executor overhead per step: runs a pipeline of N `step.set` steps many times in process and
//! prints the time per run and per step. Usage: `wf-bench-executor [STEPS] [RUNS]`.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Map;
use wf_engine::{Extensions, build, validate};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let runs: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let registry = wf_host::registry()?;
    let mut yaml = String::from("pipelines:\n  bench:\n    steps:\n");
    for i in 0..steps {
        yaml.push_str(&format!("      - {{name: s{i}, type: step.set, config: {{values: {{k{i}: \"{{{{ .id }}}}\", fixed: {i}}}}}}}\n"));
    }
    let loaded = wf_config::load_str("bench.yaml", &yaml, &HashMap::<String, String>::new());
    let validated = validate(loaded, &registry)
        .map_err(|i| anyhow::anyhow!(i.diagnostics.render(&i.config.sources)))?;
    let app = build(&validated, &registry).map_err(|d| anyhow::anyhow!("{d:?}"))?;
    let pipeline = app
        .state()
        .pipelines()
        .get("bench")
        .ok_or_else(|| anyhow::anyhow!("no pipeline"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut input = Map::new();
    input.insert("id".into(), serde_json::json!("order-1"));
    runtime.block_on(async {
        for _ in 0..runs / 10 {
            pipeline.run(input.clone(), Extensions::default()).await?;
        }
        let started = Instant::now();
        for _ in 0..runs {
            pipeline.run(input.clone(), Extensions::default()).await?;
        }
        let elapsed = started.elapsed();
        let per_run = elapsed / runs as u32;
        let per_step = per_run / steps.max(1) as u32;
        println!("executor: {steps} step.set steps, {runs} runs: {per_run:?} per run, {per_step:?} per step");
        anyhow::Ok(())
    })
}
