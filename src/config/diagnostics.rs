//! Diagnostics of a configuration: an error names the file, the key path (and the line when
//! known) and the fix; a warning names the key. `Errors` collects every problem of one load
//! rather than stopping at the first. Nothing here knows the configuration's shape.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem with the configuration, located by file and key path (and line when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// e.g. `routes[2].upstream`, or empty for the whole file.
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What `check` says besides errors: a security warning (the config works, but probably not as
/// intended), or a note on what the rule engine leaves out of the rules it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub key: String,
    pub message: String,
    pub kind: WarningKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// Something the operator can change; `check --strict` fails on it.
    Risk,
    /// A part of the `[waf]` rules this engine does not run (persistent collections,
    /// `@geoLookup`, `@rbl`): a fact about the engine, listed in SECURITY.md. Printed as a
    /// note; `--strict` does not fail on it.
    EngineGap,
}

impl Warning {
    /// Whether `check --strict` fails on it.
    pub fn is_risk(&self) -> bool {
        self.kind == WarningKind::Risk
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.kind {
            WarningKind::Risk => "warning",
            WarningKind::EngineGap => "note",
        };
        if self.key.is_empty() {
            write!(f, "{label}: {}", self.message)
        } else {
            write!(f, "{label}: {}: {}", self.key, self.message)
        }
    }
}

/// Every error and warning of one load, in the order found.
pub struct Errors<'a> {
    pub file: &'a Path,
    list: Vec<ConfigError>,
    /// Security warnings found while compiling (those that need the raw input).
    warnings: Vec<Warning>,
}

impl<'a> Errors<'a> {
    pub fn new(file: &'a Path) -> Self {
        Errors {
            file,
            list: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The errors, or `Ok` with the warnings when there were none.
    pub fn finish(self) -> Result<Vec<Warning>, Vec<ConfigError>> {
        match self.list.is_empty() {
            true => Ok(self.warnings),
            false => Err(self.list),
        }
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.list
    }

    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Record a security warning; its text comes from `lint`.
    pub fn warn(&mut self, warning: Warning) {
        self.warnings.push(warning);
    }

    pub fn push(&mut self, error: ConfigError) {
        self.list.push(error);
    }

    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            line: None,
            message: message.into(),
        });
    }

    /// An error inside a file the config points at (a rule file), by its own file and line.
    pub fn add_at(&mut self, file: &Path, line: usize, key: &str, message: String) {
        self.push(ConfigError {
            file: file.to_path_buf(),
            key: key.to_string(),
            line: Some(line),
            message,
        });
    }

    /// A name that other keys, metric labels and log fields refer to (an upstream, a route, a
    /// provider, a consumer id, a group): it must be plain, and, given the names of its kind seen
    /// so far, new. `what` names it in the error ("route name", "consumer id").
    pub fn name(
        &mut self,
        key: String,
        what: &str,
        name: &str,
        seen: Option<&mut HashSet<String>>,
    ) -> bool {
        if !valid_name(name) {
            self.add(
                key,
                format!("invalid {what} {name:?}; use 1-64 letters, digits, '-', '_' or '.'"),
            );
            return false;
        }
        if let Some(seen) = seen {
            if !seen.insert(name.to_owned()) {
                self.add(key, format!("duplicate {what} {name:?}; give each its own"));
                return false;
            }
        }
        true
    }
}

/// Names that become metric labels and log fields: short and plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Resolve a path relative to the directory of the configuration file.
pub fn relative_to(config_file: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::Errors;
    use std::collections::HashSet;
    use std::path::Path;

    #[test]
    fn a_name_is_plain_and_new_among_its_kind() {
        let mut e = Errors::new(Path::new("portcullis.toml"));
        let mut seen = HashSet::new();
        let long = "a".repeat(65);
        let cases: [(&str, bool); 8] = [
            ("api-v1.read_only", true),
            ("API", true),
            ("api-v1.read_only", false),
            ("", false),
            ("a b", false),
            ("caf\u{e9}", false),
            ("a\"b", false),
            (&long, false),
        ];
        for (name, ok) in cases {
            assert_eq!(
                e.name("routes[0].name".into(), "route name", name, Some(&mut seen)),
                ok,
                "{name:?}"
            );
        }
        // Without a set of seen names, only the spelling counts.
        assert!(e.name("g".into(), "group name", "API", None));
        let errors: Vec<String> = e.list.iter().map(|x| x.message.clone()).collect();
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert_eq!(
            errors[0],
            "duplicate route name \"api-v1.read_only\"; give each its own"
        );
        assert!(errors[1].starts_with("invalid route name \"\"; use 1-64 letters"));
        assert_eq!(seen.len(), 2);
    }
}
