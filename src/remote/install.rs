//! The second round trip: the install, all or nothing (`install.sh`, with
//! the Python stager `stager.py`), and its parser.

use super::shell::{PRELUDE, Word, assign, call, call_with_command, first_line, words};
use super::state::{RECORDS_SH, Record, StateFiles, folder_of};
use super::wire::{Line, decode_text, index, read_lines};
use super::{ERRLOG_SH, FULL_DISK_SH, work_lock};
use crate::plan::Desired;
use crate::transport::Script;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::HashSet;
use std::fmt::Write;

const INSTALL_SH: &str = include_str!("install.sh");

/// The program that writes staged files (see [`install`]): one `stage`
/// call a file follows it, with the path, owner and group as base64 and the
/// content as base64 lines. Prints a `FAIL file:N` line of the install's
/// protocol and exits 1 on the first error.
const STAGER: &str = include_str!("stager.py");

/// One file (or link) to put in place.
pub struct FileWrite<'a> {
    pub path: &'a str,
    /// `None` removes the path (a rollback of a file that did not exist).
    pub desired: Option<&'a Desired>,
    /// Commands that must pass with every file of the run in place, or every file goes back.
    pub validate: &'a [String],
    /// Keep the previous version in the state folder (`backups/<stamp><path>`).
    pub backup: bool,
}

/// Everything one install round trip does.
pub struct Install<'a> {
    pub state: &'a StateFiles,
    /// Handlers owed once the files move; recorded before any file moves.
    pub pending: &'a [String],
    pub writes: &'a [FileWrite<'a>],
    pub commands: &'a [(usize, &'a str)],
    /// The record of what was applied (JSON), written last.
    pub applied: Option<&'a str>,
    /// Names this run's backups: `<state>/backups/<stamp><path>`.
    pub stamp: &'a str,
    /// Random, per run: names the staged files, so no one on the host can
    /// create their names first.
    pub token: &'a str,
    /// Keep each replaced entry (hard-linked as [`kept_path`]) after a
    /// successful install, for [`super::restore()`] to rename back should a handler
    /// fail; [`super::handlers()`] removes them once every handler took effect.
    pub keep_olds: bool,
    /// Test hook ([`crate::test_hooks`]): the script kills itself (SIGKILL) at this named point.
    pub crash_at: Option<&'a str>,
}

/// The run's own folder beside the paths it writes in `folder`, made 0700
/// by the stager: staged files and the entries they replace are kept in it,
/// where no one else (such as redis in Debian's /etc/redis) can swap them
/// between two commands. Named by the run's random token (which no one on
/// the host can know before the script arrives); the run that next takes
/// the host's lock removes what a killed one left.
fn private_name(token: &str) -> String {
    format!(".sentry-provision.{token}")
}

pub fn private_dir(path: &str, token: &str) -> String {
    format!("{}/{}", folder_of(path).trim_end_matches('/'), private_name(token))
}

/// Where the install of the run named by `token` keeps the entry write `i`
/// replaced at `path` (in the run's folder beside it: a rename puts it
/// back, needing no space and keeping its inode, owner and times).
pub fn kept_path(path: &str, token: &str, i: usize) -> String {
    format!("{}/old.{i}", private_dir(path, token))
}

/// Shell for the test hooks' named points: `crash NAME` in a script marks
/// a point where a test may kill the script or pause it (see
/// [`crate::test_hooks`]). Only a build with the `test-hooks` feature
/// acts on them.
#[cfg(feature = "test-hooks")]
pub(super) fn crash_hook(crash_at: Option<&str>) -> String {
    let pause = match crate::test_hooks::pause_at() {
        Some(point) => format!("[ \"$1\" = {} ] && {{ {} }}; ", Word::quoted(point), crate::test_hooks::pause_shell()),
        None => String::new(),
    };
    match crash_at {
        Some(point) => format!("crash() {{ [ \"$1\" = {} ] && kill -9 $$; {pause}return 0; }}\n", Word::quoted(point)),
        None if pause.is_empty() => "crash() { :; }\n".into(),
        None => format!("crash() {{ {pause}return 0; }}\n"),
    }
}

/// Without the `test-hooks` feature a named point does nothing.
#[cfg(not(feature = "test-hooks"))]
pub(super) fn crash_hook(_crash_at: Option<&str>) -> String {
    "crash() { :; }\n".into()
}

/// The install, all or nothing: stage every file and link in the run's own
/// folder beside its path (the Python stager: descriptors, owner, mode,
/// fsync); record the handlers owed; then for each path in turn keep its
/// previous entry (a hard link in the run's folder), a backup if asked, and
/// rename the new one into place; then run each check once with every file
/// in place, then the commands, then record what was applied. Any failure
/// from the first rename on puts every path and the pending record back
/// (`undo`). The previous entries stay for a rollback when `keep_olds`.
///
/// The fixed part is `install.sh`; what is written here is its calls, one
/// a path, a check or a command, with every value a quoted word. The body
/// is one shell function, called on the last line: a script cut short in
/// transit (the controller died while sending it) is a syntax error and
/// runs nothing.
pub fn install(install: &Install<'_>) -> Script {
    let writes = install.writes;
    let mut s = Script::default();
    s.push_str(PRELUDE);
    s.push_str(&install.state.shell());
    s.push_str(&work_lock(install.state)); // interrupts: runs to its end, only under this run's lock
    s.push_str(ERRLOG_SH);
    s.push_str(&crash_hook(install.crash_at));
    s.push_str(FULL_DISK_SH);
    s.push_str(RECORDS_SH);
    s.push_str(INSTALL_SH);
    let mut text = String::new();
    assign(&mut text, &[("stamp", Word::quoted(install.stamp))]);
    // The run's folders (what is staged in them, and the previous entries
    // once put back) go on a failure, and on success unless kept.
    let mut run_folders: Vec<String> = writes.iter().map(|w| private_dir(w.path, install.token)).collect();
    run_folders.sort();
    run_folders.dedup();
    if run_folders.is_empty() {
        text.push_str("run_dirs() { :; }\n");
    } else {
        let folders: Vec<Word> = run_folders.iter().map(Word::from).collect();
        let _ = writeln!(text, "run_dirs() {{ rm -rf -- {} 2>/dev/null; }}", words(&folders));
    }
    // Newest first. A path that cannot go back (STUCK) keeps the pending
    // record as this run wrote it: the new file is there, and its handlers
    // are owed.
    text.push_str("undo() {\nsp_stuck=''\n");
    for (i, write) in writes.iter().enumerate().rev() {
        let words = [Word::from(i), Word::quoted(write.path), Word::quoted(&private_dir(write.path, install.token))];
        call(&mut text, "back", &words);
    }
    if !install.pending.is_empty() {
        text.push_str("back_pending\n");
    }
    if writes.iter().any(|w| w.backup) && !install.stamp.is_empty() {
        text.push_str("rm -rf -- \"$state/backups/$stamp\" 2>/dev/null\n");
    }
    text.push_str("true\n}\nmain() {\n");
    // The handlers owed are staged like the files, and recorded before any
    // file moves.
    if !install.pending.is_empty() {
        let names: String = install.pending.iter().map(|h| format!("{h}\n")).collect();
        Record::Pending.stage(&mut text, &names, "fail");
    }
    // Folders first (with the host's umask).
    let mut made: HashSet<&str> = HashSet::new();
    for (i, write) in writes.iter().enumerate() {
        let folder = folder_of(write.path);
        if write.desired.is_some() && made.insert(folder) {
            call(&mut text, "folder", &[Word::from(i), Word::quoted(folder)]);
        }
    }
    s.push_str(&text);
    // Files and links are made by one small Python program, through
    // descriptors, in the run's own folder beside each path (see
    // [`private_dir`]), reached from / without following a link where
    // others can write: each file opened new (O_EXCL) without following a
    // link (O_NOFOLLOW), given its owner, then its mode (a chown clears
    // setuid and setgid), then fsynced. Nothing is done by path where a
    // name could turn into a link between two commands. Every value is
    // base64 in a Python string.
    if !writes.is_empty() {
        s.push_str("python3 -I -S - <<'SP_STAGE' || fail file:0 \"python3 could not stage the files\"\n");
        s.push_str(STAGER);
        let name = private_name(install.token);
        for (i, write) in writes.iter().enumerate() {
            let path = B64.encode(write.path);
            match write.desired {
                Some(Desired::File { content, mode, owner, group }) => {
                    let id = |value: &Option<String>| {
                        value.as_deref().map_or("None".to_owned(), |v| format!("{:?}", B64.encode(v)))
                    };
                    let _ =
                        writeln!(s, "stage({i}, {path:?}, {name:?}, {mode:#o}, {}, {}, b\"\"\"", id(owner), id(group),);
                    s.push_base64_lines(content);
                    s.push_str("\"\"\")\n");
                }
                Some(Desired::Link { target }) => {
                    let _ = writeln!(s, "link({i}, {path:?}, {name:?}, {:?})", B64.encode(target));
                }
                None => {
                    let _ = writeln!(s, "keep({i}, {path:?}, {name:?})");
                }
            }
        }
        s.push_str("SP_STAGE\n");
    }
    let mut text = String::new();
    // The files were fsynced as they were written; the pending record is,
    // before any rename: after a crash each path holds the old file or the
    // whole new one, and the handlers it needs are recorded.
    if !install.pending.is_empty() {
        let _ = writeln!(text, "sync -- {} 2>\"$errlog\" || fail record \"fsync\"", Record::Pending.staged());
        text.push_str("keep_pending\n");
        Record::Pending.place(&mut text, "record", "fail");
        text.push_str("placed_pending=1\n");
    }
    let staged: Vec<String> =
        (0..writes.len()).filter(|&i| writes[i].desired.is_some()).map(|i| i.to_string()).collect();
    crash_points(&mut text, &staged, "staged");
    // Every path in turn: any failure from here on (a rename, a check, a
    // command) puts every file of the run back.
    for (i, write) in writes.iter().enumerate() {
        let how = match (write.desired, write.backup) {
            (None, _) => "remove",
            (Some(_), true) => "backup",
            (Some(_), false) => "put",
        };
        let words = [
            Word::from(i),
            Word::quoted(write.path),
            Word::quoted(folder_of(write.path)),
            Word::quoted(&private_dir(write.path, install.token)),
            Word::raw(how),
        ];
        call(&mut text, "place", &words);
    }
    // Every check once, with all of the run's files and links in place, as
    // the services will load them (nginx -t sees the site and its link).
    let mut checks: Vec<(usize, &str)> = Vec::new();
    for (i, write) in writes.iter().enumerate().filter(|(_, w)| w.desired.is_some()) {
        for check in write.validate {
            if !checks.iter().any(|(_, c)| c == check) {
                checks.push((i, check));
            }
        }
    }
    for (first, check) in &checks {
        let message = format!("check `{}` failed with every file of the run in place", first_line(check));
        call_with_command(&mut text, "check", &[Word::from(*first), Word::quoted(&message)], check);
    }
    if !checks.is_empty() {
        crash_points(&mut text, &staged, "validated");
    }
    // The renames reach the disk before anything runs or is recorded as
    // applied: one sync of every folder written to, not one per file.
    // The record of what was applied is staged here so that the same sync
    // covers it; it moves into place after the commands, if they pass.
    let mut folders: Vec<&str> = writes.iter().map(|w| folder_of(w.path)).collect();
    folders.sort_unstable();
    folders.dedup();
    let mut synced: Vec<Word> = folders.iter().map(|f| Word::quoted(f)).collect();
    if let Some(record) = install.applied {
        Record::Applied.stage(&mut text, record, "abort");
        synced.push(Word::raw(Record::Applied.staged()));
    }
    if !synced.is_empty() {
        let _ = writeln!(text, "sync -- {} 2>/dev/null", words(&synced));
    }
    // A command that fails takes the run's files back with it (what the
    // command itself did stays done: it is the command's to be idempotent).
    for (index, cmd) in install.commands {
        call_with_command(&mut text, "step", &[Word::from(*index)], cmd);
    }
    if install.applied.is_some() {
        Record::Applied.place(&mut text, "applied", "abort");
    }
    // Done: the previous versions go (unless kept for a rollback), and each
    // path counts as written.
    if !install.keep_olds && !run_folders.is_empty() {
        text.push_str("run_dirs\n");
    }
    if !install.pending.is_empty() {
        text.push_str("rm -f -- \"$old_pending\" 2>/dev/null\n");
    }
    if !writes.is_empty() {
        let all: Vec<String> = (0..writes.len()).map(|i| i.to_string()).collect();
        let _ = writeln!(text, "for i in {}; do echo \"DONE $i\"; done", all.join(" "));
    }
    text.push_str("echo END\n}\nmain\n");
    s.push_str(&text);
    s
}

/// `crash file:<i>:<point>` for each index listed.
fn crash_points(s: &mut String, indexes: &[String], point: &str) {
    if !indexes.is_empty() {
        let _ = writeln!(s, "for i in {}; do crash \"file:$i:{point}\"; done", indexes.join(" "));
    }
}

/// Where an install failed: what its `FAIL` line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailedAt {
    /// The write with this index.
    File(usize),
    /// The check first named by the write with this index.
    Check(usize),
    /// The playbook's task with this index.
    Command(usize),
    /// Recording the run's state (the pending record, what was applied).
    Record,
    /// Anything else a host printed there.
    Other(String),
}

impl FailedAt {
    fn parse(word: &str) -> FailedAt {
        let indexed = |prefix: &str| word.strip_prefix(prefix).and_then(|i| i.parse::<usize>().ok());
        if let Some(i) = indexed("file:") {
            FailedAt::File(i)
        } else if let Some(i) = indexed("check:") {
            FailedAt::Check(i)
        } else if let Some(i) = indexed("command:") {
            FailedAt::Command(i)
        } else if word == "record" {
            FailedAt::Record
        } else {
            FailedAt::Other(word.to_owned())
        }
    }
}

impl std::fmt::Display for FailedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailedAt::File(i) => write!(f, "file:{i}"),
            FailedAt::Check(i) => write!(f, "check:{i}"),
            FailedAt::Command(i) => write!(f, "command:{i}"),
            FailedAt::Record => f.write_str("record"),
            FailedAt::Other(what) => f.write_str(what),
        }
    }
}

#[derive(Debug, Default)]
pub struct InstallOutput {
    /// Indexes of the writes in place, in the order they were done.
    pub written: Vec<usize>,
    /// Backups kept in the state folder: the write's index and the copy's path.
    pub backups: Vec<(usize, String)>,
    pub commands_ran: Vec<usize>,
    /// Writes that failed and could not be put back either.
    pub stuck: Vec<usize>,
    /// What failed and the message with stderr.
    pub failure: Option<(FailedAt, String)>,
}

pub fn parse_install(stdout: &[u8]) -> Result<InstallOutput, String> {
    let mut out = InstallOutput::default();
    read_lines(stdout, "install", |line| {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("DONE"), Some(i), _) => out.written.push(index(i)?),
            (Some("BACKUP"), Some(i), Some(path)) => {
                let i = index(i)?;
                out.backups.push((i, String::from_utf8_lossy(&super::wire::decode(path)?).into_owned()))
            }
            (Some("STUCK"), Some(i), _) => out.stuck.push(index(i)?),
            (Some("RAN"), Some(i), _) => out.commands_ran.push(index(i)?),
            (Some("FAIL"), Some(what), Some(message)) => {
                out.failure = Some((FailedAt::parse(what), decode_text(message)?));
                return Ok(Line::Stop);
            }
            (Some("END"), _, _) => return Ok(Line::End),
            _ => {}
        }
        Ok(Line::Next)
    })?;
    Ok(out)
}
