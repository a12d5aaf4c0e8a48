//! Drift passes: one-shot, or every `--every` until SIGINT/SIGTERM, each
//! reported as text, JSON or Prometheus exposition (written atomically) and
//! summarised in a history file; `--remediate` puts drifted hosts back.
//! `--install-timer` writes a systemd service and timer for the same check.

use super::{host_bits, print_log};
use crate::cli::{DriftArgs, Format};
use crate::error::{BAD_INPUT, CHANGES_PENDING, Outcome};
use crate::interrupt;
use crate::output::{out, outln};
use crate::plan::drift::ItemState;
use crate::report;
use crate::run::{self, HostReport, KnownFacts, Mode, Remediate, Settings};
use crate::secrets::Secrets;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub async fn exec(args: &DriftArgs) -> Outcome {
    interrupt::listen();
    let mut settings = args.common.settings(Mode::Drift(args.remediation()))?;
    // A scheduled check logs its passes, not every host event of every pass.
    settings.quiet |= args.every.is_some();
    if args.install_timer {
        // A timer for a check that cannot run is no use: validate it first (offline).
        let prepared = run::prepare(&settings)?;
        refuse_inline_secrets(&args.common.extra_vars, &prepared.secrets())?;
        install_timer(args)?;
        return Ok(0);
    }
    match args.every {
        None => pass(&settings, args, Duration::ZERO).await,
        Some(period) => schedule(&settings, args, period).await,
    }
}

/// Passes every `period` (start to start; a pass that overruns delays the
/// next, they never overlap) until a signal, which stops after the current pass.
async fn schedule(settings: &Settings, args: &DriftArgs, period: Duration) -> Outcome {
    // A first signal ends the schedule once the pass is whole; a second
    // one, during a pass that hangs, stops at once (see `interrupt`).
    interrupt::after_pass();
    let splay = (period / 10).min(Duration::from_secs(30));
    loop {
        let started = tokio::time::Instant::now();
        // A pass that cannot start says why; the next one may.
        if let Err(e) = pass(settings, args, splay).await {
            e.print();
        }
        if interrupt::signalled() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + period) => {}
            _ = interrupt::first_signal() => break,
        }
    }
    eprintln!("sentry-provision: drift: stopped");
    Ok(0)
}

/// One pass: plan and probe every host, report, remediate if asked.
async fn pass(settings: &Settings, args: &DriftArgs, splay: Duration) -> Outcome {
    let wall = SystemTime::now();
    let started = Instant::now();
    let outcome = match run::prepare(settings) {
        Err(e) => Err(e),
        Ok(mut prepared) => {
            prepared.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
            let digest = prepared.digest.clone();
            let facts_file = facts_path();
            let mut known = facts_file.as_deref().map(KnownFacts::load).unwrap_or_default();
            prepared.expect_facts(&known);
            let reports = run::execute(prepared, settings, splay).await;
            if let (Some(path), Ok(reports)) = (&facts_file, &reports)
                && known.learn(reports)
                && let Err(e) = known.save(path)
            {
                eprintln!("sentry-provision: drift: cannot write {}: {e}", path.display());
            }
            reports.map(|reports| (digest, reports))
        }
    };
    let (digest, reports) = match outcome {
        Ok(done) => done,
        Err(e) => {
            append_history(args, &serde_json::json!({"time": rfc3339(wall), "error": e, "exit_code": BAD_INPUT}));
            return Err(e.into());
        }
    };
    print_log(&reports);
    let exit_code = host_bits(&reports)
        | interrupt::exit_bits()
        | if reports.iter().any(|r| unresolved(r, args.remediation())) { CHANGES_PENDING } else { 0 };
    let duration = started.elapsed().as_secs_f64();
    let summary = report::json::summary(&reports);
    let text = match args.format {
        Format::Human => report::human::render_drift(&reports, args.diff, &style_for(args)),
        Format::Prometheus => report::prometheus::render(&reports, epoch_seconds(wall)),
        Format::Json => {
            let document = report::json::Pass {
                time: rfc3339(wall),
                playbook: settings.playbook.display().to_string(),
                playbook_digest: &digest,
                duration_seconds: duration,
                exit_code,
                summary: report::json::summary(&reports),
                hosts: report::json::hosts(&reports),
            };
            // Scheduled passes on stdout are a history: JSON Lines, one
            // compact document a pass. A file given with --output holds one
            // pass, replaced whole each time, and stays readable.
            let lines = args.every.is_some() && args.output.is_none();
            let text = if lines { serde_json::to_string(&document) } else { serde_json::to_string_pretty(&document) };
            text.expect("the report serializes") + "\n"
        }
    };
    match &args.output {
        None => out!("{text}"),
        Some(path) => {
            if let Err(e) = replace_file(path, text.as_bytes()) {
                eprintln!("sentry-provision: drift: cannot write {}: {e}", path.display());
            }
        }
    }
    append_history(
        args,
        &serde_json::json!({
            "time": rfc3339(wall),
            "playbook_digest": digest,
            "duration_seconds": duration,
            "summary": summary,
            "exit_code": exit_code,
        }),
    );
    Ok(exit_code)
}

/// Whether drift is left after the pass: any at all without remediation;
/// with `--remediate=all`, drift it did not put back; with `--remediate`
/// (host drift only), the same plus every other kind, which it leaves alone.
fn unresolved(report: &HostReport, remediate: Remediate) -> bool {
    if report.drift.is_empty() {
        return false;
    }
    let restored = !report.remediated.is_empty();
    match remediate {
        Remediate::Nothing => true,
        Remediate::HostDrift => !restored || report.drift.iter().any(|item| item.state != ItemState::HostDrift),
        Remediate::All => !restored,
    }
}

fn style_for(args: &DriftArgs) -> report::human::Style {
    if args.output.is_some() { report::human::Style::never() } else { report::human::Style::detect() }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Writes `path` whole or not at all: a temp file beside it, fsync, rename.
/// A device or pipe (`/dev/stdout`, `/dev/null`) is written to, never replaced.
fn replace_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return std::fs::OpenOptions::new().write(true).open(path)?.write_all(content);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut temp = tempfile::Builder::new().prefix(".sentry-provision.").tempfile_in(&dir)?;
    temp.write_all(content)?;
    temp.as_file().sync_all()?;
    let file = temp.persist(path).map_err(|e| e.error)?;
    // Readable by a metrics collector running as another user.
    let mut permissions = file.metadata()?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o644);
    file.set_permissions(permissions)
}

fn history_path(args: &DriftArgs) -> Option<PathBuf> {
    if let Some(path) = &args.history {
        return Some(path.clone());
    }
    state_dir().map(|dir| dir.join("sentry-provision/drift-history.jsonl"))
}

/// `$XDG_STATE_HOME`, else `~/.local/state` (a relative one is ignored, as
/// the XDG spec says: it would move with the working folder).
fn state_dir() -> Option<PathBuf> {
    let absolute = |name| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
    absolute("XDG_STATE_HOME").or_else(|| absolute("HOME").map(|home| home.join(".local/state")))
}

/// Where drift passes keep each host's facts from its last pass (in the
/// state folder of the default history).
fn facts_path() -> Option<PathBuf> {
    state_dir().map(|dir| dir.join("sentry-provision/facts.json"))
}

fn append_history(args: &DriftArgs, line: &serde_json::Value) {
    let Some(path) = history_path(args) else { return };
    let result = (|| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        // One write per line, so concurrent readers never see half of one.
        file.write_all(format!("{line}\n").as_bytes())
    })();
    if let Err(e) = result {
        eprintln!("sentry-provision: drift: cannot append to {}: {e}", path.display());
    }
}

const UNIT: &str = "sentry-provision-drift";

/// A secret given inline with `-e` would be written into the unit file
/// and the cron line, and be in the scheduled process's command line,
/// which every local user can read (`/proc/PID/cmdline`): it is refused,
/// with the way round it. `-e @FILE` puts only the file's name there.
fn refuse_inline_secrets(extra_vars: &[String], secrets: &Secrets) -> Result<(), String> {
    let mut names = Vec::new();
    for item in extra_vars.iter().filter(|e| !e.starts_with('@')) {
        for (name, value) in crate::extra_vars::parse_extra_vars(std::slice::from_ref(item))? {
            let assignment = match value {
                serde_json::Value::String(text) => format!("{name}={text}"),
                other => format!("{name}={other}"),
            };
            if secrets.mask(&assignment) != assignment {
                names.push(name);
            }
        }
    }
    match names.as_slice() {
        [] => Ok(()),
        names => Err(format!(
            "--install-timer: -e gives the secret {} inline; it would be written into the unit file and the cron \
             line, and be in the scheduled command's arguments, which every user of this machine can read. \
             Put it in a file only root can read (chmod 600) and pass `-e @FILE`, or in the inventory's variables",
            names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Writes `<timer_dir>/sentry-provision-drift.{service,timer}` running this
/// same drift check every `--every` (15m by default), and prints the cron line.
fn install_timer(args: &DriftArgs) -> Result<(), String> {
    let period = args.every.unwrap_or(Duration::from_secs(15 * 60));
    let absolute = |p: &Path| -> Result<String, String> {
        std::path::absolute(p).map(|p| p.display().to_string()).map_err(|e| format!("{}: {e}", p.display()))
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let mut command = vec![exe.display().to_string(), "drift".into()];
    let common = &args.common;
    command.extend(["-i".into(), absolute(&common.inventory)?, "-p".into(), absolute(&common.playbook)?]);
    if let Some(config) = &common.ssh_config {
        command.extend(["--ssh-config".into(), absolute(config)?]);
    }
    if let Some(limit) = &common.limit {
        command.extend(["-l".into(), limit.clone()]);
    }
    for extra in &common.extra_vars {
        command.extend(["-e".into(), extra.clone()]);
    }
    let format = match args.format {
        Format::Human => "human",
        Format::Json => "json",
        Format::Prometheus => "prometheus",
    };
    command.extend(["--format".into(), format.into()]);
    if let Some(output) = &args.output {
        command.extend(["--output".into(), absolute(output)?]);
    }
    if let Some(history) = &args.history {
        command.extend(["--history".into(), absolute(history)?]);
    }
    match args.remediation() {
        Remediate::Nothing => {}
        Remediate::HostDrift => command.push("--remediate".into()),
        Remediate::All => command.push("--remediate=all".into()),
    }
    let exec_start: Vec<String> = command.iter().map(|a| systemd_quote(a)).collect();
    let seconds = period.as_secs().max(1);
    // systemd gives a system service no $HOME: the scheduled passes are told
    // the state folder this run would use, for their history and the hosts' facts.
    let state = state_dir();
    let environment = match &state {
        Some(dir) => format!("Environment={}\n", systemd_quote(&format!("XDG_STATE_HOME={}", dir.display()))),
        None => String::new(),
    };
    let service = format!(
        "[Unit]\nDescription=sentry-provision drift check\nWants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\nType=oneshot\nWorkingDirectory={}\n{environment}ExecStart={}\n# Exit 2 means drift was found: a result, not a failure.\nSuccessExitStatus=2\n",
        systemd_quote(&absolute(Path::new("."))?),
        exec_start.join(" ")
    );
    let timer = format!(
        "[Unit]\nDescription=Run the sentry-provision drift check every {}\n\n\
         [Timer]\nOnBootSec=5min\nOnUnitActiveSec={seconds}s\nRandomizedDelaySec={}s\nPersistent=true\n\n\
         [Install]\nWantedBy=timers.target\n",
        humantime::format_duration(Duration::from_secs(seconds)),
        (seconds / 10).clamp(1, 300)
    );
    std::fs::create_dir_all(&args.timer_dir).map_err(|e| format!("{}: {e}", args.timer_dir.display()))?;
    for (name, text) in [(format!("{UNIT}.service"), service), (format!("{UNIT}.timer"), timer)] {
        let path = args.timer_dir.join(&name);
        replace_file(&path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
        outln!("wrote {}", path.display());
    }
    outln!("enable it with: systemctl daemon-reload && systemctl enable --now {UNIT}.timer");
    let mut shell: Vec<String> = command.iter().map(|a| cron_quote(a)).collect();
    if let Some(dir) = &state {
        shell.insert(0, format!("XDG_STATE_HOME={}", cron_quote(&dir.display().to_string())));
    }
    outln!("or with cron (/etc/cron.d/{UNIT}):\n{} root {}", cron_schedule(seconds), shell.join(" "));
    Ok(())
}

/// A cron schedule as close to every `seconds` as cron's minutes allow.
fn cron_schedule(seconds: u64) -> String {
    let minutes = (seconds / 60).max(1);
    match minutes {
        m if m < 60 => format!("*/{m} * * * *"),
        m if m % 60 == 0 && m / 60 < 24 => format!("0 */{} * * *", m / 60),
        _ => "0 0 * * *".into(),
    }
}

/// Quotes for the shell only when needed; `%` is special to cron.
fn cron_quote(arg: &str) -> String {
    let plain = arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
    let quoted = if plain { arg.to_owned() } else { crate::remote::quote(arg) };
    quoted.replace('%', "\\%")
}

fn systemd_quote(arg: &str) -> String {
    let escaped = arg.replace('%', "%%");
    if escaped.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'' || c == ';') {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_given_as_output_is_written_to_and_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        replace_file(Path::new("/dev/null"), b"report").unwrap();
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    }

    #[test]
    fn a_report_replaces_the_old_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/report.prom");
        replace_file(&path, b"one").unwrap();
        replace_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn cron_gets_the_nearest_schedule_it_can_express() {
        assert_eq!(cron_schedule(15 * 60), "*/15 * * * *");
        assert_eq!(cron_schedule(30), "*/1 * * * *");
        assert_eq!(cron_schedule(2 * 3600), "0 */2 * * *");
    }

    #[test]
    fn systemd_arguments_are_quoted_and_percent_signs_escaped() {
        assert_eq!(systemd_quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(systemd_quote("a b"), "\"a b\"");
        assert_eq!(systemd_quote("50%"), "50%%");
    }

    #[test]
    fn cron_arguments_are_quoted_only_when_needed() {
        assert_eq!(cron_quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(cron_quote("a b"), "'a b'");
        assert_eq!(cron_quote("x=50%"), "'x=50\\%'");
    }
}
