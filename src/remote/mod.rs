//! The protocol with a host: the few shell scripts sent to it, one per
//! round trip, and the parsers of what they print. The snapshot (facts,
//! managed paths, guards, pending handlers) under the host's lock, the
//! install (atomic writes, pending handlers recorded first, checks,
//! commands), the handlers and their verifying probes, live probes, and
//! the rollback. Scripts are POSIX sh plus coreutils (and Python for the
//! stager), kept in the `.sh` files beside this one; the Rust side writes
//! only the values and the call lists between them, every value a quoted
//! word or base64 ([`shell`]), so no path or content is ever run as a
//! command. Knows the host's protocol, not the terminal; sends its scripts
//! through `transport`.

mod handlers;
mod install;
mod lock;
mod probes;
mod restore;
mod shell;
mod snapshot;
mod state;
pub mod wire;

#[cfg(test)]
mod tests;

pub use handlers::{Verify, handlers, parse_handlers};
pub use install::{FailedAt, FileWrite, Install, install, kept_path, parse_install, private_dir};
pub use lock::{HOLDER_PATIENCE_SECONDS, LOCK_LOST, lock_probe, locked, work_lock};
#[cfg(test)]
pub use probes::runs_in_one_perl;
pub use probes::{parse_probes, probes};
pub use restore::{Restore, parse_restore, restore};
pub use shell::{first_line, quote};
pub use snapshot::{SnapshotScript, TOOLS, parse_snapshot, snapshot, snapshot_then_probes};
pub use state::{STATE_DIR, StateFiles, folder_of};
pub use wire::end_line;

/// The scripts that change things keep stderr in `$errlog`: a file named by
/// the script's pid in the state folder (the run holds the host's lock, and
/// the next run to take it removes what a killed one left), so no mktemp
/// process; mktemp only where that folder is missing. Needs `$state`.
/// (`true`, not `:`: a redirection that fails on a special builtin ends
/// the shell.)
const ERRLOG_SH: &str = include_str!("errlog.sh");

/// `full DIR` prints why a write in DIR failed when its filesystem has no
/// space left (a shell's printf says only "I/O error"), else nothing: a
/// failure's third argument, said instead of the command's stderr.
/// Said only where the command's own message is none, or says so too: on
/// ext4, df counts without the blocks kept for root, who may still write,
/// and a failure there has another cause worth its own words.
const FULL_DISK_SH: &str = include_str!("full_disk.sh");
