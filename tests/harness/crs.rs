//! The OWASP CRS project's regression corpus (../shared/crs/tests/regression/tests, go-ftw
//! YAML), read into stages: what to send and which rule ids must (not) fire.

use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/crs")
}

/// One stage of one test.
#[derive(Debug, Clone)]
pub struct Stage {
    /// `REQUEST-942-APPLICATION-ATTACK-SQLI`'s first 11 characters: `REQUEST-942`.
    pub family: String,
    /// The rule the test file is about.
    pub rule_id: u64,
    /// `942100-1/0`: rule, test id and stage index.
    pub name: String,
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub data: String,
    /// A stage given as raw bytes (`encoded_request`), sent as it is.
    pub raw: Option<Vec<u8>>,
    pub expect_ids: Vec<u64>,
    pub no_expect_ids: Vec<u64>,
}

impl Stage {
    /// The stage as bytes on the wire, as go-ftw sends it (Content-Length added to a body
    /// unless the stage turns autocompletion off; the connection closed after it).
    pub fn wire(&self) -> Vec<u8> {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut out = format!("{} {} {}\r\n", self.method, self.uri, self.version).into_bytes();
        let mut has_connection = false;
        for (k, v) in &self.headers {
            has_connection |= k.eq_ignore_ascii_case("connection");
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if !has_connection {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.data.as_bytes());
        out
    }
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn ids(y: &Yaml) -> Vec<u64> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|i| i.as_i64())
                .map(|i| i as u64)
                .collect()
        })
        .unwrap_or_default()
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries
}

/// Every stage of the corpus, in file order.
pub fn stages() -> Vec<Stage> {
    use base64::Engine;
    let mut out = Vec::new();
    for dir in sorted_entries(&root().join("tests/regression/tests")) {
        if !dir.is_dir() {
            continue;
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let family: String = name.chars().take(11).collect();
        for file in sorted_entries(&dir) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let Ok(docs) = YamlLoader::load_from_str(&text) else {
                panic!("{}: not YAML", file.display());
            };
            let Some(doc) = docs.first() else { continue };
            let rule_id = doc["rule_id"].as_i64().unwrap_or(0) as u64;
            for test in doc["tests"].as_vec().into_iter().flatten() {
                let title = match scalar(&test["test_id"]) {
                    Some(id) => format!("{rule_id}-{id}"),
                    None => scalar(&test["test_title"]).unwrap_or_else(|| rule_id.to_string()),
                };
                for (n, stage) in test["stages"].as_vec().into_iter().flatten().enumerate() {
                    let input = &stage["input"];
                    let output = &stage["output"];
                    // Undecodable raw requests are kept (empty) so that they are never mistaken
                    // for ordinary stages.
                    let raw = scalar(&input["encoded_request"]).map(|b| {
                        let b: String = b.split_whitespace().collect();
                        base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .unwrap_or_default()
                    });
                    let data = scalar(&input["data"]).unwrap_or_default();
                    let mut headers: Vec<(String, String)> = input["headers"]
                        .as_hash()
                        .into_iter()
                        .flatten()
                        .filter_map(|(k, v)| Some((scalar(k)?, scalar(v)?)))
                        .collect();
                    let autocomplete = input["autocomplete_headers"].as_bool().unwrap_or(true);
                    if autocomplete
                        && !data.is_empty()
                        && !headers
                            .iter()
                            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    {
                        headers.push(("Content-Length".into(), data.len().to_string()));
                    }
                    out.push(Stage {
                        family: family.clone(),
                        rule_id,
                        name: format!("{title}/{n}"),
                        method: scalar(&input["method"]).unwrap_or_else(|| "GET".into()),
                        uri: scalar(&input["uri"]).unwrap_or_else(|| "/".into()),
                        version: scalar(&input["version"]).unwrap_or_else(|| "HTTP/1.1".into()),
                        headers,
                        data,
                        raw,
                        expect_ids: ids(&output["log"]["expect_ids"]),
                        no_expect_ids: ids(&output["log"]["no_expect_ids"]),
                    });
                }
            }
        }
    }
    out
}
