//! Loading wf configuration: YAML with source locations, `${VAR}` expansion, `imports:`, the
//! application schema, and diagnostics that say what is wrong, where, and what to change.

pub mod diagnostic;
pub mod duration;
pub mod expand;
pub mod files;
pub mod load;
pub mod model;
pub mod redact;
pub mod schema;
pub mod schema_check;
pub mod secret_refs;
pub mod source;
pub mod time;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, Severity, did_you_mean, pointer_to_path};
pub use duration::parse_duration;
pub use expand::{ProcessEnv, Vars};
pub use load::{Loaded, load_files, load_str};
pub use model::{AppConfig, DocId, ModuleDecl, Origin, PipelineDecl, SectionDecl};
pub use schema_check::CompiledSchema;
pub use source::{Location, SourceId, SourceMap};
