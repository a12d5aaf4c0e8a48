//! The third round trip: the handlers the run owes, in order, each
//! followed by the probes that verify it took effect (`handlers.sh`); and
//! their parser.

use super::install::crash_hook;
use super::probes::parse_probes;
use super::shell::{PRELUDE, Word, call, call_with_command};
use super::state::StateFiles;
use super::wire::{Line, decode_text, read_lines};
use super::{ERRLOG_SH, work_lock};
use std::fmt::Write;

const HANDLERS_SH: &str = include_str!("handlers.sh");

/// A probe that checks a handler took effect, run right after it.
pub struct Verify<'a> {
    /// The handler's index in the list run.
    pub after: usize,
    pub name: &'a str,
    pub command: &'a str,
}

/// Runs handlers in order. A handler counts as done, and is cleared from the
/// pending record, only when it exited 0 and every probe verifying it then
/// passed: one that failed or did not take effect (or a run that died) stays
/// owed, and the next run runs it again. The record is read by the shell:
/// no process unless it removes the record; it is never rewritten, so the
/// handlers still owed cannot be lost in a crash; the append that clears a
/// handler is not fsynced: a crash that loses it only runs the handler
/// again, and what a torn append leaves (a line cut short, zeros) names no
/// handler.
pub fn handlers(
    state: &StateFiles,
    handlers: &[(&str, &str)],
    probes: &[Verify<'_>],
    kept: &[String],
    crash_at: Option<&str>,
) -> String {
    let mut s = String::from(PRELUDE);
    s.push_str(&state.shell());
    s.push_str(&work_lock(state)); // interrupts: runs to its end, only under this run's lock
    s.push_str(ERRLOG_SH);
    s.push_str(&crash_hook(crash_at));
    s.push_str(HANDLERS_SH);
    s.push_str("main() {\n");
    for (i, (name, cmd)) in handlers.iter().enumerate() {
        call_with_command(&mut s, "handler", &[Word::from(i)], cmd);
        for (j, probe) in probes.iter().enumerate().filter(|(_, p)| p.after == i) {
            let why = Word::quoted(&format!("verify `{}` failed: ", probe.name));
            call_with_command(&mut s, "verify", &[Word::from(i), Word::from(j), why], probe.command);
        }
        call(&mut s, "handled", &[Word::from(i), Word::quoted(name)]);
    }
    // Every handler took effect: the run's folders, with the entries the
    // install kept in them for a rollback, are not needed any more.
    if !kept.is_empty() {
        let kept: Vec<Word> = kept.iter().map(Word::from).collect();
        let _ = writeln!(s, "rm -rf -- {} 2>/dev/null", super::shell::words(&kept));
    }
    s.push_str("echo END\n}\nmain\n");
    s
}

#[derive(Debug, Default)]
pub struct HandlersOutput {
    pub succeeded: usize,
    /// Exit status and output of each verifying probe (when every handler succeeded).
    pub probes: Vec<(i32, String)>,
    /// Index, exit status and output of the handler that failed.
    pub failure: Option<(usize, i32, String)>,
    /// The handler that failed exited 0 but a probe verifying it failed
    /// (its status and output are the probe's).
    pub no_effect: bool,
}

/// What the handlers script printed, for `handler_count` handlers run in
/// order: every index is checked against them (a host could print any).
pub fn parse_handlers(stdout: &[u8], handler_count: usize, probe_count: usize) -> Result<HandlersOutput, String> {
    let mut out = HandlersOutput::default();
    // The handler a line speaks of: the next one to run, as the script runs them.
    let next = |out: &HandlersOutput, i: &str| match i.parse::<usize>() {
        Ok(i) if i == out.succeeded && i < handler_count => Ok(i),
        _ => Err(format!("unexpected handler index {i} (after {} of {handler_count} handlers)", out.succeeded)),
    };
    let mut stopped = false;
    read_lines(stdout, "handlers", |line| {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["HOK", i] => out.succeeded = next(&out, i)? + 1,
            ["HFAIL", i, rc, message] => {
                out.failure = Some((next(&out, i)?, rc.parse().unwrap_or(-1), decode_text(message)?));
                stopped = true;
                return Ok(Line::Stop);
            }
            ["HNOEFFECT", i, rc, message] => {
                out.failure = Some((next(&out, i)?, rc.parse().unwrap_or(-1), decode_text(message)?));
                out.no_effect = true;
                stopped = true;
                return Ok(Line::Stop);
            }
            ["HFAIL", i, rc] => {
                out.failure = Some((next(&out, i)?, rc.parse().unwrap_or(-1), String::new()));
                stopped = true;
                return Ok(Line::Stop);
            }
            ["END"] => return Ok(Line::End),
            _ => {}
        }
        Ok(Line::Next)
    })?;
    if stopped {
        return Ok(out);
    }
    out.probes = parse_probes(stdout, probe_count)?;
    Ok(out)
}
