//! Safety on real hosts: a run killed anywhere leaves every file old or new
//! and the next run converges (reloads included); a candidate that fails
//! validation never stays active; rollback, backups, the host lock, hosts
//! that die mid-run, host keys, secrets and `become`.

mod common;

use common::{Fleet, LIGHT, Outcome, bin, edit, needs, playbook_copy, tuning_playbook};
use std::process::Command;
use std::time::Instant;

const MANAGED: [&str; 5] = [
    "/etc/nginx/sites-enabled/sentry",
    "/etc/redis/redis.conf",
    "/etc/sentry/sentry.conf.py",
    "/etc/supervisor/conf.d/memmon.conf",
    "/etc/supervisor/conf.d/sentry-worker.conf",
];

fn apply(fleet: &Fleet, extra: &[&str]) -> Outcome {
    fleet.apply(extra)
}

fn hashes(fleet: &Fleet) -> Vec<String> {
    let out = fleet.exec(
        1,
        &format!(
            "for f in {}; do if [ -e $f ]; then sha256sum < $f | cut -c1-16; else echo absent; fi; done",
            MANAGED.join(" ")
        ),
    );
    out.lines().map(str::to_owned).collect()
}

fn save_before(fleet: &Fleet) {
    fleet.exec(1, &format!("mkdir -p /var/tmp/before && for f in {}; do [ -e $f ] && cp -a $f /var/tmp/before/$(echo $f | tr / _); done; true", MANAGED.join(" ")));
}

fn restore_before(fleet: &Fleet) {
    fleet.exec(
        1,
        &format!(
            "for f in {}; do b=/var/tmp/before/$(echo $f | tr / _); if [ -e $b ]; then cp -a $b $f; else rm -f $f; fi; done; rm -rf /var/lib/sentry-provision",
            MANAGED.join(" ")
        ),
    );
}

fn redis_live(fleet: &Fleet, host: usize, key: &str) -> String {
    fleet.exec(host, &format!("redis-cli config get {key} | sed -n 2p")).trim().to_owned()
}

fn apply_crashing_at(fleet: &Fleet, point: &str) -> Outcome {
    let playbook = tuning_playbook();
    let mut cmd = Command::new(bin());
    cmd.args(["apply", "-p", &playbook])
        .args(LIGHT)
        .arg("-i")
        .arg(fleet.inventory())
        .arg("--ssh-config")
        .arg(fleet.ssh_config());
    cmd.env("SENTRY_PROVISION_CRASH_AT", point);
    common::run(cmd)
}

#[test]
fn a_run_killed_at_any_of_23_points_leaves_files_old_or_new_and_the_next_run_converges() {
    needs!(Sandbox, TestHooks);
    let fleet = Fleet::up(1);
    save_before(&fleet);
    let before = hashes(&fleet);
    let converged = apply(&fleet, &[]);
    assert_eq!(converged.code, 0, "{converged:?}");
    let after = hashes(&fleet);

    let mut points: Vec<String> =
        ["after-snapshot", "after-install", "after-handlers", "record", "applied"].map(String::from).to_vec();
    for i in 0..5 {
        points.push(format!("file:{i}:staged"));
        points.push(format!("file:{i}:placed"));
    }
    for i in [0, 2, 3, 4] {
        points.push(format!("file:{i}:validated"));
    }
    for i in 0..4 {
        points.push(format!("handler:{i}:ran"));
    }
    assert!(points.len() >= 20);
    for point in &points {
        restore_before(&fleet);
        let crashed = apply_crashing_at(&fleet, point);
        assert_eq!(crashed.code, -1, "killed at {point}: {crashed:?}");
        for (i, (now, (old, new))) in hashes(&fleet).iter().zip(before.iter().zip(&after)).enumerate() {
            assert!(now == old || now == new, "killed at {point}: {} is neither old nor new", MANAGED[i]);
        }
        let next = apply(&fleet, &[]);
        assert_eq!(next.code, 0, "after a kill at {point}: {next:?}");
        assert_eq!(hashes(&fleet), after, "after a kill at {point}");
        assert_eq!(redis_live(&fleet, 1, "maxmemory"), "1073741824", "after a kill at {point}");
        let leftovers = fleet.exec(1, "find /etc /var/lib/sentry-provision -name '.sentry-provision*' -o -name '.pending.*' -o -name '.applied.*'");
        assert_eq!(leftovers, "", "after a kill at {point}");
    }
}

#[test]
fn a_reload_owed_by_a_killed_run_is_reported_and_run_by_the_next() {
    needs!(Sandbox, TestHooks);
    let fleet = Fleet::up(1);
    assert_eq!(redis_live(&fleet, 1, "maxmemory"), "0");
    let crashed = apply_crashing_at(&fleet, "after-install");
    assert_eq!(crashed.code, -1, "{crashed:?}");
    assert_eq!(redis_live(&fleet, 1, "maxmemory"), "0", "files moved, Redis not reloaded yet");

    let playbook = tuning_playbook();
    let check = fleet.provision(&["diff", "-p", &playbook, "-e", "sentry_worker_numprocs=2"]);
    assert_eq!(check.code, 2, "{check:?}");
    assert!(check.stdout.contains("handler `apply redis settings live` left pending by an earlier run"), "{check:?}");
    let drift =
        fleet.provision(&["drift", "-p", &playbook, "-e", "sentry_worker_numprocs=2", "--history", "/dev/null"]);
    assert!(
        drift.stdout.contains("handler apply redis settings live: a handler an earlier run did not finish"),
        "{drift:?}"
    );

    let next = apply(&fleet, &[]);
    assert_eq!(next.code, 0, "{next:?}");
    assert!(next.stdout.contains("  handler  apply redis settings live"), "{next:?}");
    assert_eq!(redis_live(&fleet, 1, "maxmemory"), "1073741824");
}

#[test]
fn a_candidate_that_fails_validation_is_never_left_active_and_nginx_keeps_serving() {
    needs!(Sandbox);
    // No vhost of the operator's: Sentry's own site and its link go in,
    // are checked together, and both go back.
    let fleet = Fleet::of(&["novhost"]);
    let copy = playbook_copy();
    let template = copy.path().join("templates/nginx-sentry.conf.j2");
    edit(&template, "    client_max_body_size", "    bogus_directive on;\n    client_max_body_size");
    let sites_before = fleet.exec(1, "ls -A /etc/nginx/sites-available /etc/nginx/sites-enabled");

    let playbook = copy.path().join("playbooks/sentry-tuning.yml").display().to_string();
    let out = fleet.provision(&["apply", "-p", &playbook, "-e", "sentry_worker_numprocs=2", "--backup"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("check `nginx -t` failed with every file of the run in place"), "{out:?}");
    assert!(out.stdout.contains("every file of the run is back as it was, and no handler ran"), "{out:?}");
    assert!(out.stdout.contains("unknown directive \"bogus_directive\""), "the validator's own message: {out:?}");
    assert_eq!(fleet.exec(1, "ls -A /etc/nginx/sites-available /etc/nginx/sites-enabled"), sites_before);
    fleet.exec(1, "nginx -t 2>/dev/null");
    let status = fleet.exec(1, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/");
    assert_eq!(status, "200");
}

#[test]
fn backups_keep_the_previous_version_where_no_service_loads_it_and_are_listed() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let redis_before = fleet.exec(1, "cat /etc/redis/redis.conf");
    let out = apply(&fleet, &["--backup"]);
    assert_eq!(out.code, 0, "{out:?}");
    let path = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("backup  /etc/redis/redis.conf -> "))
        .expect("listed with the file it copies");
    assert!(
        path.starts_with("/var/lib/sentry-provision/backups/") && path.ends_with("/etc/redis/redis.conf"),
        "{path}"
    );
    assert_eq!(fleet.exec(1, &format!("cat {path}")), redis_before);
    assert_eq!(fleet.exec(1, "ls /etc/redis"), "redis.conf\n", "nothing beside the file");

    // The operator's vhost is a regular file in sites-enabled/, whose every
    // entry nginx loads: its old proxy_pass copy must not be served beside it.
    assert!(out.stdout.contains("backup  /etc/nginx/sites-enabled/sentry -> "), "{out:?}");
    assert_eq!(fleet.exec(1, "ls -A /etc/nginx/sites-enabled"), "default\nsentry\n");
    let sentry = fleet.curl(1, &["-si", "-H", "Host: sentry.host1.test", "http://127.0.0.1/"]);
    assert!(sentry.stdout.contains("X-Sentry-Web-Protocol: uwsgi"), "{sentry:?}");
    assert!(!fleet.exec(1, "nginx -T 2>/dev/null").contains("proxy_pass http://127.0.0.1:9000"), "no old vhost loaded");
}

#[test]
fn a_failing_handler_takes_the_run_back_and_runs_it_again_on_the_previous_files() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    assert_eq!(apply(&fleet, &[]).code, 0);
    let worker_before = fleet.exec(1, "cat /etc/supervisor/conf.d/sentry-worker.conf");
    let out = apply(&fleet, &["-e", "sentry_bin=/nonexistent/sentry"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("handler `update supervisor`"), "{out:?}");
    assert!(out.stdout.contains("rolled back 1 file(s) and ran `update supervisor` again on them"), "{out:?}");
    assert!(out.stdout.contains("rolled back  /etc/supervisor/conf.d/sentry-worker.conf"), "{out:?}");
    assert_eq!(fleet.exec(1, "cat /etc/supervisor/conf.d/sentry-worker.conf"), worker_before);
    let status = fleet.exec(1, "supervisorctl status");
    assert_eq!(status.lines().filter(|l| l.starts_with("worker:") && l.contains("RUNNING")).count(), 2, "{status}");
}

#[test]
fn two_runs_never_interleave_and_a_dead_run_releases_the_lock() {
    needs!(Sandbox, TestHooks);
    let fleet = Fleet::up(1);
    assert_eq!(apply(&fleet, &[]).code, 0);
    // Timed from before the other holder takes the lock, so that a slow
    // busy run below (a loaded machine) cannot eat the wait being measured.
    let held_since = Instant::now();
    fleet.exec(1, "flock /var/lib/sentry-provision/lock sleep 4 </dev/null >/dev/null 2>&1 &");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let busy = apply(&fleet, &["--lock-timeout", "1"]);
    assert_eq!(busy.code, 4, "{busy:?}");
    assert!(busy.stdout.contains("another run holds the host's lock"), "{busy:?}");
    let waited = apply(&fleet, &["--lock-timeout", "20"]);
    assert_eq!(waited.code, 0, "{waited:?}");
    assert!(held_since.elapsed().as_secs_f64() > 4.0, "it waited for the lock (held 4 s)");

    assert_eq!(apply_crashing_at(&fleet, "after-snapshot").code, -1);
    let after_death = apply(&fleet, &["--lock-timeout", "3"]);
    assert_eq!(after_death.code, 0, "the killed run's lock was released: {after_death:?}");
}

#[test]
fn a_host_whose_sshd_dies_mid_run_is_unreachable_and_the_others_finish() {
    needs!(Sandbox);
    let fleet = Fleet::up(3);
    let copy = playbook_copy();
    let playbook_path = copy.path().join("playbooks/sentry-tuning.yml");
    edit(
        &playbook_path,
        "    - name: apply redis settings live\n      command: |\n",
        "    - name: apply redis settings live\n      command: |\n        {% if inventory_hostname == 'host2' %}pkill -9 --ns $$ --nslist net sshd; sleep 5\n        {% endif %}\n",
    );
    let out = fleet.provision(&[
        "apply",
        "-p",
        playbook_path.to_str().unwrap(),
        "-e",
        "sentry_worker_numprocs=2",
        "--command-timeout",
        "60",
    ]);
    assert!(out.has_bit(8), "{out:?}");
    assert!(out.stdout.contains("2 changed, 0 failed, 1 unreachable"), "{out:?}");
    for host in [1, 3] {
        assert_eq!(redis_live(&fleet, host, "maxmemory"), "1073741824");
    }
}

#[test]
fn unknown_host_keys_are_refused_unless_accepted_and_changed_ones_always() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let config = dir.path().join("ssh_config");
    let original = std::fs::read_to_string(fleet.ssh_config()).unwrap();
    let rewritten: String = original
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("UserKnownHostsFile") {
                format!("    UserKnownHostsFile {}", known.display())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, rewritten + "\n").unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(["diff", "-p", &tuning_playbook(), "-i"])
            .arg(fleet.inventory())
            .arg("--ssh-config")
            .arg(&config)
            .args(extra);
        common::run(cmd)
    };
    let unknown = run(&[]);
    assert_eq!(unknown.code, 8, "{unknown:?}");
    assert!(
        unknown.stdout.contains("is unknown (not in known_hosts)") && unknown.stdout.contains("--accept-new-host-keys"),
        "{unknown:?}"
    );
    let accepted = run(&["--accept-new-host-keys"]);
    assert_eq!(accepted.code, 2, "{accepted:?}");
    assert!(std::fs::read_to_string(&known).unwrap().contains(&fleet.address(1)));

    // A different key for the same address: what an attacker (or a reinstall) looks like.
    let fake = std::fs::read_to_string(fleet.ssh_config().with_file_name("id_ed25519.pub")).unwrap();
    let fake_key: Vec<&str> = fake.split_whitespace().take(2).collect();
    std::fs::write(&known, format!("{} {}\n", fleet.address(1), fake_key.join(" "))).unwrap();
    let changed = run(&["--accept-new-host-keys"]);
    assert_eq!(changed.code, 8, "{changed:?}");
    assert!(changed.stdout.contains("has CHANGED") && changed.stdout.contains("ssh-keygen -R"), "{changed:?}");
}

#[test]
fn a_secret_appears_in_no_output_of_check_apply_or_drift() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let secret = "S3cr3t-Value-42";
    let copy = playbook_copy();
    std::fs::write(
        copy.path().join("templates/secret.conf.j2"),
        "# sentry secrets\nsystem.secret-key = {{ sentry_secret_key }}\nredis password {{ redis_password }}\n",
    )
    .unwrap();
    let playbook_path = copy.path().join("playbooks/sentry-tuning.yml");
    edit(
        &playbook_path,
        "  steps:\n",
        "  steps:\n    - name: Sentry secrets\n      template: {src: secret.conf.j2, dest: /etc/sentry/secret.conf, mode: \"0600\"}\n      notify: announce\n",
    );
    edit(
        &playbook_path,
        "  handlers:\n",
        // Fails while the host has /tmp/announce-fails: once, then the run is rolled back.
        "  handlers:\n    - name: announce\n      command: echo \"loaded {{ redis_password }}\"; echo \"secret {{ sentry_secret_key }} rejected\" >&2; ! [ -e /tmp/announce-fails ]\n",
    );
    let playbook = playbook_path.display().to_string();
    let vars = [
        "-e",
        &*format!("redis_password={secret}"),
        "-e",
        "sentry_secret_key=Another-Secret-99",
        "-e",
        "sentry_worker_numprocs=2",
    ];
    let mut outputs: Vec<Outcome> = Vec::new();
    let run = |args: &[&str], outputs: &mut Vec<Outcome>| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-p", &playbook, "-vv"]);
        all.extend_from_slice(&vars);
        outputs.push(fleet.provision(&all));
    };
    run(&["apply", "--check", "--diff"], &mut outputs);
    run(&["diff"], &mut outputs);
    fleet.exec(1, "touch /tmp/announce-fails");
    run(&["apply", "--diff"], &mut outputs);
    fleet.exec(1, "rm /tmp/announce-fails");
    run(&["apply"], &mut outputs);
    fleet.exec(1, "sed -i 's/^redis password .*/redis password changed-by-hand/' /etc/sentry/secret.conf");
    for format in ["human", "json", "prometheus"] {
        run(&["drift", "-D", "--format", format, "--history", "/dev/null"], &mut outputs);
    }
    assert!(outputs[2].code & 4 != 0, "the failing handler fails the host: {:?}", outputs[2]);
    assert!(outputs[2].stdout.contains("rolled back  /etc/sentry/secret.conf"), "{:?}", outputs[2]);
    assert_eq!(outputs[3].code, 0, "{:?}", outputs[3]);
    assert!(outputs[4].stdout.contains("/etc/sentry/secret.conf"), "drift names the file: {:?}", outputs[4]);
    for out in &outputs {
        for value in [secret, "Another-Secret-99"] {
            assert!(!out.stdout.contains(value) && !out.stderr.contains(value), "{value} leaked: {out:?}");
        }
    }
    assert!(
        fleet.exec(1, "cat /etc/sentry/secret.conf").contains("system.secret-key = Another-Secret-99"),
        "the host has it"
    );
}

#[test]
fn become_writes_root_owned_files_as_a_non_root_user_and_a_missing_sudo_right_fails_clearly() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    fleet.exec(1, "useradd -M -s /bin/sh deploy && useradd -M -s /bin/sh nosudo && echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy");
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(fleet.inventory().join("hosts.ini")).unwrap();
    let inventory_as = |user: &str| {
        let path = dir.path().join(format!("{user}.ini"));
        std::fs::write(
            &path,
            original.replace("ansible_user=root", &format!("ansible_user={user}\nansible_become=true")),
        )
        .unwrap();
        path
    };
    let run = |inventory: &std::path::Path| {
        let mut cmd = Command::new(bin());
        cmd.args(["apply", "-p", &tuning_playbook()])
            .args(LIGHT)
            .arg("-i")
            .arg(inventory)
            .arg("--ssh-config")
            .arg(fleet.ssh_config());
        common::run(cmd)
    };
    let refused = run(&inventory_as("nosudo"));
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(refused.stdout.contains("sudo"), "{refused:?}");
    let out = run(&inventory_as("deploy"));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        fleet.exec(1, "stat -c '%U:%G %a' /etc/nginx/sites-enabled/sentry /etc/supervisor/conf.d/memmon.conf"),
        "root:root 644\nroot:root 644\n"
    );
    assert_eq!(fleet.exec(1, "stat -c '%U:%G %a' /etc/redis/redis.conf"), "redis:redis 640\n", "kept as it was");
}
