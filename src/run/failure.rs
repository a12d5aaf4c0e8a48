//! Why a host's run stopped early: the phase it was in, what it makes of
//! the host in the report (failed, unreachable, interrupted), and the
//! message the report shows.

use crate::report::model::Status;
use crate::transport;
use std::fmt;

/// The phases of a host's run, in order; each (but facts and plan) a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Snapshot,
    Facts,
    Plan,
    Install,
    Handlers,
    Rollback,
    Probes,
}

impl Phase {
    /// As the progress line, the `-v` log and the messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Snapshot => "snapshot",
            Phase::Facts => "facts",
            Phase::Plan => "plan",
            Phase::Install => "install",
            Phase::Handlers => "handlers",
            Phase::Rollback => "rollback",
            Phase::Probes => "probes",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a failure makes of the host in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failed,
    Unreachable,
    /// A signal asked the run to stop.
    Interrupted,
}

impl From<Kind> for Status {
    fn from(kind: Kind) -> Status {
        match kind {
            Kind::Failed => Status::Failed,
            Kind::Unreachable => Status::Unreachable,
            Kind::Interrupted => Status::Interrupted,
        }
    }
}

/// A host's run that stopped in `phase`; `message` is what its report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFailure {
    pub kind: Kind,
    pub phase: Phase,
    pub message: String,
}

impl HostFailure {
    pub fn failed(phase: Phase, message: impl Into<String>) -> HostFailure {
        HostFailure { kind: Kind::Failed, phase, message: message.into() }
    }

    pub fn interrupted(phase: Phase, message: impl Into<String>) -> HostFailure {
        HostFailure { kind: Kind::Interrupted, phase, message: message.into() }
    }

    /// A round trip that did not complete: the host unreachable or the
    /// script failed, as the transport says.
    pub fn of_transport(phase: Phase, error: transport::Error) -> HostFailure {
        let (kind, message) = match error {
            transport::Error::Unreachable(m) => (Kind::Unreachable, m),
            transport::Error::Failed(m) => (Kind::Failed, m),
        };
        HostFailure { kind, phase, message: format!("{phase}: {message}") }
    }

    /// A reply the phase's parser could not read: with the script's exit
    /// status and stderr, which usually say why.
    pub fn unreadable_reply(phase: Phase, why: impl fmt::Display, output: &transport::Output) -> HostFailure {
        let message = format!("{phase}: {why} (exit status {}; stderr: {})", output.status, output.stderr_text());
        HostFailure::failed(phase, message)
    }

    /// The same failure, its message extended (by what was done about it).
    pub fn and_then_said(self, more: impl FnOnce(&str) -> String) -> HostFailure {
        HostFailure { message: more(&self.message), ..self }
    }

    pub fn status(&self) -> Status {
        self.kind.into()
    }
}

impl fmt::Display for HostFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_that_fails_is_named_by_its_phase_and_keeps_the_transport_verdict() {
        let lost = HostFailure::of_transport(Phase::Install, transport::Error::Unreachable("timed out".into()));
        assert_eq!((lost.status(), lost.message.as_str()), (Status::Unreachable, "install: timed out"));
        let refused = HostFailure::of_transport(Phase::Probes, transport::Error::Failed("exit 3".into()));
        assert_eq!((refused.status(), refused.to_string().as_str()), (Status::Failed, "probes: exit 3"));
    }
}
