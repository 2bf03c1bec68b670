//! The rule engine of threat protection (issue 14, under way): SecLang rules — the OWASP Core
//! Rule Set and an operator's own — read (`seclang`), their value transformations (`transform`)
//! and operators (`operator`), compiled once into one rule set (`ruleset`). The evaluator that
//! runs it on requests is next.

pub mod operator;
pub mod ruleset;
pub mod seclang;
pub mod transform;
