//! Files as messages, for `messaging.handler`'s `watchPath`: every new file in the directory is
//! read as records (`csv` with a header row, `json` as one object or an array of objects,
//! `jsonl` one object per line), and each record is published, as a JSON object, to the
//! handler's target topics. A file is renamed `<name>.processed` once all its records are
//! published, or `<name>.failed` when it cannot be read (logged with the line), so a restart
//! never reads a file twice. Delivery is at least once: a file interrupted half-way (the app
//! stopped) is read again whole. The directory is polled; hidden files and files still being
//! written under a `.tmp` name are left alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

/// How files in `watchPath` are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Comma-separated, first row the field names; values stay strings.
    Csv,
    /// One JSON object, or an array of objects.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Largest input file read: bigger ones are refused (split them), not loaded whole.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads one file into records; the error names the line when the format gives one.
pub fn read_records(path: &Path, format: InputType) -> Result<Vec<Map<String, Value>>, String> {
    let bytes = wf_engine::wf_config::files::read_regular(path, MAX_FILE_BYTES)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|e| format!("it is not UTF-8 text: {e}"))?;
    match format {
        InputType::Csv => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let headers = reader
                .headers()
                .map_err(|e| format!("bad header row: {e}"))?
                .clone();
            let mut records = Vec::new();
            for row in reader.records() {
                let row = row.map_err(|e| match e.position() {
                    Some(p) => format!("line {}: {e}", p.line()),
                    None => e.to_string(),
                })?;
                records.push(
                    headers
                        .iter()
                        .zip(row.iter())
                        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                        .collect(),
                );
            }
            Ok(records)
        }
        InputType::Json => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(one)) => Ok(vec![one]),
            Ok(Value::Array(all)) => all
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(map) => Ok(map),
                    _ => Err(format!("element {i} is not an object")),
                })
                .collect(),
            Ok(_) => Err("expected an object or an array of objects".into()),
            Err(e) => Err(format!("line {}: {e}", e.line())),
        },
        InputType::Jsonl => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(_) => Err(format!("line {}: not an object", i + 1)),
                Err(e) => Err(format!("line {}: {e}", i + 1)),
            })
            .collect(),
    }
}

/// Files waiting in `dir`, oldest name first.
pub fn pending_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.')
                && !name.ends_with(".processed")
                && !name.ends_with(".failed")
                && !name.ends_with(".tmp")
        })
        .collect();
    files.sort();
    files
}

/// Marks a file done (`.processed`) or unreadable (`.failed`).
pub fn mark(path: &Path, suffix: &str) {
    let mut target = path.as_os_str().to_owned();
    target.push(suffix);
    if let Err(e) = std::fs::rename(path, &target) {
        tracing::error!(file = %path.display(), error = %e, "cannot rename a read file; it will be read again");
    }
}

pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_format_and_names_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("wf-file-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let csv = write("a.csv", "name,age\nada,36\n\"lovelace, a\",37\n");
        let records = read_records(&csv, InputType::Csv).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1]["name"], "lovelace, a");
        assert_eq!(records[0]["age"], "36");
        let bad_csv = write("b.csv", "name,age\nada,36,extra\n");
        assert!(
            read_records(&bad_csv, InputType::Csv)
                .unwrap_err()
                .contains("line 2")
        );
        let json = write("c.json", r#"[{"id": 1}, {"id": 2}]"#);
        assert_eq!(read_records(&json, InputType::Json).unwrap().len(), 2);
        let jsonl = write("d.jsonl", "{\"id\": 1}\n\n{\"id\": }\n");
        assert!(
            read_records(&jsonl, InputType::Jsonl)
                .unwrap_err()
                .starts_with("line 3")
        );
        write(".hidden", "x");
        write("e.csv.processed", "x");
        let pending: Vec<String> = pending_files(&dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(pending, ["a.csv", "b.csv", "c.json", "d.jsonl"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
