//! What a run was asked to do: the options of the command line, checked.

use crate::inventory::Vars;
use crate::plan::compile::Selection;
use crate::playbook;
use crate::transport::{HostKeys, SshOptions};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory: PathBuf,
    pub playbook: PathBuf,
    pub limit: Option<String>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: Vars,
    pub forks: usize,
    pub mode: Mode,
    /// Keep the previous version of every changed file (`--backup`).
    pub backup: bool,
    /// How long to wait for another run's lock on a host.
    pub lock_timeout: Duration,
    /// `-v`: round trips and timings on stderr; `-vv`: their stderr too.
    pub verbosity: u8,
    /// `-q`: no progress output.
    pub quiet: bool,
    /// `--serial`: hosts per batch, over the plays' own `serial`.
    pub serial: Option<playbook::Serial>,
    pub diff_context: usize,
    pub ssh_config: Option<PathBuf>,
    pub host_keys: HostKeys,
    pub connect_timeout: Duration,
    pub command_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    /// Plan and report; touch nothing.
    Check,
    /// Plan, probe live state, classify; remediate if asked.
    Drift(Remediate),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remediate {
    Nothing,
    /// Put back what moved on the host (files and live state), nothing else.
    HostDrift,
    /// Also apply what the playbook changed since the last apply.
    All,
}

impl Settings {
    /// Which steps run, and whether every file keeps a backup.
    pub fn selection(&self) -> Selection<'_> {
        Selection { tags: &self.tags, skip_tags: &self.skip_tags, backup: self.backup }
    }
}

pub fn ssh_options(settings: &Settings, control_directory: &std::path::Path) -> SshOptions {
    SshOptions {
        config_file: settings.ssh_config.clone(),
        host_keys: settings.host_keys,
        control_directory: control_directory.to_path_buf(),
        connect_timeout: settings.connect_timeout,
    }
}
