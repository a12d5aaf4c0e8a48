//! The scripts run here, by this machine's sh: what they write and read
//! back, and what they print, as a host would.

use super::FULL_DISK_SH;
use super::snapshot::{CHANGED_WHILE_READ, SnapshotOutput};
use super::state::owed_handlers;
use super::*;
use crate::plan::{Desired, Entry, Found};
use crate::transport::payload::CHUNK_BYTES;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use bytes::Bytes;
use std::process::Command;

fn install_of(state: &StateFiles) -> Install<'_> {
    Install {
        state,
        pending: &[],
        writes: &[],
        commands: &[],
        applied: None,
        stamp: "0",
        token: "0123456789abcdef",
        keep_olds: false,
        crash_at: None,
    }
}

fn write<'a>(path: &'a str, desired: &'a Desired) -> FileWrite<'a> {
    FileWrite { path, desired: Some(desired), validate: &[], backup: false }
}

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

/// Runs the snapshot of `paths` here and reads what it printed.
fn read_snapshot(state: &StateFiles, paths: &[&str], guards: &[(usize, &str)]) -> Result<SnapshotOutput, String> {
    let script = snapshot(state, paths, &[], guards);
    parse_snapshot(&sh(&script.text), paths, &[], &script.token)
}

fn state_path_exists(path: &str) -> bool {
    std::path::Path::new(path).exists()
}

/// One state folder for the tests that need no state of their own, as
/// the lock's holder leaves it for its run (see [`held`]).
fn test_state() -> StateFiles {
    static STATE: std::sync::OnceLock<StateFiles> = std::sync::OnceLock::new();
    STATE.get_or_init(|| held(&tempfile::tempdir().unwrap().keep().display().to_string(), "p")).clone()
}

/// State files in `dir` whose run holds the lock there: `lock.owner`
/// names it, as the holder writes it, so its scripts run.
fn held(dir: &str, playbook: &str) -> StateFiles {
    let state = StateFiles::new(dir, playbook);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(format!("{dir}/lock.owner"), format!("{}\n", state.token)).unwrap();
    state
}

fn sh(script: impl AsRef<[u8]>) -> Vec<u8> {
    let mut child = Command::new("sh")
        .arg("-s")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(script.as_ref()).unwrap();
    child.wait_with_output().unwrap().stdout
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
fn probes_report_each_exit_status_and_output() {
    let out = parse_probes(&sh(probes(&["echo fine", "echo 'maxmemory: 0' >&2; exit 3"])), 2).unwrap();
    assert_eq!(out, [(0, "fine".to_owned()), (3, "maxmemory: 0".to_owned())]);
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
fn a_handler_that_succeeds_is_cleared_from_the_pending_record_and_the_others_stay_owed() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().display().to_string(), "site");
    let recorded = "reload nginx\nrestart web\nupdate supervisor\n";
    std::fs::write(&state.pending, recorded).unwrap();
    let ran = [("reload nginx", "true"), ("update supervisor", "true")];
    let out = parse_handlers(&sh(handlers(&state, &ran, &[], &[], None)), ran.len(), 0).unwrap();
    assert_eq!(out.succeeded, 2, "{out:?}");
    let record = std::fs::read_to_string(&state.pending).unwrap();
    assert!(record.starts_with(recorded), "the names owed are never rewritten: {record:?}");
    assert_eq!(owed_handlers(&record), ["restart web"]);
    assert_eq!(read_snapshot(&state, &[], &[]).unwrap().snapshot.pending_handlers, ["restart web"]);

    let last = parse_handlers(&sh(handlers(&state, &[("restart web", "true")], &[], &[], None)), 1, 0).unwrap();
    assert_eq!(last.succeeded, 1, "{last:?}");
    assert!(!std::path::Path::new(&state.pending).exists(), "nothing owed, no record");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("lock."))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "no temporary file is left behind");
}

#[test]
fn a_handler_whose_verifying_probe_fails_did_not_take_effect_and_stays_owed() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().display().to_string(), "site");
    std::fs::write(&state.pending, "reload nginx\nupdate supervisor\n").unwrap();
    let ran = [("reload nginx", "true"), ("update supervisor", "true")];
    let probes = [Verify { after: 0, name: "nginx runs the configuration on disk", command: "echo stale; exit 1" }];
    let out = parse_handlers(&sh(handlers(&state, &ran, &probes, &[], None)), ran.len(), probes.len()).unwrap();
    assert!(out.no_effect, "{out:?}");
    let (i, status, message) = out.failure.unwrap();
    assert_eq!((i, status), (0, 1));
    assert_eq!(message, "verify `nginx runs the configuration on disk` failed: stale");
    assert_eq!(out.succeeded, 0, "nothing after it ran");
    let record = std::fs::read_to_string(&state.pending).unwrap();
    assert_eq!(owed_handlers(&record), ["reload nginx", "update supervisor"]);

    let passing = [Verify { after: 0, name: "nginx runs the configuration on disk", command: "true" }];
    let out = parse_handlers(&sh(handlers(&state, &ran, &passing, &[], None)), ran.len(), 1).unwrap();
    assert_eq!((out.succeeded, out.probes.len()), (2, 1), "{out:?}");
    assert!(!state_path_exists(&state.pending), "everything owed is done");
}

#[test]
fn a_remedy_that_was_not_owed_leaves_the_owed_handlers_owed() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().display().to_string(), "site");
    std::fs::write(&state.pending, "restart web\n").unwrap();
    let out = parse_handlers(&sh(handlers(&state, &[("reload nginx", "true")], &[], &[], None)), 1, 0).unwrap();
    assert_eq!(out.succeeded, 1, "{out:?}");
    assert_eq!(owed_handlers(&std::fs::read_to_string(&state.pending).unwrap()), ["restart web"]);
}

#[test]
fn what_a_torn_append_left_in_the_pending_record_does_not_keep_it_owing() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().display().to_string(), "site");
    std::fs::write(&state.pending, "restart\nrestart web\nreload nginx\n\0\0\x01\n\trestart").unwrap();
    let ran = [("restart web", "true")];
    let out = parse_handlers(&sh(handlers(&state, &ran, &[], &[], None)), ran.len(), 0).unwrap();
    assert_eq!(out.succeeded, 1, "{out:?}");
    let record = std::fs::read_to_string(&state.pending).unwrap();
    assert_eq!(owed_handlers(&record), ["restart", "reload nginx"], "{record:?}");
    assert_eq!(read_snapshot(&state, &[], &[]).unwrap().snapshot.pending_handlers, ["restart", "reload nginx"]);
    let ran = [("reload nginx", "true"), ("restart", "true")];
    let out = parse_handlers(&sh(handlers(&state, &ran, &[], &[], None)), ran.len(), 0).unwrap();
    assert_eq!(out.succeeded, 2, "{out:?}");
    assert!(!std::path::Path::new(&state.pending).exists(), "nothing owed, no record");
}

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
fn a_lock_held_elsewhere_is_reported_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().display().to_string(), "site");
    // std's lock is flock(2), the lock the script takes.
    let lock = std::fs::File::create(dir.path().join("lock")).unwrap();
    lock.lock().unwrap();
    let stdout = sh(locked(&state, 0, &[], &snapshot(&state, &[], &[], &[]).text));
    assert_eq!(String::from_utf8_lossy(&stdout), "LOCKBUSY\n");
}

#[test]
fn a_state_folder_others_could_plant_files_in_is_refused_and_a_loose_one_of_ours_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = |state_dir: &std::path::Path| {
        let state = StateFiles::new(&state_dir.display().to_string(), "site");
        // The holder waits for stdin to close: sh() gives it none.
        String::from_utf8_lossy(&sh(locked(&state, 0, &[], "echo SNAPSHOT\n"))).into_owned()
    };
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = run(&shared);
    assert!(out.starts_with("STATEBAD ") && out.contains("writable by its group or by everyone"), "{out}");
    assert!(!shared.join("lock").exists(), "nothing kept there");

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&shared, &link).unwrap();
    assert!(run(&link).contains("is a symbolic link"));

    let loose = dir.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(run(&loose).starts_with("SNAPSHOT"));
    assert_eq!(std::fs::metadata(&loose).unwrap().permissions().mode() & 0o7777, 0o700);
    assert_eq!(std::fs::metadata(loose.join("lock")).unwrap().permissions().mode() & 0o777, 0o600);

    let made = dir.path().join("new/state");
    assert!(run(&made).starts_with("SNAPSHOT"));
    assert_eq!(std::fs::metadata(&made).unwrap().permissions().mode() & 0o7777, 0o700);
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
fn a_command_runs_without_its_text_on_any_command_line() {
    // The probe prints the command lines of its own shell and of the
    // script's: neither holds the probe's text.
    let probe = "secret=hunter22; tr '\\0' ' ' </proc/$$/cmdline; echo; tr '\\0' ' ' </proc/$PPID/cmdline";
    let out = parse_probes(&sh(probes(&[probe])), 1).unwrap();
    let (status, lines) = &out[0];
    assert_eq!(*status, 0, "{lines}");
    assert!(lines.starts_with("sh -c . /dev/fd/3"), "{lines}");
    assert!(!lines.contains("hunter22"), "{lines}");
}

#[test]
fn a_script_that_changes_the_host_does_nothing_once_its_run_no_longer_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().join("state").display().to_string(), "site");
    // A holder that gave up took this run's token out of lock.owner.
    std::fs::write(format!("{}/lock.owner", state.dir()), "").unwrap();
    let path = dir.path().join("f").display().to_string();
    let desired = Desired::File { content: Bytes::from_static(b"new"), mode: 0o644, owner: None, group: None };
    let script = install(&Install { writes: &[write(&path, &desired)], ..install_of(&state) });
    let status = Command::new("sh").arg("-c").arg(script.to_text()).status().unwrap();
    assert_eq!(status.code(), Some(LOCK_LOST));
    assert!(!std::path::Path::new(&path).exists());
    let marker = dir.path().join("ran").display().to_string();
    let ran = [("touch", format!("touch {}", quote(&marker)))];
    let ran: Vec<(&str, &str)> = ran.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let status = Command::new("sh").arg("-c").arg(handlers(&state, &ran, &[], &[], None)).status().unwrap();
    assert_eq!(status.code(), Some(LOCK_LOST));
    assert!(!std::path::Path::new(&marker).exists());
}

#[test]
fn handlers_whose_connection_is_gone_run_to_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().display().to_string(), "site");
    let marker = dir.path().join("second ran").display().to_string();
    let second = format!("sleep 0.3; touch {}", quote(&marker));
    let ran = [("first", "sleep 0.2"), ("second", second.as_str())];
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(handlers(&state, &ran, &[], &[], None))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The connection drops: whatever the script prints next meets a
    // closed pipe (SIGPIPE, or SIGHUP from a terminal).
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(child.stdout.take());
    drop(child.stderr.take());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let status = child.wait().unwrap();
    assert!(status.code().is_some(), "not ended by a signal: {status:?}");
    assert!(std::path::Path::new(&marker).exists(), "the handler after the drop ran");
}

#[test]
fn the_holder_lets_the_lock_go_only_once_the_work_of_its_run_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFiles::new(&dir.path().display().to_string(), "site");
    let script = snapshot(&state, &[], &[], &[]);
    let mut holder = Command::new("sh")
        .arg("-s")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    use std::io::{BufRead as _, Write as _};
    stdin.write_all(locked(&state, 5, &[], &script.text).as_bytes()).unwrap();
    let mut lines = std::io::BufReader::new(holder.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap() == end_line(&script.token)));
    assert_eq!(std::fs::read_to_string(format!("{}/lock.owner", state.dir())).unwrap(), format!("{}\n", state.token));
    // A handler of the run, still going when the controller goes away.
    let work = format!("{}sleep 1.5; echo done", work_lock(&state));
    let work = Command::new("sh")
        .arg("-c")
        .arg(format!("state={}\n{work}", quote(state.dir())))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    drop(stdin);
    assert!(holder.wait().unwrap().success());
    assert!(started.elapsed().as_secs_f64() > 0.8, "the holder waited for the work");
    assert_eq!(work.wait_with_output().unwrap().stdout, b"done\n");
    assert_eq!(std::fs::read_to_string(format!("{}/lock.owner", state.dir())).unwrap(), "", "no run owns it now");
    let lock = std::fs::File::open(format!("{}/lock", state.dir())).unwrap();
    assert!(lock.try_lock().is_ok(), "the lock is free");
}

#[test]
fn leftovers_of_a_killed_run_are_removed_under_the_lock_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let state = held(&dir.path().join("state").display().to_string(), "site");
    let managed = dir.path().join("etc");
    std::fs::create_dir_all(&managed).unwrap();
    std::fs::create_dir_all(state.dir()).unwrap();
    for left in ["etc/.sentry-provision.123.0", "state/.pending.9"] {
        std::fs::write(dir.path().join(left), "half").unwrap();
    }
    std::fs::write(managed.join("kept.conf"), "x").unwrap();
    let folder = managed.display().to_string();
    let script = snapshot(&state, &[], &[], &[]);
    sh(locked(&state, 5, &[folder.as_str()], &script.text));
    let names = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    assert_eq!(names(&managed), ["kept.conf"]);
    let mut kept = names(std::path::Path::new(state.dir()));
    kept.sort();
    assert_eq!(
        kept,
        [".checked", "key", "lock", "lock.owner", "lock.work"],
        "the folder's check and the host's secret for fingerprints are made once and kept"
    );
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
