//! The command line: clap commands and options, and their translation into run settings.

use crate::extra_vars::parse_extra_vars;
use crate::run::{Mode, Remediate, Settings};
use crate::transport::HostKeys;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "sentry-provision",
    version,
    about = "Agentless, idempotent provisioning of Sentry's self-hosted performance tuning over SSH",
    after_help = "Examples:\n  sentry-provision diff -i inventory\n  sentry-provision apply -i inventory\n  sentry-provision drift -i inventory --every 15m --format prometheus --output /var/lib/node_exporter/textfile/sentry_provision.prom"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Converge every selected host to the playbook (or show what would change with --check).
    #[command(after_help = "Example:\n  sentry-provision apply -i inventory --check --diff")]
    Apply(ApplyArgs),
    /// Show what `apply` would change, as unified diffs; touches nothing (same as apply --check --diff).
    #[command(after_help = "Example:\n  sentry-provision diff -i inventory -l host1")]
    Diff(DiffArgs),
    /// Detect drift: files and live state against the playbook and the last apply.
    #[command(
        after_help = "Examples:\n  sentry-provision drift -i inventory\n  sentry-provision drift -i inventory --every 15m --format json --output drift.json\n  sentry-provision drift -i inventory --remediate"
    )]
    Drift(DriftArgs),
    /// Show the inventory: every host and its variables (--list), the group tree (--graph), or one host (--host).
    #[command(
        after_help = "Examples:\n  sentry-provision inventory -i inventory --graph\n  sentry-provision inventory -i inventory --host sentry-web01.example.com"
    )]
    Inventory(InventoryArgs),
    /// Gather each host's facts (cpus, memory, os, service manager, tools) in one round trip, as JSON.
    #[command(after_help = "Example:\n  sentry-provision facts -i inventory -l host1")]
    Facts(FactsArgs),
    /// Render every host's templates locally with stand-in facts; no SSH.
    #[command(
        after_help = "Examples:\n  sentry-provision render -i inventory --host host1\n  sentry-provision render -i inventory --out rendered/"
    )]
    Render(RenderArgs),
    /// Check a playbook and its templates without any host (optionally with an inventory's variables).
    #[command(after_help = "Example:\n  sentry-provision check-playbook -p playbooks/sentry-tuning.yml")]
    CheckPlaybook(CheckArgs),
    /// Read each host (no playbook, nothing written) and say where it strays from Sentry's tuning guide, and why it matters.
    #[command(after_help = "Example:\n  sentry-provision audit -i inventory")]
    Audit(AuditArgs),
    /// Print shell completions.
    #[command(after_help = "Example:\n  sentry-provision completions bash > /etc/bash_completion.d/sentry-provision")]
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff).
    #[command(after_help = "Example:\n  sentry-provision man | man -l -")]
    Man,
}

/// The options of every other command are accepted too (`--ssh-config`, ...),
/// so one set of flags works for every command: `-e` and `--limit` count
/// here, the rest change nothing in an offline listing.
#[derive(Args, Debug)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Every host with its variables, and the groups (the default).
    #[arg(long, conflicts_with_all = ["graph", "host"])]
    pub list: bool,
    /// The group tree.
    #[arg(long, conflicts_with = "host")]
    pub graph: bool,
    /// One host's variables.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
    /// Where Sentry's configuration is on the hosts.
    #[arg(long, value_name = "PATH", default_value = "/etc/sentry/sentry.conf.py")]
    pub sentry_conf: String,
}

#[derive(Args, Debug)]
pub struct FactsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Only this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Write `<DIR>/<host>/<path>` instead of printing.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The playbook to check.
    #[arg(short, long, default_value = "playbooks/sentry-tuning.yml")]
    pub playbook: PathBuf,
    /// Also render for every host of this inventory.
    #[arg(short, long)]
    pub inventory: Option<PathBuf>,
    /// Extra variables, as for apply.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE")]
    pub extra_vars: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Output format: human text, or one JSON document on stdout (messages on stderr).
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Output format: human text, or one JSON document on stdout (messages on stderr).
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
    /// Show what would change; touch nothing.
    #[arg(short = 'C', long)]
    pub check: bool,
    /// Show unified diffs of changed files.
    #[arg(short = 'D', long)]
    pub diff: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Prometheus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RemediateArg {
    /// Put back what moved on drifted hosts.
    Drifted,
    /// Also apply pending playbook changes.
    All,
}

#[derive(Args, Debug)]
pub struct DriftArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Run a pass every DURATION (`30s`, `15m`, `1h`) until SIGINT or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Write each pass's report to FILE (replaced atomically) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Append each pass's summary to FILE (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Put drifted hosts back (`--remediate`), or also apply pending changes (`--remediate=all`).
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "drifted")]
    pub remediate: Option<RemediateArg>,
    /// Show the unified diff of each drifted file.
    #[arg(short = 'D', long)]
    pub diff: bool,
    /// Write a systemd service and timer running this drift check every --every (default 15m), and print the cron equivalent.
    #[arg(long)]
    pub install_timer: bool,
    /// Where --install-timer writes its units.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    pub timer_dir: PathBuf,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as 30s, 15m or 1h: {e}"))?;
    if duration < Duration::from_millis(100) {
        return Err(format!("`{text}` is too short; at least 100ms"));
    }
    Ok(duration)
}

#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Inventory file or folder (Ansible INI or YAML; group_vars/ and host_vars/ beside it).
    #[arg(short, long)]
    pub inventory: PathBuf,
    /// The playbook to run.
    #[arg(short, long, default_value = "playbooks/sentry-tuning.yml")]
    pub playbook: PathBuf,
    /// Only touch hosts or groups matching this pattern (`web,db`, `sentry:!host3`, `web*`).
    #[arg(short, long)]
    pub limit: Option<String>,
    /// Only run steps with one of these tags.
    #[arg(short, long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Skip steps with any of these tags.
    #[arg(long, value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// Extra variables: `key=value` pairs (several per flag, split on whitespace; quote a value to keep its spaces), `@file.yml` or a `{...}` mapping; beat every other variable.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE")]
    pub extra_vars: Vec<String>,
    /// How many hosts to work on at once.
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub forks: u32,
    /// Lines of context around each change in diffs.
    #[arg(long, default_value_t = 3)]
    pub diff_context: usize,
    /// An ssh_config file to use instead of ~/.ssh/config.
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Add unknown host keys to known_hosts (changed keys are still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Seconds to wait for an SSH connection.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub connect_timeout: u64,
    /// Seconds each round trip may take (0: no limit); a host that takes longer fails and the others go on.
    // 10 minutes: far above what real round trips take (a first install's
    // reloads, superlance's pip install at about a minute), far below
    // "for ever", which is what a hung host cost before.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub command_timeout: u64,
    /// Keep the previous version of every changed file in the host's state folder (`backups/<time><path>`).
    #[arg(long)]
    pub backup: bool,
    /// Accepted for scripts written before rollback became what every run does
    /// (a handler that fails or does not take effect takes the run back).
    #[arg(long, hide = true)]
    pub rollback_on_failure: bool,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// More output on stderr: -v round trips and timings, -vv their stderr too.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Rolling updates: hosts per batch (`2`) or share of them (`25%`); beats the plays' `serial`.
    #[arg(long, value_name = "N|N%", value_parser = crate::playbook::Serial::parse)]
    pub serial: Option<crate::playbook::Serial>,
    /// Seconds to wait for another run's lock on a host before failing that host.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub lock_timeout: u64,
}

impl CommonArgs {
    pub fn settings(&self, mode: Mode) -> Result<Settings, String> {
        if let Some(config) = &self.ssh_config
            && !config.is_file()
        {
            return Err(format!("--ssh-config: {} is not a file", config.display()));
        }
        if self.connect_timeout == 0 {
            return Err("--connect-timeout: must be at least 1 second".into());
        }
        Ok(Settings {
            inventory: self.inventory.clone(),
            playbook: self.playbook.clone(),
            limit: self.limit.clone(),
            tags: self.tags.clone(),
            skip_tags: self.skip_tags.clone(),
            extra_vars: parse_extra_vars(&self.extra_vars)?,
            forks: self.forks as usize,
            mode,
            diff_context: self.diff_context,
            ssh_config: self.ssh_config.clone(),
            host_keys: if self.accept_new_host_keys { HostKeys::AcceptNew } else { HostKeys::Strict },
            connect_timeout: Duration::from_secs(self.connect_timeout),
            command_timeout: (self.command_timeout > 0).then(|| Duration::from_secs(self.command_timeout)),
            backup: self.backup,
            lock_timeout: Duration::from_secs(self.lock_timeout),
            verbosity: self.verbose,
            quiet: self.quiet,
            serial: self.serial,
        })
    }
}

impl DriftArgs {
    pub fn remediation(&self) -> Remediate {
        match self.remediate {
            None => Remediate::Nothing,
            Some(RemediateArg::Drifted) => Remediate::HostDrift,
            Some(RemediateArg::All) => Remediate::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_has_a_time_limit_unless_told_it_has_none() {
        let settings = |extra: &[&str]| {
            let mut args = vec!["sentry-provision", "apply", "-i", "inventory"];
            args.extend_from_slice(extra);
            let Command::Apply(apply) = Cli::try_parse_from(args).unwrap().command else { unreachable!() };
            apply.common.settings(Mode::Apply).unwrap().command_timeout
        };
        assert_eq!(settings(&[]), Some(Duration::from_secs(600)));
        assert_eq!(settings(&["--command-timeout", "5"]), Some(Duration::from_secs(5)));
        assert_eq!(settings(&["--command-timeout", "0"]), None);
    }

    #[test]
    fn every_command_takes_the_same_connection_flags() {
        for command in ["inventory", "apply", "diff", "drift", "audit", "facts", "render"] {
            let args = [
                "sentry-provision",
                command,
                "-i",
                "inventory",
                "--ssh-config",
                "ssh_config",
                "-l",
                "web",
                "-e",
                "a=1",
                "--connect-timeout",
                "3",
            ];
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{command}: {e}");
            }
        }
    }
}
