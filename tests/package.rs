//! The Debian package (`cargo deb`, metadata in Cargo.toml): built from this checkout and
//! inspected with `dpkg-deb` — what it installs and with which modes, its control fields and
//! conffiles, its maintainer scripts — then its files are used: the packaged binary passes
//! `check --strict` on the packaged config, and the sysusers file creates the service user in
//! a scratch root. Not installed on the test machine (that would change the machine).
//!
//! The test packages the test build of the binary (a debug build: cargo-deb refuses the dev
//! profile, so it is put where a release build would be, in a scratch target directory);
//! `cargo deb` on its own builds and packages the release binary.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn cargo_deb() -> PathBuf {
    let unpacked = Path::new(ROOT).join("target/tools/cargo-deb/bin/cargo-deb");
    if unpacked.exists() {
        return unpacked;
    }
    if Command::new("cargo-deb").arg("--version").output().is_ok() {
        return PathBuf::from("cargo-deb");
    }
    panic!("cargo-deb not found: run `bash .ci/deps` (it installs cargo-deb into target/tools/)");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_debian_package_installs_a_sandboxed_service() {
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_portcullis"),
        target.join("release/portcullis"),
    )
    .unwrap();
    let deb = scratch.path().join("portcullis.deb");
    run(Command::new(cargo_deb())
        .current_dir(ROOT)
        .env("CARGO_TARGET_DIR", &target)
        .args(["--no-build", "--no-strip", "--fast", "-o"])
        .arg(&deb));

    // What it installs, with which modes.
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let mode_of = |path: &str| {
        contents
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{contents}"))
            .to_string()
    };
    for (path, mode) in [
        ("usr/bin/portcullis", "-rwxr-xr-x"),
        ("usr/lib/portcullis/portcullis-reload", "-rwxr-xr-x"),
        ("usr/lib/systemd/system/portcullis.service", "-rw-r--r--"),
        ("usr/lib/sysusers.d/portcullis.conf", "-rw-r--r--"),
        ("etc/portcullis/portcullis.toml", "-rw-r-----"),
        ("etc/logrotate.d/portcullis", "-rw-r--r--"),
        ("usr/share/doc/portcullis/README.md", "-rw-r--r--"),
        ("usr/share/doc/portcullis/CONFIGURATION.md", "-rw-r--r--"),
        ("usr/share/doc/portcullis/OPERATIONS.md", "-rw-r--r--"),
        (
            "usr/share/portcullis/monitoring/portcullis-alerts.yml",
            "-rw-r--r--",
        ),
    ] {
        assert_eq!(mode_of(path), mode, "{path}");
    }
    assert!(!contents.contains("conf/demo") && !contents.contains("demo-key"));

    // Control fields and conffiles.
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for field in [
        "Package: portcullis",
        "Section: net",
        "Recommends: logrotate",
    ] {
        assert!(info.contains(field), "no {field:?} in:\n{info}");
    }
    let depends = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends in:\n{info}"));
    assert!(
        depends.contains("libc6") && depends.contains("systemd"),
        "{depends}"
    );
    // The Core Rule Set the shipped config runs comes with the package.
    assert!(depends.contains("modsecurity-crs"), "{depends}");
    let control = scratch.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    for path in [
        "/etc/portcullis/portcullis.toml",
        "/etc/logrotate.d/portcullis",
    ] {
        assert!(conffiles.lines().any(|l| l == path), "{conffiles}");
    }
    // Maintainer scripts: valid shell; the user exists before the config is given to its
    // group; an upgrade reloads a running gateway (graceful) rather than restarting it.
    for script in ["postinst", "postrm", "prerm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    let sysusers = postinst
        .find("systemd-sysusers")
        .expect("sysusers in postinst");
    let chgrp = postinst
        .find("chgrp portcullis")
        .expect("chgrp in postinst");
    assert!(sysusers < chgrp, "{postinst}");
    assert!(postinst.contains("reload portcullis.service"), "{postinst}");
    assert!(!postinst.contains("restart portcullis"), "{postinst}");
    let prerm = std::fs::read_to_string(control.join("prerm")).unwrap();
    assert!(!prerm.contains("upgrade"), "{prerm}");

    // The files, used: they are this checkout's, and they work together.
    let root = scratch.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    for (packaged, source) in [
        (
            "usr/lib/systemd/system/portcullis.service",
            "systemd/portcullis.service",
        ),
        ("etc/portcullis/portcullis.toml", "conf/production.toml"),
        ("etc/logrotate.d/portcullis", "systemd/portcullis.logrotate"),
        (
            "usr/share/portcullis/builtin-rules.conf",
            "src/waf/builtin.conf",
        ),
        (
            "usr/lib/portcullis/portcullis-reload",
            "systemd/portcullis-reload",
        ),
    ] {
        assert_eq!(
            std::fs::read(root.join(packaged)).unwrap(),
            std::fs::read(Path::new(ROOT).join(source)).unwrap(),
            "{packaged}"
        );
    }
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/portcullis.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/portcullis run -d -c /etc/portcullis/portcullis.toml")
    );
    assert!(unit.contains("ExecReload=/usr/lib/portcullis/portcullis-reload"));
    let check = run(Command::new(root.join("usr/bin/portcullis"))
        .args(["check", "--strict", "-c"])
        .arg(root.join("etc/portcullis/portcullis.toml")));
    // Strict-clean; the notes name the parts of Debian's CRS 3.3.4 the engine does not run.
    assert!(check.contains("OK (0 warning(s)"), "{check}");
    // The sysusers entry makes the unit's User= and Group=, with no login.
    let etc = root.join("etc");
    for file in ["passwd", "group", "shadow", "gshadow"] {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(etc.join(file))
            .unwrap();
    }
    run(Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg(root.join("usr/lib/sysusers.d/portcullis.conf")));
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("portcullis:"))
        .unwrap_or_else(|| panic!("no portcullis user: {passwd}"));
    assert!(user.ends_with(":/nonexistent:/usr/sbin/nologin"), "{user}");
    let group = std::fs::read_to_string(etc.join("group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("portcullis:")),
        "{group}"
    );
    assert!(unit.contains("User=portcullis") && unit.contains("Group=portcullis"));
}
