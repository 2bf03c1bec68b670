//! One module per check of SPEC §3. Each entry point reads the request (and what earlier
//! checks put in the context) and answers `Ok` to go on or `Err(Refusal)` to stop.

pub mod acl;
pub mod auth;
pub mod forward;
pub mod identity;
pub mod ip;
pub mod limits;
pub mod path;
pub mod route;
pub mod throttle;
