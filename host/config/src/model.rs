//! The normalised application model: every file merged, both `workflows`/`triggers` forms made one,
//! and each entry remembering where it was written.

use std::path::PathBuf;

use serde_json::Value;

use crate::diagnostic::{Diagnostic, pointer_to_path};
use crate::source::{Location, SourceId, SourceMap};
use crate::yaml::SpanIndex;

/// One loaded file.
#[derive(Debug)]
pub struct Document {
    pub source: SourceId,
    pub value: Value,
    pub spans: SpanIndex,
    /// The directory of the file: relative paths in module configs resolve against it.
    pub base_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DocId(pub usize);

/// Where an entry was written: a document and a JSON pointer inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub doc: DocId,
    pub pointer: String,
}

impl Origin {
    pub fn child(&self, suffix: &str) -> Origin {
        Origin {
            doc: self.doc,
            pointer: format!("{}{}", self.pointer, suffix),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ModuleDecl {
    pub name: String,
    pub type_name: String,
    /// Always an object (`{}` when the file had no `config`).
    pub config: Value,
    pub depends_on: Vec<String>,
    /// `config.description`, which every module accepts (shown by `inspect` and the UI).
    pub description: Option<String>,
    pub origin: Origin,
    /// Where `config` was written: the entry's `config`, or the top-level section it was read
    /// from (see [`crate::load`]).
    pub config_origin: Origin,
    pub base_dir: PathBuf,
}

/// A workflow or a trigger entry.
#[derive(Clone, Debug)]
pub struct SectionDecl {
    /// `http`, `http-admin`, `messaging`, ...
    pub kind: String,
    /// The entry's name in the list form; `None` in the keyed form.
    pub name: Option<String>,
    pub config: Value,
    /// Points at the entry's configuration.
    pub origin: Origin,
}

impl SectionDecl {
    /// `http`, or `main (http)` for named entries.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.kind),
            None => self.kind.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PipelineDecl {
    pub name: String,
    /// The whole pipeline entry (`trigger`, `steps`, `on_error`, ...).
    pub value: Value,
    pub origin: Origin,
}

#[derive(Clone, Debug)]
pub struct PluginRequirementDecl {
    pub name: String,
    pub version: Option<String>,
    pub origin: Origin,
}

/// A loaded application, possibly made of several files.
#[derive(Debug, Default)]
pub struct AppConfig {
    pub sources: SourceMap,
    pub documents: Vec<Document>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub modules: Vec<ModuleDecl>,
    pub workflows: Vec<SectionDecl>,
    pub triggers: Vec<SectionDecl>,
    pub pipelines: Vec<PipelineDecl>,
    pub required_plugins: Vec<PluginRequirementDecl>,
    pub required_capabilities: Vec<(String, Origin)>,
    /// Top-level settings sections (`platform`, `reverseproxy`, `scheduler`, `runs`) by name.
    pub sections: Vec<(String, Value, Origin)>,
}

impl AppConfig {
    /// The location of `origin` (or of its nearest written parent).
    pub fn locate(&self, origin: &Origin) -> Option<Location> {
        self.documents
            .get(origin.doc.0)
            .and_then(|d| d.spans.nearest(&origin.pointer))
            .map(|s| s.value)
    }

    /// The location of the key that introduced `origin`, falling back to its value.
    pub fn locate_key(&self, origin: &Origin) -> Option<Location> {
        self.documents
            .get(origin.doc.0)
            .and_then(|d| d.spans.nearest(&origin.pointer))
            .map(|s| s.key.unwrap_or(s.value))
    }

    pub fn spans(&self, doc: DocId) -> Option<&SpanIndex> {
        self.documents.get(doc.0).map(|d| &d.spans)
    }

    /// A diagnostic located at `origin`, with its YAML path filled in.
    pub fn diagnostic_at(&self, diagnostic: Diagnostic, origin: &Origin) -> Diagnostic {
        diagnostic
            .at(self.locate(origin))
            .path(pointer_to_path(&origin.pointer))
    }

    pub fn module(&self, name: &str) -> Option<&ModuleDecl> {
        self.modules.iter().find(|m| m.name == name)
    }
}
