//! Source files and locations inside them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Identifies one loaded source file inside a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u32);

/// A 1-based line and column inside one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub source: SourceId,
    pub line: u32,
    pub column: u32,
}

/// One loaded file: its path (as given, for messages) and its text (for snippets).
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// The text of 1-based line `line`, without its line break.
    pub fn line(&self, line: u32) -> Option<&str> {
        let index = usize::try_from(line).ok()?.checked_sub(1)?;
        self.text.lines().nth(index)
    }
}

/// Every file that contributed to a configuration, so that diagnostics can name and quote them.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: Vec<Arc<SourceFile>>,
}

impl SourceMap {
    pub fn add(&mut self, path: PathBuf, text: String) -> SourceId {
        let id = SourceId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(Arc::new(SourceFile { path, text }));
        id
    }

    pub fn get(&self, id: SourceId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize).map(|f| f.as_ref())
    }

    pub fn path(&self, id: SourceId) -> &Path {
        self.get(id)
            .map(|f| f.path.as_path())
            .unwrap_or_else(|| Path::new("<unknown>"))
    }

    /// `file:line:column` for a location.
    pub fn display(&self, location: Location) -> DisplayLocation<'_> {
        DisplayLocation {
            map: self,
            location,
        }
    }
}

pub struct DisplayLocation<'a> {
    map: &'a SourceMap,
    location: Location,
}

impl fmt::Display for DisplayLocation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.map.path(self.location.source).display(),
            self.location.line,
            self.location.column
        )
    }
}
