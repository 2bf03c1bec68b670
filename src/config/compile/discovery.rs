//! A provider's `discovery` address, shared by JWT and introspection providers: https (or
//! plain http on loopback), and the issuer its document must name.

use crate::config::diagnostics::Errors;

/// The path OpenID Connect Discovery puts after the issuer (§4).
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// A `discovery` address's checks (https, or plain http on loopback) and the issuer its
/// document must name: `issuer` when set, else the address before `DISCOVERY_PATH` (which is
/// then also the provider's `issuer`).
pub(super) fn issuer(
    e: &mut Errors,
    key: &str,
    url: &str,
    parsed: &crate::outbound::Url,
    issuer: &mut Option<String>,
) -> Option<String> {
    if !parsed.tls && !parsed.is_loopback() {
        e.add(
            format!("{key}.discovery"),
            "plain http is only allowed on loopback; use the provider's https:// address",
        );
        return None;
    }
    if issuer.is_none() {
        match url.strip_suffix(DISCOVERY_PATH) {
            Some(implied) if !implied.is_empty() => *issuer = Some(implied.to_string()),
            _ => {
                e.add(
                    format!("{key}.issuer"),
                    format!("needed: {url:?} does not end in {DISCOVERY_PATH}, so the issuer cannot be derived from it; set issuer to the exact value the provider's tokens carry"),
                );
                return None;
            }
        }
    }
    issuer.clone()
}
