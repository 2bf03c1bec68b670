//! Configuration: the TOML file is parsed into raw serde structs (`raw`), then compiled once
//! into the immutable model (`model`) that the gateway runs on. Every error carries the file,
//! the key path and what to do about it; `lint` adds the security warnings of `check`.

pub mod compile;
pub mod identities;
pub mod lint;
pub mod model;
pub mod raw;
pub mod secret;
pub mod units;
pub mod waf;

use sha2::Digest;
use std::fmt;
use std::path::{Path, PathBuf};

pub use model::Config;

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

/// A security warning from `check`: the config works, but probably not as intended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "warning: {}", self.message)
        } else {
            write!(f, "warning: {}: {}", self.key, self.message)
        }
    }
}

/// A loaded configuration and its warnings.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Read, parse and compile a configuration file. All semantic errors are reported at once.
pub fn load(path: &Path) -> Result<Loaded, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            line: None,
            message: format!("cannot read the configuration file: {e}"),
        }]
    })?;
    load_str(&text, path)
}

/// Parse and compile configuration text; `path` names it in messages and anchors relative paths.
pub fn load_str(text: &str, path: &Path) -> Result<Loaded, Vec<ConfigError>> {
    let raw = parse(text, path).map_err(|e| vec![e])?;
    let (mut config, mut warnings) = compile::compile(raw, path)?;
    config.sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    warnings.extend(lint::warnings(&config));
    Ok(Loaded { config, warnings })
}

fn parse(text: &str, path: &Path) -> Result<raw::RawConfig, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        ConfigError {
            file: path.to_path_buf(),
            key: if key == "." { String::new() } else { key },
            line,
            message: inner.message().trim().to_string(),
        }
    })
}
