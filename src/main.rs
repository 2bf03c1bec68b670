//! The `portcullis` command line (SPEC §1). Only this file formats errors for people.

use clap::{Parser, Subcommand};
use portcullis::checks::auth::api_key;
use portcullis::config;
use portcullis::keys;
use portcullis::observe::handshakes::Intercept;
use portcullis::server::{self, RunOptions};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/portcullis/portcullis.toml";

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A security-first HTTP API gateway built on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given configuration.
    Run {
        /// The configuration file.
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Take over the listening sockets of a running instance (graceful upgrade).
        #[arg(short = 'u', long = "upgrade")]
        upgrade: bool,
        /// Run in the background.
        #[arg(short = 'd', long = "daemon")]
        daemon: bool,
    },
    /// Validate the configuration: print every error, then every security warning.
    Check {
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Fail on warnings too.
        #[arg(long)]
        strict: bool,
        /// Print what changed from OLD to NEW instead (routes, consumers and their keys by
        /// label, providers, upstreams, sections), with the SHA-256 of each.
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with = "strict")]
        diff: Option<Vec<PathBuf>>,
    },
    /// Read an API key on stdin and print the string to put in the config.
    HashKey {
        /// Hash a key of under 128 bits of entropy anyway.
        #[arg(long)]
        force: bool,
    },
    /// Print a new random API key and its config string.
    GenKey,
    /// List the built-in threat-protection rules (what runs without `[waf]` rule files).
    Rules {
        /// Print them whole, in SecLang: a starting point for rules of your own.
        #[arg(long)]
        print: bool,
    },
}

/// The entropy `hash-key` asks of a key unless forced.
const MIN_KEY_BITS: f64 = 128.0;

/// `check --diff OLD NEW`.
fn print_diff(files: &[PathBuf]) -> ExitCode {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let texts = match (files.first().map(read), files.get(1).map(read)) {
        (Some(Ok(old)), Some(Ok(new))) => (old, new),
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        _ => {
            eprintln!("error: --diff needs two files, OLD and NEW");
            return ExitCode::FAILURE;
        }
    };
    match config::diff::diff(&texts.0, &texts.1) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_errors(errors: &[config::diagnostics::ConfigError]) {
    for e in errors {
        eprintln!("error: {e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config: path,
            upgrade,
            daemon,
        } => {
            init_logging();
            let loaded = match config::load(&path) {
                Ok(loaded) => loaded,
                Err(errors) => {
                    print_errors(&errors);
                    eprintln!(
                        "portcullis: not started: {} error(s) in {}",
                        errors.len(),
                        path.display()
                    );
                    return ExitCode::FAILURE;
                }
            };
            for w in loaded.warnings.iter().filter(|w| w.is_risk()) {
                log::warn!("{}: {w}", path.display());
            }
            let notes = loaded.warnings.iter().filter(|w| !w.is_risk()).count();
            if notes > 0 {
                log::info!(
                    "{}: {notes} part(s) of the [waf] rules are not run by this engine (persistent collections, @geoLookup, @rbl); `portcullis check` lists them",
                    path.display()
                );
            }
            let options = RunOptions {
                upgrade,
                daemon,
                config_text: loaded.text,
            };
            match server::run(loaded.config, options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check {
            diff: Some(files), ..
        } => print_diff(&files),
        Command::Check {
            config: path,
            strict,
            diff: None,
        } => match config::load(&path) {
            Err(errors) => {
                print_errors(&errors);
                eprintln!("{}: {} error(s)", path.display(), errors.len());
                ExitCode::FAILURE
            }
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{}: {w}", path.display());
                }
                let risks = loaded.warnings.iter().filter(|w| w.is_risk()).count();
                let notes = loaded.warnings.len() - risks;
                if strict && risks > 0 {
                    eprintln!(
                        "{}: {risks} warning(s); failing because of --strict",
                        path.display()
                    );
                    ExitCode::FAILURE
                } else {
                    println!(
                        "{}: OK ({risks} warning(s){})",
                        path.display(),
                        match notes {
                            0 => String::new(),
                            n => format!(", {n} note(s) on what the rule engine leaves out"),
                        }
                    );
                    ExitCode::SUCCESS
                }
            }
        },
        Command::HashKey { force } => {
            let mut input = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut input) {
                eprintln!("error: cannot read standard input: {e}");
                return ExitCode::FAILURE;
            }
            match keys::key_from_input(&input) {
                Ok(key) if !force && api_key::entropy_bits(key) < MIN_KEY_BITS => {
                    eprintln!(
                        "error: this key has about {:.0} bits of entropy; a key needs {MIN_KEY_BITS:.0} or more, because its SHA-256 digest is quick to guess against. Make one with `portcullis gen-key`, or pass --force to hash this one anyway",
                        api_key::entropy_bits(key)
                    );
                    ExitCode::FAILURE
                }
                Ok(key) => {
                    println!("{}", keys::config_hash(key));
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Rules { print: true } => {
            print!("{}", portcullis::waf::builtin::SOURCE);
            ExitCode::SUCCESS
        }
        Command::Rules { print: false } => match portcullis::waf::builtin::compile() {
            Ok(rules) => {
                for (id, msg) in portcullis::waf::builtin::summary(&rules) {
                    let family = portcullis::checks::threat::rules::family(id);
                    let msg = if msg.is_empty() {
                        "(sets up, refuses nothing)"
                    } else {
                        &msg
                    };
                    println!("{id:>6}  {family:<18} {msg}");
                }
                println!("These run on every route with threat protection when the config has no [waf] rules.");
                println!("`portcullis rules --print` shows them in SecLang; to replace them, save that, edit it and name it in [waf] rules.");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("error: the built-in rules do not compile: {message}");
                ExitCode::FAILURE
            }
        },
        Command::GenKey => match keys::generate() {
            Ok(key) => {
                println!("api key: {key}");
                println!("config:  {}", keys::config_hash(&key));
                eprintln!("Give the key to the client; put only the config string in api_keys.");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The error log: `log` records to stderr; `RUST_LOG` overrides the level.
/// The error log (env_logger, `RUST_LOG`), read on the way for failed TLS handshakes, which
/// Pingora reports only there (`observe::handshakes`).
fn init_logging() {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format_timestamp_millis()
            .build();
    let level = logger.filter();
    if log::set_boxed_logger(Box::new(Intercept { inner: logger })).is_ok() {
        log::set_max_level(level);
    }
}
