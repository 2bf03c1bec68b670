//! The rule engine of threat protection (issue 14, under way): SecLang rules — the OWASP Core
//! Rule Set and an operator's own — read (`seclang`), their value transformations (`transform`)
//! and operators (`operator`), compiled once into one rule set (`ruleset`) and run on a request
//! (`eval`). Not yet wired into the gateway.

pub mod eval;
pub mod operator;
pub mod ruleset;
pub mod seclang;
pub mod transform;
