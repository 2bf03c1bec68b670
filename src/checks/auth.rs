//! SPEC §3 steps 5–6: authentication. This release has no credential checks yet, so the rule
//! is deny by default: a route that is not `public` refuses every request with 401.

use crate::config::model::Route;
use crate::problem::Refusal;

pub fn authenticate(route: &Route) -> Result<(), Refusal> {
    if route.public {
        return Ok(());
    }
    Err(
        Refusal::new(401, "no_credentials", "authentication is required")
            .with_header("WWW-Authenticate", "Bearer realm=\"portcullis\""),
    )
}
