//! The host and the variables as adversaries, on real sandbox hosts: a value
//! meant as data that carries shell stays data in every command of the
//! shipped playbook, `audit` reads `sentry.conf.py` without running it, the
//! `redis` user racing the install in Debian's /etc/redis gets nothing of
//! root's, a state folder another user owns is refused, no secret shows on
//! a command line, a setgid mode sticks, a pid a local user slips into a
//! probe never reaches its arithmetic, even where sh is bash, a user's
//! listeners elsewhere on the web port change no finding, a user's
//! listener on Sentry web's own address while it is down is not taken for
//! it, and a template a host's root writes into its facts stays text.

mod common;

use common::{Fleet, LIGHT, Outcome, edit, needs, playbook_copy, tuning_playbook, tuning_variable};

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
    needs!(Sandbox);
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
    needs!(Sandbox);
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

/// Starts `script` on host `host` in the background as `user`, until the
/// host's `/tmp/stop-<tag>` exists or 90 s pass.
fn background(fleet: &Fleet, host: usize, user: &str, tag: &str, script: &str) {
    let looped = format!(
        "end=$(( $(date +%s) + 90 )); while [ ! -e /tmp/stop-{tag} ] && [ $(date +%s) -lt $end ]; do {script}; done"
    );
    fleet.exec(
        host,
        &format!(
            "rm -f /tmp/stop-{tag}; setsid su -s /bin/sh {user} -c {} </dev/null >/dev/null 2>&1 &",
            common::shell_quote(&looped)
        ),
    );
}

fn stop(fleet: &Fleet, host: usize, tag: &str) {
    fleet.exec(host, &format!("touch /tmp/stop-{tag}; sleep 0.5"));
}

/// What must hold: with a loop run as `redis` (which may write in Debian's
/// /etc/redis, 2770 redis:redis) turning every new entry there into a link
/// to a root-only file while apply runs, with and without `--backup`, the
/// root-only file is untouched (content, owner, mode) and redis.conf is a
/// regular file. Fails on the code that chmodded and chowned staged files by
/// path: the file became redis:redis 0640 and redis.conf a link to it.
#[test]
fn the_redis_user_swapping_staged_files_for_links_gets_nothing_of_roots() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    assert_eq!(fleet.exec(1, "stat -c '%a %U:%G' /etc/redis").trim(), "2770 redis:redis", "Debian's layout");
    fleet.exec(1, "printf 'root only\\n' >/root/secret && chmod 600 /root/secret");
    let secret = || fleet.exec(1, "stat -c '%a %U:%G' /root/secret && cat /root/secret");
    let before = secret();
    background(
        &fleet,
        1,
        "redis",
        "race",
        "for f in /etc/redis/.sentry-provision.*; do [ -f \"$f\" ] && ! [ -L \"$f\" ] && rm -f \"$f\" && ln -s /root/secret \"$f\"; done",
    );
    for extra in
        [&[][..], &["--backup"][..], &["-e", "redis_maxmemory=2gb"][..], &["-e", "redis_maxmemory=3gb", "--backup"][..]]
    {
        let out = run(&fleet, "apply", extra);
        assert!(out.code == 0 || out.has_bit(4), "{out:?}");
        assert_eq!(secret(), before, "root's file is as it was: {out:?}");
        assert_eq!(fleet.exec(1, "stat -c %F /etc/redis/redis.conf").trim(), "regular file", "{out:?}");
    }
    stop(&fleet, 1, "race");
}

/// What must hold: a `sentry_provision_state_dir` that another user owns is
/// refused, saying why, and nothing is kept there or changed on the host.
#[test]
fn a_state_folder_owned_by_another_user_is_refused() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    fleet.exec(1, "mkdir -p /var/tmp/planted && chown nobody /var/tmp/planted && chmod 700 /var/tmp/planted");
    let redis = fleet.exec(1, "sha256sum </etc/redis/redis.conf");
    let out = run(&fleet, "apply", &["-e", "sentry_provision_state_dir=/var/tmp/planted"]);
    assert!(out.has_bit(4), "{out:?}");
    assert!(
        out.stdout.contains("the state folder is refused")
            && out.stdout.contains("is not owned by the user the run works as"),
        "{out:?}"
    );
    assert_eq!(fleet.exec(1, "ls -A /var/tmp/planted"), "", "nothing kept there");
    assert_eq!(fleet.exec(1, "sha256sum </etc/redis/redis.conf"), redis, "nothing changed");
}

/// What must hold: while apply, drift and audit run with a Redis password
/// in a variable that reaches handlers and probes (`REDISCLI_AUTH=...`),
/// no process on the host shows it on its command line. Fails on the code
/// that ran commands as `sh -c '<text>'`.
#[test]
fn no_secret_shows_on_any_command_line_of_the_host() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let password = "S3cret-Value-77";
    fleet.exec(1, &format!("redis-cli CONFIG SET requirepass {password} >/dev/null"));
    // Every process's command line, sampled over and over.
    background(&fleet, 1, "root", "sample", "cat /proc/[0-9]*/cmdline >>/tmp/cmdlines 2>/dev/null");
    let cli = format!("{{\"redis_cli\": \"REDISCLI_AUTH={password} redis-cli\"}}");
    let applied = run(&fleet, "apply", &["-e", &cli]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let drifted = run(&fleet, "drift", &["-e", &cli]);
    assert_eq!(drifted.code, 0, "{drifted:?}");
    let audited = fleet.provision(&["audit"]);
    stop(&fleet, 1, "sample");
    let sampled = fleet.exec(1, "wc -c </tmp/cmdlines");
    assert!(sampled.trim().parse::<u64>().unwrap() > 100_000, "the sampler ran: {sampled}");
    let seen = fleet.exec(1, &format!("grep -a -c -- {} /tmp/cmdlines; true", &password[..10]));
    assert_eq!(seen.trim(), "0", "a command line showed the password ({audited:?})");
}

/// What must hold: a file whose mode is 2755 gets it (the owner is set
/// before the mode, since a chown clears setgid), and the next apply is idle.
#[test]
fn a_setgid_mode_sticks_and_the_next_apply_is_idle() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let copy = playbook_copy();
    std::fs::write(copy.path().join("templates/tool.j2"), "#!/bin/sh\necho tool\n").unwrap();
    let playbook = copy.path().join("playbooks/sentry-tuning.yml");
    edit(
        &playbook,
        "  steps:\n    - name: Remove RDB snapshot lines from redis.conf\n",
        "  steps:\n    - name: A setgid tool\n      template: {src: tool.j2, dest: /usr/local/bin/sp-tool, mode: \"2755\", owner: root, group: staff}\n      tags: [redis]\n    - name: Remove RDB snapshot lines from redis.conf\n",
    );
    let playbook = playbook.display().to_string();
    let apply = || fleet.provision(&["apply", "-p", &playbook, "-e", "sentry_worker_numprocs=2"]);
    let first = apply();
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(fleet.exec(1, "stat -c '%a %U:%G' /usr/local/bin/sp-tool").trim(), "2755 root:staff");
    let second = apply();
    assert_eq!(second.code, 0, "{second:?}");
    assert!(second.stdout.contains("1 ok, 0 changed"), "idle: {second:?}");
}

#[test]
fn a_pid_a_local_user_slips_into_a_probe_is_never_read_as_a_process() {
    // A pid read out of a file a user can write (a pidfile, a list) may be
    // `/../tmp/x`: /proc//../tmp/x/stat is then their file, whose start
    // time and parent they chose.
    let dir = tempfile::tempdir().unwrap();
    let fields: Vec<String> = (4..=21).map(|n| n.to_string()).collect();
    std::fs::write(dir.path().join("stat"), format!("1 (x) S {} 23\n", fields.join(" "))).unwrap();
    let slipped = format!("/..{}", dir.path().display());
    let script = format!(
        "{}\nprint \"slipped\\n\" if started('{slipped}');\nmy ($own) = started($$);\nprint \"own $own\\n\";\n",
        tuning_variable("process_age")
    );
    let out = std::process::Command::new("perl").arg("-e").arg(&script).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said} {}", String::from_utf8_lossy(&out.stderr));
    assert!(!said.contains("slipped"), "{said}");
    assert!(said.starts_with("own ") && said.trim().len() > 4, "a real pid still has an age: {said}");
}

/// Starts, as the unprivileged user eve, a process listening on
/// `address`:9000 and named `name` (`\n` in it a newline), a second later;
/// `name` `su` instead execs su (setuid root) through a link named
/// supervisord, which keeps the socket and, its input never ending, waits
/// for a password with an effective uid of 0.
fn listen_as_eve(fleet: &Fleet, address: &str, name: &str) {
    const LISTENER: &str = r#"import ctypes, os, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind((sys.argv[1], 9000))
s.listen()
if sys.argv[2] == "su":
    os.set_inheritable(s.fileno(), True)
    os.makedirs("/var/tmp/eve", exist_ok=True)
    os.symlink("/usr/bin/su", "/var/tmp/eve/supervisord")
    os.execv("/var/tmp/eve/supervisord", ["supervisord"])
ctypes.CDLL(None).prctl(15, sys.argv[2].replace("\\n", "\n").encode(), 0, 0, 0)
time.sleep(120)"#;
    fleet.exec(
        1,
        &format!(
            "(sleep 30 | setsid setpriv --reuid=eve --regid=eve --clear-groups python3 -c {} {} {}) </dev/null >/dev/null 2>&1 & sleep 1",
            common::shell_quote(LISTENER),
            common::shell_quote(address),
            common::shell_quote(name)
        ),
    );
}

#[test]
fn a_users_listeners_on_the_web_port_elsewhere_change_no_finding_whatever_their_names() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let applied = run(&fleet, "apply", &[]);
    assert_eq!(applied.code, 0, "{applied:?}");
    // An unprivileged user listens on the web port at another address, from
    // a process whose name holds a newline (the first line of its
    // /proc/PID/stat ends inside the name) and from one named so that ss's
    // answer seems to give pid 1 (started at boot, before any file).
    fleet.exec(1, "useradd -M eve");
    for name in [r"a\nb", "pid=1,"] {
        listen_as_eve(&fleet, "127.0.0.2", name);
    }
    let listening = fleet.exec(1, "ss -Hltnp 'sport = :9000'");
    assert_eq!(listening.matches("127.0.0.2").count(), 2, "both listeners are up: {listening}");
    let drift = run(&fleet, "drift", &[]);
    assert_eq!(drift.code, 0, "{drift:?}");
    fleet.exec(1, "pkill -u eve; true");
}

#[test]
fn a_users_listener_on_the_web_address_while_sentry_web_is_down_is_not_taken_for_it_whatever_its_name() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let applied = run(&fleet, "apply", &[]);
    assert_eq!(applied.code, 0, "{applied:?}");
    fleet.exec(1, "supervisorctl stop sentry-web >/dev/null; useradd -M eve");
    // An unprivileged user takes Sentry web's address and port while it is
    // down (nginx would send it Sentry's requests), from a process named as
    // supervisord, one whose name puts supervisord's pid first in ss's
    // answer, one whose name forges the first line of its /proc/PID/stat so
    // that its parent seems to be supervisord, and su (setuid root) exec'd
    // through a link named supervisord, keeping the socket, waiting for a
    // password with an effective uid of 0.
    let supervisord = fleet.exec(1, "cat /var/run/supervisord.pid").trim().to_owned();
    let names =
        ["supervisord".to_owned(), format!("pid={supervisord},"), format!(r"x) S {supervisord}\n"), "su".into()];
    for name in names {
        listen_as_eve(&fleet, "127.0.0.1", &name);
        assert!(fleet.exec(1, "ss -Hltnp 'src 127.0.0.1 and sport = :9000'").contains("pid="), "{name} listens");
        let drift = run(&fleet, "drift", &[]);
        assert_eq!(drift.code, 2, "{name}: {drift:?}");
        // The forged stat line cannot be read for a start time either: to
        // the probe, nothing it can date listens.
        let said = match name.starts_with("x)") {
            false => "sentry-web is not running: what listens on 127.0.0.1:9000 is not run by supervisord",
            true => "nothing listens on 127.0.0.1:9000: sentry-web is not running",
        };
        assert!(drift.stdout.contains(said), "{name}: {drift:?}");
        if name == "su" {
            let su = fleet.exec(1, "grep '^Uid:' /proc/$(pgrep -U eve -x supervisord)/status");
            assert!(su.split_whitespace().nth(2) == Some("0"), "su runs with an effective uid of 0: {su}");
        }
        fleet.exec(1, "pkill -U eve; sleep 0.5; true");
    }
    let started = run(&fleet, "drift", &["--remediate"]);
    assert_eq!(started.code, 0, "{started:?}");
    let drift = run(&fleet, "drift", &[]);
    assert_eq!(drift.code, 0, "{drift:?}");
    // Where supervisord's pidfile is not where the variable says, Sentry web
    // running is in sync: the probe cannot tell, and takes the listener.
    let elsewhere = run(&fleet, "drift", &["-e", "supervisor_pidfile=/var/run/elsewhere.pid"]);
    assert_eq!(elsewhere.code, 0, "{elsewhere:?}");
}

/// What must hold: what a host reports about itself is text, never a
/// template the controller runs. A host's root who writes a template into
/// /etc/os-release gets it back as written, not the value of a variable
/// the fleet's other hosts share (a variable that names `facts.os_id` is
/// rendered once, and what it renders to is not rendered again).
#[test]
fn a_template_in_a_hosts_facts_is_text_and_renders_no_variable_of_the_fleet() {
    needs!(Sandbox);
    let fleet = Fleet::of(&["novhost"]);
    fleet.exec(1, r#"sed -i 's/^ID=.*/ID="{{ fleet_secret }}"/' /etc/os-release"#);
    let values = r#"{"fleet_secret": "Fleet-Secret-5", "sentry_web_host": "{{ facts.os_id }}"}"#;
    let diff = run(&fleet, "diff", &["-e", values]);
    assert!(diff.stdout.contains("uwsgi_pass {{ fleet_secret }}:9000;"), "the fact as written: {diff:?}");
    assert!(!diff.stdout.contains("Fleet-Secret-5"), "no variable rendered from the host's text: {diff:?}");
}
