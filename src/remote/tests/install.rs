//! The install: what it writes, what it puts back, what it says.

use super::*;

#[tokio::test]
async fn a_script_sends_the_same_bytes_it_reads_as_and_says_how_many() {
    let binary: Vec<u8> = (0..=255u8).cycle().take(CHUNK_BYTES * 2 + 100).collect();
    let quotes: Vec<u8> = b"it's 'quoted'\n".iter().copied().cycle().take(CHUNK_BYTES * 2 + 7).collect();
    let big = Bytes::from(vec![b'x'; (1 << 20) + 1]);
    for content in [Bytes::new(), Bytes::from_static(b"x"), Bytes::from(binary), Bytes::from(quotes), big] {
        let desired = Desired::File { content: content.clone(), mode: 0o644, owner: None, group: None };
        let script = install(&Install { writes: &[write("/a", &desired)], ..install_of(&test_state()) });
        let mut sent = Vec::new();
        script.write_to(&mut sent).await.unwrap();
        assert_eq!(sent, script.to_bytes());
        assert_eq!(script.sent_bytes(), sent.len());
    }
}

#[test]
fn content_travels_as_base64_in_short_lines() {
    let with_nul = Bytes::from_static(b"a\0b");
    let big = Bytes::from(vec![b'y'; (1 << 20) + 1]);
    for content in [with_nul, big] {
        let desired = Desired::File { content: content.clone(), mode: 0o644, owner: None, group: None };
        let text = install(&Install { writes: &[write("/a", &desired)], ..install_of(&test_state()) }).to_text();
        let after_opener = text.split("b\"\"\"\n").nth(1).expect("sent as base64");
        let body = after_opener.split("\"\"\")").next().unwrap();
        assert!(body.lines().all(|l| l.len() <= 76), "base64 lines are at most 76 characters");
        assert_eq!(B64.decode(body.split_whitespace().collect::<String>()).unwrap(), content);
    }
}

#[test]
fn every_byte_is_written_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all-bytes").display().to_string();
    // Every byte, invalid UTF-8 and dash's internal markers included.
    let content: Vec<u8> = (0..=255u8).chain(b"'\\'' $(x) `y`\n\"\"\"".iter().copied()).collect();
    let desired = Desired::File { content: content.clone().into(), mode: 0o600, owner: None, group: None };
    let script = install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) });
    let out = parse_install(&sh(script.to_bytes())).unwrap();
    assert_eq!(out.written, [0], "{out:?}");
    assert_eq!(std::fs::read(&path).unwrap(), content);
}

#[test]
fn files_are_staged_by_one_python_process_through_descriptors_and_nothing_by_path() {
    let state = test_state();
    let plain = |mode| Desired::File { content: Bytes::from_static(b"x"), mode, owner: None, group: None };
    let owned = Desired::File {
        content: Bytes::from_static(b"x"),
        mode: 0o644,
        owner: Some("root".into()),
        group: Some("root".into()),
    };
    let (a, b, c, d) = (plain(0o644), plain(0o600), plain(0o644), owned.clone());
    let writes = [write("/etc/a", &a), write("/etc/b", &b), write("/srv/c", &c), write("/srv/d", &d)];
    let pending = ["reload nginx".to_owned()];
    let text =
        install(&Install { writes: &writes, pending: &pending, applied: Some("{}"), ..install_of(&state) }).to_text();
    let lines_starting = |word: &str| text.lines().filter(|l| l.starts_with(word)).count();
    assert_eq!(lines_starting("python3 -I -S - "), 1, "{text}");
    assert_eq!(lines_starting("stage("), 4, "{text}");
    assert_eq!(lines_starting("chmod ") + lines_starting("chown "), 0, "{text}");
    assert!(text.contains("O_EXCL | os.O_NOFOLLOW") && text.contains("os.fchown(fd") && text.contains("os.fchmod(fd"));
    assert_eq!(
        lines_starting("sync -- "),
        2,
        "one for the pending record, one for the folders after the renames and the applied record"
    );
    assert!(text.contains("\".sentry-provision.0123456789abcdef\""), "the run's folder is named by its token");
    // Whatever the script removes whole is the run's own.
    for line in text.lines().filter(|l| l.contains("rm -rf -- ")) {
        let targets = line.split("rm -rf -- ").nth(1).unwrap().split(" 2>").next().unwrap();
        for target in targets.split(' ') {
            assert!(
                target.contains(".sentry-provision.0123456789abcdef") || target.contains("backups/"),
                "{target} in {line}"
            );
        }
    }
}

#[test]
fn a_folder_that_others_can_write_is_not_entered_through_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // A folder others may write to, holding a link to a folder of root's.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let target = dir.path().join("private");
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, open.join("conf")).unwrap();
    let path = open.join("conf/file").display().to_string();
    let desired = Desired::File { content: Bytes::from_static(b"x"), mode: 0o644, owner: None, group: None };
    let out = parse_install(&sh(
        install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_bytes()
    ))
    .unwrap();
    let (what, message) = out.failure.expect("refused");
    assert_eq!(what, FailedAt::File(0));
    assert!(message.contains("conf is a link in a folder others can write to"), "{message}");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "nothing written through the link");
}

#[test]
fn a_setgid_mode_sticks_because_the_owner_is_set_before_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tool").display().to_string();
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let group = String::from_utf8(Command::new("id").arg("-gn").output().unwrap().stdout).unwrap();
    let desired = Desired::File {
        content: Bytes::from_static(b"#!/bin/sh\n"),
        mode: 0o2755,
        owner: Some(me.trim().to_owned()),
        group: Some(group.trim().to_owned()),
    };
    let out = parse_install(&sh(
        install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_bytes()
    ))
    .unwrap();
    assert!(out.failure.is_none(), "{out:?}");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o2755);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Names and contents full of shell syntax are data, never commands:
    /// each round-trips exactly through install and snapshot, and nothing
    /// else appears on disk.
    #[test]
    fn any_name_and_content_round_trip_exactly_and_never_run(
        name in "[a-zA-Z0-9 '\"$;`&|<>(){}*?!#~=%\\\n\t\u{e9}\u{4e2d}\u{1f600}-]{1,40}",
        content in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
    ) {
        proptest::prop_assume!(name != "." && name != "..");
        let dir = tempfile::tempdir().unwrap();
        let path = format!("{}/{name}", dir.path().display());
        let desired = Desired::File { content: content.clone().into(), mode: 0o600, owner: None, group: None };
        let out = parse_install(&sh(install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_bytes()))
            .unwrap();
        proptest::prop_assert_eq!(&out.written, &[0], "{:?}", out);
        let paths = [path.as_str()];
        let read = read_snapshot(&test_state(), &paths, &[(0, "false")]).unwrap();
        match &read.snapshot.entries[&path] {
            Entry::File { content: back, .. } => proptest::prop_assert_eq!(back, &content),
            other => proptest::prop_assert!(false, "{:?}", other),
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        proptest::prop_assert_eq!(names.len(), 1, "only the file itself: {:?}", names);
    }
}

#[test]
fn quoting_survives_quotes_dollars_and_newlines() {
    let nasty = "it's $HOME; `x` \\ \"q\"\nnext";
    let out = sh(format!("printf '%s' {}", quote(nasty)));
    assert_eq!(String::from_utf8(out).unwrap(), nasty);
}

#[test]
fn a_file_written_by_install_reads_back_byte_for_byte_through_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd name; $x 'q' é").display().to_string();
    let content = b"line 1\n\xffbinary\0 and 'quotes' $VAR\n".to_vec();
    let desired = Desired::File { content: content.clone().into(), mode: 0o640, owner: None, group: None };
    let out = parse_install(&sh(
        install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_bytes()
    ))
    .unwrap();
    assert_eq!(out.written, [0], "{out:?}");
    let paths = [path.as_str()];
    let snap = read_snapshot(&test_state(), &paths, &[]).unwrap();
    match &snap.snapshot.entries[&path] {
        Entry::File { content: read, mode, .. } => {
            assert_eq!(read, &content);
            assert_eq!(*mode, 0o640);
        }
        other => panic!("{other:?}"),
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
}

#[test]
fn a_failed_write_names_the_path_and_carries_stderr() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "").unwrap();
    let path = dir.path().join("file/inside").display().to_string();
    let desired = Desired::File { content: Bytes::from_static(b"x"), mode: 0o644, owner: None, group: None };
    let out = parse_install(&sh(
        install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_bytes()
    ))
    .unwrap();
    let (what, message) = out.failure.unwrap();
    assert_eq!(what, FailedAt::File(0));
    assert!(message.contains("cannot create folder"), "{message}");
}

#[test]
fn a_rename_that_fails_puts_back_every_file_placed_before_it_and_the_pending_record() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().join("state").display().to_string(), "p");
    std::fs::write(&state.pending, "owed before\n").unwrap();
    let conf = |name: &str| dir.path().join(name).display().to_string();
    let (a, link, blocked) = (conf("a.conf"), conf("enabled"), conf("blocked"));
    std::fs::write(&a, "old\n").unwrap();
    // A folder where a file should go: no rename can replace it.
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(dir.path().join("blocked/inside"), "").unwrap();
    let file = Desired::File { content: Bytes::from_static(b"new\n"), mode: 0o644, owner: None, group: None };
    let to_a = Desired::Link { target: a.clone() };
    let writes = [write(&a, &file), write(&link, &to_a), write(&blocked, &file)];
    let pending = ["reload".to_owned()];
    let out =
        parse_install(&sh(install(&Install { writes: &writes, pending: &pending, ..install_of(&state) }).to_bytes()))
            .unwrap();
    let (what, message) = out.failure.clone().unwrap();
    assert_eq!(what, FailedAt::File(2), "{message}");
    assert!(out.written.is_empty(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "old\n");
    assert!(std::fs::symlink_metadata(&link).is_err(), "the new link is gone");
    assert_eq!(std::fs::read_to_string(&state.pending).unwrap(), "owed before\n", "the record is as it was");
    let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["a.conf", "blocked", "state"], "nothing staged or kept is left behind");
}

#[test]
fn a_failure_on_a_full_filesystem_says_so_and_otherwise_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let errlog = dir.path().join("err");
    let with_df = |available: &str, stderr: &str| {
        std::fs::write(&errlog, stderr).unwrap();
        let stub = format!(
            "errlog={}; df() {{ echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; echo 'fs 10 10 {available} 100% /'; }}\n",
            quote(&errlog.display().to_string())
        );
        String::from_utf8(sh(format!("{stub}{FULL_DISK_SH}full /etc/nginx"))).unwrap()
    };
    let full = "No space left on device (the filesystem of /etc/nginx is full)";
    assert_eq!(with_df("0", ""), full);
    assert_eq!(with_df("0", "sh: 1: printf: I/O error\n"), full);
    assert_eq!(with_df("12", ""), "");
    // ext4 keeps blocks for root: df says 0, and the cause is another.
    assert_eq!(with_df("0", "ln: Operation not permitted\n"), "", "the command's own message stands");
}

#[test]
fn a_candidate_that_fails_validation_is_replaced_by_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.conf").display().to_string();
    std::fs::write(&path, "good\n").unwrap();
    let desired = Desired::File { content: Bytes::from_static(b"bad\n"), mode: 0o644, owner: None, group: None };
    let validate = [format!("grep -q good {path} || {{ echo 'syntax error in site.conf' >&2; exit 1; }}")];
    let writes = [FileWrite { path: &path, desired: Some(&desired), validate: &validate, backup: false }];
    let out =
        parse_install(&sh(install(&Install { writes: &writes, ..install_of(&test_state()) }).to_bytes())).unwrap();
    let (what, message) = out.failure.unwrap();
    assert_eq!(what, FailedAt::Check(0));
    assert!(message.contains("failed with every file of the run in place"), "{message}");
    assert!(message.contains("syntax error in site.conf"), "the checker's own message: {message}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "good\n");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left behind");
}

#[test]
fn a_check_runs_once_with_every_file_in_place_and_its_failure_puts_back_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = |name: &str| dir.path().join(name).display().to_string();
    let (a, b, c) = (conf("a.conf"), conf("between"), conf("b.conf"));
    std::fs::write(&a, "good\n").unwrap();
    let log = conf("checks.log");
    // Counts its runs; fails when any .conf file says "bad".
    let check = [format!("echo run >> {log}; ! grep -q bad {}/*.conf", dir.path().display())];
    let file = |text: &'static str| Desired::File {
        content: Bytes::from_static(text.as_bytes()),
        mode: 0o644,
        owner: None,
        group: None,
    };
    let run = |a_text, c_text| {
        let (da, db, dc) = (file(a_text), file("plain\n"), file(c_text));
        let writes = [
            FileWrite { path: &a, desired: Some(&da), validate: &check, backup: false },
            FileWrite { path: &b, desired: Some(&db), validate: &[], backup: false },
            FileWrite { path: &c, desired: Some(&dc), validate: &check, backup: false },
        ];
        parse_install(&sh(install(&Install { writes: &writes, ..install_of(&test_state()) }).to_bytes())).unwrap()
    };

    let failed = run("bad\n", "fine\n");
    let (what, message) = failed.failure.clone().unwrap();
    assert_eq!(what, FailedAt::Check(0), "named by the first file it checks");
    assert!(message.contains("with every file of the run in place"), "{message}");
    assert!(failed.written.is_empty(), "all or nothing: {failed:?}");
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "good\n", "back as it was");
    assert!(!std::path::Path::new(&b).exists(), "a file outside the check goes back too");
    assert!(!std::path::Path::new(&c).exists(), "a file that did not exist is gone again");

    let passed = run("new\n", "fine\n");
    assert!(passed.failure.is_none(), "{passed:?}");
    assert_eq!(passed.written, [0, 1, 2]);
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "new\n");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "run\nrun\n", "one check a run, not one a file");
    let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["a.conf", "b.conf", "between", "checks.log"], "no temporary or old file is left behind");
}

#[test]
fn a_backup_keeps_the_previous_version_in_the_state_folder_where_no_include_glob_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.conf").display().to_string();
    let state = held(&dir.path().join("state").display().to_string(), "p");
    std::fs::write(&path, "old\n").unwrap();
    let desired = Desired::File { content: Bytes::from_static(b"new\n"), mode: 0o644, owner: None, group: None };
    let writes = [FileWrite { path: &path, desired: Some(&desired), validate: &[], backup: true }];
    let out = parse_install(&sh(
        install(&Install { writes: &writes, stamp: "20261127T100000", ..install_of(&state) }).to_bytes()
    ))
    .unwrap();
    let copy = format!("{}/backups/20261127T100000{path}", state.dir());
    assert_eq!(out.backups, [(0, copy.clone())]);
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "old\n");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
    let beside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside.len(), 2, "nothing beside the file but the state folder: {beside:?}");
}

#[test]
fn a_script_cut_short_in_transit_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.conf").display().to_string();
    let desired = Desired::File { content: Bytes::from_static(b"new\n"), mode: 0o644, owner: None, group: None };
    let script = install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_text();
    for cut in [script.len() / 3, script.len() / 2, script.len() - 6] {
        sh(&script[..cut]);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "cut at {cut} wrote something");
    }
}

#[test]
fn the_applied_record_is_written_last_and_read_back_by_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().join("state").display().to_string(), "site");
    let out =
        parse_install(&sh(install(&Install { applied: Some("{\"paths\":{}}"), ..install_of(&state) }).to_bytes()))
            .unwrap();
    assert!(out.failure.is_none(), "{out:?}");
    let snap = read_snapshot(&state, &[], &[]).unwrap();
    assert_eq!(snap.applied.as_deref(), Some("{\"paths\":{}}"));
}

#[test]
fn where_an_install_failed_is_read_into_its_kind_and_said_as_the_script_printed_it() {
    let failed_at = |line: &str| parse_install(line.as_bytes()).unwrap().failure.unwrap().0;
    assert_eq!(failed_at("FAIL file:3 eA==\n"), FailedAt::File(3));
    assert_eq!(failed_at("FAIL check:0 eA==\n"), FailedAt::Check(0));
    assert_eq!(failed_at("FAIL command:12 eA==\n"), FailedAt::Command(12));
    assert_eq!(failed_at("FAIL record eA==\n"), FailedAt::Record);
    assert_eq!(failed_at("FAIL file:x eA==\n"), FailedAt::Other("file:x".into()));
    for said in ["file:3", "check:0", "command:12", "record", "file:x"] {
        assert_eq!(failed_at(&format!("FAIL {said} eA==\n")).to_string(), said);
    }
}
