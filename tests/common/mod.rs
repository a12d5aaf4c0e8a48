//! A small builder for integration tests against a sandbox fleet: bring up
//! real hosts (scripts/sandbox), run sentry-provision against them, and read
//! the hosts' real state. Each fleet has its own namespaces and subnet, so
//! tests run side by side; dropping the fleet takes it down.
//!
//! Hosts start as stock Debian with Sentry installed as its docs describe,
//! in one of the sandbox's kinds (its header says what each holds):
//! `plain` (all in one, the operator's vhost for `sentry.hostN.test` in
//! `/etc/nginx/sites-enabled/sentry`), `tls` (that vhost on 443 with a
//! self-signed certificate, 80 redirecting), `novhost`, `stockredis`, and
//! the one-role `redis`, `web` and `workers`.
//!
//! Tests come in tiers. Those that need nothing of the machine run
//! anywhere. Those that need what a machine may lack start with
//! [`needs!`]: sandbox hosts (root and network namespaces), the binary's
//! test hooks (`--features test-hooks`), a program the test would install.
//! Where it is missing, such a test says on stderr that it skipped and
//! why, and passes, so that `cargo test` as a user runs what it can; with
//! `SENTRY_PROVISION_SANDBOX_TESTS=required` (scripts/test) it fails instead.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Once, OnceLock};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The playbook the project ships, relative to the repository.
pub const TUNING_PLAYBOOK: &str = "playbooks/sentry-tuning.yml";

/// Fewer workers keep each converge quick; the tuning is the same.
pub const LIGHT: [&str; 2] = ["-e", "sentry_worker_numprocs=2"];

/// The shipped playbook's absolute path.
pub fn tuning_playbook() -> String {
    repo().join(TUNING_PLAYBOOK).display().to_string()
}

/// A variable of the shipped playbook's first play, as text: `process_age`
/// and `listening_sockets` are the Perl functions its probes use.
pub fn tuning_variable(name: &str) -> String {
    let text = std::fs::read_to_string(tuning_playbook()).unwrap();
    let playbook: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    playbook[0]["vars"][name].as_str().unwrap_or_else(|| panic!("the first play's variables hold {name}")).to_owned()
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sentry-provision")
}

/// Goes on with the test only when the machine has what it needs; else
/// returns from it (see the module's doc). Each argument is a [`Need`]:
/// `needs!(Sandbox, TestHooks)`.
#[allow(unused_macros)]
macro_rules! needs {
    ($($need:ident $(($arg:expr))?),+ $(,)?) => {{
        fn here() {}
        let test = std::any::type_name_of_val(&here).trim_end_matches("::here");
        if !$crate::common::has(test, &[$($crate::common::Need::$need $(($arg))?),+]) {
            return;
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use needs;

/// What a test may need that a machine may lack.
pub enum Need {
    /// Sandbox hosts: root, network namespaces, and what `scripts/sandbox
    /// install` brings (installed on first use).
    Sandbox,
    /// A binary built with `--features test-hooks`, for a test that sets
    /// `SENTRY_PROVISION_CRASH_AT`, `_PAUSE_AT` or `_PANIC_IN`.
    TestHooks,
    /// A program on the PATH, or root to install it with apt (the test does).
    Program(&'static str),
    /// ansible-core from PyPI in a venv ([`ansible_inventory`]).
    AnsibleCore,
}

/// Set by scripts/test: every test must run, and a missing need fails it.
const REQUIRED: &str = "SENTRY_PROVISION_SANDBOX_TESTS";

/// Whether `test` can run here; when not, fails it if every test must run
/// ([`REQUIRED`]), else says on stderr that it was skipped and why.
pub fn has(test: &str, needs: &[Need]) -> bool {
    let Some(missing) = needs.iter().find_map(missing) else { return true };
    let required = std::env::var(REQUIRED).is_ok_and(|value| value == "required");
    assert!(!required, "{test} cannot run: {missing} ({REQUIRED}=required makes that a failure)");
    // Straight to the process's stderr: the test harness captures what
    // eprintln! says in a test that passes, and this must be seen.
    let _ = writeln!(std::io::stderr(), "skipped {test}: {missing}");
    false
}

fn missing(need: &Need) -> Option<String> {
    match need {
        Need::Sandbox => sandbox_missing().clone(),
        Need::TestHooks => (!cfg!(feature = "test-hooks")).then(|| {
            "needs the binary's test hooks (run `cargo test --features test-hooks`, as scripts/test does)".to_owned()
        }),
        Need::Program(program) => (Command::new(program).arg("--version").output().is_err() && !is_root())
            .then(|| format!("needs `{program}`, or root to install it (run scripts/test)")),
        Need::AnsibleCore => ansible_inventory().err().map(|why| format!("needs ansible-core from PyPI: {why}")),
    }
}

/// `ansible-inventory` from a venv that `scripts/ansible-venv` makes once
/// for all the tests (python3-venv from apt when missing, ansible-core from
/// PyPI), or why it could not be made.
pub fn ansible_inventory() -> Result<&'static Path, &'static str> {
    static MADE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let made = MADE.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join(".venv-ansible");
        let out = Command::new("bash")
            .arg(repo().join("scripts/ansible-venv"))
            .arg(&venv)
            .output()
            .map_err(|e| format!("scripts/ansible-venv does not run: {e}"))?;
        if !out.status.success() {
            // On one line: it is said in a skip message, among the harness's lines.
            let said = [out.stdout, out.stderr].map(|text| String::from_utf8_lossy(&text).into_owned()).join("\n");
            let lines: Vec<&str> = said.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
            return Err(format!("scripts/ansible-venv failed: {}", lines.join(" | ")));
        }
        Ok(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
    });
    made.as_deref().map_err(String::as_str)
}

/// Why this machine cannot bring up sandbox hosts, asked once.
fn sandbox_missing() -> &'static Option<String> {
    static MISSING: OnceLock<Option<String>> = OnceLock::new();
    MISSING.get_or_init(|| {
        if !is_root() {
            return Some("needs root and network namespaces (run scripts/test as root)".to_owned());
        }
        let why = match Command::new("unshare").args(["--net", "true"]).output() {
            Ok(out) if out.status.success() => return None,
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        Some(format!("needs network namespaces, which this machine refuses (unshare --net: {why})"))
    })
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

static INSTALL: Once = Once::new();
static NEXT_ID: AtomicU8 = AtomicU8::new(0);

pub struct Fleet {
    pub id: u8,
    pub hosts: usize,
    /// Host `i` (1-based) is of kind `kinds[i - 1]`.
    pub kinds: Vec<String>,
    dir: tempfile::TempDir,
}

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn has_bit(&self, bit: i32) -> bool {
        self.code & bit != 0
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn sandbox(id: u8, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(repo().join("scripts/sandbox"))
        .args(args)
        .env("SANDBOX_ID", id.to_string())
        .env("SANDBOX_DIR", dir)
        .output()
        .expect("scripts/sandbox runs")
}

impl Fleet {
    /// Brings up `hosts` all-in-one (`plain`) sandbox hosts in the tuning
    /// guide's "before" state.
    pub fn up(hosts: usize) -> Fleet {
        Fleet::of(&vec!["plain"; hosts])
    }

    /// Brings up one sandbox host per kind, in order: `Fleet::of(&["tls",
    /// "redis"])` is host1 with a TLS vhost and host2 with Redis alone.
    pub fn of(kinds: &[&str]) -> Fleet {
        assert!(!kinds.is_empty(), "a fleet has at least one host");
        if let Some(missing) = sandbox_missing() {
            panic!("{missing}; a test that brings up a fleet starts with `needs!(Sandbox)`");
        }
        INSTALL.call_once(|| {
            let out = Command::new(repo().join("scripts/sandbox")).arg("install").output().unwrap();
            assert!(out.status.success(), "sandbox install: {}", String::from_utf8_lossy(&out.stderr));
        });
        // Distinct from the default fleet (7) that the demo uses; another
        // base (SANDBOX_ID_BASE) lets two test runs share a machine.
        let base: u8 = std::env::var("SANDBOX_ID_BASE").ok().and_then(|base| base.parse().ok()).unwrap_or(100);
        let id = base + NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::Builder::new().prefix("sp-fleet").tempdir().unwrap();
        let hosts = kinds.len();
        let mut args = vec!["up".to_owned(), hosts.to_string()];
        args.extend(kinds.iter().map(|kind| kind.to_string()));
        let out = sandbox(id, dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
        if !out.status.success() {
            sandbox(id, dir.path(), &["down"]);
        }
        assert!(
            out.status.success(),
            "sandbox up: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Fleet { id, hosts, kinds: kinds.iter().map(|kind| kind.to_string()).collect(), dir }
    }

    /// Host `host`'s kind (`plain`, `tls`, ...).
    pub fn kind(&self, host: usize) -> &str {
        &self.kinds[host - 1]
    }

    /// The hosts (1-based) of a kind.
    pub fn hosts_of(&self, kind: &str) -> Vec<usize> {
        (1..=self.hosts).filter(|&host| self.kind(host) == kind).collect()
    }

    /// The `server_name` of host `host`'s Sentry vhost (kinds with one).
    pub fn server_name(&self, host: usize) -> String {
        format!("sentry.host{host}.test")
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory")
    }

    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    pub fn address(&self, host: usize) -> String {
        format!("10.213.{}.{}", self.id, 10 + host)
    }

    /// Runs a shell command inside host `host` (1-based) and returns its stdout;
    /// panics with its stderr when it fails.
    pub fn exec(&self, host: usize, cmd: &str) -> String {
        let out = self.try_exec(host, cmd);
        assert_eq!(out.code, 0, "host{host}: `{cmd}` failed: {out:?}");
        out.stdout
    }

    pub fn try_exec(&self, host: usize, cmd: &str) -> Outcome {
        let out = sandbox(self.id, self.dir.path(), &["exec", &host.to_string(), cmd]);
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `curl -sS <args>` inside host `host`; `stdout` is what curl printed.
    /// `fleet.curl(1, &["-H", "Host: sentry.host1.test", "http://127.0.0.1/"])`
    /// goes through the operator's vhost, `fleet.curl(2, &["-k", "--resolve",
    /// "sentry.host2.test:443:127.0.0.1", "https://sentry.host2.test/"])`
    /// through a `tls` host's; `-i` or `-D -` shows the headers.
    pub fn curl(&self, host: usize, args: &[&str]) -> Outcome {
        let words: Vec<String> = args.iter().map(|arg| shell_quote(arg)).collect();
        self.try_exec(host, &format!("curl -sS {}", words.join(" ")))
    }

    /// `scripts/sandbox reset`: every host back in its kind's "before" state.
    pub fn reset(&self) {
        let out = sandbox(self.id, self.dir.path(), &["reset"]);
        assert!(out.status.success(), "sandbox reset: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The fleet's runs' `XDG_STATE_HOME`: the facts its hosts' earlier
    /// passes left, and no other fleet's.
    pub fn state_home(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `sentry-provision <args> -i <fleet inventory> --ssh-config <fleet ssh config>`.
    pub fn provision(&self, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(bin());
        cmd.args(args).arg("-i").arg(self.inventory()).arg("--ssh-config").arg(self.ssh_config());
        cmd.env("XDG_STATE_HOME", self.state_home());
        run(cmd)
    }

    /// Content hash and mtime of every file the shipped playbook manages
    /// (and of Debian's default site), and the PIDs of the processes a
    /// handler would replace; a daemon the host's kind lacks reads as none.
    /// `apply` with the shipped playbook and [`LIGHT`], then `extra`.
    pub fn apply(&self, extra: &[&str]) -> Outcome {
        let playbook = tuning_playbook();
        let mut args = vec!["apply", "-p", playbook.as_str()];
        args.extend_from_slice(&LIGHT);
        args.extend_from_slice(extra);
        self.provision(&args)
    }

    pub fn fingerprint(&self, host: usize) -> String {
        self.exec(
            host,
            "for f in /etc/redis/redis.conf /etc/sentry/sentry.conf.py /etc/nginx/sites-available/sentry \
                     /etc/nginx/sites-enabled/sentry /etc/nginx/sites-enabled/default \
                     /etc/supervisor/conf.d/sentry-worker.conf /etc/supervisor/conf.d/memmon.conf; do \
                 if [ -e $f ]; then echo \"$f $(sha256sum < $f | cut -c1-16) $(stat -c %Y.%y $f)\"; else echo \"$f absent\"; fi; \
             done; \
             echo nginx workers: $([ -e /run/nginx.pid ] && pgrep -P $(cat /run/nginx.pid) | sort | tr '\\n' ' '); \
             echo supervised: $([ -S /run/supervisor.sock ] && supervisorctl pid all | sort | tr '\\n' ' '); \
             echo redis: $(redis-cli config get maxmemory 2>/dev/null | tail -1); \
             ls /var/lib/sentry-provision 2>/dev/null; true",
        )
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let out = sandbox(self.id, self.dir.path(), &["down"]);
        if !out.status.success() {
            eprintln!("sandbox down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// `word` as one word of a POSIX shell command line.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Where this test process's runs keep their state (`XDG_STATE_HOME`: the
/// drift history and the hosts' facts), so that no test reads what another
/// process or the machine's own runs left in root's home.
pub fn state_home() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("state-{}", std::process::id()))
}

pub fn run(mut cmd: Command) -> Outcome {
    if !cmd.get_envs().any(|(name, _)| name == "XDG_STATE_HOME") {
        cmd.env("XDG_STATE_HOME", state_home());
    }
    let out = cmd.env("NO_COLOR", "1").output().expect("sentry-provision runs");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The shipped playbook and templates copied to a folder the test may break.
/// Replaces `from` with `to` in `path` (a file of a [`playbook_copy`]);
/// panics when `from` is not there, so that an edit never silently does nothing.
pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} does not contain {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

pub fn playbook_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["playbooks", "templates"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(repo().join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name())).unwrap();
        }
    }
    dir
}
