//! The config audit trail across restarts and graceful upgrades. A starting process compares
//! its configuration with the one the process before it ran — kept beside the pid file as
//! `<pid_file stem>.config.toml` — and logs what changed (`config::diff`: routes, consumers and
//! their keys by label, providers, upstreams, sections; never a secret), then keeps its own
//! text there for the next one. Losing the copy loses only the comparison, never the start.

use crate::config::diff::{diff, NO_CHANGE};
use crate::config::model::Config;
use std::path::{Path, PathBuf};

/// Where the running configuration's text is kept: beside the pid file.
pub fn running_copy(pid_file: &str) -> PathBuf {
    Path::new(pid_file).with_extension("config.toml")
}

/// Log how `text` (the configuration this process runs) differs from the previous process's,
/// then keep `text` for the next start.
pub fn record(config: &Config, text: &str) {
    let path = running_copy(&config.server.pid_file);
    for line in compare(&path, text, &config.sha256) {
        log::info!("{line}");
    }
    match keep(&path, text) {
        Ok(()) => {}
        // No directory for the pid file (a development run of the sample config): there is
        // no upgrade to prepare for either.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => log::info!(
            "no copy of the running config kept: {} has no directory; the next start will not log what changed",
            path.display()
        ),
        Err(e) => log::warn!(
            "cannot keep a copy of the running config at {}: {e}; the next start will not log what changed",
            path.display()
        ),
    }
}

/// The log lines that say what changed since the copy at `path`.
fn compare(path: &Path, text: &str, sha256: &str) -> Vec<String> {
    let previous = match std::fs::read_to_string(path) {
        Ok(previous) => previous,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![format!(
                "config sha256 {sha256}: no previous config at {} to compare with",
                path.display()
            )]
        }
        Err(e) => {
            return vec![format!(
                "config sha256 {sha256}: cannot read the previous config at {}: {e}",
                path.display()
            )]
        }
    };
    if previous == text {
        return vec![format!(
            "config sha256 {sha256}: unchanged since the previous process"
        )];
    }
    match diff(&previous, text) {
        Ok(lines) => {
            // The first two lines are the two digests.
            let old = lines
                .first()
                .and_then(|l| l.strip_prefix("old sha256 "))
                .unwrap_or("?");
            let changes: Vec<&String> = lines
                .iter()
                .skip(2)
                .filter(|l| l.as_str() != NO_CHANGE)
                .collect();
            let mut out = vec![format!(
                "config sha256 {sha256} replaces sha256 {old} of the previous process: {} change(s){}",
                changes.len(),
                if changes.is_empty() { " (comments or layout only)" } else { "" }
            )];
            out.extend(changes.iter().map(|c| format!("config change: {c}")));
            out
        }
        Err(e) => vec![format!(
            "config sha256 {sha256}: cannot compare with the previous config at {}: {e}",
            path.display()
        )],
    }
}

/// Keep `text` for the next start.
fn keep(path: &Path, text: &str) -> std::io::Result<()> {
    crate::files::write_private(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_sits_beside_the_pid_file() {
        assert_eq!(
            running_copy("/run/portcullis/portcullis.pid"),
            PathBuf::from("/run/portcullis/portcullis.config.toml")
        );
        assert_eq!(running_copy("gw"), PathBuf::from("gw.config.toml"));
    }

    #[test]
    fn each_start_compares_with_the_last_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.config.toml");
        let first = "[[routes]]\nname = \"a\"\n";
        let lines = compare(&path, first, "1111");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("no previous config"), "{lines:?}");
        keep(&path, first).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        assert_eq!(
            compare(&path, first, "1111"),
            ["config sha256 1111: unchanged since the previous process"]
        );
        let second = "[[routes]]\nname = \"a\"\n[[routes]]\nname = \"b\"\n";
        let lines = compare(&path, second, "2222");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("config sha256 2222 replaces sha256 "));
        assert!(lines[0].ends_with(": 1 change(s)"), "{lines:?}");
        assert_eq!(lines[1], "config change: route \"b\": added");
        let comment = format!("# who: ops\n{first}");
        keep(&path, first).unwrap();
        assert!(compare(&path, &comment, "3333")[0].ends_with("(comments or layout only)"));
        std::fs::write(&path, "not = [toml").unwrap();
        assert!(compare(&path, first, "4444")[0].contains("cannot compare"));
    }
}
