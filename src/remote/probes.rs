//! Live-state probes (`probes.sh`): each command's exit status and the
//! tail of its output, in one round trip; and their parser.

use super::shell::{PRELUDE, Word, call_with_command};
use super::wire::{Line, decode_text, read_lines};

const PROBES_SH: &str = include_str!("probes.sh");

/// Live-state probes: each command's exit status and the tail of its output.
pub fn probes(probes: &[&str]) -> String {
    String::from(PRELUDE) + &probe_calls(probes)
}

/// The probes as a script's tail, for a script that began with the prelude
/// (a drift pass runs them right after its snapshot, in the same round trip).
pub fn probe_calls(probes: &[&str]) -> String {
    let mut s = String::from(PROBES_SH);
    for (i, cmd) in probes.iter().enumerate() {
        call_with_command(&mut s, "probe", &[Word::from(i)], cmd);
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
