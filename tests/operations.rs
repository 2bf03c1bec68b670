//! Operations: graceful upgrade (Pingora's socket hand-over) under load, alternating two
//! configurations, and graceful shutdown on SIGTERM with requests in flight.

mod harness;

use harness::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn body(up: &Upstream, strip: bool) -> String {
    format!(
        r#"
{fixture}
strip_prefix = {strip}
rate_limit = {{ requests = 1000000, per = "1s" }}
"#,
        fixture = public_route(up.addr, "v", "/v")
    )
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    stripped: AtomicUsize,
    unstripped: AtomicUsize,
}

impl Tally {
    fn count(&self, r: Option<HttpResponse>) {
        match r {
            Some(r) if r.status == 200 => {
                self.ok.fetch_add(1, Ordering::SeqCst);
                if r.text().contains("\"uri\":\"/x\"") {
                    self.stripped.fetch_add(1, Ordering::SeqCst);
                } else {
                    self.unstripped.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ => {
                self.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// `upgrades` graceful upgrades, 1.5 s apart, under load from two new-connection clients
/// and two kept-alive clients; every request of every client must succeed.
fn upgrades_under_load_fail_no_request(grace_period: &str, upgrades: usize) {
    let up = Upstream::start();
    let mut gw = Gateway::start_with(
        &body(&up, true),
        &format!("grace_period = \"{grace_period}\""),
    );
    let port = gw.port;
    let stop = Arc::new(AtomicBool::new(false));
    let fresh = Arc::new(Tally::default());
    let kept = Arc::new(Tally::default());
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (stop, tally) = (stop.clone(), fresh.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                        s.write_all(b"GET /v/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                            .ok()?;
                        read_response(&mut s)
                    });
                tally.count(r);
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    for _ in 0..2 {
        let (stop, tally) = (stop.clone(), kept.clone());
        threads.push(std::thread::spawn(move || {
            let mut stream: Option<TcpStream> = None;
            while !stop.load(Ordering::SeqCst) {
                if stream.is_none() {
                    stream = TcpStream::connect(("127.0.0.1", port)).ok();
                    if let Some(s) = &stream {
                        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                    }
                }
                let Some(s) = stream.as_mut() else { continue };
                let r = s
                    .write_all(b"GET /v/x HTTP/1.1\r\nHost: x\r\n\r\n")
                    .ok()
                    .and_then(|_| read_response(s));
                let close = r.as_ref().is_none_or(|r| {
                    r.header("connection")
                        .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                });
                tally.count(r);
                if close {
                    // The server said it will close (or did): reconnect, as a client should.
                    stream = None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    let started = Instant::now();
    for i in 0..upgrades {
        std::thread::sleep(Duration::from_millis(1500));
        gw.upgrade(&body(&up, i % 2 == 1));
    }
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let (ok, failed) = (
        fresh.ok.load(Ordering::SeqCst),
        fresh.failed.load(Ordering::SeqCst),
    );
    let (kept_ok, kept_failed) = (
        kept.ok.load(Ordering::SeqCst),
        kept.failed.load(Ordering::SeqCst),
    );
    println!(
        "{upgrades} upgrades under load, grace period {grace_period} ({:?}): new-connection clients {ok} ok / {failed} failed; keep-alive clients {kept_ok} ok / {kept_failed} failed",
        started.elapsed()
    );
    assert!(ok > 100, "the load ran: {ok}");
    assert!(kept_ok > 100, "the kept-alive load ran: {kept_ok}");
    assert_eq!(
        failed, 0,
        "new-connection requests failed across the upgrades"
    );
    assert_eq!(
        kept_failed, 0,
        "requests on kept-alive connections failed across the upgrades"
    );
    // Both configurations answered: the upgrades took effect.
    let stripped = fresh.stripped.load(Ordering::SeqCst) + kept.stripped.load(Ordering::SeqCst);
    let unstripped =
        fresh.unstripped.load(Ordering::SeqCst) + kept.unstripped.load(Ordering::SeqCst);
    assert!(stripped > 0 && unstripped > 0, "{stripped} / {unstripped}");
    // The last configuration is the one serving now (stripped after an even number).
    std::thread::sleep(Duration::from_secs(6));
    let want = if upgrades % 2 == 1 {
        "\"uri\":\"/v/x\""
    } else {
        "\"uri\":\"/x\""
    };
    assert!(gw.get("/v/x").text().contains(want));
}

#[test]
fn five_upgrades_under_load_fail_no_request() {
    upgrades_under_load_fail_no_request("4s", 5);
}

/// With a short grace period the old process used to close kept-alive connections the moment
/// it stopped listening (the drain hold was the grace period less 1 s: zero), and a client
/// sending at that moment saw a reset.
#[test]
fn upgrades_with_a_one_second_grace_period_fail_no_request() {
    upgrades_under_load_fail_no_request("1s", 3);
}

#[test]
fn an_upgrade_to_a_broken_config_is_refused_and_the_old_process_keeps_serving() {
    let up = Upstream::start();
    let mut gw = Gateway::start(&body(&up, true));
    let broken = format!("{}\n[[routes]]\nname = \"bad\"\npath_prefix = \"/b\"\nupstream = \"nope\"\npublic = true\n", body(&up, true));
    let config = gw.path().join("broken.toml");
    std::fs::write(&config, &broken).unwrap();
    // The reload path checks first: `portcullis check` refuses, so nothing is signalled.
    let (code, _, err) = cli(&["check", "-c", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{err}");
    // Even a direct `run -u` with it exits at once, before taking any socket.
    let (code, _, err) = cli(&["run", "-u", "-c", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("routes[1].upstream"), "{err}");
    for _ in 0..20 {
        assert_eq!(gw.get("/v/x").status, 200);
    }
    assert!(gw.is_running());
}

/// The audit trail: each process keeps its config beside the pid file, and the next one —
/// here a graceful upgrade — logs its own SHA-256, the previous one's, and what changed by
/// name: a route added, a consumer's key added by its label, the old key removed by its hash
/// prefix, never the key or the whole hash.
#[test]
fn an_upgrade_logs_what_changed_since_the_previous_config() {
    let up = Upstream::start();
    let old_hash = format!("sha256:{}", "ab".repeat(32));
    let new_hash = format!("sha256:{}", "cd".repeat(32));
    let consumer = |keys: &str| format!("[[consumers]]\nid = \"ci\"\napi_keys = [{keys}]\n");
    let first = format!(
        "{}{}",
        body(&up, true),
        consumer(&format!("\"{old_hash}\""))
    );
    let mut gw = Gateway::start_logging(&first, "", &[], "info");
    let copy = gw.path().join("portcullis.config.toml");
    let kept = std::fs::read_to_string(&copy).expect("the running config is kept");
    assert!(kept.contains(&old_hash));
    assert!(
        gw.stderr().contains("no previous config at"),
        "{}",
        gw.stderr()
    );

    let second = format!(
        "{}\n[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"app\"\npublic = true\n{}",
        body(&up, true),
        consumer(&format!("{{ hash = \"{new_hash}\", label = \"ci-2027\" }}"))
    );
    gw.upgrade_logging(&second, "info");
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .stderr_of(1)
            .contains(" serving ")),
        "{}",
        gw.stderr_of(1)
    );
    let log = gw.stderr_of(1);
    let sha = |text: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    let kept = std::fs::read_to_string(&copy).unwrap();
    assert!(kept.contains("ci-2027"), "the copy is the new config now");
    assert!(
        log.contains(&format!(
            "config sha256 {} replaces sha256 {} of the previous process: 2 change(s)",
            sha(&kept),
            sha(&std::fs::read_to_string(gw.path().join("portcullis.toml")).unwrap())
        )),
        "{log}"
    );
    assert!(
        log.contains("config change: route \"admin\": added"),
        "{log}"
    );
    let consumer_line = log
        .lines()
        .find(|l| l.contains("config change: consumer \"ci\": changed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(consumer_line.contains("ci-2027"), "{consumer_line}");
    assert!(consumer_line.contains("abababab"), "{consumer_line}");
    assert!(!log.contains(&"ab".repeat(32)) && !log.contains(&"cd".repeat(32)));
    assert!(
        wait_until(Duration::from_secs(10), || gw.get("/admin/x").status == 200),
        "the new process serves the new route"
    );
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let up = Upstream::start();
    let mut gw = Gateway::start(&body(&up, true));
    let port = gw.port;
    // Requests well inside the 1 s grace period of the test config: at 1,000 ms they ended
    // within milliseconds of the shutdown, a race the test should not be about.
    let inflight: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                raw_request(
                    port,
                    b"GET /v/slow/400 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
                .status
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || up.requests().len() == 3));
    gw.signal("TERM");
    let statuses: Vec<u16> = inflight.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses, vec![200, 200, 200]);
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("portcullis exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// Kills a daemonized gateway (by its pid file) when the test ends, however it ends.
struct Daemon {
    pid_file: std::path::PathBuf,
    pids: Vec<u32>,
}

impl Daemon {
    fn pid(&mut self) -> Option<u32> {
        let pid = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if !self.pids.contains(&pid) {
            self.pids.push(pid);
        }
        Some(pid)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for pid in &self.pids {
            signal(*pid, "KILL");
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn the_systemd_reload_script_upgrades_a_daemon_and_refuses_a_broken_config() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let write = |strip: bool, extra: &str| {
        let config = format!(
            "[server]\nthreads = 2\ngrace_period = \"2s\"\ngraceful_shutdown_timeout = \"1s\"\n\
             pid_file = \"{d}/portcullis.pid\"\nupgrade_sock = \"{d}/upgrade.sock\"\n\n\
             [[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n[logging]\naccess_log = \"off\"\n{}{extra}",
            body(&up, strip),
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("portcullis.toml"), config).unwrap();
    };
    let conf = dir.path().join("portcullis.toml");
    let mut daemon = Daemon {
        pid_file: dir.path().join("portcullis.pid"),
        pids: Vec::new(),
    };
    write(true, "");
    // The daemon keeps whatever it inherits open: give it no pipes to wait on.
    let started = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "-d", "-c", conf.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(started.success());
    assert!(wait_until(Duration::from_secs(10), || daemon
        .pid()
        .is_some()
        && TcpStream::connect(("127.0.0.1", port)).is_ok()));
    let first = daemon.pid().unwrap();
    let get = || {
        raw_request(
            port,
            b"GET /v/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    };
    assert!(get().text().contains("\"uri\":\"/x\""));

    // stdout goes nowhere and stderr to a file: the new daemon inherits them and keeps them.
    let reload = || {
        let err_path = dir.path().join("reload.err");
        let status = std::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/systemd/portcullis-reload"
        ))
        .arg(&conf)
        .env("PORTCULLIS_BIN", env!("CARGO_BIN_EXE_portcullis"))
        .env("PORTCULLIS_PIDFILE", dir.path().join("portcullis.pid"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
        (
            status,
            std::fs::read_to_string(&err_path).unwrap_or_default(),
        )
    };
    // A changed config: the new process takes over, the old one drains and exits.
    write(false, "");
    let (status, err) = reload();
    assert!(status.success(), "{err}");
    assert!(wait_until(Duration::from_secs(15), || daemon
        .pid()
        .is_some_and(|p| p != first)
        && !alive(first)));
    let second = daemon.pid().unwrap();
    assert!(alive(second));
    assert!(
        get().text().contains("\"uri\":\"/v/x\""),
        "the new config serves"
    );

    // A broken config: refused by the check, the running process is untouched.
    write(
        false,
        "\n[[routes]]\nname = \"bad\"\npath_prefix = \"/b\"\nupstream = \"nope\"\npublic = true\n",
    );
    let (status, err) = reload();
    assert!(!status.success());
    assert!(err.contains("routes[1].upstream"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.pid(), Some(second));
    assert!(alive(second));
    assert_eq!(get().status, 200);
    signal(second, "TERM");
    assert!(wait_until(Duration::from_secs(10), || !alive(second)));
}

#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/portcullis.service");
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", unit])
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/deps installs it)");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // The install paths do not exist on a build machine; anything else is a real finding.
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("is not executable: No such file or directory")
                && (line.contains("/usr/bin/portcullis")
                    || line.contains("/usr/lib/portcullis/portcullis-reload")),
            "systemd-analyze verify: {line}"
        );
    }
    assert!(
        out.status.success() || text.lines().any(|l| !l.trim().is_empty()),
        "systemd-analyze verify failed without saying why"
    );
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", unit])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for portcullis.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    assert!(level <= 2.0, "exposure {level}: {report}");
}

#[test]
fn sigusr1_reopens_the_access_log_after_rotation() {
    let up = Upstream::start();
    let mut gw = Gateway::start_logging(&body(&up, true), "", &[], "info");
    let log = gw.path().join("access.log");
    let rotated = gw.path().join("access.log.1");
    let lines_with = |path: &std::path::Path, needle: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    };
    assert_eq!(gw.get("/v/before").status, 200);
    assert!(wait_until(Duration::from_secs(5), || lines_with(
        &log,
        "/v/before"
    ) == 1));
    // logrotate's default: move the file away, then signal.
    std::fs::rename(&log, &rotated).unwrap();
    assert_eq!(gw.get("/v/moved").status, 200);
    assert!(wait_until(Duration::from_secs(5), || lines_with(
        &rotated, "/v/moved"
    ) == 1));
    gw.signal("USR1");
    // The signal no longer ends the process (its default action), and the path is reopened.
    assert!(wait_until(Duration::from_secs(5), || log.exists()));
    assert!(gw.is_running(), "{}", gw.stderr());
    assert_eq!(gw.get("/v/after").status, 200);
    assert!(wait_until(Duration::from_secs(5), || lines_with(
        &log, "/v/after"
    ) == 1));
    assert_eq!(lines_with(&rotated, "/v/after"), 0);
    assert_eq!(lines_with(&log, "/v/before"), 0);
    assert!(
        gw.stderr().contains("reopened the access log"),
        "{}",
        gw.stderr()
    );
    // Again: every rotation is followed.
    std::fs::rename(&log, gw.path().join("access.log.2")).unwrap();
    gw.signal("USR1");
    assert!(wait_until(Duration::from_secs(5), || log.exists()));
    assert_eq!(gw.get("/v/third").status, 200);
    assert!(wait_until(Duration::from_secs(5), || lines_with(
        &log, "/v/third"
    ) == 1));
    assert_eq!(up.requests().len(), 4);
}

/// The directories a unit with `ProtectSystem=strict` may write: its own runtime, state,
/// cache and logs directories, `ReadWritePaths=`, and a private /tmp.
fn writable_under(unit: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut strict = false;
    for line in unit.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let under = |root: &'static str| {
            value
                .split_whitespace()
                .map(move |d| format!("{root}/{d}"))
                .collect::<Vec<_>>()
        };
        match key {
            "ProtectSystem" => strict = value == "strict",
            "RuntimeDirectory" => dirs.extend(under("/run")),
            "StateDirectory" => dirs.extend(under("/var/lib")),
            "CacheDirectory" => dirs.extend(under("/var/cache")),
            "LogsDirectory" => dirs.extend(under("/var/log")),
            "ReadWritePaths" => dirs.extend(
                value
                    .split_whitespace()
                    .map(|d| d.trim_start_matches(['-', '+']).to_string()),
            ),
            "PrivateTmp" if value == "yes" => dirs.push("/tmp".into()),
            _ => {}
        }
    }
    assert!(strict, "the unit is expected to set ProtectSystem=strict");
    dirs
}

#[test]
fn the_shipped_config_writes_only_where_the_unit_lets_it() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/systemd/portcullis.service")).unwrap();
    let conf_path = format!("{root}/conf/production.toml");
    // The production config passes the strictest check as shipped.
    let (code, out, err) = cli(&["check", "--strict", "-c", &conf_path], None);
    assert_eq!(code, 0, "{out}{err}");
    let conf: toml::Value = toml::from_str(&std::fs::read_to_string(&conf_path).unwrap()).unwrap();
    let writable = writable_under(&unit);
    let inside = |path: &str| {
        writable
            .iter()
            .any(|d| std::path::Path::new(path).starts_with(d))
    };
    for (section, key) in [
        ("logging", "access_log"),
        ("server", "pid_file"),
        ("server", "upgrade_sock"),
    ] {
        let path = conf[section][key].as_str().unwrap();
        assert!(
            path.starts_with('/') && inside(path),
            "{section}.{key} = {path} is not writable under the unit's sandbox ({writable:?})"
        );
    }
    // The unit's pid file is the config's, and the unit runs the config the package installs.
    let pid_file = conf["server"]["pid_file"].as_str().unwrap();
    assert!(unit.contains(&format!("PIDFile={pid_file}")), "{unit}");
    assert!(unit.contains("run -d -c /etc/portcullis/portcullis.toml"));
    // logrotate rotates that log and signals that pid file.
    let rotate = std::fs::read_to_string(format!("{root}/systemd/portcullis.logrotate")).unwrap();
    let log_dir = std::path::Path::new(conf["logging"]["access_log"].as_str().unwrap())
        .parent()
        .unwrap()
        .display()
        .to_string();
    assert!(rotate.contains(&format!("{log_dir}/*.log")), "{rotate}");
    assert!(
        rotate.contains(pid_file) && rotate.contains("kill -USR1"),
        "{rotate}"
    );
}

#[test]
fn logrotate_with_the_shipped_snippet_rotates_a_running_gateway() {
    let up = Upstream::start();
    let mut gw = Gateway::start(&body(&up, true));
    let dir = gw.path();
    assert_eq!(gw.get("/v/one").status, 200);
    let log = dir.join("access.log");
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/v/one"))
    }));
    // The shipped snippet, pointed at this gateway: its log directory and pid file; `su` and
    // the owner of the new file are the service user's, which a test machine does not have.
    let snippet = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/portcullis.logrotate"
    ))
    .unwrap();
    let id = |flag: &str| {
        let out = std::process::Command::new("id").arg(flag).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let owner = format!("{} {}", id("-un"), id("-gn"));
    let adapted: String = snippet
        .replace("/var/log/portcullis", &dir.display().to_string())
        .replace(
            "/run/portcullis/portcullis.pid",
            &dir.join("portcullis.pid").display().to_string(),
        )
        .replace("portcullis portcullis", &owner)
        .lines()
        .filter(|l| !l.trim_start().starts_with("su "))
        .map(|l| format!("{l}\n"))
        .collect();
    let conf = dir.join("logrotate.conf");
    std::fs::write(&conf, adapted).unwrap();
    // Pingora writes the pid file only as a daemon: write it as the daemon would.
    std::fs::write(dir.join("portcullis.pid"), gw.pid().to_string()).unwrap();
    let out = std::process::Command::new("logrotate")
        .args(["-f", "-s"])
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("logrotate (Debian package logrotate; .ci/deps installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = dir.join("access.log.1");
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("/v/one"));
    assert_eq!(gw.get("/v/two").status, 200);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/v/two"))
    }));
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("/v/two"));
    assert!(gw.is_running(), "{}", gw.stderr());
}

/// Without a shared store the brute-force throttle's failures travel to the process a graceful
/// upgrade starts (a file beside the pid file): a throttled address stays throttled, also for
/// its right key.
#[test]
fn a_graceful_upgrade_keeps_the_brute_force_throttle() {
    let up = Upstream::start();
    let right = "a-right-key-that-is-long-enough-0002";
    let hash = {
        use sha2::Digest;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(right.as_bytes()))
        )
    };
    let config = format!(
        "[security]\nauth_failure_limit = {{ failures = 3, per = \"60s\" }}\n\n\
         [[upstreams]]\nname = \"app\"\ntargets = [\"{}\"]\n\n\
         [[consumers]]\nid = \"ci\"\napi_keys = [\"{hash}\"]\n\n\
         [[routes]]\nname = \"keys\"\npath_prefix = \"/k\"\nupstream = \"app\"\nauth = [\"api_key\"]\nallow = {{ consumers = [\"*\"] }}\n",
        up.addr
    );
    let mut gw = Gateway::start(&config);
    let attempt = |gw: &Gateway, key: &str| {
        gw.raw(&format!(
            "GET /k/x HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        ))
        .status
    };
    let statuses: Vec<u16> = (0..4)
        .map(|i| attempt(&gw, &format!("guess-{i}")))
        .collect();
    assert_eq!(statuses, [401, 401, 401, 429]);
    let carried = gw.path().join("portcullis.throttle");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&carried)
            .is_ok_and(|t| t.lines().count() == 3)),
        "the failures are kept beside the pid file"
    );
    let old = gw.pid();
    gw.upgrade_logging(&config, "info");
    assert!(
        wait_until(Duration::from_secs(15), || !alive(old)),
        "the old process did not hand over and exit"
    );
    assert!(gw
        .stderr_of(1)
        .contains("3 failure(s) of the previous process taken over"));
    assert_eq!(
        attempt(&gw, right),
        429,
        "still throttled after the upgrade"
    );
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}
