//! Shared by `api.query` and `api.command`: handlers that answer their routes with the route's
//! steps (the original's "pipeline-native" admin routes), else a delegate module, else 404.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;
use wf_engine::{CheckContext, ConfigIssue, ServiceKind};

use crate::exchange::{PipelineRoute, TriggerShape, pipeline_service};
use crate::{HttpHandler, Request, RouteService, json_response, route_fn};

/// A handler that runs a route's steps itself, shaping the trigger data its own way.
pub trait RoutePipelineHandler: Send + Sync {
    fn route_service(
        &self,
        pipeline: Arc<wf_engine::Pipeline>,
        options: PipelineRoute,
    ) -> RouteService;
}

impl ServiceKind for dyn RoutePipelineHandler {
    const LABEL: &'static str = "a route-pipeline handler";
}

/// An `api.query` or `api.command` module.
pub struct CqrsHandler {
    pub shape: TriggerShape,
    /// `query` or `command`, for the 404 text.
    pub noun: &'static str,
    pub delegate: Option<Arc<dyn HttpHandler>>,
}

impl RoutePipelineHandler for CqrsHandler {
    fn route_service(
        &self,
        pipeline: Arc<wf_engine::Pipeline>,
        options: PipelineRoute,
    ) -> RouteService {
        pipeline_service(
            pipeline,
            PipelineRoute {
                shape: self.shape,
                ..options
            },
        )
    }
}

impl HttpHandler for CqrsHandler {
    /// Routes without steps: the delegate, else `404 {"error": "unknown query: <name>"}`.
    fn service(self: Arc<Self>) -> RouteService {
        if let Some(delegate) = &self.delegate {
            return delegate.clone().service();
        }
        let noun = self.noun;
        route_fn(move |req: Request| {
            let name = crate::exchange::last_segment(req.uri().path()).to_string();
            async move {
                json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("unknown {noun}: {name}")}),
                )
            }
        })
    }
}

impl wf_engine::Module for CqrsHandler {}

pub fn check_delegate(delegate: Option<&str>, ctx: &CheckContext<'_>) -> Vec<ConfigIssue> {
    delegate
        .and_then(|d| ctx.require_module("/delegate", d, "delegate"))
        .into_iter()
        .collect()
}
