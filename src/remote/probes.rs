//! Live-state probes (`probes.sh`): each command's exit status and the
//! tail of its output, in one round trip; and their parser.

use super::shell::{PRELUDE, Word, call_with_command};
use super::wire::{Line, decode_text, read_lines};

const PROBES_SH: &str = include_str!("probes.sh");

/// Live-state probes: each command's exit status and the tail of its output.
pub fn probes(probes: &[&str]) -> String {
    String::from(PRELUDE) + &probe_calls(probes)
}

/// A snapshot script followed by probes, in one round trip (a drift pass
/// that writes nothing): the snapshot runs in a subshell, so that its
/// variables and functions end with it and the probes start as
/// [`probes`] starts them.
pub fn snapshot_then_probes(snapshot: &str, probes_run: &[&str]) -> String {
    format!("(\n{snapshot}) || exit\n{}", probes(probes_run))
}

fn probe_calls(probes: &[&str]) -> String {
    let mut s = String::from(PROBES_SH);
    for (i, cmd) in probes.iter().enumerate() {
        // A subshell's $$ and PPID are the script's (see probes.sh).
        let runner = if cmd.contains("$$") || cmd.contains("PPID") { "probe_in_own_shell" } else { "probe" };
        call_with_command(&mut s, runner, &[Word::from(i)], cmd);
    }
    s.push_str("echo END\n");
    s
}

/// Exit status and output of each probe, in order.
pub fn parse_probes(stdout: &[u8], count: usize) -> Result<Vec<(i32, String)>, String> {
    let mut results = vec![None; count];
    read_lines(stdout, "probes", |line| {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["PROBE", i, rc, rest @ ..] => {
                let i: usize = i.parse().map_err(|_| format!("bad probe index {i}"))?;
                let output = decode_text(rest.first().copied().unwrap_or(""))?;
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some((rc.parse().unwrap_or(-1), output));
                }
            }
            ["END"] => return Ok(Line::End),
            _ => {}
        }
        Ok(Line::Next)
    })?;
    results.into_iter().enumerate().map(|(i, r)| r.ok_or_else(|| format!("probe {i} printed nothing"))).collect()
}
