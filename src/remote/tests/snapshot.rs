//! The snapshot: facts, paths, patterns and guards, read back exactly.

use super::*;

#[test]
fn the_snapshot_reports_missing_paths_links_and_guards() {
    let dir = tempfile::tempdir().unwrap();
    let (link, other_link) = (dir.path().join("l"), dir.path().join("odd 'link'"));
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    std::os::unix::fs::symlink("../a target\nwith a newline", &other_link).unwrap();
    let missing = dir.path().join("none").display().to_string();
    let (link, other_link) = (link.display().to_string(), other_link.display().to_string());
    let paths = [missing.as_str(), link.as_str(), other_link.as_str()];
    let out = read_snapshot(&test_state(), &paths, &[(4, "true"), (5, "false")]).unwrap();
    assert_eq!(out.snapshot.entries[&missing], Entry::Missing);
    assert_eq!(out.snapshot.entries[&link], Entry::Link { target: "/etc/hostname".into() });
    assert_eq!(out.snapshot.entries[&other_link], Entry::Link { target: "../a target\nwith a newline".into() });
    assert!(out.snapshot.guards_passed.contains(&4) && !out.snapshot.guards_passed.contains(&5));
}

#[test]
fn facts_read_by_the_shell_agree_with_nproc_id_and_os_release() {
    let out = read_snapshot(&test_state(), &[], &[]).unwrap();
    let command = |program: &str, args: &[&str]| {
        let output = Command::new(program).args(args).output().unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(out.facts["cpus"], command("nproc", &[]));
    assert_eq!(out.facts["user"], command("id", &["-un"]));
    assert!(out.facts["memory_kb"].parse::<u64>().unwrap() > 0);
    assert_eq!(out.facts["hostname"], std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim());
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
    let value = |key: &str| {
        os_release.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim_matches('"').to_owned()).unwrap()
    };
    assert_eq!(out.facts["os_id"], value("ID="));
    assert_eq!(out.facts["os_version"], value("VERSION_ID="));
}

#[test]
fn file_contents_come_back_raw_and_a_line_like_the_end_ends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFiles::new(&dir.path().join("state").display().to_string(), "site");
    std::fs::create_dir(state.dir()).unwrap();
    std::fs::write(&state.pending, "reload nginx\nrestart web\n").unwrap();
    std::fs::write(&state.applied, "{\"paths\":{}}").unwrap();
    let path = dir.path().join("f").display().to_string();
    // What the old framing ended at, and what this one is made of.
    let content = "END\nCONTENT-END x\nLINKS 0\nFILES 0\nMETA 644 root root 1\nERROR 0\nEND";
    std::fs::write(&path, content).unwrap();
    let paths = [path.as_str()];
    let script = snapshot(&state, &paths, &[], &[]);
    let locked = locked(&state, 5, &[], &script.text);
    let stdout = sh(&locked);
    let out = parse_snapshot(&stdout, &paths, &[], &script.token).unwrap();
    match &out.snapshot.entries[&path] {
        Entry::File { content: back, .. } => assert_eq!(back, content.as_bytes()),
        other => panic!("{other:?}"),
    }
    assert_eq!(out.snapshot.pending_handlers, ["reload nginx", "restart web"]);
    assert_eq!(out.applied.as_deref(), Some("{\"paths\":{}}"));
    assert!(String::from_utf8_lossy(&stdout).ends_with(&format!("\n{}\n", end_line(&script.token))));
}

#[test]
fn a_pattern_finds_files_and_links_and_reads_each_link_through_to_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let (available, enabled) = (dir.path().join("sites-available"), dir.path().join("sites-enabled"));
    std::fs::create_dir_all(&available).unwrap();
    std::fs::create_dir_all(enabled.join("a folder")).unwrap();
    std::fs::write(available.join("default"), "server { listen 80 default_server; }\n").unwrap();
    std::os::unix::fs::symlink("../sites-available/default", enabled.join("default")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", enabled.join("dangling")).unwrap();
    std::fs::write(enabled.join("sentry site"), "server { listen 80; }\n").unwrap();
    let pattern = format!("{}/*", enabled.display());
    let script = snapshot(&test_state(), &[], &[&pattern], &[]);
    let out = parse_snapshot(&sh(&script.text), &[], &[&pattern], &script.token).unwrap();
    let at = |name: &str| format!("{}/{name}", enabled.display());
    let default = available.join("default").display().to_string();
    assert_eq!(
        out.snapshot.found,
        [
            Found { pattern: pattern.clone(), listed: at("default"), path: default.clone() },
            Found { pattern: pattern.clone(), listed: at("sentry site"), path: at("sentry site") },
        ]
    );
    let content = |path: &str| match &out.snapshot.entries[path] {
        Entry::File { content, .. } => String::from_utf8_lossy(content).into_owned(),
        other => panic!("{path}: {other:?}"),
    };
    assert_eq!(content(&default), "server { listen 80 default_server; }\n");
    assert_eq!(content(&at("sentry site")), "server { listen 80; }\n");
}

#[test]
fn the_hosts_secret_for_fingerprints_is_made_once_private_and_read_back_by_the_snapshot() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = StateFiles::new(&dir.path().display().to_string(), "site");
    let script = snapshot(&state, &[], &[], &[]);
    let first = parse_snapshot(&sh(locked(&state, 0, &[], &script.text)), &[], &[], &script.token).unwrap();
    let key = first.key.expect("made by the first run that takes the lock");
    assert!(key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    let path = dir.path().join("key");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let again = parse_snapshot(&sh(locked(&state, 0, &[], &script.text)), &[], &[], &script.token).unwrap();
    assert_eq!(again.key.as_deref(), Some(key.as_str()), "kept");
}

#[test]
fn an_unreadable_file_is_reported_by_name() {
    let paths = ["/etc/redis/redis.conf"];
    let stdout = b"ERROR 0\nEND t\n";
    assert_eq!(parse_snapshot(stdout, &paths, &[], "t").unwrap_err(), "cannot read /etc/redis/redis.conf");
}

#[test]
fn a_file_that_changes_size_while_read_fails_the_snapshot_rather_than_misplacing_bytes() {
    let paths = ["/a", "/b"];
    let framed =
        |metas: &str, bytes: &str| format!("FILES 0 1\n{metas}CONTENT t\n{bytes}\nCONTENT-END t\nEND t\n").into_bytes();
    let both = "META 644 root root 3\nMETA 600 root root 4\n";
    assert!(parse_snapshot(&framed(both, "abcdefg"), &paths, &[], "t").is_ok());
    // stat saw 3 + 4 bytes; cat then read 3 + 2, or 3 + 6.
    assert_eq!(parse_snapshot(&framed(both, "abcde"), &paths, &[], "t").unwrap_err(), CHANGED_WHILE_READ);
    assert_eq!(parse_snapshot(&framed(both, "abcdefgh\n"), &paths, &[], "t").unwrap_err(), CHANGED_WHILE_READ);
    // A file gone between the test and stat: one META short.
    assert_eq!(
        parse_snapshot(&framed("META 644 root root 3\n", "abc"), &paths, &[], "t").unwrap_err(),
        CHANGED_WHILE_READ
    );
    // A link gone between the test and readlink: one target short.
    let stdout = b"LINKS 0 1\n/etc/x\0\nLINKS-END t\nEND t\n";
    assert_eq!(parse_snapshot(stdout, &paths, &[], "t").unwrap_err(), CHANGED_WHILE_READ);
}

#[test]
fn several_files_read_in_one_pass_come_back_each_with_its_own_bytes_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, empty) = (dir.path().join("a"), dir.path().join("b c"), dir.path().join("empty"));
    std::fs::write(&a, b"first\n").unwrap();
    std::fs::write(&b, b"\0second\xff").unwrap();
    std::fs::write(&empty, b"").unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [(&a, 0o644), (&empty, 0o644), (&b, 0o600)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let names: Vec<String> = [&a, &empty, &b].iter().map(|p| p.display().to_string()).collect();
    let paths: Vec<&str> = names.iter().map(String::as_str).collect();
    let out = read_snapshot(&test_state(), &paths, &[]).unwrap();
    let content_and_mode = |path: &str| match &out.snapshot.entries[path] {
        Entry::File { content, mode, .. } => (content.to_vec(), *mode),
        other => panic!("{other:?}"),
    };
    assert_eq!(content_and_mode(paths[0]), (b"first\n".to_vec(), 0o644));
    assert_eq!(content_and_mode(paths[1]), (Vec::new(), 0o644));
    assert_eq!(content_and_mode(paths[2]), (b"\0second\xff".to_vec(), 0o600));
}

#[test]
fn a_host_without_perl_reads_its_files_with_stat_cat_and_readlink_into_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().join("state").display().to_string(), "site");
    std::fs::write(&state.pending, "reload nginx\n").unwrap();
    std::fs::write(&state.applied, "{}").unwrap();
    let (plain, odd, setgid) = (dir.path().join("plain"), dir.path().join("-odd name"), dir.path().join("tool"));
    std::fs::write(&plain, b"first\n").unwrap();
    std::fs::write(&odd, b"\0second\xff").unwrap();
    std::fs::write(&setgid, b"").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&setgid, std::fs::Permissions::from_mode(0o2755)).unwrap();
    let (link, enabled) = (dir.path().join("link"), dir.path().join("enabled"));
    std::os::unix::fs::symlink("plain", &link).unwrap();
    std::fs::create_dir(&enabled).unwrap();
    std::os::unix::fs::symlink("../-odd name", enabled.join("site")).unwrap();
    std::fs::write(enabled.join("default"), "server {}\n").unwrap();
    let names: Vec<String> = [&plain, &odd, &setgid, &link].iter().map(|p| p.display().to_string()).collect();
    let paths: Vec<&str> = names.iter().map(String::as_str).collect();
    let pattern = format!("{}/*", enabled.display());
    let script = snapshot(&state, &paths, &[&pattern], &[]);
    let by_coreutils = sh_without_perl(dir.path(), &script.text);
    let by_perl = sh(&script.text);
    assert_eq!(String::from_utf8_lossy(&by_perl), String::from_utf8_lossy(&by_coreutils));
    let out = parse_snapshot(&by_perl, &paths, &[&pattern], &script.token).unwrap();
    assert_eq!(out.snapshot.entries[&names[3]], Entry::Link { target: "plain".into() });
    assert!(matches!(&out.snapshot.entries[&names[2]], Entry::File { mode: 0o2755, .. }));
    assert_eq!(out.snapshot.found.len(), 2, "{:?}", out.snapshot.found);
    assert_eq!(out.snapshot.pending_handlers, ["reload nginx"]);
}

/// What `sh` prints of `script` with every program this machine's /usr/bin
/// has on its PATH, but perl.
fn sh_without_perl(dir: &std::path::Path, script: &str) -> Vec<u8> {
    let without_perl = dir.join("bin");
    std::fs::create_dir_all(&without_perl).unwrap();
    for program in std::fs::read_dir("/usr/bin").unwrap() {
        let program = program.unwrap();
        let link = without_perl.join(program.file_name());
        if !program.file_name().to_string_lossy().starts_with("perl") && !link.exists() {
            std::os::unix::fs::symlink(program.path(), link).unwrap();
        }
    }
    let mut child = Command::new("/bin/sh")
        .arg("-s")
        .env("PATH", &without_perl)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[test]
fn a_host_without_perl_has_each_perl_probe_fail_as_its_exec_would_and_runs_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let name = file.display().to_string();
    let probes = ["exec perl - <<'PL'\nprint 1;\nPL", "echo from the shell"];
    for without_files in [false, true] {
        let paths: &[&str] = if without_files { &[] } else { &[name.as_str()] };
        let script = snapshot_then_probes(&test_state(), paths, &[], &[], &probes);
        let stdout = sh_without_perl(dir.path(), &script.text);
        let out = parse_snapshot(&stdout, paths, &[], &script.token).unwrap();
        let said = parse_probes(&stdout[out.after_end..], 2).unwrap();
        assert_eq!(said[0].0, 127, "{said:?}");
        assert!(said[0].1.contains("perl: not found"), "{said:?}");
        assert_eq!(said[1], (0, "from the shell".to_owned()));
    }
}

#[test]
fn the_snapshots_token_is_on_no_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    // A perl first on the PATH that writes its arguments down, then runs perl.
    let path = std::env::var_os("PATH").unwrap();
    let perl = std::env::split_paths(&path).map(|d| d.join("perl")).find(|p| p.is_file()).unwrap();
    let (bin, record) = (dir.path().join("bin"), dir.path().join("arguments"));
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("perl"),
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" >>'{}'\nexec '{}' \"$@\"\n", record.display(), perl.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("perl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = file.display().to_string();
    let script = snapshot(&test_state(), &[name.as_str()], &[], &[]);
    let text = format!("PATH={}:$PATH\n{}", shell::quote(&bin.display().to_string()), script.text);
    let out = parse_snapshot(&sh(&text), &[name.as_str()], &[], &script.token).unwrap();
    assert!(matches!(&out.snapshot.entries[&name], Entry::File { .. }));
    let arguments = std::fs::read_to_string(&record).expect("the snapshot ran perl");
    assert!(arguments.contains(&name), "{arguments}");
    assert!(!arguments.contains(&script.token), "{arguments}");
}

#[test]
fn a_snapshot_whose_reader_goes_away_stops_reading_though_the_lock_ignores_sigpipe() {
    let dir = tempfile::tempdir().unwrap();
    let endless = dir.path().join("endless");
    // A terabyte of holes: read to its end, it takes minutes.
    std::fs::File::create(&endless).unwrap().set_len(1 << 40).unwrap();
    let name = endless.display().to_string();
    let script = snapshot(&test_state(), &[name.as_str()], &[], &[]);
    let mut child = sh_reading_stdin();
    use std::io::{Read as _, Write as _};
    child.stdin.take().unwrap().write_all(format!("trap '' HUP PIPE\n{}", script.text).as_bytes()).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0; 1 << 20];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let gone = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(gone.elapsed().as_secs() < 10, "still reading after its reader went away");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
