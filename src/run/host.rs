//! One host's run over its connection: the snapshot round trip and the
//! plan made from it, then the mode's phases (install and handlers in
//! `install`, live probes in `drift`), each phase one round trip (a drift
//! pass that writes nothing runs its probes in the snapshot's).

use super::failure::{HostFailure, Phase};
use super::load::{BeforeFacts, Job, Prepared};
use super::settings::{Mode, Remediate, Settings};
use crate::facts::Facts;
use crate::interrupt;
use crate::inventory::{Connection, Host};
use crate::plan::compile::HostTasks;
use crate::plan::drift::Applied;
use crate::plan::{self, Plan, Snapshot};
use crate::progress::HostProgress;
use crate::random::random_u64;
use crate::remote;
use crate::report::model::{FileDiff, HandlerOutcome, HostReport, Status};
use crate::secrets::Secrets;
use crate::test_hooks;
use crate::transport::{self, SshOptions, SshTarget, Target, Transport};
use std::time::Instant;

pub fn target_of(host: &Host) -> (Target, String) {
    match &host.connection {
        Connection::Local => (Target::Local, "local".into()),
        Connection::Ssh { address, port, user, key_file } => (
            Target::Ssh(SshTarget {
                address: address.clone(),
                port: *port,
                user: user.clone(),
                key_file: key_file.clone(),
            }),
            host.address(),
        ),
    }
}

pub fn blank_report(host: &Host) -> HostReport {
    HostReport { name: host.name.clone(), address: target_of(host).1, ..HostReport::default() }
}

/// A host a signal kept from starting.
pub fn not_run_interrupted(host: &Host) -> HostReport {
    HostReport { status: Status::Interrupted, error: Some("not run: interrupted".into()), ..blank_report(host) }
}

pub(super) async fn run_host(
    prepared: &Prepared,
    job: &Job,
    ssh: &SshOptions,
    settings: &Settings,
    line: &HostProgress,
) -> HostReport {
    let started = Instant::now();
    let (target, _) = target_of(&job.host);
    let mut report = blank_report(&job.host);
    let mut secrets = job.before_facts.secrets.clone();
    line.phase(Phase::Connect.name());
    interrupt::entering(&job.host.name, Phase::Connect.name());
    match Transport::connect(&target, ssh).await {
        // The terminal's Ctrl-C reaches the ssh still connecting, too.
        Err(_) if interrupt::requested() => report = not_run_interrupted(&job.host),
        // Whatever the transport says, a host not connected to is unreachable.
        Err(e) => {
            report.status = Status::Unreachable;
            report.error = Some(format!("{}: {e}", Phase::Connect));
        }
        Ok(transport) if interrupt::requested() => {
            report = not_run_interrupted(&job.host);
            transport.close().await;
        }
        Ok(transport) => {
            let mut host = HostRun {
                prepared,
                job,
                transport: &transport,
                settings,
                report: &mut report,
                lock: None,
                sent_while_held: false,
                line,
                install_token: format!("{:016x}", random_u64()),
                handlers_sent: Vec::new(),
                secrets: job.before_facts.secrets.clone(),
                phase: Phase::Snapshot,
            };
            // A panic in a phase (a reply no parser foresaw) fails this host
            // with what it did so far, its lock released; the others go on.
            let result = crate::unwind::caught(host.run()).await.unwrap_or_else(|panic| {
                Err(HostFailure::failed(
                    host.phase,
                    format!("internal error: {panic} (this host only; the others went on)"),
                ))
            });
            if let Some(lock) = host.lock.take() {
                let held_for =
                    if host.sent_while_held { transport::HeldFor::Work } else { transport::HeldFor::Nothing };
                lock.release(settings.command_timeout, held_for).await;
            }
            secrets = std::mem::take(&mut host.secrets);
            if let Err(failure) = result {
                report.status = failure.status();
                report.error = Some(failure.message);
            }
            transport.close().await;
        }
    }
    interrupt::left(&job.host.name);
    report.elapsed = started.elapsed();
    report.mask(&secrets);
    report
}

/// What the snapshot round trip found, and the plan made from it.
pub(super) struct Inspection {
    pub(super) tasks: HostTasks,
    pub(super) snapshot: Snapshot,
    pub(super) applied: Option<Applied>,
    pub(super) plan: Plan,
    /// Another run held the host's lock (asked only by runs that do not take it).
    pub(super) lock_held: bool,
    /// Keyed with the host's secret, for the record of what was applied.
    pub(super) fingerprints: plan::drift::Fingerprints,
    /// The probes' results, when they ran with the snapshot.
    pub(super) probe_results: Option<Vec<(i32, String)>>,
}

/// One host's run over an open connection: the phases, each a round trip.
pub(super) struct HostRun<'a> {
    pub(super) prepared: &'a Prepared,
    pub(super) job: &'a Job,
    pub(super) transport: &'a Transport,
    pub(super) settings: &'a Settings,
    pub(super) report: &'a mut HostReport,
    /// The host's lock, held from the snapshot to the end of the run when writing.
    pub(super) lock: Option<transport::Held<'a>>,
    /// A round trip went out while the lock was held: a script that may
    /// change the host, which its holder must wait for before letting go.
    pub(super) sent_while_held: bool,
    pub(super) line: &'a HostProgress,
    /// The token of this run's install, which names the entries it kept
    /// for a rollback ([`remote::kept_path`]).
    pub(super) install_token: String,
    /// The handlers sent in the last handlers round trip: when its reply
    /// is lost, any of them may have run.
    pub(super) handlers_sent: Vec<String>,
    /// What its report masks: the host's secrets, rendered with its facts once known.
    pub(super) secrets: Secrets,
    /// The phase the run is in: where a panic is said to have happened.
    pub(super) phase: Phase,
}

impl HostRun<'_> {
    async fn run(&mut self) -> Result<(), HostFailure> {
        let inspection = self.inspect().await?;
        // Test hook: this host's work panics here, after the host was
        // touched (its snapshot taken, its lock held).
        test_hooks::panic_if_in(&self.job.host.name);
        // A check is done once it has the snapshot; anything else would go on.
        if self.settings.mode != Mode::Check {
            self.stop_if_interrupted("after the snapshot; nothing was changed")?;
        }
        self.report.steps = inspection.plan.steps.clone();
        self.report.files = inspection
            .plan
            .files
            .iter()
            .map(|file| FileDiff {
                path: file.path.clone(),
                diff: self.secrets.mask_diff(&file.diff, is_sensitive(file)),
            })
            .collect();
        self.report.carried_over = inspection.plan.carried_over.clone();
        match self.settings.mode {
            Mode::Check => {
                if !inspection.plan.is_empty() {
                    self.report.status = Status::Changed;
                }
                self.report.handlers = inspection
                    .plan
                    .handlers
                    .iter()
                    .map(|h| HandlerOutcome { name: h.clone(), ok: true, rollback: false })
                    .collect();
                Ok(())
            }
            Mode::Apply => {
                if !inspection.plan.is_empty() {
                    self.report.status = Status::Changed;
                }
                let result = self.install_and_reload(&inspection, &inspection.plan).await;
                // What was done, not what was planned: after a failed install
                // or a rollback, less than the plan.
                let report = &mut *self.report;
                report.steps =
                    plan::carried_out(&report.steps, &report.written, &report.rolled_back, &report.commands_ran);
                result
            }
            Mode::Drift(remediate) => self.drift(&inspection, remediate).await,
        }
    }

    /// Stops here, `when` (said in the report), if a signal asked the run to stop.
    pub(super) fn stop_if_interrupted(&self, when: &str) -> Result<(), HostFailure> {
        match interrupt::requested() {
            true => Err(HostFailure::interrupted(self.phase, format!("interrupted {when}"))),
            false => Ok(()),
        }
    }

    /// Says where the run is: on the host's progress line, to the signal
    /// handler, and (for a panic) to the report.
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.line.phase(phase.name());
        interrupt::entering(&self.job.host.name, phase.name());
    }

    pub(super) async fn round_trip(
        &mut self,
        phase: Phase,
        script: &transport::Script,
    ) -> Result<transport::Output, HostFailure> {
        self.report.round_trips += 1;
        self.sent_while_held |= self.lock.is_some();
        self.enter(phase);
        let started = Instant::now();
        let result = self
            .transport
            .run(script, self.job.become_root, self.settings.command_timeout)
            .await
            .map_err(|e| HostFailure::of_transport(phase, e));
        if self.settings.verbosity > 0 {
            let status = result.as_ref().map_or_else(|f| f.message.clone(), |o| format!("exit {}", o.status));
            let mut line = format!(
                "{phase}: {:.3}s, {}-byte script, {status}",
                started.elapsed().as_secs_f64(),
                script.sent_bytes()
            );
            if let (Ok(output), true) = (&result, self.settings.verbosity > 1) {
                line.push_str(&format!("; stderr: {}", output.stderr_text()));
            }
            self.report.log.push(line);
        }
        match result {
            Ok(output) if output.status == remote::LOCK_LOST => Err(HostFailure::failed(
                phase,
                format!(
                    "{phase}: this run no longer holds the host's lock: the host heard nothing from it for {}s \
                     and let the lock go; nothing was done in this step (run again)",
                    remote::HOLDER_PATIENCE_SECONDS
                ),
            )),
            result => result,
        }
    }

    pub(super) fn render(&self, facts: &Facts) -> Result<HostTasks, HostFailure> {
        self.prepared.render(self.job, facts, self.settings).map_err(|e| HostFailure::failed(Phase::Plan, e))
    }

    /// Round trip 1: facts, managed paths, guards, pending handlers, the
    /// applied record; then the plan, made locally.
    async fn inspect(&mut self) -> Result<Inspection, HostFailure> {
        // Paths and guards are known before facts: they may use variables but not facts.
        // `prepare` rendered this host once with stand-in facts: reuse what it found.
        let BeforeFacts { paths, patterns, guards, probes, known_facts, .. } = &self.job.before_facts;
        let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let pattern_refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let guard_refs: Vec<(usize, &str)> = guards.iter().map(|(i, c)| (*i, c.as_str())).collect();
        let probing = self.settings.mode == Mode::Drift(Remediate::Nothing);
        // The steps as the facts of the host's last pass render them, kept
        // for when this pass reads the same facts.
        let guessed: Option<(&Facts, HostTasks)> = match known_facts {
            Some(known) if probing => self.render(known).ok().map(|tasks| (known, tasks)),
            _ => None,
        };
        let guessed_probes: Vec<String> = match &guessed {
            Some((_, tasks)) => tasks.probes.iter().map(|(_, command, _)| command.clone()).collect(),
            None => Vec::new(),
        };
        let probe_refs: Vec<&str> =
            if guessed.is_some() { &guessed_probes } else { probes }.iter().map(String::as_str).collect();
        let early_probes = probing && !probe_refs.is_empty();

        let writes = match self.settings.mode {
            Mode::Apply | Mode::Drift(Remediate::HostDrift | Remediate::All) => true,
            Mode::Check | Mode::Drift(Remediate::Nothing) => false,
        };
        // A drift pass that writes nothing runs its probes right after the
        // snapshot, in the same round trip: they are read below only if the
        // host's facts leave them as rendered before facts.
        let probes_now: &[&str] = if early_probes { &probe_refs } else { &[] };
        let remote::SnapshotScript { text, token } =
            remote::snapshot_then_probes(&self.job.state, &path_refs, &pattern_refs, &guard_refs, probes_now);
        self.enter(Phase::Snapshot);
        let mut lock_held = false;
        let output = if writes {
            // Runs that write hold the host's lock from before the snapshot to
            // their end, so two runs never interleave; one round trip still.
            self.report.round_trips += 1;
            // The folders install writes its temp files in (the same folder_of).
            let mut dirs: Vec<&str> = path_refs.iter().chain(&pattern_refs).map(|p| remote::folder_of(p)).collect();
            dirs.sort_unstable();
            dirs.dedup();
            let locked = remote::locked(&self.job.state, self.settings.lock_timeout.as_secs(), &dirs, &text);
            let (output, held) = self
                .transport
                .run_and_hold(
                    &locked.into(),
                    &remote::end_line(&token),
                    self.job.become_root,
                    // The wait for the lock is the round trip's, on top.
                    self.settings.command_timeout.map(|limit| limit + self.settings.lock_timeout),
                )
                .await
                .map_err(|e| HostFailure::of_transport(Phase::Snapshot, e))?;
            self.lock = Some(held);
            // Printed before anything else: file contents follow, raw.
            if let Some(why) = output.stdout.strip_prefix(b"STATEBAD ") {
                let why = String::from_utf8_lossy(why);
                return Err(HostFailure::failed(
                    Phase::Snapshot,
                    format!(
                        "the state folder is refused: {} (sentry_provision_state_dir)",
                        why.lines().next().unwrap_or_default()
                    ),
                ));
            }
            if output.stdout.starts_with(b"LOCKBUSY\n") {
                return Err(HostFailure::failed(
                    Phase::Snapshot,
                    format!(
                        "another run holds the host's lock ({}/lock) and did not release it within {}s (--lock-timeout)",
                        self.job.state.dir(),
                        self.settings.lock_timeout.as_secs()
                    ),
                ));
            }
            output
        } else {
            let probed = remote::lock_probe(&self.job.state) + &text;
            let output = self.round_trip(Phase::Snapshot, &probed.into()).await?;
            lock_held = output.stdout.starts_with(b"LOCKHELD\n");
            output
        };
        test_hooks::crash_here("after-snapshot");
        let snap = remote::parse_snapshot(&output.stdout, &path_refs, &pattern_refs, &token)
            .map_err(|e| HostFailure::unreadable_reply(Phase::Snapshot, e, &output))?;
        let facts = Facts::from_snapshot(&snap.facts, &snap.tools, remote::TOOLS)
            .map_err(|e| HostFailure::failed(Phase::Facts, format!("facts: {e}")))?;
        let tasks = match guessed {
            Some((known, tasks)) if *known == facts => tasks,
            _ => self.render(&facts)?,
        };
        self.report.facts = Some(facts);
        self.secrets.extend(&tasks.secrets);
        let probe_results =
            match early_probes && tasks.probes.iter().map(|(_, c, _)| c.as_str()).eq(probe_refs.iter().copied()) {
                true => Some(
                    remote::parse_probes(&output.stdout[snap.after_end..], probe_refs.len())
                        .map_err(|e| HostFailure::unreadable_reply(Phase::Probes, e, &output))?,
                ),
                false => None,
            };
        if tasks.paths() != path_refs || tasks.patterns() != pattern_refs || tasks.guards() != guard_refs {
            return Err(HostFailure::failed(
                Phase::Plan,
                "managed paths and `unless` guards may use variables but not facts",
            ));
        }
        let applied = match &snap.applied {
            None => None,
            Some(text) => match serde_json::from_str::<Applied>(text) {
                Ok(record) => Some(record),
                Err(e) => {
                    self.report
                        .warnings
                        .push(format!("{}: unreadable ({e}); treated as absent", self.job.state.applied));
                    None
                }
            },
        };
        let order = tasks.handler_order();
        let plan = plan::plan(&tasks.tasks, &snap.snapshot, &order, self.settings.diff_context)
            .map_err(|e| HostFailure::failed(Phase::Plan, e))?;
        let applying = self.settings.mode == Mode::Apply;
        self.report.warnings.extend(plan::concurrency_warnings(&snap.snapshot, &plan.desired, applying));
        for stale in snap.snapshot.pending_handlers.iter().filter(|h| !order.contains(h)) {
            self.report.warnings.push(format!(
                "pending handler `{stale}` from an earlier run is not in this playbook, so it cannot run; \
                 the host's record keeps it until an apply records handlers again"
            ));
        }
        let fingerprints =
            snap.key.as_deref().map(|key| plan::drift::Fingerprints::keyed(key.as_bytes())).unwrap_or_default();
        Ok(Inspection { tasks, snapshot: snap.snapshot, applied, plan, lock_held, fingerprints, probe_results })
    }
}

impl Inspection {
    /// Whether `path` is not yet as `plan` wants it on the host.
    pub(super) fn snapshot_differs(&self, path: &str, plan: &Plan) -> bool {
        let Some(want) = plan.desired.get(path) else { return true };
        let entry = self.snapshot.entries.get(path).cloned().unwrap_or(plan::Entry::Missing);
        let fingerprints = &self.fingerprints;
        fingerprints.of_entry(&entry) != Some(fingerprints.of_desired(want))
    }
}

/// A file others may not read: its diff hides the values of lines that look secret.
pub(super) fn is_sensitive(file: &plan::FileChange) -> bool {
    let before = match &file.before {
        plan::Entry::File { mode, .. } => *mode & 0o004 == 0,
        _ => false,
    };
    let after = matches!(file.after, plan::Desired::File { mode, .. } if mode & 0o004 == 0);
    before || after
}
