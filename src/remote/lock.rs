//! The host's lock: taken by the holder script that wraps the snapshot
//! (`lock.sh`), and checked by every script that changes the host
//! (`work.sh`); plus the probe a run that takes no lock (`drift`) uses.

use super::shell::{Word, assign};
use super::state::StateFiles;
use crate::test_hooks;

/// How long the lock's holder on a host waits for a word from the
/// controller (a heartbeat line comes every 2 s) before it lets go.
pub const HOLDER_PATIENCE_SECONDS: u64 = 10;

/// Exit status of a script that changes the host when its run no longer
/// holds the host's lock (see [`work_lock`]).
pub const LOCK_LOST: i32 = 95;

const LOCK_SH: &str = include_str!("lock.sh");
const WORK_SH: &str = include_str!("work.sh");
/// Where the holder runs the run's script, in `lock.sh`.
const SCRIPT_MARK: &str = "# @script@\n";

/// `script` run under the host's lock (`flock` on `<state>/lock`), waiting
/// at most `wait_seconds` for it. Prints only `LOCKBUSY` if the wait ran
/// out.
///
/// First it makes or checks the state folder: it must be a folder (not a
/// link) of the user the run works as, that no one else can write to, so
/// that no one else can plant a name the run would write through or read;
/// it is made 0700, and an existing one tightened to 0700. Otherwise the
/// script prints `STATEBAD <why>` and exits 96. Once checked, a `.checked`
/// file of ours there spares later runs the `stat` (no one else can make a
/// file of ours in a folder only we can write, and only we or root can
/// loosen its mode). Its files are made 0600.
///
/// Holding the lock, it writes the run's token into `<state>/lock.owner`
/// and removes temp files a killed run left in `dirs` (the folders of
/// managed paths) and in the state folder (one rm for all of them, and
/// only when one matched: each process costs every host). After its last
/// line it holds the lock until the controller closes stdin, or says
/// nothing (no heartbeat line) for [`HOLDER_PATIENCE_SECONDS`]: a dead or
/// cut-off controller. The heartbeats are read by one bash (`read -t`,
/// where the host has bash, as Debian always does), not by a `timeout` and
/// an `sh` per line: a line comes every 2 s on every host. Then, unless
/// the controller's last line was `idle` (its run sent no script that
/// changes the host; heard only where bash reads the heartbeats, the
/// `timeout` loop always waits), it waits for the run's scripts still
/// changing the host (each holds
/// `<state>/lock.work` shared, see [`work_lock`]), takes the token out of
/// `lock.owner` so that none starts after it, and only then lets the lock
/// go, and exits (after a silence stdin is still open, and the shell would
/// wait there for more script). A lost connection (SIGHUP, SIGPIPE) does
/// not end it sooner.
pub fn locked(state: &StateFiles, wait_seconds: u64, dirs: &[&str], script: &str) -> String {
    let (before, after) = LOCK_SH.split_once(SCRIPT_MARK).expect("lock.sh marks where the script goes");
    let mut s = state.shell();
    assign(&mut s, &[("owner", Word::quoted(&state.token)), ("lock_wait", Word::raw(wait_seconds.to_string()))]);
    let dirs: Vec<Word> = dirs.iter().map(|dir| Word::quoted(dir.trim_end_matches('/'))).collect();
    super::shell::call(&mut s, "set --", &dirs);
    s.push_str(before);
    if test_hooks::pause_at() == Some("snapshot") {
        s.push_str(&test_hooks::pause_shell());
        s.push('\n');
    }
    s.push_str(script);
    s.push_str(after);
    s
}

/// The first lines of every script that changes the host (install,
/// handlers, rollback). It goes on to its end whatever becomes of the
/// connection (SIGHUP and SIGPIPE ignored; the controller waits for it, or
/// is gone), and it runs only under its run's lock: it holds
/// `<state>/lock.work` shared for as long as it runs, which the lock's
/// holder waits for before letting go, and it checks that `lock.owner`
/// still names its run (a holder that gave up has taken the name out), or
/// exits with [`LOCK_LOST`] having done nothing.
///
/// The commands it runs through `sh` get the default signals back, the
/// session's umask, and not the lock's descriptor: a daemon a handler
/// starts must not hold the lock for as long as it lives. What the script
/// itself creates in the state folder is 0600 (umask 077); managed folders
/// it makes get the session's umask. Needs `$state`.
pub fn work_lock(state: &StateFiles) -> String {
    let mut s = String::new();
    assign(&mut s, &[("owner", Word::quoted(&state.token))]);
    s.push_str(WORK_SH);
    s
}

/// For a run that does not take the lock (`drift`): prints `LOCKHELD`
/// first when handlers are owed and another run holds the host's lock,
/// that is, an apply is running and owes them now.
pub fn lock_probe(state: &StateFiles) -> String {
    format!(
        "[ -f {pending} ] && [ -f {lock} ] && {{ flock -n -E 75 {lock} true 2>/dev/null; [ $? -eq 75 ] && echo LOCKHELD; }}\n",
        pending = Word::quoted(&state.pending),
        lock = Word::quoted(&format!("{}/lock", state.dir())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_files_use_the_numbers_the_controller_knows() {
        assert!(WORK_SH.contains(&format!("exit {LOCK_LOST};")));
        let patience = HOLDER_PATIENCE_SECONDS;
        assert!(
            LOCK_SH.contains(&format!("read -r -t {patience} word"))
                && LOCK_SH.contains(&format!("timeout {patience} sh"))
        );
        assert_eq!(LOCK_SH.matches(SCRIPT_MARK).count(), 1);
    }
}
