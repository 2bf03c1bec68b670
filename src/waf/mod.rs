//! The rule engine of threat protection (issue 14, under way): SecLang rules — the OWASP Core
//! Rule Set and an operator's own — read (`seclang`), their value transformations (`transform`)
//! and operators (`operator`); next, compiled once into one rule set.

pub mod operator;
pub mod seclang;
pub mod transform;
