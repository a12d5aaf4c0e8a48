//! Interrupts on real hosts: SIGINT and SIGTERM sent to the whole process
//! group of a running apply (as a terminal's Ctrl-C is) at each phase let
//! the step in flight finish, print the report and exit 16, leaving the
//! web/nginx pair consistent and no ssh master or control folder behind; a
//! second signal stops at once; the host's lock lasts exactly as long as
//! the remote work, through a lost connection and a partition too.
//!
//! `SENTRY_PROVISION_PAUSE_AT` makes the remote script wait at a named
//! point, so that each signal lands in the round trip it is meant for.

mod common;

use common::{Fleet, Outcome, bin, needs, tuning_playbook};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INTERRUPTED: i32 = 16;
/// Between `restart sentry web` (handler 1) and `test and reload nginx`
/// (handler 2): where an interrupt used to leave web on uwsgi and nginx on
/// proxy_pass.
const BETWEEN_THE_SWITCHES: &str = "handler:1:ran";

/// An apply running in a process group of its own, its remote scripts
/// pausing at `pause` for `seconds`.
struct Running {
    child: Child,
    signalled: Option<Instant>,
}

fn start(fleet: &Fleet, pause: &str, seconds: u32, extra: &[&str]) -> Running {
    start_command(fleet, "apply", pause, seconds, extra)
}

fn start_command(fleet: &Fleet, command: &str, pause: &str, seconds: u32, extra: &[&str]) -> Running {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin());
    cmd.args([command, "-p", &tuning_playbook(), "-e", "sentry_worker_numprocs=2"])
        .args(extra)
        .arg("-i")
        .arg(fleet.inventory())
        .arg("--ssh-config")
        .arg(fleet.ssh_config())
        .env("NO_COLOR", "1")
        .env("XDG_STATE_HOME", fleet.state_home())
        .env("SENTRY_PROVISION_PAUSE_AT", pause)
        .env("SENTRY_PROVISION_PAUSE_SECONDS", seconds.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    Running { child: cmd.spawn().expect("sentry-provision starts"), signalled: None }
}

impl Running {
    /// `kill -SIG -PGID`: the whole group, as a terminal sends it.
    fn signal(&mut self, signal: &str) {
        let group = format!("-{}", self.child.id());
        let status = Command::new("kill").args([&format!("-{signal}"), "--", &group]).status().unwrap();
        assert!(status.success(), "kill -{signal} {group}");
        self.signalled.get_or_insert_with(Instant::now);
    }

    /// Its outcome, and how long after the first signal it ended.
    fn finish(self) -> (Outcome, Duration) {
        let signalled = self.signalled;
        let out = self.child.wait_with_output().unwrap();
        let after = signalled.map_or(Duration::ZERO, |at| at.elapsed());
        let outcome = Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        (outcome, after)
    }
}

/// Waits until a script on `host` has reached its pause point.
fn wait_for_pause(fleet: &Fleet, host: usize) {
    let started = Instant::now();
    while fleet.try_exec(host, "test -e /run/sentry-provision.paused").code != 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "host{host} never reached its pause point");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until a script on any host has reached its pause point, and says which.
fn wait_for_any_pause(fleet: &Fleet) -> usize {
    let started = Instant::now();
    loop {
        if let Some(host) =
            (1..=fleet.hosts).find(|&h| fleet.try_exec(h, "test -e /run/sentry-provision.paused").code == 0)
        {
            return host;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no host reached its pause point");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every host has been seen at its pause point (each pauses
/// for a while; a loaded machine may bring one there later than another).
fn wait_for_every_pause(fleet: &Fleet) {
    let started = Instant::now();
    let mut seen = vec![false; fleet.hosts];
    while seen.contains(&false) {
        for host in 1..=fleet.hosts {
            seen[host - 1] |= fleet.try_exec(host, "test -e /run/sentry-provision.paused").code == 0;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not every host reached its pause point: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ssh masters of the fleet's hosts: (pid, the run's control folder),
/// read from each master's command line (`-S <folder>/.ssh-connection…/master`).
fn masters(fleet: &Fleet) -> Vec<(u32, PathBuf)> {
    let addresses: Vec<String> = (1..=fleet.hosts).map(|h| fleet.address(h)).collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let is_master = args.iter().any(|a| a == "-M") && args.iter().any(|a| addresses.contains(a));
        let socket = args.windows(2).find(|w| w[0] == "-S").map(|w| PathBuf::from(&w[1]));
        if let (true, Some(socket)) = (is_master, socket) {
            let folder = socket.ancestors().nth(2).expect("<folder>/.ssh-connection…/master").to_path_buf();
            found.push((pid, folder));
        }
    }
    found
}

/// Curl through each host's own vhost answers 200 within 5 s: web and
/// nginx are on the same protocol (uwsgi_pass to an HTTP web, or
/// proxy_pass to a uwsgi one, answers 502 or nothing).
fn every_site_answers_within_5s(fleet: &Fleet, context: &str) {
    for host in 1..=fleet.hosts {
        let host_header = format!("Host: {}", fleet.server_name(host));
        let started = Instant::now();
        loop {
            let out =
                fleet.curl(host, &["-o", "/dev/null", "-w", "%{http_code}", "-H", &host_header, "http://127.0.0.1/"]);
            if out.stdout == "200" {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{context}: host{host} answers {out:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// No master of the fleet runs, and the run's control folder is gone.
fn nothing_left_behind(fleet: &Fleet, folders: &[PathBuf], context: &str) {
    let left = masters(fleet);
    assert!(left.is_empty(), "{context}: ssh masters left: {left:?}");
    for folder in folders {
        assert!(!folder.exists(), "{context}: {} left", folder.display());
    }
}

fn redis_maxmemory(fleet: &Fleet, host: usize) -> String {
    fleet.exec(host, "redis-cli config get maxmemory | sed -n 2p").trim().to_owned()
}

/// The JSON report's status of each host.
fn json_statuses(out: &Outcome) -> Vec<String> {
    let document: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("a JSON report ({e}): {out:?}"));
    assert_eq!(document["exit_code"], INTERRUPTED, "{out:?}");
    let hosts = document["hosts"].as_array().expect("hosts");
    hosts.iter().map(|h| h["status"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_first_sigint_or_sigterm_at_each_phase_finishes_the_step_reports_and_leaves_the_site_consistent() {
    needs!(Sandbox, TestHooks);
    let fleet = Fleet::up(2);
    // (pause point, signal, format, extra flags)
    let cases: [(&str, &str, &str, &[&str]); 6] = [
        // One host at a time: host2 has not started when host1 is stopped.
        ("snapshot", "INT", "human", &["--forks", "1"]),
        ("snapshot", "TERM", "json", &["--forks", "1"]),
        ("file:0:staged", "INT", "json", &[]),
        ("file:0:staged", "TERM", "human", &[]),
        (BETWEEN_THE_SWITCHES, "INT", "human", &[]),
        (BETWEEN_THE_SWITCHES, "TERM", "json", &[]),
    ];
    for (point, signal, format, extra) in cases {
        let context = format!("SIG{signal} at {point} ({format})");
        fleet.reset();
        let mut args = vec!["--format", format];
        args.extend_from_slice(extra);
        let mut run = start(&fleet, point, 3, &args);
        // Between the switches, the signal comes once every host is in its
        // handlers round trip (the assertions below want both to finish it).
        if point == BETWEEN_THE_SWITCHES {
            wait_for_every_pause(&fleet);
        } else {
            wait_for_any_pause(&fleet);
        }
        let folders: Vec<PathBuf> = masters(&fleet).into_iter().map(|(_, folder)| folder).collect();
        assert!(!folders.is_empty(), "{context}: a master runs while the script waits");
        run.signal(signal);
        let (out, _) = run.finish();
        assert_eq!(out.code, INTERRUPTED, "{context}: {out:?}");
        // The report so far, and which hosts stopped where.
        let statuses = if format == "json" {
            json_statuses(&out)
        } else {
            assert!(out.stdout.contains("summary: 2 host(s):"), "{context}: {out:?}");
            Vec::new()
        };
        match point {
            "snapshot" => {
                for host in [1, 2] {
                    assert_eq!(redis_maxmemory(&fleet, host), "0", "{context}: nothing changed");
                }
                if format == "json" {
                    assert_eq!(statuses, ["interrupted", "interrupted"], "{context}: {out:?}");
                } else {
                    assert!(
                        out.stdout.contains("interrupted  interrupted after the snapshot; nothing was changed"),
                        "{context}: {out:?}"
                    );
                    assert!(out.stdout.contains("interrupted  not run: interrupted"), "{context}: {out:?}");
                    assert!(out.stdout.contains(", 2 interrupted"), "{context}: {out:?}");
                }
            }
            "file:0:staged" => {
                if format == "json" {
                    assert_eq!(statuses, ["interrupted", "interrupted"], "{context}: {out:?}");
                } else {
                    assert!(out.stdout.contains("interrupted after the install"), "{context}: {out:?}");
                }
            }
            _ => {
                // The handlers round trip went to its end on both hosts.
                if format == "json" {
                    assert_eq!(statuses, ["changed", "changed"], "{context}: {out:?}");
                } else {
                    assert!(out.stdout.contains("handler  test and reload nginx"), "{context}: {out:?}");
                }
                assert_eq!(redis_maxmemory(&fleet, 2), "1073741824", "{context}");
            }
        }
        every_site_answers_within_5s(&fleet, &context);
        nothing_left_behind(&fleet, &folders, &context);
    }
}

#[test]
fn a_second_signal_stops_at_once_names_the_hosts_that_may_owe_handlers_and_the_host_finishes_alone() {
    needs!(Sandbox, TestHooks);
    let fleet = Fleet::up(1);
    let mut run = start(&fleet, BETWEEN_THE_SWITCHES, 8, &[]);
    wait_for_pause(&fleet, 1);
    let folders: Vec<PathBuf> = masters(&fleet).into_iter().map(|(_, folder)| folder).collect();
    run.signal("INT");
    std::thread::sleep(Duration::from_millis(300));
    run.signal("TERM");
    let (out, after) = run.finish();
    assert_eq!(out.code, INTERRUPTED, "{out:?}");
    assert!(after < Duration::from_secs(2), "stopped at once, not after the remote script: {after:?}");
    assert!(out.stderr.contains("stopped at once by a second signal"), "{out:?}");
    assert!(out.stderr.contains("  host1: handlers"), "{out:?}");
    nothing_left_behind(&fleet, &folders, "after a second signal");

    // The handlers go on on the host, under the lock: another run waits.
    let busy =
        fleet.provision(&["apply", "-p", &tuning_playbook(), "-e", "sentry_worker_numprocs=2", "--lock-timeout", "1"]);
    assert_eq!(busy.code, 4, "the remote work still holds the lock: {busy:?}");
    assert!(busy.stdout.contains("another run holds the host's lock"), "{busy:?}");
    let next =
        fleet.provision(&["apply", "-p", &tuning_playbook(), "-e", "sentry_worker_numprocs=2", "--lock-timeout", "30"]);
    assert_eq!(next.code, 0, "{next:?}");
    assert!(!next.stdout.contains("handler "), "the host ran every handler by itself: {next:?}");
    every_site_answers_within_5s(&fleet, "after the host finished alone");
}

#[test]
fn drift_during_an_apply_says_the_owed_handlers_belong_to_the_running_apply() {
    needs!(Sandbox, TestHooks);
    let fleet = Fleet::up(1);
    let run = start(&fleet, BETWEEN_THE_SWITCHES, 6, &[]);
    wait_for_pause(&fleet, 1);
    let drift = fleet.provision(&[
        "drift",
        "-p",
        &tuning_playbook(),
        "-e",
        "sentry_worker_numprocs=2",
        "--history",
        "/dev/null",
    ]);
    assert!(
        drift.stdout.contains("handler test and reload nginx: owed by an apply running now (lock held)"),
        "{drift:?}"
    );
    assert!(!drift.stdout.contains("earlier run"), "{drift:?}");
    let (out, _) = run.finish();
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn scheduled_drift_ends_after_a_whole_pass_on_a_first_signal_and_at_once_on_a_second() {
    needs!(Sandbox, TestHooks);
    let fleet = Fleet::up(1);
    // --remediate writes, so it takes the lock, where the pass pauses.
    let args = ["--every", "1h", "--remediate=all", "--history", "/dev/null"];
    let mut first = start_command(&fleet, "drift", "snapshot", 3, &args);
    wait_for_pause(&fleet, 1);
    first.signal("INT");
    let (out, _) = first.finish();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("restored"), "the pass went on to put the host right: {out:?}");
    assert!(out.stderr.contains("drift: stopped"), "{out:?}");

    let mut second = start_command(&fleet, "drift", "snapshot", 8, &args);
    wait_for_pause(&fleet, 1);
    let folders: Vec<PathBuf> = masters(&fleet).into_iter().map(|(_, folder)| folder).collect();
    second.signal("INT");
    std::thread::sleep(Duration::from_millis(300));
    second.signal("INT");
    let (out, after) = second.finish();
    assert_eq!(out.code, INTERRUPTED, "{out:?}");
    assert!(after < Duration::from_secs(2), "{after:?}: {out:?}");
    nothing_left_behind(&fleet, &folders, "drift after a second signal");
}

#[test]
fn a_run_killed_outright_leaves_its_master_and_folder_only_until_the_next_run() {
    needs!(Sandbox, TestHooks);
    let fleet = Fleet::up(1);
    let mut run = start(&fleet, "snapshot", 5, &[]);
    wait_for_pause(&fleet, 1);
    let folders: Vec<PathBuf> = masters(&fleet).into_iter().map(|(_, folder)| folder).collect();
    run.signal("KILL");
    let (killed, _) = run.finish();
    assert_eq!(killed.code, -1, "{killed:?}");
    assert!(!masters(&fleet).is_empty() && folders.iter().all(|f| f.exists()), "SIGKILL leaves both");
    let check = fleet.provision(&["diff", "-p", &tuning_playbook(), "-e", "sentry_worker_numprocs=2"]);
    assert_eq!(check.code, 2, "{check:?}");
    nothing_left_behind(&fleet, &folders, "after the next run");
}

/// A partition between one controller address and a host: packets from
/// 10.213.ID.1 to the host are dropped on this machine, and the host drops
/// its replies to that address; a second address on the bridge still gets
/// through. Undone when dropped.
struct Partition {
    fleet_id: u8,
    host: usize,
}

impl Partition {
    fn cut(fleet: &Fleet, host: usize) -> Partition {
        let net = format!("10.213.{}", fleet.id);
        let partition = Partition { fleet_id: fleet.id, host };
        let ip = |args: &str| {
            let out = Command::new("sh").arg("-c").arg(format!("ip {args}")).output().unwrap();
            assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        ip(&format!("rule add from {net}.1 to {} blackhole", fleet.address(host)));
        ip(&format!("-n sp{}-host{host} route add blackhole {net}.1/32", fleet.id));
        partition
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let net = format!("10.213.{}", self.fleet_id);
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ip rule del from {net}.1 to {net}.{} blackhole; ip -n sp{}-host{} route del blackhole {net}.1/32",
                10 + self.host,
                self.fleet_id,
                self.host
            ))
            .status();
    }
}

#[test]
fn after_a_partition_during_handlers_the_lock_is_free_once_the_remote_work_ends() {
    needs!(Sandbox, TestHooks);
    let fleet = Fleet::up(1);
    // A second controller address, and an ssh config that uses it.
    let second = format!("10.213.{}.2", fleet.id);
    let out = Command::new("ip")
        .args(["addr", "add", &format!("{second}/32"), "dev", &format!("spbr{}", fleet.id)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = std::fs::read_to_string(fleet.ssh_config()).unwrap();
    assert!(config.starts_with("Host *\n"), "{config}");
    let other = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(other.path(), config.replacen("Host *\n", &format!("Host *\n    BindAddress {second}\n"), 1))
        .unwrap();

    let run = start(&fleet, BETWEEN_THE_SWITCHES, 4, &[]);
    wait_for_pause(&fleet, 1);
    let partition = Partition::cut(&fleet, 1);
    let cut = Instant::now();
    // Another controller asks for the lock, 5 s at a time, until it gets it.
    let got = loop {
        let mut cmd = Command::new(bin());
        cmd.args(["apply", "-p", &tuning_playbook(), "-e", "sentry_worker_numprocs=2", "--lock-timeout", "5", "-i"])
            .arg(fleet.inventory())
            .arg("--ssh-config")
            .arg(other.path());
        let out = common::run(cmd);
        if out.code == 0 {
            break cut.elapsed();
        }
        assert!(out.stdout.contains("another run holds the host's lock"), "{out:?}");
        assert!(cut.elapsed() < Duration::from_secs(40), "the lock is still held {:?} after the cut", cut.elapsed());
    };
    // The remote work (4 s of pause, then the rest of the handlers) and the
    // host's patience (10 s without a heartbeat), well before sshd notices.
    assert!(got < Duration::from_secs(30), "{got:?}");
    every_site_answers_within_5s(&fleet, "after the partition");
    drop(partition);
    let mut run = run;
    run.signal("KILL");
    let _ = run.finish();
}
