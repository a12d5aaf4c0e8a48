//! The core promise, on real hosts: `diff` shows the tuning and touches
//! nothing, `apply` converges every host to Sentry's tuning guide (checked
//! through Redis, nginx, uwsgi and supervisord themselves), a second apply
//! changes nothing, and failures stay with their host.

mod common;

use common::{Fleet, edit, needs, playbook_copy, tuning_playbook};

#[test]
fn check_with_diff_shows_the_tuning_and_touches_no_host() {
    needs!(Sandbox);
    let fleet = Fleet::up(3);
    let before: Vec<String> = (1..=3).map(|h| fleet.fingerprint(h)).collect();

    let out = fleet.provision(&["apply", "--check", "--diff", "-p", &tuning_playbook()]);
    assert_eq!(out.code, 2, "changes pending is exit 2: {out:?}");
    for expected in [
        "-save 900 1",
        "+save \"\"",
        "+maxmemory 1gb",
        "+maxmemory-policy allkeys-lru",
        "+        uwsgi_pass 127.0.0.1:9000;",
        "-        proxy_pass http://127.0.0.1:9000;",
        "+    'protocol': 'uwsgi',",
        "-numprocs=1",
        "+numprocs=16",
        "run worker -c 4 -l WARNING -n worker-%(process_num)02d",
        "+events=TICK_60",
        "would run handler  test and reload nginx",
    ] {
        assert!(out.stdout.contains(expected), "missing `{expected}`: {out:?}");
    }
    assert_eq!(out.stdout.matches("-c 64; above 4 is a smell").count(), 3, "{out:?}");

    let shorter = fleet.provision(&["diff", "-p", &tuning_playbook()]);
    assert_eq!(shorter.code, 2, "{shorter:?}");
    let without_timings =
        |text: &str| text.lines().map(|l| l.split(" round trip(s), ").next().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(without_timings(&shorter.stdout), without_timings(&out.stdout), "diff is apply --check --diff");

    let after: Vec<String> = (1..=3).map(|h| fleet.fingerprint(h)).collect();
    assert_eq!(before, after, "hashes, mtimes and daemon PIDs are unchanged");
}

#[test]
fn apply_converges_every_host_and_a_second_apply_changes_nothing() {
    needs!(Sandbox);
    let fleet = Fleet::up(3);
    let out = fleet.provision(&["apply", "-p", &tuning_playbook()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("summary: 3 host(s): 0 ok, 3 changed, 0 failed, 0 unreachable"), "{out:?}");
    assert_eq!(out.stdout.matches("  handler  test and reload nginx").count(), 3, "{out:?}");

    for host in 1..=3 {
        let config = |key: &str| {
            fleet.exec(host, &format!("redis-cli config get {key} | sed -n 2p")).trim_end_matches('\n').to_owned()
        };
        assert_eq!(config("maxmemory"), "1073741824");
        assert_eq!(config("maxmemory-policy"), "allkeys-lru");
        assert_eq!(config("save"), "");
        assert_eq!(config("appendonly"), "no");

        assert!(fleet.exec(host, "nginx -T 2>/dev/null").contains("uwsgi_pass 127.0.0.1:9000;"));
        // The operator's vhost answers its own name; Debian's default site the rest.
        let response = std::process::Command::new("curl")
            .args(["-si", "--max-time", "5", "-H", &format!("Host: sentry.host{host}.test")])
            .arg(format!("http://{}/", fleet.address(host)))
            .output()
            .unwrap();
        let response = String::from_utf8_lossy(&response.stdout);
        assert!(response.starts_with("HTTP/1.1 200"), "host{host}: {response}");
        assert!(response.contains("X-Sentry-Web-Protocol: uwsgi"), "answered over uwsgi: {response}");

        let status = fleet.exec(host, "supervisorctl status");
        let running = status.lines().filter(|l| l.starts_with("worker:worker_") && l.contains("RUNNING")).count();
        assert_eq!(running, 16, "{status}");
        assert!(status.lines().any(|l| l.starts_with("memmon") && l.contains("RUNNING")), "{status}");

        // Redis restarted from its file: snapshots stay off.
        fleet.exec(host, "redis-cli shutdown nosave >/dev/null 2>&1; sleep 0.3; redis-server /etc/redis/redis.conf");
        fleet.exec(host, "for i in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done");
        assert_eq!(config("save"), "", "no snapshots after a restart");
        assert_eq!(config("maxmemory"), "1073741824");
    }

    let before: Vec<String> = (1..=3).map(|h| fleet.fingerprint(h)).collect();
    let again = fleet.provision(&["apply", "-p", &tuning_playbook()]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("summary: 3 host(s): 3 ok, 0 changed, 0 failed, 0 unreachable"), "{again:?}");
    assert!(!again.stdout.contains("handler  "), "no handler runs: {again:?}");
    assert_eq!(again.stdout.matches(" 0 changed, 0 handler(s), 1 round trip(s)").count(), 3, "{again:?}");
    let after: Vec<String> = (1..=3).map(|h| fleet.fingerprint(h)).collect();
    assert_eq!(before, after, "nothing written, nothing reloaded");
}

#[test]
fn an_unreachable_host_sets_bit_8_and_the_others_still_converge() {
    needs!(Sandbox);
    let fleet = Fleet::up(3);
    fleet.exec(2, "kill $(cat /run/sshd.pid)");
    let untouched = fleet.fingerprint(2);

    let out = fleet.provision(&["apply", "-p", &tuning_playbook(), "--connect-timeout", "3"]);
    assert!(out.has_bit(8), "{out:?}");
    assert!(!out.has_bit(1), "{out:?}");
    assert!(out.stdout.contains("unreachable  connect:"), "{out:?}");
    assert!(out.stdout.contains("2 changed, 0 failed, 1 unreachable"), "{out:?}");
    for host in [1, 3] {
        assert_eq!(fleet.exec(host, "redis-cli config get maxmemory | sed -n 2p").trim(), "1073741824");
    }
    assert_eq!(fleet.fingerprint(2), untouched);
}

#[test]
fn a_template_syntax_error_exits_1_naming_file_and_line_and_touches_no_host() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let copy = playbook_copy();
    let template = copy.path().join("templates/nginx-sentry.conf.j2");
    edit(&template, "server_name {{ nginx_server_name }};", "server_name {{ nginx_server_name ;");
    let before = fleet.fingerprint(1);

    let playbook = copy.path().join(common::TUNING_PLAYBOOK).display().to_string();
    let out = fleet.provision(&["apply", "-p", &playbook]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("nginx-sentry.conf.j2:5"), "names the file and line: {out:?}");
    assert!(out.stdout.is_empty(), "no host was contacted: {out:?}");
    assert_eq!(fleet.fingerprint(1), before);
}

#[test]
fn an_undefined_variable_exits_1_before_any_host_is_touched() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let copy = playbook_copy();
    let template = copy.path().join("templates/supervisor-memmon.conf.j2");
    std::fs::write(&template, "[eventlistener:memmon]\ncommand=memmon -a {{ memmon_limt }}\n").unwrap();
    let before = fleet.fingerprint(1);
    let playbook = copy.path().join(common::TUNING_PLAYBOOK).display().to_string();
    let out = fleet.provision(&["apply", "-p", &playbook]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("supervisor-memmon.conf.j2:2") && out.stderr.contains("undefined"), "{out:?}");
    assert_eq!(fleet.fingerprint(1), before);
}
