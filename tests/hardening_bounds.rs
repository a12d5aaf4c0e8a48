//! A hostile or broken host fails alone: one that prints without end is cut
//! off at the cap while the controller stays small, one that hangs fails
//! after the command timeout, and one whose reply is random bytes, or whose
//! work panics the controller, fails with a report while the others
//! converge. Exit 1 ("no host touched") is never used for any of them.

mod common;

use common::{Fleet, LIGHT, Outcome, bin, edit, needs, playbook_copy, tuning_playbook};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The controller's peak resident memory allowed while one host prints
/// without end: the 64 MiB stdout cap plus the controller's own, with room.
const PEAK_KIB: u64 = 256 * 1024;

/// Makes every ssh session to `host` run `command` instead of what the
/// controller asks (an authorized_keys `command=` option), as a hostile
/// host, or a broken login script, would.
fn force_command(fleet: &Fleet, host: usize, command: &str) {
    fleet.exec(host, &format!("sed -i 's|^|command=\"{command}\" |' /etc/ssh/sandbox_authorized_keys"));
}

fn redis_live(fleet: &Fleet, host: usize, key: &str) -> String {
    fleet.exec(host, &format!("redis-cli config get {key} | sed -n 2p")).trim().to_owned()
}

/// A run and the controller's peak resident memory (VmHWM), read while it
/// runs; a run past `deadline` or over [`PEAK_KIB`] is killed and fails the test.
fn run_watched(fleet: &Fleet, args: &[&str], env: &[(&str, &str)], deadline: Duration) -> (Outcome, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(bin())
        .args(args)
        .arg("-i")
        .arg(fleet.inventory())
        .arg("--ssh-config")
        .arg(fleet.ssh_config())
        .envs(env.iter().copied())
        .env("XDG_STATE_HOME", fleet.state_home())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().trim_end_matches(" kB"));
        peak = peak.max(hwm.and_then(|v| v.parse().ok()).unwrap_or(0));
        if peak > PEAK_KIB || started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "killed after {:.0}s at a peak of {peak} kB: {}",
                started.elapsed().as_secs_f64(),
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let outcome = Outcome {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
    };
    (outcome, peak)
}

#[test]
fn a_host_printing_without_end_fails_at_the_cap_while_the_controller_stays_small_and_the_others_converge() {
    needs!(Sandbox);
    let fleet = Fleet::up(3);
    force_command(&fleet, 2, "cat /dev/zero");
    let playbook = tuning_playbook();
    let mut args = vec!["apply", "-p", playbook.as_str()];
    args.extend_from_slice(&LIGHT);
    let (out, peak) = run_watched(&fleet, &args, &[], Duration::from_secs(300));
    assert!(out.has_bit(4) && !out.has_bit(1), "{out:?}");
    let host2 = out.stdout.lines().skip_while(|l| !l.contains("host2")).take(6).collect::<Vec<_>>().join("\n");
    assert!(host2.contains("snapshot: the host printed more than 64 MiB on stdout"), "{out:?}");
    assert!(out.stdout.contains("2 changed, 1 failed"), "{out:?}");
    for host in [1, 3] {
        assert_eq!(redis_live(&fleet, host, "maxmemory"), "1073741824", "host{host}");
    }
    eprintln!("the controller's peak resident memory: {peak} kB");
    assert!(peak > 0 && peak < PEAK_KIB, "peak {peak} kB");
}

#[test]
fn a_hung_host_fails_after_the_command_timeout_and_the_others_converge() {
    needs!(Sandbox);
    let fleet = Fleet::up(3);
    let copy = playbook_copy();
    let playbook = copy.path().join("playbooks/sentry-tuning.yml");
    edit(
        &playbook,
        "    - name: apply redis settings live\n      command: |\n",
        "    - name: apply redis settings live\n      command: |\n        {% if inventory_hostname == 'host2' %}sleep 100000\n        {% endif %}\n",
    );
    // Redis alone: its handler takes well under a second, where a first
    // install's supervisord restarts can take longer than the timeout here.
    let args = ["apply", "-p", playbook.to_str().unwrap(), "-t", "redis", "--command-timeout", "5"];
    let started = Instant::now();
    let (out, _) = run_watched(&fleet, &args, &[], Duration::from_secs(240));
    assert!(out.has_bit(4) && !out.has_bit(1), "{out:?}");
    let host2 = out.stdout.lines().skip_while(|l| !l.starts_with("host2")).take_while(|l| !l.starts_with("host3"));
    assert!(host2.collect::<String>().contains("handlers: the command did not finish within 5s"), "{out:?}");
    assert!(out.stdout.contains("2 changed, 1 failed"), "{out:?}");
    for host in [1, 3] {
        assert_eq!(redis_live(&fleet, host, "maxmemory"), "1073741824", "host{host}");
    }
    // The hung host cost its timeouts, not the run's end.
    assert!(started.elapsed() < Duration::from_secs(180), "{:?}", started.elapsed());
}

#[test]
fn a_host_whose_work_panics_and_one_replying_random_bytes_fail_alone_and_the_report_goes_on() {
    needs!(Sandbox, TestHooks);
    let fleet = Fleet::up(3);
    force_command(&fleet, 3, "head -c 100000 /dev/urandom");
    let playbook = tuning_playbook();
    let mut args = vec!["apply", "-p", playbook.as_str()];
    args.extend_from_slice(&LIGHT);
    let (out, _) = run_watched(&fleet, &args, &[("SENTRY_PROVISION_PANIC_IN", "host2")], Duration::from_secs(300));
    assert!(out.has_bit(4) && !out.has_bit(1), "{out:?}");
    assert!(out.stdout.contains("internal error: test hook SENTRY_PROVISION_PANIC_IN"), "{out:?}");
    assert!(out.stdout.contains("snapshot: the snapshot ended early"), "{out:?}");
    assert!(out.stdout.contains("1 changed, 2 failed"), "{out:?}");
    assert_eq!(redis_live(&fleet, 1, "maxmemory"), "1073741824");
    // The panicked host's lock was let go: the next run gets it and converges.
    let next = fleet.provision(&["apply", "-p", &playbook, "-l", "host1,host2", "-e", "sentry_worker_numprocs=2"]);
    assert_eq!(next.code, 0, "{next:?}");
}
