//! The command line of SPEC §1: `check` on good and broken configs, `hash-key`, `gen-key`,
//! and `run` refusing a bad config with one clear line and no panic.

mod harness;

use harness::*;

const BASE: &str = r#"
[[listeners]]
address = "127.0.0.1:18080"

[[upstreams]]
name = "app"
targets = ["127.0.0.1:9000"]

[[routes]]
name = "r"
path_prefix = "/"
upstream = "app"
rate_limit = { requests = 100, per = "1s" }
public = true
"#;

fn check(config: &str, strict: bool) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap().to_string();
    let mut args = vec!["check", "-c", path.as_str()];
    if strict {
        args.push("--strict");
    }
    cli(&args, None)
}

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(
        !stderr.contains("RUST_BACKTRACE"),
        "backtrace hint: {stderr}"
    );
}

#[test]
fn default_config_passes_check() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/portcullis.toml");
    let (code, out, err) = cli(&["check", "-c", config], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK"));
}

#[test]
fn minimal_config_passes_strict_check() {
    let (code, out, err) = check(BASE, true);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn broken_configs_exit_1_and_name_the_key() {
    let cases: Vec<(String, &str)> = vec![
        (format!("{BASE}\n[server]\nthreadz = 2\n"), "threadz"),
        (BASE.replace("targets = [\"127.0.0.1:9000\"]", "targets = [\"127.0.0.1:9000\"]\nprotocol = \"h2\""), "upstreams[0].protocol"),
        (BASE.replace("targets = [\"127.0.0.1:9000\"]", "targets = [\"127.0.0.1:9000\"]\nprotocol = \"http3\""), "upstreams[0].protocol"),
        (
            BASE.replace("targets = [\"127.0.0.1:9000\"]", "targets = [\"127.0.0.1:9000\"]\nprotocol = \"h2c\"")
                .replace("public = true", "public = true\nwebsocket = true"),
            "routes[0].websocket",
        ),
        (BASE.replace("public = true", "public = true\nwebsocket = { max_lifetime = \"2d\" }"), "routes[0].websocket.max_lifetime"),
        (BASE.replace("public = true", "public = true\ncors = { origins = [\"null\"] }"), "routes[0].cors.origins[0]"),
        (
            BASE.replace("address = \"127.0.0.1:18080\"", "address = \"127.0.0.1:18080\"\nh2c = true\ntls = { cert = \"c.pem\", key = \"k.pem\" }"),
            "listeners[0].h2c",
        ),
        (BASE.replace("public = true", "public = true\nresponse = { upstream_errors = \"hide\" }"), "routes[0].response.upstream_errors"),
        (BASE.replace("name = \"r\"", "name = \"r\"\ncolour = \"red\""), "colour"),
        (format!("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{BASE}"), "server.trusted_proxies[0]"),
        (BASE.replace("public = true", "public = true\nip_deny = [\"not-an-ip\"]"), "routes[0].ip_deny[0]"),
        (
            BASE.replace("targets = [\"127.0.0.1:9000\"]", "targets = [\"127.0.0.1:9000\"]\nread_timeout = \"ten seconds\""),
            "upstreams[0].read_timeout",
        ),
        (format!("[server]\ngrace_period = \"5 parsecs\"\n{BASE}"), "server.grace_period"),
        // Too short to drain kept-alive connections, or silently rounded down by Pingora.
        (format!("[server]\ngrace_period = \"500ms\"\n{BASE}"), "server.grace_period: use whole seconds of at least 1s"),
        (format!("[server]\ngrace_period = \"1500ms\"\n{BASE}"), "server.grace_period: use whole seconds"),
        (format!("[server]\ngraceful_shutdown_timeout = \"200ms\"\n{BASE}"), "server.graceful_shutdown_timeout"),
        (BASE.replace("upstream = \"app\"", "upstream = \"nope\""), "routes[0].upstream"),
        (
            format!("{BASE}\n[[routes]]\nname = \"r\"\npath_prefix = \"/other\"\nupstream = \"app\"\npublic = true\n"),
            "routes[1].name",
        ),
        (
            format!("{BASE}\n[[routes]]\nname = \"dup\"\npath_prefix = \"/\"\nupstream = \"app\"\npublic = true\n"),
            "routes[1]",
        ),
        (BASE.replace("path_prefix = \"/\"", "path_prefix = \"/a/../b\""), "routes[0].path_prefix"),
        (BASE.replace("127.0.0.1:18080", "localhost"), "listeners[0].address"),
        (format!("[limits]\nmax_body_bytes = \"12 parsecs\"\n{BASE}"), "limits.max_body_bytes"),
        (format!("{BASE}\n[[jwt_providers]]\nname = \"corp\"\n"), "jwt_providers"),
        (BASE.replace("public = true", "public = true\nthreat_protection = \"maybe\""), "routes[0].threat_protection"),
        ("this is not toml".to_string(), ""),
        (BASE.replace("[[listeners]]", "[[listeners]]\n[[listeners]]"), "listeners[0]"),
    ];
    for (config, key) in cases {
        let (code, out, err) = check(&config, false);
        assert_eq!(
            code, 1,
            "expected failure for key {key:?}\nstdout: {out}\nstderr: {err}"
        );
        assert!(err.contains(key), "stderr should name {key:?}: {err}");
        assert!(err.contains("p.toml"), "stderr should name the file: {err}");
        assert_no_panic(&err);
    }
}

#[test]
fn several_errors_are_all_reported() {
    let config = BASE
        .replace("upstream = \"app\"", "upstream = \"nope\"")
        .replace("public = true", "public = true\nip_allow = [\"300.1.1.1\"]");
    let (code, _, err) = check(&config, false);
    assert_eq!(code, 1);
    assert!(err.contains("routes[0].upstream"), "{err}");
    assert!(err.contains("routes[0].ip_allow[0]"), "{err}");
}

#[test]
fn warnings_fail_only_with_strict() {
    let exposed = BASE
        .replace("127.0.0.1:18080", "0.0.0.0:18080")
        .replace("public = true", "")
        + "\n[metrics]\naddress = \"0.0.0.0:19091\"\n";
    let (code, _, err) = check(&exposed, false);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: listeners[0].address"), "{err}");
    assert!(err.contains("warning: metrics.address"), "{err}");
    assert!(err.contains("warning: routes[0]"), "{err}");
    let (code, _, _) = check(&exposed, true);
    assert_eq!(code, 1);
}

#[test]
fn missing_file_is_one_clear_line() {
    let (code, _, err) = cli(&["check", "-c", "/nonexistent/portcullis.toml"], None);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/portcullis.toml"));
    assert_no_panic(&err);
}

#[test]
fn run_refuses_a_broken_config_and_a_busy_port() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        BASE.replace("upstream = \"app\"", "upstream = \"nope\""),
    )
    .unwrap();
    let (code, _, err) = cli(&["run", "-c", path.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(err.contains("routes[0].upstream"), "{err}");
    assert_no_panic(&err);

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    std::fs::write(&path, BASE.replace("18080", &port.to_string())).unwrap();
    let (code, _, err) = cli(&["run", "-c", path.to_str().unwrap()], None);
    assert_eq!(code, 1);
    assert!(err.contains("listeners[0].address"), "{err}");
    assert_no_panic(&err);
}

#[test]
fn hash_key_prints_the_config_string() {
    // A weak key is refused unless forced: its digest is quick to guess against.
    let (code, out, err) = cli(&["hash-key"], Some("test\n"));
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("bits of entropy") && err.contains("gen-key"),
        "{err}"
    );
    let (code, out, _) = cli(&["hash-key", "--force"], Some("test\n"));
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
    let (code, _, err) = cli(&["hash-key"], Some(""));
    assert_eq!(code, 1);
    assert!(err.contains("no key"));
    let strong = "k-7Hq2mZpX9vLw4RtY8uN3cB6dF1gJ5sKe0aQi";
    let (code, out, _) = cli(&["hash-key"], Some(strong));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), portcullis::keys::config_hash(strong));
}

#[test]
fn gen_key_prints_a_fresh_key_and_its_hash() {
    let (code, out, _) = cli(&["gen-key"], None);
    assert_eq!(code, 0);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("api key: "))
        .expect("key line")
        .trim()
        .to_string();
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("config:  "))
        .expect("config line")
        .trim()
        .to_string();
    assert!(key.len() >= 43, "at least 32 bytes of entropy");
    let (_, again, _) = cli(&["hash-key"], Some(&key));
    assert_eq!(again.trim(), hash);
    let (_, other, _) = cli(&["gen-key"], None);
    assert_ne!(other, out);
}

#[test]
fn auth_settings_get_security_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "too-short").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let jwks = data("jwt/jwks.json");
    let config = format!(
        r#"{BASE}
[[jwt_providers]]
name = "weak"
algorithms = ["HS256"]
secret_file = "{short}"

[[jwt_providers]]
name = "mixed"
audiences = ["api"]
algorithms = ["RS256", "HS256"]
jwks_file = "{jwks}"

[[jwt_providers]]
name = "remote"
audiences = ["api"]
algorithms = ["RS256"]
jwks_url = "http://idp.example.com/jwks"

[[consumers]]
id = "app"
api_keys = ["{hash}"]

[[routes]]
name = "no-allow"
path_prefix = "/a"
upstream = "app"
auth = ["api_key"]

[[routes]]
name = "empty-allow"
path_prefix = "/b"
upstream = "app"
auth = ["jwt:weak"]
allow = {{}}
"#,
        short = short.display(),
        hash = portcullis::keys::config_hash("k"),
    );
    let (code, _, err) = check(&config, false);
    assert_eq!(code, 0, "{err}");
    for expected in [
        "jwt_providers[0].secret: the HS secret has 9 bytes",
        "jwt_providers[0].secret_file",
        "readable by group or others",
        "jwt_providers[0].audiences: no audiences",
        "jwt_providers[1].algorithms: mixes HS",
        "jwt_providers[2].jwks_url: plain http",
        "routes[1]: route has auth but no allow",
        "routes[2].allow: allow is empty",
    ] {
        assert!(
            err.contains(expected),
            "missing warning {expected:?} in:\n{err}"
        );
    }
    let (code, _, _) = check(&config, true);
    assert_eq!(code, 1);
}

#[test]
fn auth_config_errors_name_the_key() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{BASE}\n[[jwt_providers]]\nname = \"x\"\nalgorithms = [\"none\"]\nsecret_env = \"PORTCULLIS_TEST_UNSET_VAR\"\n"),
            "jwt_providers[0].algorithms[0]: \"none\" is never accepted",
        ),
        (
            format!("{BASE}\n[[jwt_providers]]\nname = \"x\"\nalgorithms = [\"HS256\"]\nsecret_env = \"PORTCULLIS_TEST_UNSET_VAR\"\n"),
            "jwt_providers[0].secret_env: the environment variable PORTCULLIS_TEST_UNSET_VAR is not set",
        ),
        (
            format!("{BASE}\n[[jwt_providers]]\nname = \"x\"\nalgorithms = [\"RS256\"]\n"),
            "needs exactly one key source",
        ),
        (
            format!("{BASE}\n[[consumers]]\nid = \"a\"\napi_keys = [\"plain-text-key\"]\n"),
            "consumers[0].api_keys[0]: not a key hash",
        ),
        (
            format!("{BASE}\n[[consumers]]\nid = \"a\"\nmtls_subjects = [\"bob\"]\n"),
            "consumers[0].mtls_subjects[0]",
        ),
        (
            BASE.replace("public = true", "auth = [\"jwt:nope\"]"),
            "routes[0].auth[0]: unknown JWT provider",
        ),
        (
            BASE.replace("public = true", "auth = [\"mtls\"]"),
            "routes[0].auth[0]: \"mtls\" needs a listener with tls.client_ca",
        ),
        (
            BASE.replace("public = true", "public = true\nauth = [\"api_key\"]"),
            "routes[0].public: a public route cannot also require auth",
        ),
        (
            format!("{BASE}\n[[consumers]]\nid = \"a\"\n[[consumers]]\nid = \"a\"\n"),
            "consumers[1].id: duplicate consumer id",
        ),
        (
            BASE.replace("public = true", "public = true\nsender_constrained = true"),
            "routes[0].sender_constrained: only applies to a route whose auth takes tokens",
        ),
        (
            format!("[security]\ndpop_proof_lifetime = \"1s\"\n{BASE}"),
            "security.dpop_proof_lifetime: between 5s and 10m",
        ),
        (
            format!("[security]\ndpop_nonce_secret_file = \"/proc/sys/kernel/ostype\"\n{BASE}"),
            "security.dpop_nonce_secret_file: only applies with dpop_nonce = true",
        ),
        (
            format!("[security]\ndpop_nonce = true\ndpop_nonce_secret_file = \"/proc/sys/kernel/ostype\"\n{BASE}"),
            "security.dpop_nonce_secret_file: the secret has 5 bytes; at least 32",
        ),
        (
            format!("[security]\ndpop_nonce = true\ndpop_nonce_secret_env = \"PORTCULLIS_TEST_UNSET_VAR\"\n{BASE}"),
            "security.dpop_nonce_secret_env: the environment variable PORTCULLIS_TEST_UNSET_VAR is not set",
        ),
        (
            format!("{BASE}\n[[jwt_providers]]\nname = \"as\"\nkind = \"opaque\"\n"),
            "jwt_providers[0].kind: unknown kind \"opaque\"",
        ),
    ];
    for (config, expected) in cases {
        let (code, _, err) = check(&config, false);
        assert_eq!(code, 1, "expected failure for {expected:?}: {err}");
        assert!(
            err.contains(expected),
            "stderr should contain {expected:?}: {err}"
        );
        assert_no_panic(&err);
    }
}

#[test]
fn secret_env_is_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.toml");
    let config = format!(
        "{BASE}\n[[jwt_providers]]\nname = \"hs\"\naudiences = [\"api\"]\nalgorithms = [\"HS256\"]\nsecret_env = \"PORTCULLIS_TEST_HS_SECRET\"\n"
    );
    std::fs::write(&path, config).unwrap();
    let run = |secret: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.args(["check", "--strict", "-c", path.to_str().unwrap()]);
        command.env_remove("PORTCULLIS_TEST_HS_SECRET");
        if let Some(s) = secret {
            command.env("PORTCULLIS_TEST_HS_SECRET", s);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(Some("0123456789abcdef0123456789abcdef-long-enough"));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run(Some("short"));
    assert_eq!(
        code,
        Some(1),
        "a short secret is a warning, fatal with --strict: {err}"
    );
    assert!(err.contains("the HS secret has 5 bytes"));
    assert!(
        !err.contains("short\""),
        "the secret itself is never printed: {err}"
    );
    let (code, err) = run(None);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("PORTCULLIS_TEST_HS_SECRET is not set"),
        "{err}"
    );
}

#[test]
fn bad_schemas_and_validate_settings_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("not-json.json");
    std::fs::write(&not_json, "{ nope").unwrap();
    let bad_schema = dir.path().join("bad.json");
    std::fs::write(&bad_schema, r#"{"type": 5}"#).unwrap();
    let remote = dir.path().join("remote.json");
    std::fs::write(&remote, r#"{"$ref": "https://example.com/schema.json"}"#).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            BASE.replace("public = true", &format!("public = true\nvalidate = {{ json_schema = \"{}\" }}", not_json.display())),
            "routes[0].validate.json_schema",
        ),
        (
            BASE.replace("public = true", &format!("public = true\nvalidate = {{ json_schema = \"{}\" }}", bad_schema.display())),
            "is not a usable JSON Schema",
        ),
        (
            BASE.replace("public = true", &format!("public = true\nvalidate = {{ json_schema = \"{}\" }}", remote.display())),
            "is not a usable JSON Schema",
        ),
        (
            BASE.replace("public = true", "public = true\nvalidate = { json_schema = \"/nonexistent/schema.json\" }"),
            "cannot read /nonexistent/schema.json",
        ),
        (
            BASE.replace("public = true", "public = true\nvalidate = { content_types = [\"application/*\"] }"),
            "routes[0].validate.content_types[0]",
        ),
        (
            BASE.replace("public = true", "public = true\nvalidate = {}"),
            "routes[0].validate.content_types: empty",
        ),
        (
            BASE.replace(
                "public = true",
                "public = true\nlimits = { max_body_bytes = 10 }\nvalidate = { content_types = [\"text/plain\"], max_body_bytes = 20 }",
            ),
            "routes[0].validate.max_body_bytes: also set in limits.max_body_bytes",
        ),
    ];
    for (config, expected) in cases {
        let (code, _, err) = check(&config, false);
        assert_eq!(code, 1, "expected failure for {expected:?}: {err}");
        assert!(
            err.contains(expected),
            "stderr should contain {expected:?}: {err}"
        );
        assert_no_panic(&err);
    }
}

#[test]
fn unverified_upstream_tls_is_a_warning() {
    let config = BASE.replace(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = [\"127.0.0.1:9000\"]\ntls = { sni = \"app.internal\", verify = false }",
    );
    let (code, _, err) = check(&config, false);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: upstreams[0].tls.verify"), "{err}");
    assert_eq!(check(&config, true).0, 1);
}

#[test]
fn daemon_mode_with_an_unwritable_pid_file_location_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.toml");
    let port = free_port();
    std::fs::write(
        &path,
        format!(
            "[server]\npid_file = \"/nonexistent-dir/p.pid\"\n{}",
            BASE.replace("18080", &port.to_string())
        ),
    )
    .unwrap();
    let (code, _, err) = cli(&["run", "-d", "-c", path.to_str().unwrap()], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("server.pid_file"), "{err}");
    assert_no_panic(&err);
}

/// What the rule engine leaves out of rules it was given (persistent collections, `@rbl`) is a
/// note: printed, counted apart, never failing `--strict`; a rule file that does something the
/// operator can fix (a `SecRuleRemoveByTag` that only reaches the rules before it) is a warning.
#[test]
fn engine_gaps_are_notes_and_rule_file_mistakes_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let gaps = dir.path().join("gaps.conf");
    std::fs::write(
        &gaps,
        "SecAction \"id:1,phase:1,pass,nolog,initcol:ip=%{REMOTE_ADDR}\"\n\
         SecRule IP:reputation \"@eq 1\" \"id:2,phase:1,deny\"\n\
         SecRule REMOTE_ADDR \"@rbl sbl.example.org\" \"id:3,phase:1,deny\"\n",
    )
    .unwrap();
    let with_rules =
        |file: &std::path::Path| format!("[waf]\nrules = [\"{}\"]\n{BASE}", file.display());
    let (code, out, err) = check(&with_rules(&gaps), true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("note: waf.rules: ") && err.contains("gaps.conf:1: rule 1: initcol"),
        "{err}"
    );
    assert!(err.contains("rule 2 reads IP"), "{err}");
    assert!(err.contains("rule 3 uses @rbl"), "{err}");
    assert!(!err.contains("warning:"), "{err}");
    assert!(
        out.contains("OK (0 warning(s), 3 note(s) on what the rule engine leaves out)"),
        "{out}"
    );

    let late = dir.path().join("late.conf");
    std::fs::write(
        &late,
        "SecRule ARGS \"@rx evil\" \"id:10,phase:2,deny,tag:'attack-sqli'\"\n\
         SecRuleRemoveByTag \"attack-sqli\"\n\
         SecRule ARGS \"@rx worse\" \"id:11,phase:2,deny,tag:'attack-sqli'\"\n",
    )
    .unwrap();
    let (code, _, err) = check(&with_rules(&late), false);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: waf.rules: ") && err.contains("applied to the rules before it only"),
        "{err}"
    );
    let (code, _, err) = check(&with_rules(&late), true);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("1 warning(s); failing because of --strict"),
        "{err}"
    );
}

/// `rules` lists the built-in rules and `rules --print` prints them as SecLang that, saved and
/// named in `[waf] rules`, loads cleanly: an operator's starting point for rules of their own.
/// Without `[waf]`, a route's exclusions apply to the built-in rules, and the CRS-only keys are
/// refused with the fix.
#[test]
fn builtin_rules_can_be_listed_printed_and_replaced() {
    let (code, out, err) = cli(&["rules"], None);
    assert_eq!(code, 0, "{err}");
    for line in [
        "10050  sqli",
        "10040  xss",
        "10020  command_injection",
        "10010  path_traversal",
        "10001  control_bytes",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let (code, printed, err) = cli(&["rules", "--print"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        printed.contains("@detectSQLi") && printed.contains("id:10050"),
        "{printed}"
    );
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("own.conf");
    std::fs::write(&own, &printed).unwrap();
    let config = format!("[waf]\nrules = [\"{}\"]\n{BASE}", own.display());
    let (code, out, err) = check(&config, true);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK (0 warning(s))"), "{out}{err}");

    let excluded = format!("{BASE}waf = {{ exclude_rules = [10050], exclude_targets = [{{ rule = 10040, target = \"ARGS:comment\" }}] }}\n");
    let (code, out, err) = check(&excluded, true);
    assert_eq!(code, 0, "{out}{err}");
    let crs_only = format!("{BASE}waf = {{ paranoia_level = 2 }}\n");
    let (code, _, err) = check(&crs_only, false);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("routes[0].waf.paranoia_level")
            && err.contains("no effect on the built-in rules"),
        "{err}"
    );
}

#[test]
fn check_diff_names_what_changed_between_two_configs() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.toml"), dir.path().join("new.toml"));
    std::fs::write(&old, BASE).unwrap();
    let changed = BASE.replace("rate_limit = { requests = 100, per = \"1s\" }", "rate_limit = { requests = 5, per = \"1s\" }")
        + "\n[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"app\"\npublic = true\n";
    std::fs::write(&new, &changed).unwrap();
    let (code, out, err) = cli(
        &[
            "check",
            "--diff",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("route \"admin\": added"), "{out}");
    assert!(out.contains("route \"r\": changed (rate_limit)"), "{out}");
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.starts_with("old sha256 ")),
        "{out}"
    );
    let (code, _, err) = cli(
        &[
            "check",
            "--diff",
            old.to_str().unwrap(),
            "/nonexistent.toml",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent.toml"), "{err}");
}
