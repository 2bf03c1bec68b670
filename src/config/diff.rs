//! `portcullis check --diff OLD NEW`: what changed between two configuration files, by the
//! names operators use — routes, consumers (their keys by label), JWT providers, upstreams —
//! and by section for the rest, so that "who opened this route, and when" can be answered
//! from the change log of the file. Secrets never appear: keys are named by label, or by the
//! first 8 hex digits of their hash.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use toml::Value;

/// The one line after the digests when nothing a reader would call a change differs (the files
/// differ only in comments or layout, or not at all).
pub const NO_CHANGE: &str = "no change";

/// The lines that describe how `new` differs from `old` (both TOML texts), the SHA-256 of
/// each first. An error names the file that does not parse.
pub fn diff(old: &str, new: &str) -> Result<Vec<String>, String> {
    let parse = |text: &str, which: &str| -> Result<toml::Table, String> {
        text.parse::<toml::Table>()
            .map_err(|e| format!("the {which} file is not TOML: {e}"))
    };
    let (a, b) = (parse(old, "old")?, parse(new, "new")?);
    let mut out = vec![
        format!("old sha256 {}", hex::encode(Sha256::digest(old.as_bytes()))),
        format!("new sha256 {}", hex::encode(Sha256::digest(new.as_bytes()))),
    ];
    for (section, what, key) in [
        ("routes", "route", "name"),
        ("consumers", "consumer", "id"),
        ("jwt_providers", "provider", "name"),
        ("upstreams", "upstream", "name"),
    ] {
        let (old_items, new_items) = (named(&a, section, key), named(&b, section, key));
        for (name, item) in &new_items {
            match old_items.get(name) {
                None => out.push(format!("{what} {name:?}: added")),
                Some(before) if before != item => {
                    let mut line =
                        format!("{what} {name:?}: changed ({})", changed_keys(before, item));
                    if section == "consumers" {
                        line.push_str(&key_changes(before, item));
                    }
                    out.push(line);
                }
                Some(_) => {}
            }
        }
        for name in old_items.keys().filter(|n| !new_items.contains_key(*n)) {
            out.push(format!("{what} {name:?}: removed"));
        }
    }
    let others = a
        .keys()
        .chain(b.keys())
        .filter(|k| !["routes", "consumers", "jwt_providers", "upstreams"].contains(&k.as_str()));
    let mut seen = Vec::new();
    for section in others {
        if seen.contains(&section) {
            continue;
        }
        seen.push(section);
        match (a.get(section), b.get(section)) {
            (None, Some(_)) => out.push(format!("[{section}]: added")),
            (Some(_), None) => out.push(format!("[{section}]: removed")),
            (Some(x), Some(y)) if x != y => {
                out.push(format!("[{section}]: changed ({})", changed_keys(x, y)))
            }
            _ => {}
        }
    }
    if out.len() == 2 {
        out.push(NO_CHANGE.into());
    }
    Ok(out)
}

/// The tables of an array section by their name key (unnamed ones by position).
fn named<'a>(doc: &'a toml::Table, section: &str, key: &str) -> BTreeMap<String, &'a Value> {
    let mut out = BTreeMap::new();
    if let Some(Value::Array(items)) = doc.get(section) {
        for (i, item) in items.iter().enumerate() {
            let name = item
                .get(key)
                .and_then(Value::as_str)
                .map_or_else(|| format!("#{i}"), str::to_string);
            out.insert(name, item);
        }
    }
    out
}

/// The keys whose values differ between two tables (or "value" for non-tables).
fn changed_keys(a: &Value, b: &Value) -> String {
    let (Some(x), Some(y)) = (a.as_table(), b.as_table()) else {
        return "value".into();
    };
    let mut keys: Vec<&str> = x
        .keys()
        .chain(y.keys())
        .filter(|k| x.get(*k) != y.get(*k))
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.join(", ")
}

/// A consumer's API keys added and removed, by label or hash prefix.
fn key_changes(a: &Value, b: &Value) -> String {
    let keys = |v: &Value| -> Vec<String> {
        let Some(Value::Array(list)) = v.get("api_keys") else {
            return Vec::new();
        };
        list.iter()
            .map(|k| match k {
                Value::String(hash) => format!("key {}", short(hash)),
                other => match other.get("label").and_then(Value::as_str) {
                    Some(label) => format!("key {label:?}"),
                    None => format!(
                        "key {}",
                        short(other.get("hash").and_then(Value::as_str).unwrap_or(""))
                    ),
                },
            })
            .collect()
    };
    let (before, after) = (keys(a), keys(b));
    let mut out = String::new();
    for k in after.iter().filter(|k| !before.contains(k)) {
        out.push_str(&format!("; {k} added"));
    }
    for k in before.iter().filter(|k| !after.contains(k)) {
        out.push_str(&format!("; {k} removed"));
    }
    out
}

/// A key hash shown by its first 8 hex digits.
fn short(hash: &str) -> String {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    format!("sha256:{}…", hex.get(..8).unwrap_or(hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = r#"
[limits]
max_body_bytes = "1MiB"
[[upstreams]]
name = "app"
targets = ["127.0.0.1:9000"]
[[consumers]]
id = "ci"
api_keys = [{ hash = "sha256:aaaaaaaaaaaa", label = "ci-2025" }, "sha256:0123456789abcdef"]
[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "app"
public = true
[[routes]]
name = "old"
path_prefix = "/old"
upstream = "app"
public = true
"#;

    #[test]
    fn routes_consumers_keys_and_sections_are_named() {
        let new = OLD
            .replace("max_body_bytes = \"1MiB\"", "max_body_bytes = \"2MiB\"")
            .replace(
                "{ hash = \"sha256:aaaaaaaaaaaa\", label = \"ci-2025\" }",
                "{ hash = \"sha256:bbbbbbbbbbbb\", label = \"ci-2027\" }",
            )
            .replace(
                "name = \"old\"\npath_prefix = \"/old\"",
                "name = \"admin\"\npath_prefix = \"/admin\"",
            )
            .replace(
                "path_prefix = \"/orders\"\nupstream = \"app\"\npublic = true",
                "path_prefix = \"/orders\"\nupstream = \"app\"\nauth = [\"api_key\"]",
            );
        let lines = diff(OLD, &new).unwrap();
        assert!(lines[0].starts_with("old sha256 ") && lines[1].starts_with("new sha256 "));
        for expected in [
            "route \"admin\": added",
            "route \"old\": removed",
            "route \"orders\": changed (auth, public)",
            "consumer \"ci\": changed (api_keys); key \"ci-2027\" added; key \"ci-2025\" removed",
            "[limits]: changed (max_body_bytes)",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected} not in {lines:#?}"
            );
        }
        assert!(
            !lines.iter().any(|l| l.contains("bbbbbbbbbbbb")),
            "a whole hash: {lines:?}"
        );
        assert_eq!(diff(OLD, OLD).unwrap()[2], "no change");
        assert!(diff(OLD, "[broken")
            .unwrap_err()
            .starts_with("the new file"));
    }
}
