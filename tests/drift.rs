//! Drift on real hosts: hand edits and live changes are host drift, a
//! changed variable is a pending change, `--remediate` puts back only what
//! the host lost (programs stopped by hand included), scheduled passes
//! write their reports and stop cleanly, and the timer units pass
//! `systemd-analyze verify`.

mod common;

use common::{Fleet, bin, needs, tuning_playbook, tuning_variable};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn drift_json(fleet: &Fleet, extra: &[&str]) -> (i32, Value) {
    let playbook = tuning_playbook();
    let mut args = vec!["drift", "-p", playbook.as_str(), "--format", "json", "--history", "/dev/null"];
    args.extend_from_slice(extra);
    let out = fleet.provision(&args);
    let document: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
    (out.code, document)
}

fn host<'a>(document: &'a Value, name: &str) -> &'a Value {
    document["hosts"].as_array().unwrap().iter().find(|h| h["host"] == name).unwrap()
}

fn items<'a>(document: &'a Value, name: &str) -> Vec<(&'a str, &'a str, &'a str)> {
    host(document, name)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["kind"].as_str().unwrap(), i["subject"].as_str().unwrap(), i["state"].as_str().unwrap()))
        .collect()
}

/// A drift pass whose one finding is that live probe `probe` failed on
/// host1: what it said.
fn one_live_drift(fleet: &Fleet, extra: &[&str], probe: &str) -> String {
    let (code, found) = drift_json(fleet, extra);
    assert_eq!(code, 2, "{found:#}");
    assert_eq!(items(&found, "host1"), [("live", probe, "host_drift")], "{found:#}");
    host(&found, "host1")["items"][0]["actual"].as_str().unwrap().trim().to_owned()
}

#[test]
fn drift_tells_hand_edits_and_live_changes_from_pending_changes_and_remediates_only_what_moved() {
    needs!(Sandbox);
    let fleet = Fleet::up(3);
    let applied = fleet.provision(&["apply", "-p", &tuning_playbook()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let (code, clean) = drift_json(&fleet, &[]);
    assert_eq!(code, 0, "{clean:#}");
    assert_eq!(clean["summary"]["in_sync"], 3);

    fleet.exec(2, "sed -i 's/^maxmemory 1gb$/maxmemory 3gb/' /etc/redis/redis.conf");
    fleet.exec(3, "redis-cli config set maxmemory 0");
    let (code, found) = drift_json(&fleet, &[]);
    assert_eq!(code, 2, "{found:#}");
    assert_eq!(host(&found, "host1")["status"], "in_sync");
    assert_eq!(host(&found, "host2")["status"], "drifted");
    assert_eq!(items(&found, "host2"), [("file", "/etc/redis/redis.conf", "host_drift")]);
    assert!(host(&found, "host2")["items"][0]["diff"].as_str().unwrap().contains("-maxmemory 3gb\n+maxmemory 1gb"));
    assert_eq!(host(&found, "host3")["status"], "drifted");
    assert_eq!(items(&found, "host3"), [("live", "redis live config", "host_drift")]);
    assert!(
        host(&found, "host3")["items"][0]["actual"]
            .as_str()
            .unwrap()
            .contains("maxmemory: expected '1073741824', actual '0'")
    );

    let (code, fixed) = drift_json(&fleet, &["--remediate"]);
    assert_eq!(code, 0, "{fixed:#}");
    assert_eq!(host(&fixed, "host2")["remediated"][0], "/etc/redis/redis.conf");
    assert!(host(&fixed, "host3")["remediated"].to_string().contains("apply redis settings live"));
    assert_eq!(fleet.exec(2, "grep '^maxmemory ' /etc/redis/redis.conf"), "maxmemory 1gb\n");
    assert_eq!(fleet.exec(3, "redis-cli config get maxmemory | sed -n 2p"), "1073741824\n");
    let (code, after) = drift_json(&fleet, &[]);
    assert_eq!((code, &after["summary"]["in_sync"]), (0, &Value::from(3)), "{after:#}");

    // A changed variable is a pending change everywhere, not drift of any host.
    let changed = ["-e", "memmon_limit=512MB"];
    let (code, pending) = drift_json(&fleet, &changed);
    assert_eq!(code, 2, "{pending:#}");
    for name in ["host1", "host2", "host3"] {
        assert_eq!(host(&pending, name)["status"], "pending");
        assert_eq!(items(&pending, name), [("file", "/etc/supervisor/conf.d/memmon.conf", "pending")]);
    }
    let (_, untouched) = drift_json(&fleet, &["--remediate", "-e", "memmon_limit=512MB"]);
    assert!(host(&untouched, "host1")["remediated"].as_array().unwrap().is_empty(), "{untouched:#}");
    assert!(fleet.exec(1, "cat /etc/supervisor/conf.d/memmon.conf").contains("-a 400MB"));
    let (code, _) = drift_json(&fleet, &["--remediate=all", "-e", "memmon_limit=512MB"]);
    assert_eq!(code, 0);
    assert!(fleet.exec(1, "cat /etc/supervisor/conf.d/memmon.conf").contains("-a 512MB"));
    let (code, settled) = drift_json(&fleet, &changed);
    assert_eq!((code, &settled["summary"]["in_sync"]), (0, &Value::from(3)), "{settled:#}");

    // Programs stopped by hand are live drift, and --remediate starts them
    // again (supervisorctl update alone leaves them stopped).
    fleet.exec(1, "supervisorctl stop 'worker:*' memmon sentry-web >/dev/null");
    let (code, stopped) = drift_json(&fleet, &changed);
    assert_eq!(code, 2, "{stopped:#}");
    assert!(
        items(&stopped, "host1").contains(&("live", "supervisord runs the configured programs", "host_drift")),
        "{stopped:#}"
    );
    let (code, started) = drift_json(&fleet, &["--remediate", "-e", "memmon_limit=512MB"]);
    assert_eq!(code, 0, "{started:#}");
    assert!(host(&started, "host1")["remediated"].to_string().contains("update supervisor"), "{started:#}");
    assert_eq!(fleet.exec(1, "supervisorctl status | grep -c RUNNING"), "18\n", "16 workers, memmon, web");
    let (code, running) = drift_json(&fleet, &changed);
    assert_eq!((code, &running["summary"]["in_sync"]), (0, &Value::from(3)), "{running:#}");
}

#[test]
fn a_configuration_file_newer_than_the_service_running_it_is_live_drift_unless_it_is_dated_in_the_future() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let applied = fleet.provision(&["apply", "-p", &tuning_playbook()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let (code, clean) = drift_json(&fleet, &[]);
    assert_eq!(code, 0, "{clean:#}");

    // Saved again with the same text: nothing on disk differs from the
    // playbook, but nginx and Sentry web run what they read before.
    fleet.exec(1, "touch /etc/nginx/mime.types /etc/sentry/sentry.conf.py");
    let (code, stale) = drift_json(&fleet, &[]);
    assert_eq!(code, 2, "{stale:#}");
    assert_eq!(
        items(&stale, "host1"),
        [
            ("live", "nginx runs the configuration on disk", "host_drift"),
            ("live", "sentry web runs the configuration on disk", "host_drift")
        ],
        "{stale:#}"
    );
    let said = host(&stale, "host1")["items"].to_string();
    assert!(said.contains("/etc/nginx/mime.types changed after nginx loaded its configuration"), "{said}");
    assert!(said.contains("sentry.conf.py changed after sentry-web started"), "{said}");

    let (code, fixed) = drift_json(&fleet, &["--remediate"]);
    assert_eq!(code, 0, "{fixed:#}");
    let remediated = host(&fixed, "host1")["remediated"].to_string();
    assert!(remediated.contains("test and reload nginx") && remediated.contains("restart sentry web"), "{remediated}");
    let (code, after) = drift_json(&fleet, &[]);
    assert_eq!(code, 0, "{after:#}");

    // A file dated in the future (clock skew, tar, rsync -t) cannot be
    // judged by its time, and is not.
    fleet.exec(1, "touch -d '+1 hour' /etc/nginx/mime.types /etc/sentry/sentry.conf.py");
    let (code, future) = drift_json(&fleet, &[]);
    assert_eq!(code, 0, "{future:#}");
}

/// What changed_since (the playbook's `process_age`) says of files saved
/// within a second of a process's start, as a file the playbook writes
/// just before its handler reloads is: whole-second times cannot tell, so
/// it reads them to the nanosecond where this machine's system calls are
/// known (with no find on the PATH), and asks find where they are not, or
/// where a file cannot be read (a dangling link, judged by its own time).
/// A probe slow to ask (here 2.5 s) still sees the change.
#[test]
fn a_file_saved_just_before_or_after_a_process_started_is_told_apart_with_or_without_find() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).display().to_string();
    let pause = || std::thread::sleep(Duration::from_millis(300));
    std::fs::write(file("before.conf"), "x").unwrap();
    pause();
    let mut reference = Command::new("sleep").arg("30").spawn().unwrap();
    pause();
    std::fs::write(file("after.conf"), "x").unwrap();
    std::os::unix::fs::symlink(file("nowhere"), file("dangling.conf")).unwrap();
    pause();
    let path = std::env::var_os("PATH").unwrap();
    let perl = std::env::split_paths(&path).map(|dir| dir.join("perl")).find(|perl| perl.is_file()).unwrap();
    let no_find = tempfile::tempdir().unwrap();
    let ask = |exact: bool, find: bool, delay: &str, files: &[&str]| {
        let script = format!(
            "{}\n{}select undef, undef, undef, {delay};\nmy ($since) = started({});\nprint join(' ', map {{ changed_since($since, $_) eq '' ? 'loaded' : 'changed' }} @ARGV), \"\\n\";\n",
            tuning_variable("process_age"),
            if exact { "" } else { "*exact_clock = sub { () };\n" },
            reference.id()
        );
        let out = Command::new(&perl)
            .arg("-e")
            .arg(&script)
            .args(files.iter().map(|name| file(name)))
            .env("PATH", if find { &path } else { no_find.path().as_os_str() })
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let all = ["before.conf", "after.conf", "dangling.conf"];
    let exact = ask(true, false, "0", &all[..2]);
    let by_find = ask(false, true, "0", &all);
    let dangling = ask(true, true, "0", &all[2..]);
    let slow = ask(true, false, "2.5", &all[..2]);
    reference.kill().unwrap();
    reference.wait().unwrap();
    assert_eq!(exact, "loaded changed\n");
    assert_eq!(by_find, "loaded changed changed\n");
    assert_eq!(dangling, "changed\n");
    assert_eq!(slow, exact);
}

/// The Sentry web probe's `listening_sockets` asks the kernel (sock_diag)
/// and reads /proc/net/tcp and tcp6 where the kernel refuses: both name the
/// sockets listening at the address and port, an IPv4 address also as
/// IPv6 maps it, and not a connection accepted there or a listener at
/// another address on the port.
#[test]
fn the_kernels_listeners_and_proc_net_tcp_name_the_same_sockets() {
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let socket = |listener: &TcpListener| {
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap().ino();
        format!("socket:[{inode}]")
    };
    let ipv4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(ipv4.local_addr().unwrap()).unwrap();
    let _accepted = ipv4.accept().unwrap();
    let _elsewhere = TcpListener::bind(("127.0.0.2", ipv4.local_addr().unwrap().port())).unwrap();
    let mapped = TcpListener::bind("[::ffff:127.0.0.1]:0").unwrap();
    let ipv6 = TcpListener::bind("[::1]:0").unwrap();
    let loopback4 = r#"[2, pack('C4', 127, 0, 0, 1) . "\0" x 12], [10, pack('n6', 0, 0, 0, 0, 0, 0xffff) . pack('C4', 127, 0, 0, 1)]"#;
    let loopback6 = "[10, pack('n8', 0, 0, 0, 0, 0, 0, 0, 1)]";
    let asked = [(&ipv4, loopback4), (&mapped, loopback4), (&ipv6, loopback6)];
    let mut script = tuning_variable("listening_sockets");
    for (listener, addresses) in asked {
        let port = listener.local_addr().unwrap().port();
        for way in ["listeners_asked", "listeners_read"] {
            script.push_str(&format!(
                "my $found = {way}({port}, {addresses}) or die \"{way} refused\\n\";\nprint join(' ', map {{ \"$_=$found->{{$_}}\" }} sort keys %$found), \"\\n\";\n"
            ));
        }
    }
    let out = Command::new("perl").arg("-e").arg(&script).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // Each with its owner's uid (this process's, root's here).
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let expected: String = asked
        .iter()
        .flat_map(|(listener, _)| [socket(listener), socket(listener)])
        .map(|s| format!("{s}={uid}\n"))
        .collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

/// Redis 7 is asked for the four settings in one CONFIG GET with them as
/// arguments (fed commands on its stdin, redis-cli first fetches COMMAND
/// DOCS, ~170 KB, for its hints); a Redis that takes one name a CONFIG GET,
/// as before 7, is asked one command a line, and drifts alike. With
/// redis_cli left as `redis-cli` the probe asks Redis itself, as redis-cli
/// would (127.0.0.1:6379, the password in REDISCLI_AUTH), both ways too.
#[test]
fn redis_is_probed_in_one_config_get_and_a_redis_taking_one_name_a_get_is_probed_a_line_at_a_time() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let applied = fleet.provision(&["apply", "-p", &tuning_playbook()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let calls =
        r"redis-cli info commandstats | sed -n 's/^cmdstat_\(config|get\|command|docs\):calls=\([0-9]*\),.*/\1 \2/p'";
    fleet.exec(1, "redis-cli config resetstat");
    let (code, clean) = drift_json(&fleet, &[]);
    assert_eq!(code, 0, "{clean:#}");
    assert_eq!(fleet.exec(1, calls), "config|get 1\n", "one CONFIG GET, no COMMAND DOCS");

    // redis-cli's own lines before the answer (here a password Redis does
    // not ask for: a warning and `AUTH failed`, then the answer) are told
    // as the line-at-a-time form tells them.
    let (code, told) = drift_json(&fleet, &["-e", "redis_cli='redis-cli -a not-asked'"]);
    assert_eq!(code, 2, "{told:#}");
    let actual = host(&told, "host1")["items"][0]["actual"].as_str().unwrap();
    assert!(actual.starts_with("redis-cli CONFIG GET save: Warning: Using a password"), "{actual}");
    assert!(actual.contains("AUTH failed"), "{actual}");

    // As Redis 6 answers a CONFIG GET with more than one name (in the
    // host's own /root: its /usr is this machine's).
    fleet.exec(
        1,
        r#"cat >/root/redis6-cli <<'EOF'
#!/bin/sh
case $# in
    0 | 3) exec redis-cli "$@" ;;
    *) echo "ERR Unknown subcommand or wrong number of arguments for 'get'. Try CONFIG HELP." ;;
esac
EOF
chmod 755 /root/redis6-cli"#,
    );
    let one_name_a_get = ["-e", "redis_cli=/root/redis6-cli"];
    let (code, clean) = drift_json(&fleet, &one_name_a_get);
    assert_eq!(code, 0, "{clean:#}");
    fleet.exec(1, "redis-cli config set maxmemory-policy noeviction && redis-cli config set save '900 1'");
    let drifted = |extra: &[&str]| {
        assert_eq!(
            one_live_drift(&fleet, extra, "redis live config"),
            "save: expected '', actual '900 1'\nmaxmemory-policy: expected 'allkeys-lru', actual 'noeviction'",
            "{extra:?}"
        );
    };
    drifted(&one_name_a_get);
    drifted(&[]);

    // A password, from the environment root's shell gives (REDISCLI_AUTH,
    // which redis-cli reads).
    fleet.exec(1, "redis-cli config set requirepass Probe-Secret-7 >/dev/null");
    let (code, refused) = drift_json(&fleet, &[]);
    assert_eq!(code, 2, "{refused:#}");
    let actual = host(&refused, "host1")["items"][0]["actual"].as_str().unwrap();
    assert_eq!(actual.trim(), "CONFIG GET save: NOAUTH Authentication required.");
    fleet.exec(1, "sed -i '1i export REDISCLI_AUTH=Probe-Secret-7' /root/.bashrc");
    drifted(&[]);
    fleet.exec(1, "REDISCLI_AUTH=Probe-Secret-7 redis-cli config set requirepass '' >/dev/null");
    // A password Redis does not take is drift, as redis-cli's warning was.
    let (code, refused) = drift_json(&fleet, &[]);
    assert_eq!(code, 2, "{refused:#}");
    let actual = host(&refused, "host1")["items"][0]["actual"].as_str().unwrap();
    assert!(actual.starts_with("AUTH failed: ERR AUTH <password> called without any password configured"), "{actual}");

    // As Redis 6 answers: Redis itself moves to 6380, and what answers on
    // 6379 takes one name a CONFIG GET and asks Redis for it.
    const REDIS6: &str = r#"import socket, subprocess
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 6379))
server.listen()
while True:
    client, _ = server.accept()
    stream = client.makefile("rb")
    while line := stream.readline():
        words = [stream.read(int(stream.readline()[1:]) + 2)[:-2].decode() for _ in range(int(line[1:]))]
        if words[0] == "AUTH":
            client.sendall(b"+OK\r\n")
        elif [w.upper() for w in words[:2]] == ["CONFIG", "GET"] and len(words) == 3:
            value = subprocess.run(["redis-cli", "-p", "6380", "config", "get", words[2]], capture_output=True, text=True).stdout.split("\n")[1]
            client.sendall(f"*2\r\n${len(words[2])}\r\n{words[2]}\r\n${len(value)}\r\n{value}\r\n".encode())
        else:
            client.sendall(b"-ERR Unknown subcommand or wrong number of arguments for 'get'. Try CONFIG HELP.\r\n")
    client.close()"#;
    fleet.exec(
        1,
        &format!(
            "redis-cli config set port 6380 >/dev/null; (setsid python3 -c {} </dev/null >/dev/null 2>&1 &); sleep 1",
            common::shell_quote(REDIS6)
        ),
    );
    drifted(&[]);
    fleet.exec(
        1,
        "redis-cli -p 6380 config set maxmemory-policy allkeys-lru >/dev/null && redis-cli -p 6380 config set save ''",
    );
    let (code, clean) = drift_json(&fleet, &[]);
    assert_eq!(code, 0, "{clean:#}");
}

/// What must hold: the Redis probe asks, and tells root's password
/// (REDISCLI_AUTH) to, only a listener on 127.0.0.1:6379 that root or the
/// redis user runs. A local user who takes the port while Redis is
/// elsewhere (down, restarting, or moved) could otherwise answer what the
/// playbook expects, and be handed the password: it is drift, and hears
/// nothing.
#[test]
fn redis_is_asked_and_told_its_password_only_where_root_or_redis_runs_the_listener() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let applied = fleet.provision(&["apply", "-p", &tuning_playbook()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    fleet.exec(1, "redis-cli config set port 6380 >/dev/null");
    const LISTENER: &str = r#"import socket
server = socket.socket()
server.bind(("127.0.0.1", 6379))
server.listen()
while True:
    client, _ = server.accept()
    client.settimeout(3)
    try:
        heard = client.recv(4096)
    except OSError:
        heard = b""
    with open("/var/tmp/heard", "ab") as log:
        log.write(heard + b"|")
    client.sendall(b"*8\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n$9\r\nmaxmemory\r\n$10\r\n1073741824\r\n$16\r\nmaxmemory-policy\r\n$11\r\nallkeys-lru\r\n")
    client.close()"#;
    fleet.exec(
        1,
        &format!(
            "touch /var/tmp/heard && chown nobody /var/tmp/heard && \
             (setsid setpriv --reuid=nobody --regid=nogroup --clear-groups python3 -c {} </dev/null >/dev/null 2>&1 &); sleep 1",
            common::shell_quote(LISTENER)
        ),
    );
    let nobody = fleet.exec(1, "id -u nobody");
    let refused = |stage: &str| {
        let actual = one_live_drift(&fleet, &[], "redis live config");
        let expected = format!(
            "what answers on 127.0.0.1:6379 is not run by root or redis (uid {}): it is not asked",
            nobody.trim()
        );
        assert_eq!(actual, expected, "{stage}");
    };
    refused("without a password");
    fleet.exec(
        1,
        "redis-cli -p 6380 config set requirepass Probe-Secret-9 >/dev/null \
         && sed -i '1i export REDISCLI_AUTH=Probe-Secret-9' /root/.bashrc",
    );
    refused("with a password");
    let heard = fleet.exec(1, "cat /var/tmp/heard");
    assert_eq!(heard, "||", "the user's listener was connected to twice and heard nothing");

    // Redis back on its port: it is asked, with the password, again.
    fleet.exec(
        1,
        "pkill -u nobody -f 'server.bind'; sleep 0.5; REDISCLI_AUTH=Probe-Secret-9 redis-cli -p 6380 config set port 6379 >/dev/null",
    );
    let (code, clean) = drift_json(&fleet, &[]);
    assert_eq!(code, 0, "{clean:#}");
}

/// What must hold: a Redis or supervisord that takes the probe's
/// connection and then says nothing (here stopped, as a daemon is under a
/// debugger or a busy script) is drift after `probe_timeout` seconds, with
/// the host's other findings, not a pass held until the round trip's limit.
#[test]
fn a_stopped_redis_or_supervisord_is_drift_after_the_probes_timeout_not_a_hung_pass() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let applied = fleet.provision(&["apply", "-p", &tuning_playbook()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let limits = ["-e", "probe_timeout=2", "--command-timeout", "60"];
    for (stopped, probe, said) in [
        ("redis-server", "redis live config", "Redis at 127.0.0.1:6379 did not answer within 2 s (probe_timeout)"),
        (
            "supervisord",
            "supervisord runs the configured programs",
            "supervisord does not answer on /var/run/supervisor.sock: no answer within 2 s (probe_timeout)",
        ),
    ] {
        fleet.exec(1, &format!("pkill -STOP -x {stopped}"));
        let started = Instant::now();
        let actual = one_live_drift(&fleet, &limits, probe);
        let took = started.elapsed();
        fleet.exec(1, &format!("pkill -CONT -x {stopped}"));
        assert_eq!(actual, said);
        assert!(took < Duration::from_secs(30), "the pass took {took:?}");
    }
    let (code, clean) = drift_json(&fleet, &limits);
    assert_eq!(code, 0, "{clean:#}");
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scheduled(fleet: &Fleet, args: &[&str]) -> std::process::Child {
    Command::new(bin())
        .args(["drift", "-p", &tuning_playbook(), "-i"])
        .arg(fleet.inventory())
        .arg("--ssh-config")
        .arg(fleet.ssh_config())
        .args(args)
        .env("XDG_STATE_HOME", fleet.state_home())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn terminate(child: std::process::Child) -> std::process::Output {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

#[test]
fn scheduled_passes_write_json_prometheus_and_history_and_stop_on_sigterm() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let dir = tempfile::tempdir().unwrap();
    let (json, prom, history) =
        (dir.path().join("drift.json"), dir.path().join("m/sentry.prom"), dir.path().join("h.jsonl"));
    let json_run = scheduled(
        &fleet,
        &[
            "--every",
            "2s",
            "--format",
            "json",
            "--output",
            json.to_str().unwrap(),
            "--history",
            history.to_str().unwrap(),
        ],
    );
    let prom_run = scheduled(
        &fleet,
        &["--every", "2s", "--format", "prometheus", "--output", prom.to_str().unwrap(), "--history", "/dev/null"],
    );
    wait_for("three passes", Duration::from_secs(30), || lines(&history) >= 3);
    for child in [json_run, prom_run] {
        let out = terminate(child);
        assert_eq!(out.status.code(), Some(0), "stops cleanly: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["summary"]["hosts"], 1);
    assert_eq!(report["hosts"][0]["status"], "pending", "never applied: {report:#}");
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains("# TYPE sentry_provision_in_sync gauge"), "{text}");
    assert!(text.contains("sentry_provision_pending_items{host=\"host1\"} "), "{text}");
    assert!(text.contains("sentry_provision_last_pass_timestamp_seconds{host=\"host1\"} 1"), "{text}");
    for line in std::fs::read_to_string(&history).unwrap().lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["exit_code"], 2);
        assert_eq!(entry["summary"]["pending"], 1);
    }
    let leftovers: Vec<_> =
        std::fs::read_dir(prom.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "the report is replaced atomically, no temp files left: {leftovers:?}");
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn memory_does_not_grow_across_many_passes() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("h.jsonl");
    let child = scheduled(
        &fleet,
        &["--every", "100ms", "--format", "json", "--output", "/dev/null", "--history", history.to_str().unwrap()],
    );
    wait_for("10 passes", Duration::from_secs(60), || lines(&history) >= 10);
    let early = rss_kb(child.id());
    wait_for("50 passes", Duration::from_secs(120), || lines(&history) >= 50);
    let late = rss_kb(child.id());
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(0));
    assert!(late < early + 2048, "RSS grew from {early} kB after 10 passes to {late} kB after 50");
}

#[test]
fn install_timer_writes_units_that_systemd_analyze_accepts() {
    needs!(Program("systemd-analyze"));
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        let out =
            Command::new("sh").args(["-c", "apt-get update -qq && apt-get install -y -qq systemd"]).output().unwrap();
        assert!(out.status.success(), "installing systemd: {}", String::from_utf8_lossy(&out.stderr));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.current_dir(common::repo()).args([
        "drift",
        "-i",
        "inventory",
        "--install-timer",
        "--every",
        "15m",
        "--format",
        "prometheus",
    ]);
    cmd.arg("--output").arg(dir.path().join("sentry.prom")).arg("--timer-dir").arg(dir.path());
    let out = common::run(cmd);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("*/15 * * * * root "), "prints the cron equivalent: {out:?}");
    let service = std::fs::read_to_string(dir.path().join("sentry-provision-drift.service")).unwrap();
    assert!(service.contains(" drift -i ") && service.contains("--format prometheus"), "{service}");
    // A system service has no $HOME: it is told where the history and facts go.
    assert!(service.contains("\nEnvironment=XDG_STATE_HOME=/"), "{service}");
    assert!(out.stdout.contains(" root XDG_STATE_HOME=/"), "{out:?}");
    let timer = std::fs::read_to_string(dir.path().join("sentry-provision-drift.timer")).unwrap();
    assert!(timer.contains("OnUnitActiveSec=900s"), "{timer}");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("sentry-provision-drift.service"))
        .arg(dir.path().join("sentry-provision-drift.timer"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "systemd-analyze verify: {}", String::from_utf8_lossy(&verify.stderr));
}

#[test]
fn install_timer_refuses_a_secret_given_inline_and_takes_it_from_a_vars_file() {
    let dir = tempfile::tempdir().unwrap();
    let install = |extra: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.current_dir(common::repo()).args(["drift", "-i", "inventory", "--install-timer"]).args(extra);
        cmd.arg("--timer-dir").arg(dir.path());
        common::run(cmd)
    };
    let service = dir.path().join("sentry-provision-drift.service");
    for inline in ["redis_password=Timer-Secret-31", "redis_cli='REDISCLI_AUTH=Timer-Secret-31 redis-cli'"] {
        let refused = install(&["-e", inline]);
        assert_eq!(refused.code, 1, "{refused:?}");
        assert!(refused.stderr.contains("-e gives the secret `redis_"), "{refused:?}");
        assert!(refused.stderr.contains("-e @FILE"), "says the way round it: {refused:?}");
        assert!(!format!("{refused:?}").contains("Timer-Secret-31"), "{refused:?}");
        assert!(!service.exists(), "no unit written");
    }

    let vars = dir.path().join("secrets.yml");
    std::fs::write(&vars, "redis_password: Timer-Secret-31\n").unwrap();
    let from_file = format!("@{}", vars.display());
    let out = install(&["-e", &from_file, "-e", "sentry_worker_numprocs=2"]);
    assert_eq!(out.code, 0, "{out:?}");
    let unit = std::fs::read_to_string(&service).unwrap();
    assert!(unit.contains(&from_file) && unit.contains("sentry_worker_numprocs=2"), "{unit}");
    assert!(!unit.contains("Timer-Secret-31") && !out.stdout.contains("Timer-Secret-31"), "{unit}\n{out:?}");
}
