//! A host's writes: the install round trip, the handlers round trip that
//! follows it, and the rollback that takes a failed run back.

use super::failure::{HostFailure, Kind, Phase};
use super::host::{HostRun, Inspection};
use crate::plan::compile::HostTasks;
use crate::plan::{self, Action, Plan};
use crate::remote;
use crate::report::model::{Backup, HandlerOutcome};
use crate::test_hooks;

impl HostRun<'_> {
    /// Round trips 2 and 3: write what changed (recording the handlers owed
    /// first and what was applied last), then run the handlers and verify
    /// each took effect. The install is all or nothing on the host. A
    /// handler that fails, or does not take effect, after files moved
    /// takes the run back: every file of the run returns, with the record
    /// of what was applied, and the handlers that ran (and the one that
    /// failed) run again, so the services run what the restored files say
    /// (web and nginx switch protocol together, or not at all).
    pub(super) async fn install_and_reload(&mut self, inspection: &Inspection, plan: &Plan) -> Result<(), HostFailure> {
        let result = self.install_then_reload(inspection, plan).await;
        let Err(failure) = result else { return Ok(()) };
        if failure.kind == Kind::Interrupted && !self.report.written.is_empty() && self.report.handlers.is_empty() {
            return match self.roll_back(inspection, plan, &[]).await {
                Ok(()) => {
                    let undone = self.report.rolled_back.len();
                    Err(failure.and_then_said(|message| {
                        format!(
                            "{message}: undone, {undone} file(s) back as they were before any service loaded them; \
                             no handler ran"
                        )
                    }))
                }
                Err(why) => {
                    Err(failure.and_then_said(|message| format!("{message}; undoing the install failed: {why}")))
                }
            };
        }
        if failure.kind != Kind::Failed || self.report.written.is_empty() {
            return Err(failure);
        }
        // The handlers that may have loaded the new files: those that ran,
        // and the one that failed.
        let rerun: Vec<String> = if self.report.handlers.is_empty() {
            // No reply from the handlers round trip (a timeout, a reply cut
            // short): any of them may have run.
            self.handlers_sent.clone()
        } else {
            self.report.handlers.iter().map(|h| h.name.clone()).collect()
        };
        match self.roll_back(inspection, plan, &rerun).await {
            Ok(()) => {
                let rolled_back = self.report.rolled_back.len();
                let again = if rerun.is_empty() {
                    String::new()
                } else {
                    format!(
                        " and ran {} again on them",
                        rerun.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ")
                    )
                };
                Err(failure.and_then_said(|message| format!("{message}; rolled back {rolled_back} file(s){again}")))
            }
            Err(why) => Err(failure.and_then_said(|message| format!("{message}; the rollback failed too: {why}"))),
        }
    }

    /// Puts back every file this run wrote, each on its own (the entries
    /// the install kept are renamed back: no space needed, inode, owner and
    /// times as they were), with the records of what was applied and of
    /// the handlers owed, then runs `rerun` (handlers in playbook order) on
    /// them. The handlers read the restored files, so live state follows
    /// the files. A path that cannot go back is named, and the handlers
    /// still run on the others.
    async fn roll_back(&mut self, inspection: &Inspection, plan: &Plan, rerun: &[String]) -> Result<(), HostFailure> {
        let token = self.install_token.clone();
        let written: Vec<(usize, &plan::FileChange)> =
            plan.files.iter().enumerate().filter(|(_, f)| self.report.written.contains(&f.path)).collect();
        let kept: Vec<Option<String>> = written
            .iter()
            .map(|(i, f)| match f.before {
                plan::Entry::Missing => None,
                _ => Some(remote::kept_path(&f.path, &token, *i)),
            })
            .collect();
        let paths: Vec<remote::Restore> = written
            .iter()
            .zip(&kept)
            .map(|((_, f), kept)| remote::Restore { path: &f.path, kept: kept.as_deref() })
            .collect();
        let record =
            serde_json::to_string(&inspection.applied.clone().unwrap_or_default()).expect("the record serializes");
        // Owed after the rollback: what an earlier run left, and what runs
        // again now.
        let owed: Vec<String> = inspection
            .tasks
            .handler_order()
            .into_iter()
            .filter(|h| inspection.plan.carried_over.contains(h) || rerun.contains(h))
            .collect();
        let mut folders: Vec<String> = written.iter().map(|(_, f)| remote::private_dir(&f.path, &token)).collect();
        folders.sort();
        folders.dedup();
        let restore = remote::restore(&self.job.state, &paths, &folders, &owed, &record);
        let output = self.round_trip(Phase::Rollback, &restore.into()).await?;
        let result = remote::parse_restore(&output.stdout)
            .map_err(|e| HostFailure::unreadable_reply(Phase::Rollback, e, &output))?;
        self.report.rolled_back =
            result.back.iter().filter_map(|&k| written.get(k)).map(|(_, f)| f.path.clone()).collect();
        self.report.written.retain(|path| !self.report.rolled_back.contains(path));
        let stuck: Vec<String> = (result.stuck.iter())
            .filter_map(|(k, why)| written.get(*k).map(|(_, f)| format!("{} ({why})", f.path)))
            .collect();
        let undo = Plan { handlers: rerun.to_vec(), ..Plan::default() };
        let forward = std::mem::take(&mut self.report.handlers);
        let result_handlers = self.run_handlers(inspection, &undo, false).await;
        let undone = std::mem::replace(&mut self.report.handlers, forward);
        self.report.handlers.extend(undone.into_iter().map(|h| HandlerOutcome { rollback: true, ..h }));
        if let Some(why) = result.failure {
            return Err(HostFailure::failed(Phase::Rollback, format!("rollback: {why}")));
        }
        if !stuck.is_empty() {
            return Err(HostFailure::failed(
                Phase::Rollback,
                format!("rollback: could NOT put back {}", stuck.join("; ")),
            ));
        }
        result_handlers
    }

    async fn install_then_reload(&mut self, inspection: &Inspection, plan: &Plan) -> Result<(), HostFailure> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let restored = plan.files.iter().map(|f| (&f.path, &f.after));
        let in_place = plan.desired.iter().filter(|(path, _)| !inspection.snapshot_differs(path, plan));
        let record = plan::drift::record(
            inspection.applied.as_ref(),
            restored.chain(in_place),
            &self.prepared.digest,
            now,
            &inspection.fingerprints,
        );
        let record_changed = inspection.applied.as_ref() != Some(&record);

        if !plan.files.is_empty() || !plan.commands.is_empty() || record_changed {
            let writes: Vec<remote::FileWrite> = plan
                .files
                .iter()
                .map(|f| remote::FileWrite {
                    path: &f.path,
                    desired: Some(&f.after),
                    validate: &f.validate,
                    backup: f.backup,
                })
                .collect();
            let commands: Vec<(usize, &str)> = plan.commands.iter().map(|c| (c.index, c.cmd.as_str())).collect();
            let record_json = serde_json::to_string(&record).expect("the record serializes");
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "");
            let install = remote::install(&remote::Install {
                state: &self.job.state,
                pending: &plan.handlers,
                writes: &writes,
                commands: &commands,
                applied: Some(&record_json),
                stamp: &stamp,
                token: &self.install_token,
                keep_olds: !plan.handlers.is_empty(),
                crash_at: test_hooks::crash_at(),
            });
            let output = self.round_trip(Phase::Install, &install).await;
            // A crash point in the install script kills the controller too, once the round trip ends.
            test_hooks::crash_if(|at| !at.starts_with("after-") && !at.starts_with("handler:"));
            let output = output?;
            let result = remote::parse_install(&output.stdout)
                .map_err(|e| HostFailure::unreadable_reply(Phase::Install, e, &output))?;
            self.report.written =
                result.written.iter().filter_map(|&i| plan.files.get(i)).map(|f| f.path.clone()).collect();
            self.report.commands_ran = result.commands_ran.clone();
            self.report.backups = (result.backups.into_iter())
                .filter_map(|(i, copy)| plan.files.get(i).map(|f| Backup { path: f.path.clone(), copy }))
                .collect();
            if let Some((what, message)) = result.failure {
                // The install took its backups back with it.
                self.report.backups.clear();
                let what = describe_failed_write(&what, plan, &inspection.tasks);
                let after = if result.stuck.is_empty() {
                    "every file of the run is back as it was, and no handler ran".to_owned()
                } else {
                    let stuck: Vec<&str> =
                        result.stuck.iter().filter_map(|&i| plan.files.get(i)).map(|f| f.path.as_str()).collect();
                    format!("no handler ran; these could NOT be put back: {}", stuck.join(", "))
                };
                return Err(HostFailure::failed(Phase::Install, format!("install: {what}: {message} ({after})")));
            }
        }
        test_hooks::crash_here("after-install");
        // Interrupted here with handlers to come, the run is undone
        // (install_and_reload): its files go back before any service has
        // loaded them. With none to come, the run is whole as it is.
        if !plan.handlers.is_empty() {
            self.stop_if_interrupted("after the install")?;
        }
        self.run_handlers(inspection, plan, true).await
    }

    /// Runs the plan's handlers, each followed (`verify`) by the probes whose
    /// remedy it is, in one round trip: a handler counts as done only when
    /// those pass.
    async fn run_handlers(&mut self, inspection: &Inspection, plan: &Plan, verify: bool) -> Result<(), HostFailure> {
        if plan.handlers.is_empty() {
            return Ok(());
        }
        let to_run: Vec<(&str, &str)> = plan
            .handlers
            .iter()
            .filter_map(|name| {
                inspection.tasks.handlers.iter().find(|(n, _)| n == name).map(|(n, c)| (n.as_str(), c.as_str()))
            })
            .collect();
        let probes: Vec<remote::Verify> = if verify {
            inspection
                .tasks
                .probes
                .iter()
                .filter_map(|(name, command, remedy)| {
                    let after = to_run.iter().position(|(n, _)| Some(*n) == remedy.as_deref())?;
                    Some(remote::Verify { after, name, command })
                })
                .collect()
        } else {
            Vec::new()
        };
        // After the forward run's handlers all took effect, the entries its
        // install kept for a rollback go.
        let kept: Vec<String> = if verify {
            let mut folders: Vec<String> = (plan.files.iter())
                .filter(|f| self.report.written.contains(&f.path))
                .map(|f| remote::private_dir(&f.path, &self.install_token))
                .collect();
            folders.sort();
            folders.dedup();
            folders
        } else {
            Vec::new()
        };
        self.handlers_sent = to_run.iter().map(|(n, _)| n.to_string()).collect();
        let crash_at = test_hooks::crash_at();
        let output = self
            .round_trip(Phase::Handlers, &remote::handlers(&self.job.state, &to_run, &probes, &kept, crash_at).into())
            .await;
        // A crash point in the handlers script kills the controller too, once the round trip ends.
        test_hooks::crash_if(|at| at.starts_with("handler:"));
        let output = output?;
        let result = remote::parse_handlers(&output.stdout, to_run.len(), probes.len())
            .map_err(|e| HostFailure::unreadable_reply(Phase::Handlers, e, &output))?;
        self.report.handlers = to_run[..result.succeeded]
            .iter()
            .map(|(n, _)| HandlerOutcome { name: n.to_string(), ok: true, rollback: false })
            .collect();
        if let Some((i, status, message)) = result.failure {
            let (name, cmd) = to_run[i];
            self.report.handlers.push(HandlerOutcome { name: name.to_owned(), ok: false, rollback: false });
            let what = if result.no_effect {
                format!("handler `{name}` exited 0 but did not take effect: {message} (exit {status})")
            } else {
                format!("handler `{name}`: `{}` exited {status}: {message}", remote::first_line(cmd))
            };
            return Err(HostFailure::failed(
                Phase::Handlers,
                format!("{what} (left pending; it runs again next time)"),
            ));
        }
        test_hooks::crash_here("after-handlers");
        Ok(())
    }
}

fn describe_failed_write(what: &remote::FailedAt, planned: &Plan, tasks: &HostTasks) -> String {
    match *what {
        remote::FailedAt::File(i) => {
            planned.files.get(i).map_or_else(|| what.to_string(), |f| format!("writing {}", f.path))
        }
        remote::FailedAt::Check(i) => {
            // Every file that names the check: the fault may be in any of them.
            let Some(first) = planned.files.get(i) else { return what.to_string() };
            let paths: Vec<&str> =
                planned.files.iter().filter(|f| f.validate == first.validate).map(|f| f.path.as_str()).collect();
            format!("checking {}", paths.join(", "))
        }
        remote::FailedAt::Command(i) => tasks.tasks.iter().find(|t| t.index == i).map_or_else(
            || what.to_string(),
            |t| match &t.action {
                Action::Command { cmd, .. } => format!("step `{}`: command `{cmd}`", t.name),
                _ => t.name.clone(),
            },
        ),
        remote::FailedAt::Record => "recording the run's state".into(),
        remote::FailedAt::Other(_) => what.to_string(),
    }
}
