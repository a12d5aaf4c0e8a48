//! What an operator sees and reaches for: progress on a terminal (through
//! tmux) and plain lines when piped, JSON output, rolling batches, the audit,
//! and the side commands with their help.

mod common;

use common::{Fleet, bin, edit, needs, playbook_copy, tuning_playbook};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn progress_draws_bars_on_a_terminal_and_plain_lines_when_piped() {
    needs!(Sandbox);
    if Command::new("tmux").arg("-V").output().is_err() {
        let out =
            Command::new("sh").args(["-c", "apt-get update -qq && apt-get install -y -qq tmux"]).output().unwrap();
        assert!(out.status.success(), "installing tmux: {}", String::from_utf8_lossy(&out.stderr));
    }
    let fleet = Fleet::up(2);
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let session = format!("sp-progress-{}", fleet.id);
    let command = format!(
        "{} apply -p {} -i {} --ssh-config {} -e sentry_worker_numprocs=2 > {}/report.txt; touch {}",
        bin(),
        tuning_playbook(),
        fleet.inventory().display(),
        fleet.ssh_config().display(),
        dir.path().display(),
        done.display()
    );
    tmux(&["new-session", "-d", "-s", &session, "-x", "160", "-y", "40", &command]);
    let started = Instant::now();
    let mut seen_bars = None;
    while !done.exists() && started.elapsed() < Duration::from_secs(60) {
        let screen = tmux(&["capture-pane", "-p", "-t", &session]);
        let host_line = screen
            .lines()
            .any(|l| l.contains("host1") && ["snapshot", "install", "handlers"].iter().any(|p| l.contains(p)));
        if host_line && screen.contains("/2 hosts") {
            seen_bars = Some(screen);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let bars = seen_bars.expect("a bar per host under an overall bar was drawn");
    while !done.exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let end = tmux(&["capture-pane", "-p", "-t", &session]);
    tmux(&["kill-session", "-t", &session]);
    assert!(!end.contains("/2 hosts"), "the bars are cleared at the end:\n{end}\n(while running:\n{bars})");
    let report = std::fs::read_to_string(dir.path().join("report.txt")).unwrap();
    assert!(report.contains("summary: 2 host(s): 0 ok, 2 changed"), "{report}");

    let piped = fleet.provision(&["apply", "-p", &tuning_playbook(), "-e", "sentry_worker_numprocs=2"]);
    assert_eq!(piped.code, 0, "{piped:?}");
    assert!(!piped.stdout.contains('\x1b') && !piped.stderr.contains('\x1b'), "no escape codes when piped: {piped:?}");
    let events: Vec<&str> = piped.stderr.lines().filter(|l| l.contains(" host1 ")).collect();
    assert!(events.iter().any(|l| l.ends_with(" host1 snapshot")), "plain lines with times: {piped:?}");
    assert!(events.iter().all(|l| l.trim_start().split('s').next().unwrap().parse::<f64>().is_ok()), "{events:?}");
    let quiet = fleet.provision(&["apply", "-q", "-p", &tuning_playbook(), "-e", "sentry_worker_numprocs=2"]);
    assert_eq!(quiet.stderr, "", "-q: {quiet:?}");
}

#[test]
fn apply_and_diff_print_one_json_document_when_asked() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let diff = fleet.provision(&["diff", "--format", "json", "-p", &tuning_playbook()]);
    assert_eq!(diff.code, 2, "{diff:?}");
    let document: Value = serde_json::from_str(&diff.stdout).unwrap();
    assert_eq!(document["command"], "check");
    assert_eq!(document["exit_code"], 2);
    let host = &document["hosts"][0];
    assert_eq!(host["status"], "changed");
    assert_eq!(host["round_trips"], 1);
    assert!(host["changes"].as_array().unwrap().iter().any(|c| c["diff"].as_str().unwrap().contains("+maxmemory 1gb")));
    assert!(diff.stderr.contains("summary: 1 host(s)"), "human messages on stderr: {diff:?}");

    let apply = fleet.provision(&[
        "apply",
        "--format",
        "json",
        "-q",
        "-p",
        &tuning_playbook(),
        "-e",
        "sentry_worker_numprocs=2",
    ]);
    let document: Value = serde_json::from_str(&apply.stdout).unwrap();
    assert_eq!(document["summary"]["changed"], 1);
    let handlers: Vec<&str> =
        document["hosts"][0]["handlers"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(
        handlers,
        ["apply redis settings live", "test and reload nginx", "restart sentry web", "update supervisor"]
    );
    assert_eq!(document["hosts"][0]["round_trips"], 3);
}

#[test]
fn serial_batches_run_one_after_another_and_max_fail_percentage_stops_the_rest() {
    needs!(Sandbox);
    let fleet = Fleet::up(3);
    let copy = playbook_copy();
    let path = copy.path().join("playbooks/sentry-tuning.yml");
    edit(&path, "  hosts: sentry_redis\n", "  hosts: sentry_redis\n  serial: 1\n  max_fail_percentage: 0\n");
    let playbook = path.display().to_string();

    fleet.exec(1, "kill $(cat /run/sshd.pid)");
    let stopped =
        fleet.provision(&["apply", "-p", &playbook, "-e", "sentry_worker_numprocs=2", "--connect-timeout", "3"]);
    assert!(stopped.has_bit(8) && stopped.has_bit(4), "{stopped:?}");
    assert!(stopped.stderr.contains("batch 1/3: host1") && !stopped.stderr.contains("batch 2/3"), "{stopped:?}");
    assert_eq!(
        stopped.stdout.matches("not run: 1 of 1 host(s) in batch 1 failed, over max_fail_percentage 0").count(),
        2,
        "{stopped:?}"
    );
    assert_eq!(fleet.exec(2, "redis-cli config get maxmemory | sed -n 2p"), "0\n", "host2 was not touched");

    fleet.exec(1, "/usr/sbin/sshd");
    let rolled = fleet.provision(&["apply", "-p", &playbook, "-e", "sentry_worker_numprocs=2"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    // Each batch finishes, handlers included, before the next starts.
    // Plain progress lines: "  12.283s batch 3/3: host3", "  19.177s host3 changed".
    let events: Vec<&str> =
        rolled.stderr.lines().filter_map(|l| l.trim_start().split_once("s ").map(|(_, event)| event)).collect();
    let order: Vec<&str> = events.into_iter().filter(|e| e.starts_with("batch ") || e.ends_with(" changed")).collect();
    let expected: Vec<String> =
        (1..=3).flat_map(|n| [format!("batch {n}/3: host{n}"), format!("host{n} changed")]).collect();
    assert_eq!(order, expected, "{rolled:?}");
}

#[test]
fn audit_says_where_a_host_strays_from_the_guide_and_nothing_once_tuned() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let before = fleet.provision(&["audit"]);
    assert_eq!(before.code, 2, "{before:?}");
    for finding in [
        "RDB snapshots are on",
        "Redis has no memory cap (maxmemory 0)",
        "Redis evicts with `noeviction` at its cap",
        "Sentry workers run at concurrency -c 64",
        "numprocs=16 with `-c 4` gives the same 64 slots",
        "Sentry web speaks HTTP behind nginx `proxy_pass`",
        "3 web worker(s) for",
        "no memmon event listener",
    ] {
        assert!(before.stdout.contains(finding), "missing `{finding}`: {before:?}");
    }
    let untouched = fleet.fingerprint(1);
    assert_eq!(fleet.provision(&["audit", "--format", "json"]).code, 2);
    assert_eq!(fleet.fingerprint(1), untouched, "the audit reads only");
    assert_eq!(fleet.provision(&["apply", "-q", "-p", &tuning_playbook(), "-e", "sentry_worker_numprocs=2"]).code, 0);
    let after = fleet.provision(&["audit"]);
    assert_eq!(after.code, 0, "{after:?}");
    assert!(after.stdout.contains("host1: as the tuning guide recommends"), "{after:?}");
}

#[test]
fn the_side_commands_work_offline_and_every_help_ends_with_an_example() {
    let repo = common::repo();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.current_dir(&repo).args(args);
        common::run(cmd)
    };
    let list: Value = serde_json::from_str(&run(&["inventory", "-i", "inventory", "--list"]).stdout).unwrap();
    assert_eq!(list["_meta"]["hostvars"]["sentry-worker01.example.com"]["sentry_worker_numprocs"], 24);
    assert_eq!(list["sentry"]["children"], serde_json::json!(["sentry_redis", "sentry_web", "sentry_workers"]));
    let graph = run(&["inventory", "-i", "inventory", "--graph"]).stdout;
    assert!(
        graph.starts_with(
            "@all:\n|--@sentry:\n|  |--@sentry_redis:\n|  |  |--@sentry_all_in_one:\n|  |  |  |--sentry.example.com\n"
        ),
        "{graph}"
    );
    let host: Value =
        serde_json::from_str(&run(&["inventory", "-i", "inventory", "--host", "sentry-web01.example.com"]).stdout)
            .unwrap();
    assert_eq!(host["ansible_user"], "deploy");
    let typo = run(&["inventory", "-i", "inventory", "--host", "sentry-web1.example.com"]);
    assert!(typo.code == 1 && typo.stderr.contains("did you mean `sentry-web01.example.com`?"), "{typo:?}");

    let out = tempfile::tempdir().unwrap();
    let rendered = run(&["render", "-i", "inventory", "--out", out.path().to_str().unwrap()]);
    assert_eq!(rendered.code, 0, "{rendered:?}");
    let worker = std::fs::read_to_string(
        out.path().join("sentry-worker01.example.com/etc/supervisor/conf.d/sentry-worker.conf"),
    )
    .unwrap();
    assert!(worker.contains("numprocs=24"), "{worker}");
    let site = run(&["render", "-i", "inventory", "--host", "sentry-web01.example.com"]).stdout;
    assert!(site.contains("uwsgi_pass 127.0.0.1:9000;"), "{site}");

    let checked = run(&["check-playbook", "-i", "inventory"]);
    assert!(
        checked.code == 0
            && checked.stdout.contains(": ok (3 play(s), 10 step(s), 3 template(s), checked for 5 host(s))"),
        "{checked:?}"
    );
    assert!(run(&["completions", "bash"]).stdout.contains("sentry-provision"));
    assert!(run(&["man"]).stdout.contains(".TH sentry-provision"));

    for command in
        ["apply", "diff", "drift", "audit", "inventory", "facts", "render", "check-playbook", "completions", "man"]
    {
        let help = run(&[command, "--help"]).stdout;
        let last = help.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        assert!(
            last.trim_start().starts_with("sentry-provision "),
            "`{command} --help` ends with an example, not `{last}`"
        );
    }
}
