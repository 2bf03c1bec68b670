//! A route's `websocket` → its `WebSocketPolicy` (defaults: idle 60 s, lifetime 1 h, messages
//! of 1 MiB).

use super::super::diagnostics::Errors;
use super::super::raw::RawRouteWebSocket;
use crate::checks::websocket::WebSocketPolicy;
use std::time::Duration;

/// The longest a tunnel may be kept: a day.
const MAX_LIFETIME: Duration = Duration::from_secs(86_400);

pub(super) fn route_policy(
    e: &mut Errors,
    key: &str,
    raw: Option<&RawRouteWebSocket>,
) -> Option<WebSocketPolicy> {
    let settings = match raw? {
        RawRouteWebSocket::Enabled(false) => return None,
        RawRouteWebSocket::Enabled(true) => return Some(WebSocketPolicy::default()),
        RawRouteWebSocket::Settings(s) => s,
    };
    let key = format!("{key}.websocket");
    let defaults = WebSocketPolicy::default();
    let idle_timeout = e.duration(
        &format!("{key}.idle_timeout"),
        settings.idle_timeout.as_ref(),
        defaults.idle_timeout,
    );
    let max_lifetime = e.duration(
        &format!("{key}.max_lifetime"),
        settings.max_lifetime.as_ref(),
        defaults.max_lifetime,
    );
    if max_lifetime > MAX_LIFETIME {
        e.add(
            format!("{key}.max_lifetime"),
            "at most 24h: a tunnel outlives the credential checked at its upgrade",
        );
    }
    if idle_timeout > max_lifetime {
        e.add(
            format!("{key}.idle_timeout"),
            "is longer than max_lifetime; shorten it",
        );
    }
    let max_message_bytes = e.size(
        &format!("{key}.max_message_bytes"),
        settings.max_message_bytes.as_ref(),
        defaults.max_message_bytes,
    );
    Some(WebSocketPolicy {
        idle_timeout,
        max_lifetime,
        max_message_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile::testing::section;

    fn compile(value: &str) -> (Option<WebSocketPolicy>, Vec<String>) {
        #[derive(serde::Deserialize)]
        struct Doc {
            websocket: RawRouteWebSocket,
        }
        let (made, errors, _) = section(&format!("websocket = {value}"), |e, d: &Doc, _| {
            route_policy(e, "routes[0]", Some(&d.websocket))
        });
        (made, errors)
    }

    #[test]
    fn true_takes_the_defaults_and_a_table_sets_each() {
        assert_eq!(compile("true"), (Some(WebSocketPolicy::default()), vec![]));
        assert_eq!(compile("false"), (None, vec![]));
        let (p, errors) = compile(
            "{ idle_timeout = \"5s\", max_lifetime = \"2m\", max_message_bytes = \"64KiB\" }",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            p,
            Some(WebSocketPolicy {
                idle_timeout: Duration::from_secs(5),
                max_lifetime: Duration::from_secs(120),
                max_message_bytes: 65536,
            })
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let (_, errors) =
            compile("{ idle_timeout = \"2h\", max_lifetime = \"2d\", max_message_bytes = 0 }");
        for key in [
            "routes[0].websocket.max_lifetime: at most 24h",
            "routes[0].websocket.max_message_bytes: must be greater than zero",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key} not in {errors:?}"
            );
        }
        let (_, errors) = compile("{ idle_timeout = \"2h\", max_lifetime = \"1h\" }");
        assert!(
            errors[0].starts_with("routes[0].websocket.idle_timeout: is longer"),
            "{errors:?}"
        );
    }
}
