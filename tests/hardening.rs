//! The host and the variables as adversaries, on real sandbox hosts: a value
//! meant as data that carries shell stays data in every command of the
//! shipped playbook, and `audit` reads `sentry.conf.py` without running it.

mod common;

use common::{Fleet, Outcome, tuning_playbook};

/// Fewer workers keep each converge quick; the tuning is the same.
const LIGHT: [&str; 2] = ["-e", "sentry_worker_numprocs=2"];

fn run(fleet: &Fleet, command: &str, extra: &[&str]) -> Outcome {
    let playbook = tuning_playbook();
    let mut args = vec![command, "-p", playbook.as_str()];
    args.extend_from_slice(&LIGHT);
    args.extend_from_slice(extra);
    if command == "drift" {
        args.extend_from_slice(&["--history", "/dev/null"]);
    }
    fleet.provision(&args)
}

/// The files the shell in the values below would create on the host.
const PLANTED: &str = "/root/pwned*";

fn planted(fleet: &Fleet) -> String {
    fleet.exec(1, &format!("ls -d {PLANTED} 2>/dev/null; true")).trim().to_owned()
}

#[test]
fn variables_carrying_shell_stay_data_in_the_playbooks_commands_and_a_normal_apply_still_converges() {
    let fleet = Fleet::up(1);
    // As JSON, since `-e KEY=VALUE` splits at spaces. Each of these reaches
    // a handler, a probe or a validate command of the shipped playbook.
    let hostile = r#"{"redis_maxmemory_policy": "allkeys-lru; touch /root/pwned-policy",
                      "sentry_web_program": "sentry-web; touch /root/pwned-program",
                      "supervisor_socket": "/var/run/supervisor.sock; touch /root/pwned-socket",
                      "supervisor_conf": "/etc/supervisor/supervisord.conf; touch /root/pwned-validate"}"#;

    let apply = run(&fleet, "apply", &["-e", hostile]);
    assert!(apply.has_bit(4), "the host fails cleanly: {apply:?}");
    assert!(apply.stdout.contains("Redis would refuse it"), "the odd policy is refused by the check: {apply:?}");
    assert_eq!(planted(&fleet), "", "no value ran as shell during apply: {apply:?}");

    let drift = run(&fleet, "drift", &["-e", hostile]);
    assert!(drift.has_bit(2), "{drift:?}");
    assert!(
        drift.stdout.contains("maxmemory-policy: expected 'allkeys-lru; touch /root/pwned-policy'"),
        "the probe compares the value as one word: {drift:?}"
    );
    assert_eq!(planted(&fleet), "", "no value ran as shell during drift: {drift:?}");

    let apply = run(&fleet, "apply", &["-q"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    let drift = run(&fleet, "drift", &[]);
    assert_eq!(drift.code, 0, "converged and in sync, probes included: {drift:?}");
    let again = run(&fleet, "apply", &[]);
    assert!(again.code == 0 && again.stdout.contains("0 changed, 0 handler(s)"), "{again:?}");
}

/// Replaces host 1's sentry.conf.py with `python`, which also writes
/// /root/executed if anything runs it.
fn sentry_conf(fleet: &Fleet, python: &str) {
    let text = format!("import os\nopen('/root/executed', 'w').write('ran')\n{python}");
    fleet.exec(1, &format!("printf '%s' {} > /etc/sentry/sentry.conf.py", common::shell_quote(&text)));
}

#[test]
fn audit_reads_sentry_conf_without_running_it_and_says_which_options_are_dynamic() {
    let fleet = Fleet::up(1);
    sentry_conf(&fleet, "SENTRY_WEB_OPTIONS = {'protocol': 'uwsgi', 'workers': 1}\n");
    let literal = fleet.provision(&["audit"]);
    assert_eq!(literal.code, 2, "{literal:?}");
    assert!(literal.stdout.contains("1 web worker(s) for"), "the literal options are read: {literal:?}");
    assert!(!literal.stdout.contains("Sentry web speaks HTTP"), "the protocol is read as uwsgi: {literal:?}");
    assert!(!literal.stdout.contains("dynamic"), "{literal:?}");
    assert_eq!(fleet.exec(1, "ls /root/executed 2>/dev/null; true"), "", "audit ran sentry.conf.py");

    sentry_conf(&fleet, "SENTRY_WEB_OPTIONS = {'protocol': 'uwsgi', 'workers': os.cpu_count() * 3}\n");
    let dynamic = fleet.provision(&["audit"]);
    assert_eq!(dynamic.code, 2, "{dynamic:?}");
    assert!(
        dynamic.stdout.contains("SENTRY_WEB_OPTIONS['workers'] is dynamic: not evaluated (`os.cpu_count() * 3`)"),
        "{dynamic:?}"
    );
    assert!(!dynamic.stdout.contains("web worker(s) for"), "an unknown count is not judged: {dynamic:?}");
    assert!(!dynamic.stdout.contains("Sentry web speaks HTTP"), "the protocol is still read: {dynamic:?}");
    assert_eq!(fleet.exec(1, "ls /root/executed 2>/dev/null; true"), "", "audit ran sentry.conf.py");
}
