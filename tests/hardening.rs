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
