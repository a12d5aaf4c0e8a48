//! How audit and facts reach their hosts: the inventory's selection, the
//! ssh options, and one script run on every selected host.

use crate::inventory::{self, Inventory};
use crate::run::{self, Mode};
use crate::transport;

/// The selected hosts of an inventory and how to reach them, for the
/// commands that talk to hosts without a playbook.
pub struct Reach {
    inventory: Inventory,
    selected: Vec<String>,
    ssh: transport::SshOptions,
    forks: usize,
    command_timeout: Option<std::time::Duration>,
    /// Holds the control sockets' folder for as long as the connections live.
    _control: transport::control::ControlFolder,
}

impl Reach {
    pub fn new(args: &crate::cli::CommonArgs) -> Result<Reach, String> {
        let settings = args.settings(Mode::Check)?;
        let inventory = inventory::load(&settings.inventory, &settings.extra_vars).map_err(|e| e.to_string())?;
        let selected = inventory
            .select(settings.limit.as_deref().unwrap_or("all"))
            .map_err(|e| format!("--limit: {e}"))?
            .iter()
            .map(|h| h.name.clone())
            .collect();
        let control =
            transport::control_directory().map_err(|e| format!("cannot create a control socket folder: {e}"))?;
        let ssh = run::ssh_options(&settings, control.path());
        Ok(Reach {
            inventory,
            selected,
            ssh,
            forks: settings.forks,
            command_timeout: settings.command_timeout,
            _control: control,
        })
    }

    pub fn hosts(&self) -> Vec<&inventory::Host> {
        self.inventory.hosts.iter().filter(|h| self.selected.contains(&h.name)).collect()
    }

    /// Runs `script` once on every selected host, through the run's
    /// fan-out: each host's output, in the order of [`Reach::hosts`], or why
    /// there is none.
    pub async fn run_everywhere(&self, script: String) -> Vec<Result<transport::Output, transport::Error>> {
        run::run_everywhere(&self.hosts(), &self.ssh, self.forks, self.command_timeout, script).await
    }
}
