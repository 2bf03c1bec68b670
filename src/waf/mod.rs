//! The rule engine of threat protection (issue 14, under way): SecLang rules — the OWASP Core
//! Rule Set and an operator's own — read (`seclang`), their value transformations (`transform`),
//! and, next, compiled once into matchers.

pub mod seclang;
pub mod transform;
