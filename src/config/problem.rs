//! Configuration problems: what is wrong, in which file, and where in it (issue 35:
//! every problem names file, line and column).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::locate;

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// Line and column in `file` (1-based), once [`place`] found them.
    pub at: Option<(usize, usize)>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.at {
            write!(f, ":{line}:{column}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// Gives every problem in a TOML file its line and column: from toml's own error (whose
/// excerpt is dropped: one problem, one line), else from its key, or the key its message
/// names, looked up in the file as it is on disk now.
pub fn place(problems: &mut [Problem]) {
    let mut texts: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    for p in problems.iter_mut().filter(|p| p.at.is_none()) {
        if let Some((at, message)) = locate::split_toml_error(&p.message) {
            p.at = Some(at);
            p.message = message;
            continue;
        }
        if p.file.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let key = if p.key.is_empty() {
            locate::key_of_error(&p.message)
        } else {
            Some(p.key.clone())
        };
        let Some(key) = key else { continue };
        let text = texts
            .entry(p.file.clone())
            .or_insert_with(|| std::fs::read_to_string(&p.file).ok());
        if let Some(text) = text {
            p.at = locate::locate(text, &key);
        }
    }
}

/// Every problem found; loading fails if there is at least one.
#[derive(Debug, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
