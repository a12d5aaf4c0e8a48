//! The planner's tests: edits, diffs, handlers and warnings, from tasks and a snapshot.

use super::*;

/// A root-owned 0644 file holding `content`, as a snapshot reads it (the drift tests use it too).
pub(super) fn file(content: &str) -> Entry {
    Entry::File {
        content: Bytes::copy_from_slice(content.as_bytes()),
        mode: 0o644,
        owner: "root".into(),
        group: "root".into(),
    }
}

fn task(index: usize, name: &str, action: Action, notify: &[&str]) -> Task {
    Task {
        index,
        name: name.into(),
        action,
        notify: notify.iter().map(|s| s.to_string()).collect(),
        validate: None,
        backup: false,
    }
}

fn line(path: &str, line: Option<&str>, regexp: &str, present: bool) -> Action {
    Action::Line {
        path: path.into(),
        line: line.map(Into::into),
        regexp: Some(Regex::new(regexp).unwrap()),
        present,
        create: false,
    }
}

fn redis_tasks() -> Vec<Task> {
    vec![
        task(0, "no snapshots", line("/r.conf", None, r"^\s*save\s+\d", false), &["redis"]),
        task(1, "save off", line("/r.conf", Some("save \"\""), r"^\s*save\s", true), &["redis"]),
        task(2, "maxmemory", line("/r.conf", Some("maxmemory 1gb"), r"^\s*maxmemory\s", true), &["redis"]),
    ]
}

fn snapshot(entries: &[(&str, Entry)]) -> Snapshot {
    Snapshot { entries: entries.iter().map(|(p, e)| (p.to_string(), e.clone())).collect(), ..Default::default() }
}

#[test]
fn several_edits_of_one_file_become_one_change_with_one_diff() {
    let snap = snapshot(&[("/r.conf", file("bind 127.0.0.1\nsave 900 1\nsave 60 10000\n"))]);
    let plan = plan(&redis_tasks(), &snap, &["redis".into()], 3).unwrap();
    assert_eq!(plan.files.len(), 1);
    let Desired::File { content, .. } = &plan.files[0].after else { panic!() };
    assert_eq!(String::from_utf8_lossy(content), "bind 127.0.0.1\nsave \"\"\nmaxmemory 1gb\n");
    assert!(plan.files[0].diff.contains("-save 900 1"), "{}", plan.files[0].diff);
    assert_eq!(plan.handlers, ["redis"]);
    assert!(plan.steps.iter().all(|s| s.changed));
}

#[test]
fn a_converged_host_plans_nothing_and_notifies_nobody() {
    let snap = snapshot(&[("/r.conf", file("bind 127.0.0.1\nsave \"\"\nmaxmemory 1gb\n"))]);
    let plan = plan(&redis_tasks(), &snap, &["redis".into()], 3).unwrap();
    assert!(plan.is_empty(), "{plan:?}");
    assert!(plan.steps.iter().all(|s| !s.changed));
}

#[test]
fn handlers_left_pending_by_an_earlier_run_run_again() {
    let mut snap = snapshot(&[("/r.conf", file("save \"\"\nmaxmemory 1gb\n"))]);
    snap.pending_handlers = vec!["nginx".into()];
    let order = ["redis".to_string(), "nginx".to_string()];
    let plan = plan(&redis_tasks(), &snap, &order, 3).unwrap();
    assert_eq!(plan.handlers, ["nginx"]);
    assert_eq!(plan.carried_over, ["nginx"]);
}

#[test]
fn a_template_over_a_missing_file_is_a_new_file_with_default_mode() {
    let t = task(
        0,
        "site",
        Action::Template { dest: "/s".into(), content: Bytes::from_static(b"x\n"), attributes: Attributes::default() },
        &[],
    );
    let plan = plan(&[t], &Snapshot::default(), &[], 3).unwrap();
    assert!(matches!(plan.files[0].after, Desired::File { mode: 0o644, .. }));
    assert!(plan.files[0].diff.starts_with("--- /dev/null"));
}

#[test]
fn a_mode_change_alone_is_a_change_and_is_described() {
    let attributes = Attributes { mode: Some(0o600), ..Default::default() };
    let t =
        task(0, "secret", Action::Template { dest: "/s".into(), content: Bytes::from_static(b"x\n"), attributes }, &[]);
    let plan = plan(&[t], &snapshot(&[("/s", file("x\n"))]), &[], 3).unwrap();
    assert_eq!(plan.files[0].diff, "mode /s: 0644 -> 0600\n");
}

#[test]
fn editing_a_missing_file_without_create_is_an_error_naming_the_step() {
    let err = plan(&redis_tasks()[1..2], &Snapshot::default(), &[], 3).unwrap_err();
    assert!(err.contains("step `save off`") && err.contains("create: true"), "{err}");
}

#[test]
fn commands_run_unless_their_guards_say_done() {
    let cmd = |i, creates: Option<&str>, unless: Option<&str>| {
        task(
            i,
            "install",
            Action::Command { cmd: "make".into(), creates: creates.map(Into::into), unless: unless.map(Into::into) },
            &[],
        )
    };
    let mut snap = snapshot(&[("/bin/memmon", file(""))]);
    snap.guards_passed.insert(1);
    let tasks = [cmd(0, Some("/bin/memmon"), None), cmd(1, None, Some("true")), cmd(2, Some("/nope"), None)];
    let plan = plan(&tasks, &snap, &[], 3).unwrap();
    assert_eq!(plan.commands.iter().map(|c| c.index).collect::<Vec<_>>(), [2]);
}

/// Two files and a command: redis.conf (three steps), a site and its
/// link (one step), and `make`, all of them to change.
fn two_files_and_a_command() -> Plan {
    let mut tasks = redis_tasks();
    tasks.push(task(
        3,
        "site",
        Action::Template { dest: "/s".into(), content: Bytes::from_static(b"x\n"), attributes: Attributes::default() },
        &[],
    ));
    tasks.push(task(4, "build", Action::Command { cmd: "make".into(), creates: None, unless: None }, &[]));
    let snap = snapshot(&[("/r.conf", file("save 900 1\n"))]);
    plan(&tasks, &snap, &["redis".into()], 3).unwrap()
}

fn changed_names(steps: &[StepOutcome]) -> Vec<&str> {
    steps.iter().filter(|s| s.changed).map(|s| s.name.as_str()).collect()
}

#[test]
fn a_step_changed_the_host_only_when_a_path_it_manages_was_written() {
    let plan = two_files_and_a_command();
    assert_eq!(changed_names(&plan.steps), ["no snapshots", "save off", "maxmemory", "site", "build"]);
    let steps = carried_out(&plan.steps, &["/r.conf".into()], &[], &[]);
    assert_eq!(changed_names(&steps), ["no snapshots", "save off", "maxmemory"]);
    let not_applied: Vec<&str> = steps.iter().filter(|s| s.not_applied).map(|s| s.name.as_str()).collect();
    assert_eq!(not_applied, ["site", "build"], "planned, not done");
}

#[test]
fn a_host_where_nothing_was_written_changed_nothing() {
    let plan = two_files_and_a_command();
    let steps = carried_out(&plan.steps, &[], &[], &[]);
    assert_eq!(changed_names(&steps), Vec::<&str>::new());
    assert_eq!(steps.iter().filter(|s| s.not_applied).count(), 5);
}

#[test]
fn files_put_back_by_a_rollback_count_as_unchanged() {
    let plan = two_files_and_a_command();
    let written = ["/r.conf".to_string(), "/s".to_string()];
    let steps = carried_out(&plan.steps, &written, &["/r.conf".into()], &[4]);
    assert_eq!(changed_names(&steps), ["site", "build"]);
}

#[test]
fn a_command_step_changed_the_host_only_if_its_command_ran() {
    let plan = two_files_and_a_command();
    let written = ["/r.conf".to_string(), "/s".to_string()];
    assert_eq!(changed_names(&carried_out(&plan.steps, &written, &[], &[4])).len(), 5);
    assert!(!changed_names(&carried_out(&plan.steps, &written, &[], &[])).contains(&"build"));
}

#[test]
fn a_step_that_needed_no_change_stays_unchanged_when_its_file_is_written_by_another() {
    let snap = snapshot(&[("/r.conf", file("save \"\"\n"))]);
    let plan = plan(&redis_tasks(), &snap, &["redis".into()], 3).unwrap();
    let steps = carried_out(&plan.steps, &["/r.conf".into()], &[], &[]);
    assert_eq!(changed_names(&steps), ["maxmemory"]);
    assert!(steps.iter().all(|s| !s.not_applied));
}

const AT_64: &str = "[program:worker]\ncommand=/www/sentry/bin/sentry run worker -c 64 -l WARNING\n";
const AT_4: &str = "; many processes at -c 4\ncommand=/www/sentry/bin/sentry run worker -c 4 -l WARNING\n";

fn wanting(path: &str, content: &str) -> BTreeMap<String, Desired> {
    let want = Desired::File { content: Bytes::from(content.to_owned()), mode: 0o644, owner: None, group: None };
    [(path.to_owned(), want)].into()
}

#[test]
fn a_worker_concurrency_above_four_is_called_out() {
    let unmanaged = concurrency_warnings(&snapshot(&[("/w.conf", file(AT_64))]), &BTreeMap::new(), true);
    assert_eq!(
        unmanaged,
        ["/w.conf: Sentry workers run at concurrency -c 64; above 4 is a smell (lock contention): \
          prefer more worker processes (numprocs) at -c 4"],
        "a file the playbook leaves alone runs at -c 64 after an apply too"
    );
    assert!(concurrency_warnings(&snapshot(&[("/w.conf", file(AT_4))]), &BTreeMap::new(), false).is_empty());
}

#[test]
fn a_check_says_the_host_runs_at_c64_and_what_the_playbook_sets() {
    let warnings = concurrency_warnings(&snapshot(&[("/w.conf", file(AT_64))]), &wanting("/w.conf", AT_4), false);
    assert_eq!(
        warnings,
        ["/w.conf: Sentry workers run at concurrency -c 64; above 4 is a smell (lock contention); \
          the playbook's file has -c 4"]
    );
}

#[test]
fn an_apply_that_fixes_c64_speaks_of_the_host_before_it() {
    let warnings = concurrency_warnings(&snapshot(&[("/w.conf", file(AT_64))]), &wanting("/w.conf", AT_4), true);
    assert_eq!(
        warnings,
        ["/w.conf: Sentry workers were running at concurrency -c 64 before this run (above 4 is a smell: \
          lock contention); the playbook's file has -c 4"]
    );
    let still = concurrency_warnings(&snapshot(&[("/w.conf", file(AT_64))]), &wanting("/w.conf", AT_64), true);
    assert!(still[0].contains("run at concurrency -c 64; above 4"), "a playbook that keeps -c 64: {still:?}");
}

#[test]
fn the_concurrency_warning_as_check_and_apply_print_it() {
    let host = snapshot(&[("/etc/supervisor/conf.d/sentry-worker.conf", file(AT_64))]);
    let want = wanting("/etc/supervisor/conf.d/sentry-worker.conf", AT_4);
    let text = [("check", false), ("apply", true)]
        .map(|(mode, applying)| format!("{mode}: {}", concurrency_warnings(&host, &want, applying).join("\n")))
        .join("\n");
    insta::assert_snapshot!(text);
}

fn site(content: &str) -> Task {
    let action = Action::Site {
        search: vec!["/n/enabled/*".into()],
        upstream: "127.0.0.1:9000".into(),
        dest: "/n/available/sentry".into(),
        enable: "/n/enabled/sentry".into(),
        content: Bytes::copy_from_slice(content.as_bytes()),
        attributes: Attributes::default(),
    };
    Task { validate: Some("nginx -t".into()), ..task(0, "site", action, &["nginx"]) }
}

fn found(listed: &str, path: &str) -> Found {
    Found { pattern: "/n/enabled/*".into(), listed: listed.into(), path: path.into() }
}

const OURS: &str = "server { location / { uwsgi_pass 127.0.0.1:9000; } }\n";
const DEFAULT_SITE: &str = "server { listen 80 default_server; root /var/www/html; }\n";

#[test]
fn the_operators_vhost_is_switched_in_place_and_no_site_of_ours_is_added() {
    let vhost = "server {\n    server_name sentry.example.com;\n    location / {\n        proxy_pass http://127.0.0.1:9000;\n    }\n}\n";
    let mut snap = snapshot(&[
        ("/n/enabled/sentry", file(vhost)),
        ("/n/available/default", file(DEFAULT_SITE)),
        ("/n/available/sentry", Entry::Missing),
    ]);
    snap.found =
        vec![found("/n/enabled/default", "/n/available/default"), found("/n/enabled/sentry", "/n/enabled/sentry")];
    let plan = plan(&[site(OURS)], &snap, &["nginx".into()], 3).unwrap();
    assert_eq!(plan.files.len(), 1, "{plan:?}");
    assert_eq!(plan.files[0].path, "/n/enabled/sentry");
    assert_eq!(plan.files[0].validate, ["nginx -t"]);
    assert!(plan.files[0].diff.contains("-        proxy_pass http://127.0.0.1:9000;"), "{}", plan.files[0].diff);
    assert!(plan.files[0].diff.contains("+        uwsgi_pass 127.0.0.1:9000;"), "{}", plan.files[0].diff);
    assert_eq!(plan.handlers, ["nginx"]);
    assert_eq!(plan.steps[0].subject, "/n/enabled/sentry");

    let Desired::File { content, .. } = &plan.files[0].after else { panic!() };
    snap.entries.insert("/n/enabled/sentry".into(), file(std::str::from_utf8(content).unwrap()));
    assert!(super::plan(&[site(OURS)], &snap, &["nginx".into()], 3).unwrap().is_empty(), "a second run is idle");
}

#[test]
fn a_host_with_no_vhost_of_sentrys_gets_the_template_and_its_link_checked_together() {
    let mut snap = snapshot(&[("/n/available/default", file(DEFAULT_SITE))]);
    snap.found = vec![found("/n/enabled/default", "/n/available/default")];
    let plan = plan(&[site(OURS)], &snap, &["nginx".into()], 3).unwrap();
    let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/n/available/sentry", "/n/enabled/sentry"]);
    assert!(plan.files.iter().all(|f| f.validate == ["nginx -t"]), "validated as one group");

    // Once enabled, the site is ours: the template keeps it, nothing moves.
    let mut done = snapshot(&[
        ("/n/available/default", file(DEFAULT_SITE)),
        ("/n/available/sentry", file(OURS)),
        ("/n/enabled/sentry", Entry::Link { target: "/n/available/sentry".into() }),
    ]);
    done.found =
        vec![found("/n/enabled/default", "/n/available/default"), found("/n/enabled/sentry", "/n/available/sentry")];
    assert!(super::plan(&[site(OURS)], &done, &["nginx".into()], 3).unwrap().is_empty());
    let newer = "server { listen 8080; location / { uwsgi_pass 127.0.0.1:9000; } }\n";
    let plan = super::plan(&[site(newer)], &done, &["nginx".into()], 3).unwrap();
    assert_eq!(plan.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["/n/available/sentry"]);
}

#[test]
fn the_operators_vhost_at_sentrys_own_path_is_switched_not_overwritten() {
    let vhost =
        "server {\n    listen 443 ssl;\n    location / {\n        proxy_pass http://localhost:9000;\n    }\n}\n";
    let mut snap = snapshot(&[
        ("/n/available/sentry", file(vhost)),
        ("/n/enabled/sentry", Entry::Link { target: "/n/available/sentry".into() }),
    ]);
    snap.found = vec![found("/n/enabled/sentry", "/n/available/sentry")];
    let plan = plan(&[site("# Managed by sentry-provision\n")], &snap, &["nginx".into()], 3).unwrap();
    assert_eq!(plan.files.len(), 1, "{plan:?}");
    let Desired::File { content, .. } = &plan.files[0].after else { panic!() };
    let content = String::from_utf8_lossy(content);
    assert!(content.contains("listen 443 ssl;") && content.contains("uwsgi_pass 127.0.0.1:9000;"), "{content}");
}

#[test]
fn a_file_of_the_operators_where_the_link_would_go_is_not_replaced() {
    let other = "server { location / { proxy_pass http://127.0.0.1:8080; } }\n";
    let mut snap = snapshot(&[("/n/enabled/sentry", file(other))]);
    snap.found = vec![found("/n/enabled/sentry", "/n/enabled/sentry")];
    let err = plan(&[site(OURS)], &snap, &[], 3).unwrap_err();
    assert!(err.contains("/n/enabled/sentry is a file of its own, where Sentry's site would be linked"), "{err}");
}

#[test]
fn a_link_pointing_elsewhere_is_replaced() {
    let t = task(0, "enable", Action::Link { path: "/e/s".into(), target: "/a/s".into() }, &[]);
    let snap = snapshot(&[("/e/s", Entry::Link { target: "/a/old".into() })]);
    let plan = plan(std::slice::from_ref(&t), &snap, &[], 3).unwrap();
    assert_eq!(plan.files[0].diff, "link /e/s: link to /a/old -> /a/s\n");
    let done = snapshot(&[("/e/s", Entry::Link { target: "/a/s".into() })]);
    assert!(super::plan(&[t], &done, &[], 3).unwrap().is_empty());
}
