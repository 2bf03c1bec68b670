//! SPEC §3 step 7: authorization. A route's `allow` admits a principal when the consumer is
//! listed (or `"*"` is), or one of its groups is; and it holds every required scope. With no
//! consumer or group list, the scopes alone decide. Deny by default: no `allow`, no entry.

use crate::checks::auth::Principal;
use crate::problem::Refusal;

/// A route's `allow` rule (see `checks::acl`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    pub any_consumer: bool,
    pub consumers: Vec<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
}

/// Step 7. `principal` is what step 6 found: none only on a public route, which has no ACL.
pub fn check(allow: Option<&Allow>, principal: Option<&Principal>) -> Result<(), Refusal> {
    match principal {
        Some(principal) => authorize(allow, principal),
        None => Ok(()),
    }
}

pub fn authorize(allow: Option<&Allow>, principal: &Principal) -> Result<(), Refusal> {
    let Some(allow) = allow else {
        return Err(Refusal::forbidden(
            "no_allow_rule",
            "this route admits no one",
        ));
    };
    let identity_listed = allow.any_consumer
        || allow.consumers.contains(&principal.consumer)
        || allow.groups.iter().any(|g| principal.groups.contains(g));
    let identity_ok = identity_listed
        || (allow.consumers.is_empty() && allow.groups.is_empty() && !allow.scopes.is_empty());
    if !identity_ok {
        return Err(Refusal::forbidden(
            "consumer_not_allowed",
            "this consumer is not allowed on this route",
        ));
    }
    if !allow.scopes.iter().all(|s| principal.scopes.contains(s)) {
        return Err(Refusal::forbidden(
            "missing_scope",
            "a required scope is missing",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(consumer: &str, groups: &[&str], scopes: &[&str]) -> Principal {
        Principal {
            consumer: consumer.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            method: "api_key".into(),
            key_label: None,
            token_scheme: None,
            confirmation: None,
            dpop_nonce: None,
        }
    }

    fn allow(consumers: &[&str], groups: &[&str], scopes: &[&str]) -> Allow {
        Allow {
            any_consumer: consumers.contains(&"*"),
            consumers: consumers
                .iter()
                .filter(|c| **c != "*")
                .map(|s| s.to_string())
                .collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn decisions() {
        let p = who("app", &["partners"], &["orders:read"]);
        assert!(authorize(None, &p).is_err());
        assert!(authorize(Some(&allow(&[], &[], &[])), &p).is_err());
        assert!(authorize(Some(&allow(&["app"], &[], &[])), &p).is_ok());
        assert!(authorize(Some(&allow(&["other"], &[], &[])), &p).is_err());
        assert!(authorize(Some(&allow(&[], &["partners"], &[])), &p).is_ok());
        assert!(authorize(Some(&allow(&[], &["staff"], &[])), &p).is_err());
        assert!(authorize(Some(&allow(&["*"], &[], &[])), &p).is_ok());
        assert!(authorize(Some(&allow(&[], &[], &["orders:read"])), &p).is_ok());
        assert_eq!(
            authorize(
                Some(&allow(&[], &["partners"], &["orders:read", "orders:write"])),
                &p
            )
            .unwrap_err()
            .reason,
            "missing_scope"
        );
        assert_eq!(
            authorize(Some(&allow(&["x"], &[], &[])), &p)
                .unwrap_err()
                .reason,
            "consumer_not_allowed"
        );
    }
}
