//! The command line: clap commands and options, and their translation into run settings.

use crate::inventory::Vars;
use crate::run::Settings;
use crate::transport::HostKeys;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "sentry-provision",
    version,
    about = "Agentless, idempotent provisioning of Sentry's self-hosted performance tuning over SSH",
    after_help = "Examples:\n  sentry-provision diff -i inventory\n  sentry-provision apply -i inventory\n  sentry-provision apply -i inventory --check --diff -l web"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Converge every selected host to the playbook (or show what would change with --check).
    #[command(after_help = "Example:\n  sentry-provision apply -i inventory --check --diff")]
    Apply(RunArgs),
    /// Show what `apply` would change, as unified diffs; touches nothing (same as apply --check --diff).
    #[command(after_help = "Example:\n  sentry-provision diff -i inventory -l host1")]
    Diff(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
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
    /// Extra variables, `key=value` (value read as YAML) or `@file.yml`; beat every other variable.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE")]
    pub extra_vars: Vec<String>,
    /// How many hosts to work on at once.
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub forks: u32,
    /// Show what would change; touch nothing.
    #[arg(short = 'C', long)]
    pub check: bool,
    /// Show unified diffs of changed files.
    #[arg(short = 'D', long)]
    pub diff: bool,
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
    /// Seconds each round trip may take (none by default).
    #[arg(long, value_name = "SECONDS")]
    pub command_timeout: Option<u64>,
}

impl RunArgs {
    pub fn settings(&self, force_check: bool) -> Result<Settings, String> {
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
            check: self.check || force_check,
            diff_context: self.diff_context,
            ssh_config: self.ssh_config.clone(),
            host_keys: if self.accept_new_host_keys { HostKeys::AcceptNew } else { HostKeys::Strict },
            connect_timeout: Duration::from_secs(self.connect_timeout),
            command_timeout: self.command_timeout.map(Duration::from_secs),
        })
    }
}

/// `-e key=value` (the value read as YAML, so `4` is a number), `-e @vars.yml`,
/// or `-e '{"key": "value"}'`.
pub fn parse_extra_vars(items: &[String]) -> Result<Vars, String> {
    let mut vars = Vars::new();
    for item in items {
        if let Some(file) = item.strip_prefix('@') {
            let loaded =
                crate::inventory::read_vars_file(std::path::Path::new(file)).map_err(|e| format!("-e {item}: {e}"))?;
            vars.extend(loaded);
        } else if item.trim_start().starts_with('{') {
            match serde_yaml::from_str::<serde_json::Value>(item) {
                Ok(serde_json::Value::Object(map)) => vars.extend(map),
                _ => return Err(format!("-e `{item}`: not a mapping of variables")),
            }
        } else {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("-e `{item}`: expected KEY=VALUE, @FILE or a {{...}} mapping"))?;
            let key = key.trim();
            if key.is_empty()
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || key.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(format!("-e `{item}`: `{key}` is not a variable name (letters, digits, _)"));
            }
            let value = match serde_yaml::from_str::<serde_json::Value>(value) {
                Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v,
                _ => serde_json::Value::String(value.to_owned()),
            };
            vars.insert(key.to_owned(), value);
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_variables_read_numbers_as_numbers_and_the_rest_as_text() {
        let vars =
            parse_extra_vars(&["n=4".into(), "maxmemory=2gb".into(), "flag=true".into(), "empty=".into()]).unwrap();
        assert_eq!(vars["n"], 4);
        assert_eq!(vars["maxmemory"], "2gb");
        assert_eq!(vars["flag"], true);
        assert_eq!(vars["empty"], "");
    }

    #[test]
    fn a_malformed_extra_variable_names_itself() {
        assert!(parse_extra_vars(&["novalue".into()]).unwrap_err().contains("`novalue`"));
        assert!(parse_extra_vars(&["bad key=1".into()]).unwrap_err().contains("`bad key`"));
    }
}
