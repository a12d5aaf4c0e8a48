//! Putting back what an install replaced, after a handler failed
//! (`restore.sh`); and its parser.

use super::install::crash_hook;
use super::shell::{PRELUDE, Word, call, words};
use super::state::{RECORDS_SH, Record, StateFiles, folder_of};
use super::wire::{Line, decode_text, index, read_lines};
use super::{ERRLOG_SH, FULL_DISK_SH, work_lock};
use std::fmt::Write;

const RESTORE_SH: &str = include_str!("restore.sh");

/// One path to put back as it was before a run's install.
pub struct Restore<'a> {
    pub path: &'a str,
    /// The entry the install kept ([`super::kept_path`]), or `None` where the path
    /// did not exist (it is removed).
    pub kept: Option<&'a str>,
}

/// Puts back what an install replaced, each path on its own (one that
/// cannot go back does not keep the others from it): the kept entry is
/// renamed back (no space needed, its inode, owner and times as they were),
/// or a path that did not exist is removed. Then the pending record (the
/// handlers `owed`, or none) and the record of what was applied (`applied`)
/// are written. Prints `BACK i` per path put back, `STUCK i <why>` per path
/// that could not be, then `END`.
pub fn restore(
    state: &StateFiles,
    paths: &[Restore<'_>],
    folders: &[String],
    owed: &[String],
    applied: &str,
) -> String {
    let mut s = String::from(PRELUDE);
    s.push_str(&state.shell());
    s.push_str(&work_lock(state));
    s.push_str(ERRLOG_SH);
    s.push_str(&crash_hook(None));
    s.push_str(FULL_DISK_SH);
    s.push_str(RECORDS_SH);
    s.push_str(RESTORE_SH);
    s.push_str("main() {\n");
    for (i, restore) in paths.iter().enumerate() {
        match restore.kept {
            Some(kept) => {
                let words = [
                    Word::from(i),
                    Word::quoted(restore.path),
                    Word::quoted(kept),
                    Word::quoted(folder_of(kept)),
                    Word::quoted(&kept.replace('\'', "")),
                ];
                call(&mut s, "put_back", &words);
            }
            None => call(&mut s, "remove", &[Word::from(i), Word::quoted(restore.path)]),
        }
    }
    if !folders.is_empty() {
        let folders: Vec<Word> = folders.iter().map(Word::from).collect();
        let _ = writeln!(s, "rm -rf -- {} 2>/dev/null", words(&folders));
    }
    if owed.is_empty() {
        s.push_str("rm -f -- \"$pending\" 2>/dev/null\n");
    } else {
        let names: String = owed.iter().map(|h| format!("{h}\n")).collect();
        Record::Pending.stage(&mut s, &names, "fail");
        Record::Pending.place(&mut s, "record", "fail");
    }
    Record::Applied.stage(&mut s, applied, "fail");
    Record::Applied.place(&mut s, "applied", "fail");
    s.push_str("echo END\n}\nmain\n");
    s
}

#[derive(Debug, Default)]
pub struct RestoreOutput {
    pub back: Vec<usize>,
    /// Paths that could not be put back, and why.
    pub stuck: Vec<(usize, String)>,
    pub failure: Option<String>,
}

pub fn parse_restore(stdout: &[u8]) -> Result<RestoreOutput, String> {
    let mut out = RestoreOutput::default();
    read_lines(stdout, "rollback", |line| {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("BACK"), Some(i), _) => out.back.push(index(i)?),
            (Some("STUCK"), Some(i), Some(why)) => out.stuck.push((index(i)?, decode_text(why)?)),
            (Some("FAIL"), Some(_), Some(message)) => {
                out.failure = Some(decode_text(message)?);
                return Ok(Line::Stop);
            }
            (Some("END"), _, _) => return Ok(Line::End),
            _ => {}
        }
        Ok(Line::Next)
    })?;
    Ok(out)
}
