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
        let runner = if names_its_shells_pid(cmd) { "probe_in_own_shell" } else { "probe" };
        call_with_command(&mut s, runner, &[Word::from(i)], cmd);
    }
    s.push_str("echo END\n");
    s
}

/// Whether a probe's shell text names its shell's pid (`$$`, `PPID`).
/// The body of a here-document whose delimiter is quoted is not read: the
/// shell passes it on as it is (a Perl program's `$$` is perl's own). A
/// body without its end line is read as shell text, to be safe.
fn names_its_shells_pid(cmd: &str) -> bool {
    let names_pid = |text: &str| text.contains("$$") || text.contains("PPID");
    let mut lines = cmd.lines();
    while let Some(line) = lines.next() {
        if names_pid(line) {
            return true;
        }
        for document in here_documents(line) {
            loop {
                let Some(body) = lines.next() else { return true };
                let end = if document.strip_tabs { body.trim_start_matches('\t') } else { body };
                if end == document.delimiter {
                    break;
                }
                if !document.quoted && names_pid(body) {
                    return true;
                }
            }
        }
    }
    false
}

/// A here-document a line of shell opens (`<<WORD`, `<<-WORD`).
#[derive(Debug, PartialEq)]
struct HereDocument {
    /// The line that ends its body: WORD without its quotes.
    delimiter: String,
    /// Any part of WORD quoted: the body is not expanded.
    quoted: bool,
    /// `<<-`: tabs before the end line are dropped.
    strip_tabs: bool,
}

/// The here-documents `line` opens, in order (their bodies follow it in
/// that order).
fn here_documents(line: &str) -> Vec<HereDocument> {
    let mut documents = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("<<") {
        rest = &rest[at + 2..];
        let strip_tabs = rest.starts_with('-');
        rest = rest[usize::from(strip_tabs)..].trim_start_matches([' ', '\t']);
        let (mut delimiter, mut quoted) = (String::new(), false);
        let mut chars = rest.chars();
        loop {
            let before = chars.as_str();
            let Some(c) = chars.next() else { break };
            match c {
                c if c.is_whitespace() || ";&|<>()".contains(c) => {
                    chars = before.chars();
                    break;
                }
                '\'' | '"' => {
                    quoted = true;
                    delimiter.extend(chars.by_ref().take_while(|&inner| inner != c));
                }
                '\\' => {
                    quoted = true;
                    delimiter.extend(chars.next());
                }
                _ => delimiter.push(c),
            }
        }
        rest = chars.as_str();
        if !delimiter.is_empty() {
            documents.push(HereDocument { delimiter, quoted, strip_tabs });
        }
    }
    documents
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_in_a_quoted_here_document_may_name_its_own_pid() {
        for quoted in ["'PL'", "\"PL\"", "\\PL", "P'L'"] {
            let probe = format!("exec perl - a b <<{quoted}\nkill 'KILL', $$ unless fork;\nPL\necho done");
            assert!(!names_its_shells_pid(&probe), "{probe}");
        }
        assert!(!names_its_shells_pid("cat <<-'PL' >/dev/null\n\t$$\n\tPL\n"));
    }

    #[test]
    fn a_pid_in_an_unquoted_here_document_or_after_a_quoted_one_is_the_shells() {
        assert!(names_its_shells_pid("cat <<EOF | sh\nkill $$\nEOF"));
        assert!(names_its_shells_pid("perl - <<'PL'\n$$\nPL\nkill $$"));
        assert!(names_its_shells_pid("cat <<A <<'B'\nPPID\nA\nB"));
        assert!(names_its_shells_pid("echo $PPID <<'PL'\nPL"));
    }

    #[test]
    fn a_here_document_without_its_end_line_is_read_as_shell_text() {
        assert!(names_its_shells_pid("perl - <<'PL'\nprint $$;\n"));
        assert!(names_its_shells_pid("perl - <<-'PL'\nprint $$;\n  PL\n"), "only tabs go before <<-'s end line");
    }

    #[test]
    fn a_line_opens_its_here_documents_in_order() {
        let opened = here_documents("cat <<A<<-'B' >x; x=$((1 << 2)) <<\"C D\"");
        let delimiters: Vec<(&str, bool, bool)> =
            opened.iter().map(|d| (d.delimiter.as_str(), d.quoted, d.strip_tabs)).collect();
        assert_eq!(delimiters, [("A", false, false), ("B", true, true), ("2", false, false), ("C D", true, false)]);
    }
}
