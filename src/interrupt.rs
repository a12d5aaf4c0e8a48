//! Signals on the controller. A first SIGINT, SIGTERM or SIGHUP lets every
//! host finish the round trip it is in (a remote script is never cut short:
//! its result is waited for) and stop before its next phase; hosts not yet
//! started are not started; the run then reports as usual, with those hosts
//! marked interrupted, and exits with the interrupted bit. A second signal
//! stops at once: it says which hosts may be left owing handlers, stops the
//! ssh masters, removes the control folders, and exits.
//!
//! Signals are process-wide, so this state is too: a flag the hosts' phases
//! read, and what a second signal needs to know (the phase each host is in).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use tokio::sync::Notify;

/// Signals received so far.
static RECEIVED: AtomicU8 = AtomicU8::new(0);
/// `drift --every`: a first signal ends the schedule after the pass, and
/// does not stop the pass's hosts.
static AFTER_PASS: AtomicBool = AtomicBool::new(false);
static WAKE: Notify = Notify::const_new();
/// Each host in flight and the phase it is in.
static IN_FLIGHT: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Phases after which a host may owe handlers if the run stops there.
const OWING: [&str; 3] = ["install", "handlers", "rollback"];

/// Starts listening for SIGINT, SIGTERM and SIGHUP (from then on they no
/// longer end the process by themselves). Call once, inside the runtime.
pub fn listen() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
    else {
        eprintln!("sentry-provision: warning: cannot listen for signals; one ends the run at once");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = hangup.recv() => {}
            }
            if RECEIVED.fetch_add(1, Ordering::SeqCst) > 0 {
                stop_at_once();
            }
            WAKE.notify_waiters();
            let what = if AFTER_PASS.load(Ordering::SeqCst) { "after this pass" } else { "after each host's step" };
            eprintln!("sentry-provision: interrupted: stopping {what} (a second signal stops at once)");
        }
    });
}

/// `drift --every`: a first signal lets the current pass finish whole.
pub fn after_pass() {
    AFTER_PASS.store(true, Ordering::SeqCst);
}

/// Whether hosts should stop before their next phase.
pub fn requested() -> bool {
    RECEIVED.load(Ordering::SeqCst) > 0 && !AFTER_PASS.load(Ordering::SeqCst)
}

/// Whether any signal arrived.
pub fn signalled() -> bool {
    RECEIVED.load(Ordering::SeqCst) > 0
}

/// Waits for the first signal.
pub async fn first_signal() {
    let notified = WAKE.notified();
    if signalled() {
        return;
    }
    notified.await;
}

/// Records that `host` is starting `phase` (a second signal names the
/// hosts caught in one that may leave handlers owed).
pub fn entering(host: &str, phase: &str) {
    if let Ok(mut hosts) = IN_FLIGHT.lock() {
        hosts.insert(host.to_owned(), phase.to_owned());
    }
}

/// Records that `host` is done.
pub fn left(host: &str) {
    if let Ok(mut hosts) = IN_FLIGHT.lock() {
        hosts.remove(host);
    }
}

/// The hosts a stop now could leave owing handlers, with their phase.
fn owing() -> Vec<(String, String)> {
    let hosts = IN_FLIGHT.lock().map(|h| h.clone()).unwrap_or_default();
    hosts.into_iter().filter(|(_, phase)| OWING.contains(&phase.as_str())).collect()
}

/// The second signal: say what may be left owed, stop the ssh masters (the
/// scripts they carry go on to their end on the hosts, which ignore the
/// lost connection), remove the control folders, and exit.
fn stop_at_once() -> ! {
    let owing = owing();
    let mut message = String::from("sentry-provision: stopped at once by a second signal");
    if owing.is_empty() {
        message.push_str("; no host was installing or running handlers\n");
    } else {
        message.push_str(
            ". These hosts were in a step that records handlers; their scripts run to the end on the host, \
             and any handler left owed is recorded there and run by the next apply:\n",
        );
        for (host, phase) in &owing {
            message.push_str(&format!("  {host}: {phase}\n"));
        }
    }
    eprint!("{message}");
    crate::transport::control::abandon_all();
    std::process::exit(i32::from(crate::error::INTERRUPTED))
}

/// The interrupted exit bit, when a signal stopped the run.
pub fn exit_bits() -> u8 {
    if requested() { crate::error::INTERRUPTED } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hosts_installing_or_running_handlers_are_said_to_owe() {
        entering("web1", "snapshot");
        entering("web2", "install");
        entering("web3", "handlers");
        left("web3");
        let owing = owing();
        assert!(owing.contains(&("web2".to_owned(), "install".to_owned())), "{owing:?}");
        assert!(!owing.iter().any(|(h, _)| h == "web1" || h == "web3"), "{owing:?}");
        left("web1");
        left("web2");
    }
}
