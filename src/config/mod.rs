//! Configuration: the TOML file is parsed into raw serde structs (`raw`), then compiled once
//! (`compile`, a file per section) into the immutable model (`model`) that the gateway runs on.
//! Every error carries the file, the key path and what to do about it (`diagnostics`); `lint`
//! adds the security warnings of `check`. Dependencies point one way: `compile` reads `raw` and
//! builds `model`; `model` knows no compiler; `diagnostics` imports nothing from here.

pub mod compile;
pub mod diagnostics;
pub mod diff;
pub mod lint;
pub mod model;
pub mod raw;
pub mod units;

use diagnostics::{ConfigError, Warning};
use sha2::Digest;
use std::path::Path;

pub use model::Config;

/// A loaded configuration and its warnings.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
    /// The file's text, for the audit trail of the next start (`audit`).
    pub text: String,
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
    Ok(Loaded {
        config,
        warnings,
        text: text.to_string(),
    })
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
