//! Object storage: named stores of byte objects under `/`-separated keys. `storage.local`
//! keeps them in a directory; `step.storage_put`, `step.storage_get`, `step.storage_list`
//! and `step.storage_delete` use any store through [`ObjectStore`].

use bytes::Bytes;
use wf_engine::{Registry, RegistryError, ServiceKind, async_trait};

pub mod key;
pub mod sigv4;
pub mod storage_delete;
pub mod storage_get;
pub mod storage_list;
pub mod storage_local;
pub mod storage_put;
pub mod storage_s3;

pub const PLUGIN: &str = "storage";

/// Module types that provide an [`ObjectStore`].
pub const STORE_TYPES: &[&str] = &["storage.local", "storage.s3"];

/// What a store says of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A store of byte objects by key. Keys are checked with [`key::check`] before they reach a
/// store.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    async fn put(&self, key: &str, body: Bytes) -> anyhow::Result<()>;
    /// `None` when there is no such object.
    async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>>;
    /// Objects whose key starts with `prefix`, in key order, at most `limit`.
    async fn list(&self, prefix: &str, limit: usize) -> anyhow::Result<Vec<ObjectInfo>>;
    /// Whether the object was there.
    async fn delete(&self, key: &str) -> anyhow::Result<bool>;
}

impl ServiceKind for dyn ObjectStore {
    const LABEL: &'static str = "an object store";
}

pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry
        .register_module::<storage_local::LocalStorageType>()?
        .register_module::<storage_s3::S3StorageType>()?
        .register_step::<storage_put::StoragePutType>()?
        .register_step::<storage_get::StorageGetType>()?
        .register_step::<storage_list::StorageListType>()?
        .register_step::<storage_delete::StorageDeleteType>()?;
    Ok(())
}

/// The store a step uses: the named one, else the application's only one.
pub(crate) fn choose_store(
    configured: Option<&str>,
    ctx: &wf_engine::CheckContext<'_>,
) -> Result<String, wf_engine::ConfigIssue> {
    ctx.choose(configured, "store", "object store", STORE_TYPES)
}
