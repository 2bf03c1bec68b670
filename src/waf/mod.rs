//! The rule engine of threat protection: SecLang rules — the OWASP Core
//! Rule Set and an operator's own — read (`seclang`), their value transformations (`transform`)
//! and operators (`operator`), compiled once into one rule set (`ruleset`) with a prefilter
//! that stands for many rules in one scan (`prefilter`), and run on a request (`eval`).
//! `README.md` beside this file describes the engine. `checks::threat::rules` runs it as step 10 of a request: the rule files of `[waf]`, or
//! the built-in rules (`builtin`) when there are none.

pub mod builtin;
pub mod eval;
pub mod json;
pub mod operator;
pub mod prefilter;
pub mod ruleset;
mod scratch;
pub mod seclang;
pub mod transform;

/// Hands back to the system the heap that compiling a rule set used and freed. Compiling CRS
/// v4 peaks at ~65 MiB of heap and keeps ~26 MiB; glibc's allocator holds on to the freed
/// rest (in pages between live chunks) until `malloc_trim` releases them.
pub fn release_compile_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only releases free pages of glibc's own heap;
    // it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The two Core Rule Sets the unit tests load: setup file first, then the rules in order.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    fn with_setup(setup: PathBuf, rules: &Path) -> Vec<PathBuf> {
        let mut files = vec![setup];
        files.extend(
            super::seclang::rule_files(rules)
                .unwrap_or_else(|e| panic!("{}: {e}", rules.display())),
        );
        files
    }

    /// The CRS v4 snapshot in ../shared/crs.
    pub fn crs_v4() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/crs");
        with_setup(root.join("crs-setup.conf.example"), &root.join("rules"))
    }

    /// Debian's modsecurity-crs 3.3.4 (installed by .ci/deps).
    pub fn debian_crs3() -> Vec<PathBuf> {
        with_setup(
            PathBuf::from("/etc/modsecurity/crs/crs-setup.conf"),
            Path::new("/usr/share/modsecurity-crs/rules"),
        )
    }

    /// Both, for tests that only look at rules one by one.
    pub fn both() -> Vec<PathBuf> {
        let mut all = crs_v4();
        all.extend(debian_crs3());
        all
    }
}
