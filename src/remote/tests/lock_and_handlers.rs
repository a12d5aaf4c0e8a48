//! The host's lock, the handlers and the probes.

use super::*;

#[test]
fn probes_report_each_exit_status_and_output() {
    let out = parse_probes(&sh(probes(&["echo fine", "echo 'maxmemory: 0' >&2; exit 3"])), 2).unwrap();
    assert_eq!(out, [(0, "fine".to_owned()), (3, "maxmemory: 0".to_owned())]);
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

/// A lock holder of a snapshot in `dir`, run by `sh` and read up to the
/// snapshot's end line: it holds the lock now, its stdin open.
fn holding(dir: &std::path::Path) -> (StateFiles, std::process::Child, std::process::ChildStdin) {
    let state = StateFiles::new(&dir.display().to_string(), "site");
    let script = snapshot(&state, &[], &[], &[]);
    let mut holder = sh_reading_stdin();
    let mut stdin = holder.stdin.take().unwrap();
    use std::io::{BufRead as _, Write as _};
    stdin.write_all(locked(&state, 5, &[], &script.text).as_bytes()).unwrap();
    let mut lines = std::io::BufReader::new(holder.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap() == end_line(&script.token)));
    (state, holder, stdin)
}

/// The holder let the lock go: no run owns it, and it is free.
fn let_go(state: &StateFiles) {
    assert_eq!(std::fs::read_to_string(format!("{}/lock.owner", state.dir())).unwrap(), "", "no run owns it now");
    let lock = std::fs::File::open(format!("{}/lock", state.dir())).unwrap();
    assert!(lock.try_lock().is_ok(), "the lock is free");
}

#[test]
fn the_holder_lets_the_lock_go_only_once_the_work_of_its_run_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let (state, mut holder, stdin) = holding(dir.path());
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
    let_go(&state);
}

#[test]
fn a_holder_told_its_run_sent_nothing_lets_go_without_the_wait_for_work() {
    let dir = tempfile::tempdir().unwrap();
    let (state, mut holder, mut stdin) = holding(dir.path());
    use std::io::Write as _;
    // What the wait for work would wait on: lock.work held by someone else,
    // which the holder is spared once told `idle` (its run sent no work).
    let work = std::fs::File::create(format!("{}/lock.work", state.dir())).unwrap();
    work.lock_shared().unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        drop(work);
    });
    let started = std::time::Instant::now();
    stdin.write_all(b"\nidle\n").unwrap();
    drop(stdin);
    assert!(holder.wait().unwrap().success());
    assert!(started.elapsed().as_secs_f64() < 2.0, "the holder did not wait on lock.work");
    let_go(&state);
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
fn a_probe_naming_its_shells_pid_has_a_shell_of_its_own_and_the_probes_after_it_still_run() {
    let out = parse_probes(&sh(probes(&["kill $$", "echo next"])), 2).unwrap();
    assert_eq!(out, [(143, String::new()), (0, "next".to_owned())]);
    // In a here-document the shell expands: the pid is the probe's shell's.
    let out = parse_probes(&sh(probes(&["cat <<EOF | sh\nkill $$\nEOF\nsleep 1", "echo next"])), 2).unwrap();
    assert_eq!(out, [(143, String::new()), (0, "next".to_owned())]);
}

#[test]
fn a_probe_after_the_snapshot_starts_as_a_shell_of_its_own_would() {
    // The functions any of the scripts a drift pass sends defines.
    let sources = [shell::PRELUDE, include_str!("../snapshot.sh"), include_str!("../probes.sh")];
    let functions: Vec<&str> = sources
        .iter()
        .flat_map(|source| source.lines())
        .filter_map(|line| line.trim_start().split_once("() {").map(|(name, _)| name))
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    assert!(functions.contains(&"send") && functions.contains(&"probe"), "{functions:?}");
    // What a shell sees: its arguments, its variables' names (their values
    // differ: PPID), and which of those functions it has.
    let dir = tempfile::tempdir().unwrap();
    let listing = dir.path().join("listing.sh");
    std::fs::write(
        &listing,
        format!(
            "echo \"arguments: $#\"\nset | sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/variable \\1/p'\nfor f in {}; do command -v \"$f\" >/dev/null && echo \"function $f\"; done; true\n",
            functions.join(" ")
        ),
    )
    .unwrap();
    let listing = shell::quote(&listing.display().to_string());
    let file = dir.path().join("a file").display().to_string();
    std::fs::write(&file, "x").unwrap();
    let (in_probe, own_shell) = (format!(". {listing}"), format!("sh {listing}"));
    let in_perl =
        "exec perl - one <<'PL'\nprint \"$0 @ARGV \", exists $ENV{token} ? 'token' : 'no token', \"\\n\";\nPL";
    let script =
        snapshot_then_probes(&test_state(), &[file.as_str()], &[], &[(0, "true")], &[&in_probe, in_perl, &own_shell]);
    let stdout = sh(&script.text);
    let out = parse_snapshot(&stdout, &[file.as_str()], &[], &script.token).unwrap();
    assert!(matches!(out.snapshot.entries[&file], Entry::File { .. }), "the snapshot still reads");
    let probes = parse_probes(&stdout[out.after_end..], 3).unwrap();
    assert_eq!(probes[0].0, 0, "{probes:?}");
    assert!(probes[0].1.contains("arguments: 0") && probes[0].1.contains("variable PATH"), "{probes:?}");
    assert_eq!(probes[0], probes[2], "a probe sees what a shell of its own would");
    assert_eq!(probes[1], (0, "- one no token".to_owned()), "the snapshot's one perl ran it, and kept its token");
}

#[test]
fn a_perl_probe_run_in_the_one_perl_says_what_a_perl_of_its_own_would() {
    /// How far the two must agree. A die's status is errno, whatever perl's
    /// start left there; what perl's parser says near a syntax error depends
    /// on how it read the text; a top-level `return` is told without its line.
    #[derive(PartialEq)]
    enum Agree {
        Exactly,
        FailingWithTheSameOutput,
        FailingWithTheSameFirstLine,
        OnTheSyntaxError,
        OnTheReturn,
    }
    use Agree::*;
    let programs = [
        (
            "print \"$0 [@ARGV] \", scalar(@_), ' ', __FILE__, ' ', __PACKAGE__, ' ', defined(<STDIN>) ? 'input' : 'no input', \"\\n\";",
            Exactly,
        ),
        (
            "print 'started ', abs($^T - time) <= 1 ? 'now' : 'earlier', \"\\n\"; $x = 1; print \"no strict $x\\n\";",
            Exactly,
        ),
        ("print \"out\\n\"; print STDERR \"err\\n\"; warn \"careful\"; exit 3;", Exactly),
        ("print \"[$?]\\n\";", Exactly),
        ("die \"no\\n\";", FailingWithTheSameOutput),
        ("$! = 5; die 'with errno';", Exactly),
        ("my $x = ;", OnTheSyntaxError),
        ("kill 'TERM', $$; sleep 5;", Exactly),
        ("use strict; our $y = 2; print \"$y\\n\" x 3000;", Exactly),
        ("END { print \"at the end\\n\" } print 'then ';", Exactly),
        ("print \"a\\0b\\n\";", Exactly),
        ("print \"no semicolon\\n\"", Exactly),
        ("print \"then pod\\n\";\n\n=head1 NOTES\n\nnot code", Exactly),
        ("print \"first\\n\"; next;", FailingWithTheSameOutput),
        ("last;", FailingWithTheSameOutput),
        ("redo;", FailingWithTheSameOutput),
        ("sub skip { next } print \"before\\n\"; skip(); print \"after\\n\";", FailingWithTheSameOutput),
        ("BEGIN { die \"early\\n\" }", FailingWithTheSameOutput),
        ("use No::Such::Module;", FailingWithTheSameOutput),
        ("return; exit 4;", OnTheReturn),
        ("print <<';';\nhello", FailingWithTheSameFirstLine),
        ("print <<'=cut';\nhello", FailingWithTheSameFirstLine),
        ("print <<'.';\nhello", FailingWithTheSameFirstLine),
        ("$\\ = \"END\"; die \"x\\n\";", FailingWithTheSameOutput),
        ("print defined $SIG{PIPE} ? \"set\\n\" : \"unset\\n\";", Exactly),
    ];
    let arguments = "a 'b c' 'it'\\''s' x\\ y";
    let one_perl: Vec<String> =
        programs.iter().map(|(p, _)| format!("# a comment\n\nexec perl - {arguments} <<'PL'\n{p}\nPL\n")).collect();
    // The same program, not in the one perl's shape: a perl of its own.
    let its_own: Vec<String> =
        programs.iter().map(|(p, _)| format!("true\nexec perl - {arguments} <<'PL'\n{p}\nPL\n")).collect();
    for probe in &one_perl {
        assert!(probes(&[probe.as_str()]).contains("\nprobes_in_one_perl 0 <<"), "{probe}");
    }
    for probe in &its_own {
        assert!(!probes(&[probe.as_str()]).contains("\nprobes_in_one_perl 0 <<"), "{probe}");
    }
    let run = |texts: &[String]| {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        parse_probes(&sh(probes(&texts)), texts.len()).unwrap()
    };
    let (fast, slow) = (run(&one_perl), run(&its_own));
    for (((program, agree), fast), slow) in programs.iter().zip(&fast).zip(&slow) {
        let first_words = |out: &(i32, String)| out.1.split([',', '(']).next().unwrap().trim().to_owned();
        match agree {
            Exactly => assert_eq!(fast, slow, "{program}"),
            FailingWithTheSameOutput => {
                assert_eq!((fast.0 != 0, &fast.1), (slow.0 != 0, &slow.1), "{program}");
                assert_ne!(fast.0, 0, "{program}");
            }
            FailingWithTheSameFirstLine => {
                assert!(fast.0 != 0 && slow.0 != 0, "{program}: {fast:?} {slow:?}");
                assert_eq!(fast.1.lines().next(), slow.1.lines().next(), "{program}");
            }
            OnTheSyntaxError => {
                assert_eq!((fast.0, first_words(fast)), (slow.0, first_words(slow)), "{program}");
                assert_eq!(fast.1.lines().last(), slow.1.lines().last(), "{program}");
            }
            OnTheReturn => {
                assert!(fast.0 != 0 && slow.0 != 0, "{program}: {fast:?} {slow:?}");
                assert!(slow.1.starts_with("Can't return outside a subroutine at - line 1."), "{slow:?}");
                assert!(fast.1.starts_with("Can't return outside a subroutine"), "{fast:?}");
            }
        }
    }
    assert_eq!(fast[0], (0, "- [a b c it's x y] 0 - main no input".to_owned()));
    assert_eq!(fast[3], (0, "[0]".to_owned()), "the probe before it ended with 3");
}

#[test]
fn a_probe_the_one_perl_could_run_otherwise_runs_in_a_perl_of_its_own() {
    let programs = [
        "#!/usr/bin/perl -w\nprint 1;",
        "print <DATA>;\n__DATA__\nsecret",
        "print 1; __END__",
        "print 1;\u{4}",
        "CHECK { exit 3 } print 1;",
        "INIT { $ok = 1 }",
        "$SIG{__DIE__} = sub { return if $^S; exit 1 };",
        "print scalar caller;",
        "print 'a\0b';",
        "use Carp; croak 'bad';",
        "\u{feff}print 1;",
    ];
    let shapes = [
        "exec perl - <<'PL'\r\nprint 1;\nPL\r",
        "exec perl - <<\"PL\"\nprint 1;\nPL",
        "exec perl - <<-'PL'\nprint 1;\nPL",
        "exec perl - a << <<'PL'\nprint 1;\nPL",
        "exec perl - <<'PL' # then\nprint 1;\nPL",
        "exec perl - $HOME <<'PL'\nprint 1;\nPL",
        "exec perl - <<'PL'\nprint 1;\nPL\necho after",
        "exec perl - <<'PL'\nprint 1;\n",
    ];
    let probes_of_programs = programs.iter().map(|p| format!("exec perl - <<'PL'\n{p}\nPL"));
    for probe in probes_of_programs.chain(shapes.iter().map(|s| s.to_string())) {
        assert!(!probes(&[probe.as_str()]).contains("\nprobes_in_one_perl 0 <<"), "{probe:?}");
    }
}

#[test]
fn an_apply_snapshots_one_perl_fits_the_pipe_dash_writes_a_here_document_to_without_a_fork() {
    let script = snapshot(&test_state(), &["/etc/hostname"], &[], &[]).text;
    let (_, document) = script.split_once("send \"$@\" <<'").unwrap();
    let (end, body) = document.split_once("'\n").unwrap();
    let body = &body[..body.find(&format!("\n{end}\n")).unwrap()];
    assert!(body.len() < 4096, "{} bytes and a newline", body.len());
}
