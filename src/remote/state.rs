//! What a host keeps between runs, in its state folder: the handlers still
//! owed (the pending record), the record of the last apply, the lock and
//! the secret for fingerprints; and the shell that writes the records.

use super::shell::{Word, assign, call};
use crate::playbook::fits_pending_record;
use crate::random::random_u64;
use std::collections::HashSet;

/// Where a host keeps what sentry-provision must remember between runs,
/// unless the inventory sets `sentry_provision_state_dir`.
pub const STATE_DIR: &str = "/var/lib/sentry-provision";

/// `stage_record` and `place_record`, for the scripts that write a record.
pub const RECORDS_SH: &str = include_str!("records.sh");

/// The files a host keeps for one playbook: handlers still owed, and what
/// the last apply left on each managed path.
#[derive(Debug, Clone)]
pub struct StateFiles {
    pub pending: String,
    pub applied: String,
    /// This run's mark on the host's lock: the holder writes it into
    /// `lock.owner`, and a script that changes the host runs only while it
    /// is there (see [`super::work_lock`]). Random, so no other run can know it.
    pub token: String,
}

impl StateFiles {
    /// `<dir>/<playbook name>.pending` and `.applied`.
    pub fn new(dir: &str, playbook: &str) -> StateFiles {
        StateFiles {
            pending: format!("{dir}/{playbook}.pending"),
            applied: format!("{dir}/{playbook}.applied"),
            token: format!("{:016x}", random_u64()),
        }
    }

    /// The folder both live in.
    pub fn dir(&self) -> &str {
        folder_of(&self.pending)
    }

    /// Shell variables for the scripts: `$pending` and `$applied`, in `$state`.
    pub fn shell(&self) -> String {
        let mut s = String::new();
        assign(
            &mut s,
            &[
                ("pending", Word::quoted(&self.pending)),
                ("applied", Word::quoted(&self.applied)),
                ("state", Word::quoted(self.dir())),
            ],
        );
        s
    }
}

/// A state file a script writes: the pending record or the record of what
/// was applied.
#[derive(Debug, Clone, Copy)]
pub enum Record {
    Pending,
    Applied,
}

impl Record {
    fn name(self) -> &'static str {
        match self {
            Record::Pending => "pending",
            Record::Applied => "applied",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Record::Pending => "pending handlers",
            Record::Applied => "what was applied",
        }
    }

    /// Where its next version is staged (a script's pid names it), as the
    /// script writes it.
    pub fn staged(self) -> String {
        format!("\"$state/.{}.$$\"", self.name())
    }

    /// A call that writes `content`, the next version of this record,
    /// beside it; [`Record::place`] renames it into place once an fsync
    /// has covered it. Named by the script's pid, not by mktemp: the state
    /// folder is ours, the script holds the host's lock, and the run that
    /// next takes the lock removes what a killed one left. The content is
    /// text, quoted, written by the shell's printf: no process. `fail` is
    /// the shell function a failure calls (`abort` once files moved).
    pub fn stage(self, s: &mut String, content: &str, fail: &str) {
        let words = [
            Word::raw(self.name()),
            Word::raw(format!("\"${}\"", self.name())),
            Word::quoted(content),
            Word::quoted(self.what()),
            Word::raw(fail),
        ];
        call(s, "stage_record", &words);
    }

    /// A call that renames the staged record into place, then offers the
    /// crash point `point`.
    pub fn place(self, s: &mut String, point: &str, fail: &str) {
        let words = [
            Word::raw(self.name()),
            Word::raw(format!("\"${}\"", self.name())),
            Word::quoted(self.what()),
            Word::raw(point),
            Word::raw(fail),
        ];
        call(s, "place_record", &words);
    }
}

/// The folder a path is in, as `dirname` says it (computed here: every
/// process a script starts costs the host a fork and an exec).
pub fn folder_of(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(slash) => match trimmed[..slash].trim_end_matches('/') {
            "" => "/",
            folder => folder,
        },
        None if path.starts_with('/') => "/",
        None => ".",
    }
}

/// The handlers a pending record still owes, in the order recorded: one
/// name a line, written by the install; a handler that has run since is
/// cleared by a later line with its name between tabs (see [`super::handlers()`]).
pub fn owed_handlers(record: &str) -> Vec<String> {
    // Only whole, clean lines count: an append cut short by a crash ("\tre"
    // of "\trestart web\t", or zeros on some filesystems) must neither clear
    // another handler nor pass for one; at worst a handler runs again.
    let lines: Vec<&str> = record.split_inclusive('\n').filter_map(|l| l.strip_suffix('\n')).collect();
    let cleared: HashSet<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix('\t')?.strip_suffix('\t'))
        .filter(|name| fits_pending_record(name))
        .collect();
    let mut owed: Vec<String> = Vec::new();
    for &name in lines.iter().filter(|l| fits_pending_record(l) && !cleared.contains(*l)) {
        if !owed.iter().any(|o| o == name) {
            owed.push(name.to_owned());
        }
    }
    owed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_record_owes_each_name_until_a_line_with_it_between_tabs_clears_it() {
        assert_eq!(owed_handlers(""), Vec::<String>::new());
        assert_eq!(owed_handlers("a\nb\na\n"), ["a", "b"]);
        assert_eq!(owed_handlers("a\nb\nc\n\n\tb\t\n"), ["a", "c"]);
        assert_eq!(owed_handlers("a\n\n\ta\t\n\n\tx\t\n"), Vec::<String>::new());
        // An append cut short by a crash clears nothing and owes nothing.
        assert_eq!(owed_handlers("a\nab\n\n\ta"), ["a", "ab"]);
        assert_eq!(owed_handlers("a\nab\n\n\ta\n\tab\t\n"), ["a"]);
        assert_eq!(owed_handlers("a\nb\n\0\0\0\tb\t\n"), ["a", "b"]);
    }

    #[test]
    fn folders_are_named_as_dirname_names_them() {
        for (path, folder) in [
            ("/etc/redis/redis.conf", "/etc/redis"),
            ("/x", "/"),
            ("/", "/"),
            ("/a//b/", "/a"),
            ("name", "."),
            ("a/b", "a"),
        ] {
            assert_eq!(folder_of(path), folder, "{path}");
        }
    }
}
