//! A trigger component: takes alerts from an HTTP route and a topic and starts a pipeline per
//! alert — `critical_pipeline` for critical ones, `pipeline` for the rest. Written with plain
//! `wit-bindgen` against the `trigger-component` world.
//!
//! Config: `path` (default `/alerts`), `topic` (default `alerts.raw`), `pipeline` (default
//! `record-alert`), `critical_pipeline` (default `page-on-call`), and `heartbeat`: a cron
//! expression at which a `heartbeat` alert is recorded (none by default).

// Native builds (the workspace's unit tests) compile the code without the component exports.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use serde_json::{Value, json};

wit_bindgen::generate!({
    path: "../../wit",
    world: "trigger-component",
});

use exports::wf::plugin::trigger::{ComponentInfo, Error, Event, Guest, Route, Source, Start};
use wf::plugin::config;

fn setting(key: &str, default: &str) -> String {
    config::get(key)
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| default.to_string())
}

/// The alert inside an event: the request body (HTTP) or the message (topic).
fn alert(payload: &Value) -> Option<&Value> {
    payload
        .get("body")
        .or_else(|| payload.get("message"))
        .filter(|a| a.is_object())
}

fn is_critical(alert: &Value) -> bool {
    alert["severity"].as_str() == Some("critical")
        || ["down", "outage", "breach"].iter().any(|w| {
            alert["title"]
                .as_str()
                .unwrap_or("")
                .to_lowercase()
                .contains(w)
        })
}

struct AlertIntake;

impl Guest for AlertIntake {
    fn describe() -> ComponentInfo {
        ComponentInfo {
            name: "alert-intake".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Starts a pipeline per alert received over HTTP or a topic".into(),
            config_schema: None,
            input_schema: None,
            output_schema: None,
            capabilities: Vec::new(),
        }
    }

    fn validate_config(_config: String) -> Result<(), Error> {
        Ok(())
    }

    fn sources() -> Vec<Source> {
        let mut sources = vec![
            Source::HttpRoute(Route {
                method: "POST".into(),
                path: setting("path", "/alerts"),
            }),
            Source::Topic(setting("topic", "alerts.raw")),
        ];
        let heartbeat = setting("heartbeat", "");
        if !heartbeat.is_empty() {
            sources.push(Source::Cron(heartbeat));
        }
        sources
    }

    fn on_event(event: Event) -> Result<Vec<Start>, Error> {
        let payload: Value =
            serde_json::from_str(&event.payload).map_err(|e| Error::InvalidInput(e.to_string()))?;
        if event.source == 2 {
            let alert = json!({"title": "heartbeat", "at": payload["scheduled_at"]});
            return Ok(vec![Start {
                pipeline: setting("pipeline", "record-alert"),
                data: json!({"alert": alert, "via": "schedule"}).to_string(),
            }]);
        }
        let alert = alert(&payload)
            .ok_or_else(|| Error::InvalidInput("an alert must be a JSON object".into()))?;
        let pipeline = if is_critical(alert) {
            setting("critical_pipeline", "page-on-call")
        } else {
            setting("pipeline", "record-alert")
        };
        let via = if event.source == 0 { "http" } else { "topic" };
        Ok(vec![Start {
            pipeline,
            data: json!({"alert": alert, "via": via}).to_string(),
        }])
    }
}

#[cfg(target_arch = "wasm32")]
export!(AlertIntake);
