//! Classifies an alert (`title`, `message`, `source`) into a severity and a category, and says
//! whether to page someone. One of the original's "specialized analyzers".

use wf_sdk::prelude::*;

const RULES: &[(&str, &[&str])] = &[
    (
        "critical",
        &[
            "outage",
            "down",
            "data loss",
            "breach",
            "unreachable",
            "panic",
            "corrupt",
        ],
    ),
    (
        "high",
        &[
            "error",
            "failed",
            "failure",
            "timeout",
            "5xx",
            "exhausted",
            "oom",
        ],
    ),
    (
        "medium",
        &[
            "degraded", "slow", "latency", "retry", "warning", "high cpu",
        ],
    ),
];
const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "security",
        &[
            "breach",
            "unauthorized",
            "login",
            "token",
            "cve",
            "intrusion",
        ],
    ),
    (
        "database",
        &["postgres", "mysql", "database", "db", "replica", "deadlock"],
    ),
    (
        "network",
        &["dns", "timeout", "unreachable", "latency", "packet", "tls"],
    ),
    (
        "capacity",
        &["disk", "memory", "oom", "cpu", "quota", "exhausted"],
    ),
];

struct AlertClassify;

/// (severity, category) of a lowercase text.
pub fn classify(text: &str) -> (&'static str, &'static str) {
    let severity = RULES
        .iter()
        .find(|(_, words)| words.iter().any(|w| text.contains(w)))
        .map(|(s, _)| *s)
        .unwrap_or("low");
    let category = CATEGORIES
        .iter()
        .find(|(_, words)| words.iter().any(|w| text.contains(w)))
        .map(|(c, _)| *c)
        .unwrap_or("application");
    (severity, category)
}

impl Step for AlertClassify {
    fn info() -> Info {
        Info::new("alert-classify", "Classifies an alert's severity and category and decides whether to page")
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "page_at": {"enum": ["critical", "high", "medium", "low"], "description": "Lowest severity that pages (default `critical`)."}
                },
                "additionalProperties": false
            }))
    }

    fn run(input: Value, ctx: &Ctx) -> Result<Output, StepError> {
        let text = ["title", "message", "source"]
            .iter()
            .filter_map(|k| input[*k].as_str())
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        if text.trim().is_empty() {
            return Err(StepError::invalid_input(
                "the alert needs a `title` or `message`",
            ));
        }
        let (severity, category) = classify(&text);
        let order = ["critical", "high", "medium", "low"];
        let page_at = ctx
            .config_get::<String>("page_at")?
            .unwrap_or_else(|| "critical".into());
        let rank = |s: &str| order.iter().position(|o| *o == s).unwrap_or(order.len());
        let page = rank(severity) <= rank(&page_at);
        Ok(json!({ "severity": severity, "category": category, "page": page }).into())
    }
}

export_step!(AlertClassify);

#[cfg(test)]
mod tests {
    use super::*;
    use wf_sdk::testing::Harness;

    #[test]
    fn classifies_and_pages() {
        let out = Harness::new()
            .run::<AlertClassify>(json!({"title": "Postgres primary down", "source": "db-1"}))
            .unwrap();
        assert_eq!(
            out,
            Output::Next(json!({"severity": "critical", "category": "database", "page": true}))
        );
        let out = Harness::new()
            .config(json!({"page_at": "critical"}))
            .run::<AlertClassify>(json!({"message": "p99 latency degraded"}))
            .unwrap();
        assert_eq!(
            out,
            Output::Next(json!({"severity": "medium", "category": "network", "page": false}))
        );
    }
}
