//! `[limits]`: the sizes and timeouts of SPEC §3 step 2 and the body defaults of step 9.

use crate::checks::limits::Limits;
use crate::config::diagnostics::Errors;
use crate::config::raw::*;

pub(super) fn compile_limits(e: &mut Errors, l: &RawLimits) -> Limits {
    let d = Limits::default();
    let max_uri_bytes = e.size(
        "limits.max_uri_bytes",
        l.max_uri_bytes.as_ref(),
        d.max_uri_bytes as u64,
    );
    let max_header_bytes = e.size(
        "limits.max_header_bytes",
        l.max_header_bytes.as_ref(),
        d.max_header_bytes as u64,
    );
    // Pingora itself refuses request heads over 1 MiB; a larger limit could never apply.
    let head_cap = 1024 * 1024;
    if max_uri_bytes > head_cap {
        e.add(
            "limits.max_uri_bytes",
            "at most 1MiB (Pingora's own cap on a request head)",
        );
    }
    if max_header_bytes > head_cap {
        e.add(
            "limits.max_header_bytes",
            "at most 1MiB (Pingora's own cap on a request head)",
        );
    }
    Limits {
        max_uri_bytes: max_uri_bytes.min(head_cap) as usize,
        max_header_bytes: max_header_bytes.min(head_cap) as usize,
        max_headers: e.count("limits.max_headers", l.max_headers, d.max_headers, 256),
        max_body_bytes: e.size(
            "limits.max_body_bytes",
            l.max_body_bytes.as_ref(),
            d.max_body_bytes,
        ),
        max_json_depth: e.count(
            "limits.max_json_depth",
            l.max_json_depth,
            d.max_json_depth,
            10_000,
        ),
        body_read_timeout: e.duration(
            "limits.body_read_timeout",
            l.body_read_timeout.as_ref(),
            d.body_read_timeout,
        ),
        header_read_timeout: e.duration(
            "limits.header_read_timeout",
            l.header_read_timeout.as_ref(),
            d.header_read_timeout,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile::testing::section;
    use std::time::Duration;

    fn limits(toml: &str) -> (Limits, Vec<String>) {
        let (made, errors, _) = section(toml, |e, raw: &RawLimits, _| compile_limits(e, raw));
        (made, errors)
    }

    #[test]
    fn defaults_and_units() {
        assert_eq!(limits(""), (Limits::default(), vec![]));
        let (l, errors) = limits(
            "max_uri_bytes = \"4KiB\"\nmax_body_bytes = 2048\nmax_headers = 50\n\
             body_read_timeout = \"1500ms\"\nheader_read_timeout = \"2s\"",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(l.max_uri_bytes, 4096);
        assert_eq!(l.max_body_bytes, 2048);
        assert_eq!(l.max_headers, 50);
        assert_eq!(l.body_read_timeout, Duration::from_millis(1500));
        assert_eq!(l.header_read_timeout, Duration::from_secs(2));
    }

    #[test]
    fn each_bad_value_is_named_and_the_default_kept() {
        let cases = [
            (
                "max_uri_bytes = \"2MiB\"",
                "limits.max_uri_bytes: at most 1MiB",
            ),
            (
                "max_header_bytes = 0",
                "limits.max_header_bytes: must be greater than zero",
            ),
            (
                "max_headers = 300",
                "limits.max_headers: 300 is out of range",
            ),
            (
                "max_json_depth = -1",
                "limits.max_json_depth: -1 is out of range",
            ),
            ("max_body_bytes = \"lots\"", "limits.max_body_bytes: "),
            (
                "body_read_timeout = \"0s\"",
                "limits.body_read_timeout: must be greater",
            ),
            (
                "header_read_timeout = \"soon\"",
                "limits.header_read_timeout: ",
            ),
        ];
        for (toml, expected) in cases {
            let (l, errors) = limits(toml);
            assert_eq!(errors.len(), 1, "{toml}: {errors:?}");
            assert!(errors[0].starts_with(expected), "{toml}: {errors:?}");
            assert!(l.max_uri_bytes <= 1024 * 1024, "{toml}");
        }
    }
}
