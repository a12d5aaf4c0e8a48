//! Test hooks: how the integration tests stop a run where they want to
//! look at it. `SENTRY_PROVISION_CRASH_AT=<point>` kills the run (the
//! remote script, then the controller) at a named point, as an operator's
//! `kill -9` would; `SENTRY_PROVISION_PAUSE_AT=<point>` makes the remote
//! script wait there; `SENTRY_PROVISION_PANIC_IN=<host>` makes that host's
//! work panic.
//!
//! They exist only in a build with the `test-hooks` feature
//! (`cargo test --features test-hooks`, as `scripts/test` runs it). In any
//! other build, the release binary among them, every hook answers "none":
//! no variable is read, and what would act on a hook is compiled out.

#[cfg(feature = "test-hooks")]
pub use enabled::*;

#[cfg(not(feature = "test-hooks"))]
pub use disabled::*;

#[cfg(feature = "test-hooks")]
mod enabled {
    use std::sync::OnceLock;

    /// A hook's variable, read once: every script of the run sees the same.
    fn variable(name: &str, cell: &'static OnceLock<Option<String>>) -> Option<&'static str> {
        cell.get_or_init(|| std::env::var(name).ok().filter(|value| !value.is_empty())).as_deref()
    }

    /// The named point where the run dies (`SENTRY_PROVISION_CRASH_AT`).
    pub fn crash_at() -> Option<&'static str> {
        static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
        variable("SENTRY_PROVISION_CRASH_AT", &CRASH_AT)
    }

    /// Kills this process with SIGKILL when the crash point is one `at` accepts.
    pub fn crash_if(at: impl Fn(&str) -> bool) {
        if crash_at().is_some_and(at) {
            let _ = std::process::Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
            std::process::abort()
        }
    }

    /// Kills this process with SIGKILL when the crash point is `point`.
    pub fn crash_here(point: &str) {
        crash_if(|at| at == point)
    }

    /// The named point where a remote script waits (`SENTRY_PROVISION_PAUSE_AT`):
    /// one of the crash points, or `snapshot`, with the lock held.
    pub fn pause_at() -> Option<&'static str> {
        static PAUSE_AT: OnceLock<Option<String>> = OnceLock::new();
        variable("SENTRY_PROVISION_PAUSE_AT", &PAUSE_AT)
    }

    /// The shell a script runs at the pause point: it waits
    /// `SENTRY_PROVISION_PAUSE_SECONDS` (5) with the file
    /// `/run/sentry-provision.paused` on the host meanwhile, so that a test
    /// can signal the controller while a given round trip is under way.
    pub fn pause_shell() -> String {
        let seconds: u64 =
            std::env::var("SENTRY_PROVISION_PAUSE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
        format!(": >/run/sentry-provision.paused; sleep {seconds}; rm -f /run/sentry-provision.paused;")
    }

    /// Panics when `SENTRY_PROVISION_PANIC_IN` names `host`.
    pub fn panic_if_in(host: &str) {
        static PANIC_IN: OnceLock<Option<String>> = OnceLock::new();
        if variable("SENTRY_PROVISION_PANIC_IN", &PANIC_IN) == Some(host) {
            panic!("test hook SENTRY_PROVISION_PANIC_IN");
        }
    }
}

/// The same functions as `enabled`'s, each answering "no hook".
#[cfg(not(feature = "test-hooks"))]
mod disabled {
    pub fn crash_at() -> Option<&'static str> {
        None
    }

    pub fn crash_if(_at: impl Fn(&str) -> bool) {}

    pub fn crash_here(_point: &str) {}

    pub fn pause_at() -> Option<&'static str> {
        None
    }

    pub fn pause_shell() -> String {
        String::new()
    }

    pub fn panic_if_in(_host: &str) {}
}
