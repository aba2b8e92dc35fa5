//! Lexicon-based sentiment of a text field: `positive`, `negative` or `neutral`, with a score
//! in [-1, 1]. One of the original's "specialized analyzers", as a sandboxed component.

use wf_sdk::prelude::*;

const POSITIVE: &[&str] = &[
    "good",
    "great",
    "excellent",
    "love",
    "loved",
    "happy",
    "awesome",
    "fantastic",
    "thanks",
    "thank",
    "amazing",
    "nice",
    "perfect",
    "helpful",
    "resolved",
    "fast",
    "wonderful",
    "best",
];
const NEGATIVE: &[&str] = &[
    "bad",
    "terrible",
    "awful",
    "hate",
    "angry",
    "broken",
    "slow",
    "worst",
    "refund",
    "useless",
    "disappointed",
    "failed",
    "fail",
    "error",
    "bug",
    "crash",
    "poor",
    "cancel",
    "never",
];
const NEGATIONS: &[&str] = &["not", "no", "never", "don't", "isn't", "wasn't", "didn't"];

struct Sentiment;

/// Score in [-1, 1] and the matched words; a negation flips the next sentiment word.
pub fn analyze(text: &str) -> (f64, Vec<String>) {
    let mut score = 0i32;
    let mut hits = Vec::new();
    let mut negate = false;
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let word = raw.to_lowercase();
        if word.is_empty() {
            continue;
        }
        if NEGATIONS.contains(&word.as_str()) {
            negate = true;
            continue;
        }
        let polarity = if POSITIVE.contains(&word.as_str()) {
            1
        } else if NEGATIVE.contains(&word.as_str()) {
            -1
        } else {
            continue;
        };
        score += if negate { -polarity } else { polarity };
        negate = false;
        hits.push(word);
    }
    let normalised = if hits.is_empty() {
        0.0
    } else {
        f64::from(score) / hits.len() as f64
    };
    (normalised, hits)
}

impl Step for Sentiment {
    fn info() -> Info {
        Info::new("sentiment", "Scores the sentiment of a text field: positive, negative or neutral")
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "field": {"type": "string", "description": "Input field holding the text (default `text`)."},
                    "threshold": {"type": "number", "description": "Score beyond which text is positive or negative (default 0.2)."}
                },
                "additionalProperties": false
            }))
    }

    fn validate_config(config: &Value) -> Result<(), StepError> {
        match config.get("threshold") {
            None => Ok(()),
            Some(t) if t.as_f64().is_some_and(|t| (0.0..1.0).contains(&t)) => Ok(()),
            Some(t) => Err(StepError::invalid_config(format!(
                "threshold must be a number in [0, 1), not {t}"
            ))),
        }
    }

    fn run(input: Value, ctx: &Ctx) -> Result<Output, StepError> {
        let field = ctx
            .config_get::<String>("field")?
            .unwrap_or_else(|| "text".into());
        let threshold = ctx.config_get::<f64>("threshold")?.unwrap_or(0.2);
        let text = input[&field].as_str().ok_or_else(|| {
            StepError::invalid_input(format!("input field `{field}` must be a string"))
        })?;
        let (score, words) = analyze(text);
        let label = if score > threshold {
            "positive"
        } else if score < -threshold {
            "negative"
        } else {
            "neutral"
        };
        Ok(json!({ "sentiment": label, "score": score, "matched": words }).into())
    }
}

export_step!(Sentiment);

#[cfg(test)]
mod tests {
    use super::*;
    use wf_sdk::testing::Harness;

    #[test]
    fn labels_text() {
        let h = Harness::new();
        let out = h
            .run::<Sentiment>(json!({"text": "Great support, thanks!"}))
            .unwrap();
        assert!(
            matches!(out, Output::Next(ref v) if v["sentiment"] == "positive"),
            "{out:?}"
        );
        let out = h
            .run::<Sentiment>(json!({"text": "The app is not good and slow"}))
            .unwrap();
        assert!(
            matches!(out, Output::Next(ref v) if v["sentiment"] == "negative"),
            "{out:?}"
        );
        assert!(h.run::<Sentiment>(json!({"body": 1})).is_err());
    }

    #[test]
    fn rejects_a_bad_threshold() {
        let h = Harness::new().config(json!({"threshold": 3}));
        assert!(matches!(
            h.run::<Sentiment>(json!({"text": ""})),
            Err(StepError::InvalidConfig(_))
        ));
    }
}
