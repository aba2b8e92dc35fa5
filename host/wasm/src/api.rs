//! The components API (the original's `/api/dynamic/components`): upload, list, inspect,
//! delete and roll back components at run time. Uploads are validated before anything
//! changes, and accepted ones are kept on disk so a restart restores them.
//!
//! | method | path | |
//! |---|---|---|
//! | `POST` | `{prefix}?name=NAME` | body: the `.wasm` bytes; header `x-wf-grant`: JSON `{config, capabilities, limits}` |
//! | `PUT` | `{prefix}/{id}` | the same, named by the path |
//! | `GET` | `{prefix}` | every component |
//! | `GET` | `{prefix}/{id}` | one component |
//! | `DELETE` | `{prefix}/{id}?force=true` | refused (409) while a pipeline uses it, unless forced |
//! | `POST` | `{prefix}/{id}/rollback` | the previous good version becomes live |

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use wf_engine::BuildContext;
use wf_http::{PathParams, Request, Response, json_response, route_fn};

use crate::components_module::ApiConfig;
use crate::registry::{
    ComponentRegistry, Expect, ExtraGrant, Grant, InstallError, InstallOutcome, Origin, Slot,
};

/// Adds the API's routes to the configured router.
pub fn mount(
    api: &ApiConfig,
    registry: &Arc<ComponentRegistry>,
    ctx: &BuildContext<'_>,
) -> anyhow::Result<()> {
    let router = wf_http::endpoint::endpoint_router(api.router.as_deref(), ctx)?;
    let prefix = api.prefix.trim_end_matches('/').to_string();
    let state = Arc::new(Api {
        registry: registry.clone(),
        token: api.token.clone().filter(|t| !t.is_empty()),
        max_upload: (api.max_upload_mib as usize) << 20,
    });
    let routes: [(Method, String, Action); 6] = [
        (Method::GET, prefix.clone(), Action::List),
        (Method::POST, prefix.clone(), Action::Upload),
        (Method::GET, format!("{prefix}/{{id}}"), Action::Get),
        (Method::PUT, format!("{prefix}/{{id}}"), Action::Upload),
        (Method::DELETE, format!("{prefix}/{{id}}"), Action::Delete),
        (
            Method::POST,
            format!("{prefix}/{{id}}/rollback"),
            Action::Rollback,
        ),
    ];
    for (method, path, action) in routes {
        let state = state.clone();
        let served = router.add_route(
            method.clone(),
            &path,
            route_fn(move |req| {
                let state = state.clone();
                async move { state.handle(action, req).await }
            }),
        )?;
        ctx.app.add_route(wf_engine::RouteInfo {
            server: None,
            router: router.name().to_string(),
            method: method.to_string(),
            path: served,
            handler: ctx.name.to_string(),
            middlewares: Vec::new(),
            ..Default::default()
        });
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Action {
    List,
    Get,
    Upload,
    Delete,
    Rollback,
}

struct Api {
    registry: Arc<ComponentRegistry>,
    token: Option<String>,
    max_upload: usize,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

fn query_param(req: &Request, key: &str) -> Option<String> {
    req.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then(|| v.to_string())
        })
    })
}

impl Api {
    async fn handle(&self, action: Action, req: Request) -> Response {
        if let Some(denied) = wf_http::check_bearer(&req, self.token.as_deref()) {
            return denied;
        }
        let id = req
            .extensions()
            .get::<PathParams>()
            .and_then(|p| p.get("id"))
            .map(str::to_string);
        match (action, id) {
            (Action::List, _) => {
                let all: Vec<Value> = self
                    .registry
                    .slots()
                    .iter()
                    .map(|s| describe_slot(s))
                    .collect();
                json_response(StatusCode::OK, &Value::Array(all))
            }
            (Action::Get, Some(id)) => match self
                .registry
                .get(&id)
                .filter(|s| s.live().is_some() || s.rejected().is_some())
            {
                Some(slot) => json_response(StatusCode::OK, &describe_slot(&slot)),
                None => error(StatusCode::NOT_FOUND, format!("no component `{id}`")),
            },
            (Action::Upload, id) => {
                self.upload(id.or_else(|| query_param(&req, "name")), req)
                    .await
            }
            (Action::Delete, Some(id)) => {
                let force = query_param(&req, "force").is_some_and(|v| v == "true" || v == "1");
                match self.registry.remove(&id, force).await {
                    Ok(()) => {
                        remove_upload(&self.registry, &id);
                        let mut response = Response::new(axum::body::Body::empty());
                        *response.status_mut() = StatusCode::NO_CONTENT;
                        response
                    }
                    Err(e) => install_error(e),
                }
            }
            (Action::Rollback, Some(id)) => match self.registry.rollback(&id).await {
                Ok(live) => {
                    if self.registry.get(&id).and_then(|s| s.origin()) == Some(Origin::Upload)
                        && let Err(e) =
                            persist_upload(&self.registry, &id, &live.bytes, None, false)
                    {
                        tracing::error!(component = %id, "rolled back, but the kept copy on disk is still the newer version: {e}");
                        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
                    }
                    let slot = self.registry.slot(&id);
                    json_response(StatusCode::OK, &describe_slot(&slot))
                }
                Err(e) => install_error(e),
            },
            (_, None) => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    async fn upload(&self, name: Option<String>, req: Request) -> Response {
        if let Some(name) = &name
            && let Err(message) = crate::component::check_name(name)
        {
            return error(StatusCode::BAD_REQUEST, message);
        }
        let grant: Option<Grant> = match req.headers().get("x-wf-grant") {
            None => None,
            Some(value) => match value.to_str().ok().map(serde_json::from_str::<Grant>) {
                Some(Ok(grant)) => Some(grant),
                Some(Err(e)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("header `x-wf-grant` is not a valid grant: {e}"),
                    );
                }
                None => return error(StatusCode::BAD_REQUEST, "header `x-wf-grant` is not text"),
            },
        };
        let bytes: Bytes = match wf_http::exchange::read_body(
            req.into_body(),
            self.max_upload,
            "`api.max_upload_mib` of `wasm.components`",
        )
        .await
        {
            Ok(bytes) => bytes,
            Err(response) => return response,
        };
        if let Err(e) = crate::component::check_format(&bytes) {
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string());
        }
        let bytes = Arc::new(bytes.to_vec());
        // Unnamed: learn the name first, so the YAML grant for it applies now, as it will
        // when the kept copy is restored by name after a restart.
        let name = match name {
            Some(name) => name,
            None => match crate::LoadedComponent::inspect(self.registry.runtime(), bytes.clone())
                .await
            {
                Ok(component) => component.info.name.clone(),
                Err(e) => {
                    self.registry.discard_code(&bytes);
                    return install_error(e.into());
                }
            },
        };
        let expect = Expect::Name(&name);
        let spec = match self
            .registry
            .spec(&expect, bytes.clone(), upload_grant(grant.as_ref()))
        {
            Ok(spec) => spec,
            Err(e) => {
                self.registry.discard_code(&bytes);
                let status = match e {
                    crate::LoadError::GrantExceeded { .. } => StatusCode::FORBIDDEN,
                    _ => StatusCode::BAD_REQUEST,
                };
                return error(status, e.to_string());
            }
        };
        match self.registry.install(&expect, spec, Origin::Upload).await {
            Ok((slot, outcome)) => {
                if let Err(e) =
                    persist_upload(&self.registry, &slot.name, &bytes, grant.as_ref(), true)
                {
                    tracing::error!(component = %slot.name, "the component is live but could not be kept on disk; it will not survive a restart: {e}");
                    return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
                }
                let status = match outcome {
                    InstallOutcome::Swapped => StatusCode::CREATED,
                    InstallOutcome::Unchanged => StatusCode::OK,
                };
                json_response(status, &describe_slot(&slot))
            }
            Err(e) => install_error(e),
        }
    }
}

fn upload_grant(grant: Option<&Grant>) -> ExtraGrant<'_> {
    grant.map_or(ExtraGrant::None, ExtraGrant::Upload)
}

fn install_error(e: InstallError) -> Response {
    let status = match &e {
        InstallError::Load(crate::LoadError::Host(_)) => {
            tracing::error!("component install failed: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
        InstallError::Load(_) | InstallError::NameMismatch { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        InstallError::NotFound(_) => StatusCode::NOT_FOUND,
        InstallError::InUse { .. } | InstallError::NoPrevious(_) => StatusCode::CONFLICT,
    };
    error(status, e.to_string())
}

/// A component as the API shows it.
pub fn describe_slot(slot: &Slot) -> Value {
    let live = slot.live();
    let mut out = json!({
        "id": slot.name,
        "name": slot.name,
        "status": if live.is_some() { "live" } else { "rejected" },
        "revision": slot.revision(),
        "origin": slot.origin(),
        "used_by": slot.references(),
        "rejected": slot.rejected(),
        "previous_versions": slot.previous().iter().map(|c| json!({
            "version": c.info.version,
            "digest": c.digest,
        })).collect::<Vec<_>>(),
    });
    if let (Some(c), Some(map)) = (live, out.as_object_mut()) {
        let stats = c.stats.snapshot();
        let fields = json!({
            "version": c.info.version,
            "description": c.info.description,
            "kind": c.kind,
            "digest": c.digest,
            "size": c.size,
            "loaded_at": crate::registry::rfc3339::format(c.loaded_at),
            "cached": c.cached,
            "requested_capabilities": c.info.capabilities,
            "capabilities": c.capabilities,
            "limits": c.limits,
            "config_schema": c.info.config_schema,
            "invocations": stats.invocations,
            "errors": stats.errors,
            "p50_us": stats.p50_us,
            "p99_us": stats.p99_us,
        });
        if let Value::Object(fields) = fields {
            map.extend(fields);
        }
    }
    out
}

/// Keeps an accepted upload so a restart restores it: the grant first (or its removal: an
/// upload without one must not inherit the previous version's), then the bytes. Each file is
/// written under a unique temporary name, synced, then renamed, so a crash leaves either the
/// old file or the new one.
fn persist_upload(
    registry: &ComponentRegistry,
    name: &str,
    bytes: &[u8],
    grant: Option<&Grant>,
    replace_grant: bool,
) -> std::io::Result<()> {
    let Some(dir) = registry.upload_dir() else {
        return Ok(());
    };
    std::fs::create_dir_all(dir)?;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = |file: String, data: &[u8]| -> std::io::Result<()> {
        use std::io::Write as _;
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{file}.{}.{n}.tmp", std::process::id()));
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(data)?;
        out.sync_all()?;
        std::fs::rename(&tmp, dir.join(file))?;
        Ok(())
    };
    let grant_file = format!("{name}.grant.json");
    if replace_grant {
        match grant {
            Some(grant) => write(
                grant_file,
                &serde_json::to_vec(grant).map_err(std::io::Error::other)?,
            )?,
            None => match std::fs::remove_file(dir.join(&grant_file)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
        }
    }
    write(format!("{name}.wasm"), bytes)?;
    // The renames are durable once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

fn remove_upload(registry: &ComponentRegistry, name: &str) {
    if let Some(dir) = registry.upload_dir() {
        for file in [format!("{name}.wasm"), format!("{name}.grant.json")] {
            match std::fs::remove_file(dir.join(&file)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => tracing::error!(
                    component = name,
                    "cannot delete the kept `{file}`; the component will come back after a restart: {e}"
                ),
                _ => {}
            }
        }
    }
}

/// Loads the components uploaded before a restart.
pub async fn restore_uploads(registry: &Arc<ComponentRegistry>) -> anyhow::Result<()> {
    let Some(dir) = registry.upload_dir().cloned() else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| crate::watch::is_component_file(p))
        .collect();
    paths.sort();
    for path in paths {
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let grant: Option<Grant> = match std::fs::read(dir.join(format!("{name}.grant.json"))) {
            Err(_) => None,
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(grant) => Some(grant),
                Err(e) => {
                    // Without its grant it would run with other config and capabilities.
                    tracing::error!(component = %name, "kept component not restored: its grant file is unreadable: {e}");
                    continue;
                }
            },
        };
        let bytes = match crate::component::read_file(&path, crate::component::MAX_FILE_BYTES).await
        {
            Ok(b) => Arc::new(b),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read kept component: {e}");
                continue;
            }
        };
        let expect = Expect::Name(&name);
        let result = match registry.spec(&expect, bytes, upload_grant(grant.as_ref())) {
            Ok(spec) => registry
                .install(&expect, spec, Origin::Upload)
                .await
                .map(|_| ()),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            tracing::warn!(component = %name, "kept component not restored: {e}");
        }
    }
    Ok(())
}
