//! Redacts personal data in every string of the input: e-mail addresses, card numbers (Luhn
//! checked), US social security numbers and phone numbers. Returns the redacted document and
//! what was found, so a pipeline can log or store text safely.

use wf_sdk::prelude::*;

struct PiiRedact;

#[derive(Default)]
struct Found {
    email: u32,
    card: u32,
    ssn: u32,
    phone: u32,
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn is_email(word: &str) -> bool {
    match word.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && user
                    .chars()
                    .chain(domain.chars())
                    .all(|c| c.is_alphanumeric() || "._%+-".contains(c))
        }
        None => false,
    }
}

/// Replaces runs of digits (with spaces, dashes, dots or parentheses between them) that look
/// like card numbers, SSNs or phone numbers.
fn redact_numbers(text: &str, mask: &str, found: &mut Found) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit()
            || (chars[i] == '+' || chars[i] == '(')
                && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())
        {
            let start = i;
            let mut end = i;
            let mut digits = Vec::new();
            while end < chars.len()
                && (chars[end].is_ascii_digit() || " -.()+".contains(chars[end]))
            {
                if let Some(d) = chars[end].to_digit(10) {
                    digits.push(d);
                }
                end += 1;
            }
            // Do not swallow trailing separators.
            while end > start && !chars[end - 1].is_ascii_digit() {
                end -= 1;
            }
            let run: String = chars[start..end].iter().collect();
            let ssn_shape = run.len() == 11
                && run.chars().enumerate().all(|(k, c)| {
                    if k == 3 || k == 6 {
                        c == '-'
                    } else {
                        c.is_ascii_digit()
                    }
                });
            let kind = if (13..=19).contains(&digits.len()) && luhn(&digits) {
                Some(&mut found.card)
            } else if ssn_shape {
                Some(&mut found.ssn)
            } else if (10..=15).contains(&digits.len()) && run.chars().any(|c| !c.is_ascii_digit())
                || digits.len() == 10
            {
                Some(&mut found.phone)
            } else {
                None
            };
            match kind {
                Some(counter) => {
                    *counter += 1;
                    out.push_str(mask);
                }
                None => out.push_str(&run),
            }
            i = end.max(start + 1);
            if end == start {
                out.push(chars[start]);
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn redact_text(text: &str, mask: &str, found: &mut Found) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|w| {
            let core = w.trim_matches(|c: char| !c.is_alphanumeric());
            if is_email(core) {
                found.email += 1;
                w.replacen(core, mask, 1)
            } else {
                w.to_string()
            }
        })
        .collect();
    redact_numbers(&words.join(" "), mask, found)
}

fn walk(value: &mut Value, mask: &str, found: &mut Found) {
    match value {
        Value::String(s) => *s = redact_text(s, mask, found),
        Value::Array(items) => items.iter_mut().for_each(|v| walk(v, mask, found)),
        Value::Object(map) => map.values_mut().for_each(|v| walk(v, mask, found)),
        _ => {}
    }
}

impl Step for PiiRedact {
    fn info() -> Info {
        Info::new("pii-redact", "Masks e-mail addresses, card numbers, SSNs and phone numbers in every string")
            .config_schema(json!({
                "type": "object",
                "properties": {
                    "mask": {"type": "string", "description": "Replacement text (default `[REDACTED]`)."},
                    "output": {"type": "string", "description": "Output key for the redacted document (default `redacted`)."}
                },
                "additionalProperties": false
            }))
    }

    fn run(mut input: Value, ctx: &Ctx) -> Result<Output, StepError> {
        let mask = ctx
            .config_get::<String>("mask")?
            .unwrap_or_else(|| "[REDACTED]".into());
        let key = ctx
            .config_get::<String>("output")?
            .unwrap_or_else(|| "redacted".into());
        let mut found = Found::default();
        walk(&mut input, &mask, &mut found);
        Ok(json!({
            key: input,
            "pii_found": { "email": found.email, "card": found.card, "ssn": found.ssn, "phone": found.phone },
        })
        .into())
    }
}

export_step!(PiiRedact);

#[cfg(test)]
mod tests {
    use super::*;
    use wf_sdk::testing::Harness;

    #[test]
    fn masks_each_kind_and_counts_it() {
        let out = Harness::new()
            .run::<PiiRedact>(json!({
                "note": "mail ada@example.com, card 4111 1111 1111 1111, ssn 123-45-6789, call +1 (555) 010-9999",
                "order": 12345,
                "nested": ["id 42", "bob@corp.io"]
            }))
            .unwrap();
        let Output::Next(v) = out else {
            panic!("{out:?}")
        };
        assert_eq!(
            v["redacted"]["note"],
            "mail [REDACTED], card [REDACTED], ssn [REDACTED], call [REDACTED]"
        );
        assert_eq!(v["redacted"]["order"], 12345);
        assert_eq!(v["redacted"]["nested"], json!(["id 42", "[REDACTED]"]));
        assert_eq!(
            v["pii_found"],
            json!({"email": 2, "card": 1, "ssn": 1, "phone": 1})
        );
    }

    #[test]
    fn leaves_ordinary_numbers_alone() {
        let out = Harness::new()
            .run::<PiiRedact>(json!({"t": "order 1234 of 2024-05-01"}))
            .unwrap();
        let Output::Next(v) = out else {
            panic!("{out:?}")
        };
        assert_eq!(v["redacted"]["t"], "order 1234 of 2024-05-01");
    }
}
