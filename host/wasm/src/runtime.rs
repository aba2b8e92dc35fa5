//! The wasm runtime: one wasmtime `Engine` (fuel and epoch interruption on), one `Linker`,
//! the epoch ticker, the instance-slot semaphore and the compiled-code cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::StepComponent;
use crate::cache::CodeCache;
use crate::host::HostState;
use crate::limits::MAX_MEMORY_MIB;

/// How often the epoch advances; a call's time limit is counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings of the runtime itself (the per-component limits are in [`crate::Limits`]).
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where compiled machine code is cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may exist at once; calls beyond it wait for a free slot.
    pub max_instances: u32,
    /// Use the pooling allocator (falls back to on-demand allocation when the machine
    /// refuses the reservation).
    pub pooling: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_instances: 256,
            pooling: true,
        }
    }
}

/// One per process or app; cheap to share (`Arc`).
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<CodeCache>,
    slots: Arc<Semaphore>,
    /// One compile at a time: a compile already uses every core (parallel compilation), and
    /// a burst of uploads must queue rather than pile up threads and memory.
    compiling: Semaphore,
    pooling: bool,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    config
}

fn pooling_config(max_instances: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    // A Rust wasip2 component is a handful of core instances (the program, the WASI adapter,
    // shims), each with at most a couple of memories and tables.
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 8)
        .total_memories(max_instances * 2)
        .total_tables(max_instances * 8)
        .total_stacks(max_instances)
        .max_memory_size((MAX_MEMORY_MIB as usize) << 20)
        // One component must not take the whole pool.
        .max_core_instances_per_component(32)
        .max_memories_per_component(8)
        .max_tables_per_component(32);
    pool
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Arc<Runtime>> {
        let mut pooling = config.pooling;
        let engine = if pooling {
            let mut wasm_config = base_config();
            wasm_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
                config.max_instances,
            )));
            match Engine::new(&wasm_config) {
                Ok(engine) => engine,
                Err(e) => {
                    tracing::warn!(
                        "the pooling allocator is unavailable ({e}); instances are allocated on demand"
                    );
                    pooling = false;
                    Engine::new(&base_config())?
                }
            }
        } else {
            Engine::new(&base_config())?
        };

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        StepComponent::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;

        let cache = config
            .cache_dir
            .map(|dir| CodeCache::new(dir, &engine))
            .transpose()?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(&engine, ticker_stop.clone())?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache,
            slots: Arc::new(Semaphore::new(config.max_instances as usize)),
            compiling: Semaphore::new(1),
            pooling,
            ticker_stop,
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    pub fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Compiles `bytes` (already checked to be a component), or loads the cached machine
    /// code for them. CPU-heavy: runs on the blocking pool.
    pub async fn compile(
        self: &Arc<Self>,
        bytes: Arc<Vec<u8>>,
        digest: String,
    ) -> anyhow::Result<(Component, bool)> {
        let _turn = self.compiling.acquire().await?;
        let runtime = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(cache) = &runtime.cache
                && let Some(component) = cache.load(&runtime.engine, &digest)
            {
                return Ok((component, true));
            }
            let component = Component::new(&runtime.engine, bytes.as_slice())?;
            if let Some(cache) = &runtime.cache {
                cache.store(&digest, &component);
            }
            Ok((component, false))
        })
        .await?
    }

    /// Deletes the cached machine code of `digest`, if any.
    pub fn forget_code(&self, digest: &str) {
        if let Some(cache) = &self.cache {
            cache.remove(digest);
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] so deadlines interrupt running guest code.
/// Holds the engine weakly: the thread ends when the runtime is dropped.
fn spawn_epoch_ticker(engine: &Engine, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wf-wasm-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
    Ok(())
}
