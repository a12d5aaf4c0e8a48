//! How audit and facts reach their hosts: the inventory's selection, the
//! ssh options, and one script run on every selected host.

use crate::inventory::{self, Inventory};
use crate::run::{self, Mode};
use crate::transport::{self, Transport};

/// The selected hosts of an inventory and how to reach them, for the
/// commands that talk to hosts without a playbook.
pub struct Reach {
    inventory: Inventory,
    selected: Vec<String>,
    ssh: transport::SshOptions,
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
        Ok(Reach { inventory, selected, ssh, command_timeout: settings.command_timeout, _control: control })
    }

    pub fn hosts(&self) -> Vec<&inventory::Host> {
        self.inventory.hosts.iter().filter(|h| self.selected.contains(&h.name)).collect()
    }

    /// Runs `script` once on every selected host, all at once: each host's
    /// output, in the order of [`Reach::hosts`], or why there is none.
    pub async fn run_everywhere(&self, script: String) -> Vec<Result<transport::Output, transport::Error>> {
        let script = std::sync::Arc::new(transport::Script::from(script));
        let hosts = self.hosts();
        let mut running = tokio::task::JoinSet::new();
        let mut hosts_of_tasks = std::collections::HashMap::new();
        let timeout = self.command_timeout;
        for (i, host) in hosts.iter().enumerate() {
            let (target, _) = run::target_of(host);
            let (ssh, script, become_root) = (self.ssh.clone(), script.clone(), host.become_root);
            let task = running.spawn(async move {
                let transport = match Transport::connect(&target, &ssh).await {
                    Ok(t) => t,
                    Err(e) => return (i, Err(e)),
                };
                let output = transport.run(&script, become_root, timeout).await;
                transport.close().await;
                (i, output)
            });
            hosts_of_tasks.insert(task.id(), i);
        }
        let mut outputs: Vec<Option<Result<transport::Output, transport::Error>>> =
            hosts.iter().map(|_| None).collect();
        while let Some(joined) = running.join_next_with_id().await {
            match joined {
                Ok((_, (i, output))) => outputs[i] = Some(output),
                // That host alone fails.
                Err(e) => {
                    if let Some(&i) = hosts_of_tasks.get(&e.id()) {
                        let why = if e.is_panic() { crate::unwind::message(&e.into_panic()) } else { e.to_string() };
                        outputs[i] = Some(Err(transport::Error::Failed(format!("internal error: {why}"))));
                    }
                }
            }
        }
        outputs.into_iter().map(|o| o.expect("every host's task reported")).collect()
    }
}
