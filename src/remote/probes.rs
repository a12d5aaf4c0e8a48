//! Live-state probes (`probes.sh`): each command's exit status and the
//! tail of its output, in one round trip; and their parser.

use super::shell::{PRELUDE, Word, call_with_command};
use super::wire::{Line, decode_text, read_lines};
use crate::random::random_u64;

pub(super) const PROBES_SH: &str = include_str!("probes.sh");
/// `one_perl.pl` without its comment lines: at most 4 KB, which dash writes
/// to a here-document's pipe itself, where a longer one costs a fork (an
/// apply's snapshot sends it with no probes).
static ONE_PERL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    include_str!("one_perl.pl")
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| line.to_owned() + "\n")
        .collect()
});

/// Live-state probes: each command's exit status and the tail of its output.
pub fn probes(probes: &[&str]) -> String {
    let (in_perl, calls) = probes_by_kind(probes);
    let mut s = String::from(PRELUDE) + PROBES_SH + &calls;
    if !in_perl.is_empty() {
        s.push_str("probes_in_one_perl");
        for (i, _) in &in_perl {
            s.push_str(&format!(" {i}"));
        }
        s.push_str(&one_perl_on_stdin(&in_perl));
    }
    s.push_str("echo END\n");
    s
}

/// The Perl probes among `probes` (see [`PerlProgram`]) with their
/// indexes, and the calls of `probes.sh` that run the others, in order.
pub(super) fn probes_by_kind(probes: &[&str]) -> (Vec<(usize, PerlProgram)>, String) {
    let mut in_perl = Vec::new();
    let mut calls = String::new();
    for (i, cmd) in probes.iter().enumerate() {
        if let Some(program) = perl_program(cmd) {
            in_perl.push((i, program));
            continue;
        }
        // A subshell's $$ and PPID are the script's (see probes.sh).
        let runner = if names_its_shells_pid(cmd) { "probe_in_own_shell" } else { "probe" };
        call_with_command(&mut calls, runner, &[Word::from(i)], cmd);
    }
    (in_perl, calls)
}

/// ` <<'END'` and the here-document that gives a command's stdin
/// `one_perl.pl` and, after its `__DATA__`, each Perl probe's program and
/// arguments (`INDEX LENGTH...`, then the bytes).
pub(super) fn one_perl_on_stdin(programs: &[(usize, PerlProgram)]) -> String {
    let end = format!("SP_PERL_{:016x}", random_u64());
    let mut s = format!(" <<'{end}'\n{}", *ONE_PERL);
    for (i, PerlProgram { program, arguments }) in programs {
        s.push_str(&i.to_string());
        for text in std::iter::once(program).chain(arguments) {
            s.push_str(&format!(" {}", text.len()));
        }
        s.push('\n');
        s.push_str(program);
        arguments.iter().for_each(|argument| s.push_str(argument));
    }
    s.push_str(&format!("\n{end}\n"));
    s
}

/// Whether a probe runs in the one perl of its pass (see [`PerlProgram`]).
#[cfg(test)]
pub fn runs_in_one_perl(probe: &str) -> bool {
    perl_program(probe).is_some()
}

/// A probe that is one Perl program: `exec perl - WORD... <<'END'` after
/// nothing but blank and comment lines, its here-document the rest of the
/// probe. Its words are plain (bare characters no shell treats specially,
/// single quotes, backslashes: what `| quote` writes), so they mean here
/// what the shell would make of them; its end word is single-quoted (the
/// body is read as it is) and only blanks follow it. Neither holds a NUL
/// (dash drops them from a here-document). A program that could tell a
/// string eval from a perl of its own, or that a string eval would end
/// early, runs in a perl of its own: one with a `#!` line (perl takes
/// switches from it), `__END__`, `__DATA__`, ^D or ^Z (where a perl of its
/// own reads the rest of its stdin), a byte-order mark (which it skips),
/// CHECK or INIT blocks (a string eval runs neither), `$^S`, `caller` or
/// Carp (they see the eval).
#[derive(Debug, PartialEq)]
pub(super) struct PerlProgram {
    program: String,
    arguments: Vec<String>,
}

/// What a program may contain that a string eval runs otherwise (Carp
/// reports where its caller was called from).
const TELLS_AN_EVAL: &[&str] = &[
    "__END__", "__DATA__", "\u{4}", "\u{1a}", "\u{feff}", "CHECK", "INIT", "^S", "caller", "Carp", "carp", "croak",
    "confess", "cluck",
];

fn perl_program(cmd: &str) -> Option<PerlProgram> {
    let blank = |line: &str| line.trim_matches([' ', '\t']).is_empty();
    if cmd.contains('\0') {
        return None;
    }
    let mut lines = cmd.split('\n');
    let exec_line =
        lines.by_ref().find(|line| !blank(line) && !line.trim_start_matches([' ', '\t']).starts_with('#'))?;
    let (command, document) = exec_line.split_once("<<")?;
    let words = plain_words(command)?;
    let [exec, perl, dash, arguments @ ..] = words.as_slice() else { return None };
    let end = document.trim_start_matches([' ', '\t']).strip_prefix('\'')?;
    let (end, after) = end.split_once('\'')?;
    if (exec.as_str(), perl.as_str(), dash.as_str()) != ("exec", "perl", "-") || end.is_empty() || !blank(after) {
        return None;
    }
    let mut program = String::new();
    for line in lines.by_ref() {
        if line == end {
            let tells = program.starts_with("#!") || TELLS_AN_EVAL.iter().any(|tell| program.contains(tell));
            return (lines.all(blank) && !tells).then(|| PerlProgram { program, arguments: arguments.to_vec() });
        }
        program.push_str(line);
        program.push('\n');
    }
    None
}

/// The words of a line of shell made only of characters no shell treats
/// specially (ASCII letters, digits and `@%+=:,./-_`), single-quoted text
/// and backslash escapes, split at blanks; `None` for any other line.
fn plain_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => words.extend(word.take()),
            '\'' => {
                let text = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => text.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            c if c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c) => word.get_or_insert_with(String::new).push(c),
            _ => return None,
        }
    }
    words.extend(word);
    Some(words)
}

/// Whether a probe's shell text names its shell's pid (`$$`, `PPID`),
/// here-documents' bodies included (`. /dev/stdin <<'EOF'` runs one in this
/// shell), but for one shape: `exec PROGRAM … <<'WORD'` whose quoted body
/// ends the probe. Then this shell is gone and PROGRAM reads the body as it
/// is (a Perl program's `$$` is perl's own; a shell's is its own, the pid
/// exec kept). A body without its end line counts as shell text.
fn names_its_shells_pid(cmd: &str) -> bool {
    let names_pid = |text: &str| text.contains("$$") || text.contains("PPID");
    let lines: Vec<&str> = cmd.lines().collect();
    let last = lines.iter().rposition(|line| !line.trim().is_empty());
    let mut at = 0;
    while at < lines.len() {
        let line = lines[at];
        if names_pid(line) {
            return true;
        }
        at += 1;
        let documents = here_documents(line);
        for (n, document) in documents.iter().enumerate() {
            let Some(length) = lines[at..].iter().position(|body| document.ends_at(body)) else { return true };
            let end = at + length;
            let ends_the_probe = Some(end) == last && n + 1 == documents.len() && document.ends_its_line;
            if ends_the_probe && document.quoted && execs_a_program(line) {
                return false;
            }
            if lines[at..end].iter().any(|body| names_pid(body)) {
                return true;
            }
            at = end + 1;
        }
    }
    false
}

/// `exec PROGRAM …`: the line replaces this shell with a program (`exec`
/// with redirections only, `exec 3<&-`, does not).
fn execs_a_program(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix("exec") else { return false };
    let program = rest.trim_start_matches([' ', '\t']);
    program.len() < rest.len() && program.starts_with(|c: char| c.is_ascii_alphabetic() || "/._".contains(c))
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
    /// Nothing but blanks follows WORD on its line.
    ends_its_line: bool,
}

impl HereDocument {
    fn ends_at(&self, line: &str) -> bool {
        (if self.strip_tabs { line.trim_start_matches('\t') } else { line }) == self.delimiter
    }
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
            documents.push(HereDocument { delimiter, quoted, strip_tabs, ends_its_line: rest.trim().is_empty() });
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
    fn a_program_exec_reads_its_quoted_here_document_from_may_name_its_own_pid() {
        for quoted in ["'PL'", "\"PL\"", "\\PL", "P'L'"] {
            let probe = format!("exec 3<&-\nexec perl - a b <<{quoted}\nkill 'KILL', $$ unless fork;\nPL\n");
            assert!(!names_its_shells_pid(&probe), "{probe}");
        }
        assert!(!names_its_shells_pid("exec sh <<-'SH'\n\tkill $$\n\tSH"), "a shell exec'd keeps the pid as its own");
    }

    #[test]
    fn a_pid_anywhere_the_shell_may_still_run_it_is_the_shells() {
        let probes = [
            // Shell text after the body, or a body this shell runs.
            "exec perl - <<'PL'\n$$\nPL\nkill $$",
            "exec perl - <<'PL'\nkill $$\nPL\necho",
            ". /dev/stdin <<'EOF'\nkill $$\nEOF",
            "eval \"$(cat <<'EOF'\nkill $$\nEOF\n)\"",
            "cat <<EOF | sh\nkill $$\nEOF",
            // Not the shape: not exec, exec with redirections only, more
            // on the line, a second document, the pid on the exec line.
            "perl - <<'PL'\nkill 'KILL', $$;\nPL",
            "exec 3<&- <<'PL'\nkill $$\nPL",
            "exec cat <<'A' \\\n  >/dev/null; kill $$\nbody\nA",
            "exec perl -e 'kill TERM => $ARGV[0]' <<'PL' \\\n  \"$$\"\nPL",
            "exec cat <<'A' <<'B'\n$$\nA\nB",
            "exec perl - \"$$\" <<'PL'\nPL",
            // `<<` the shell never opens a document with.
            "true # <<'true'\nkill $$\ntrue",
            "cat \\<<'true' 2>/dev/null\nkill $$\ntrue",
            "perl -e 'print <<\"END\";\nshell pid '$$'\nEND\n'",
            "echo $PPID <<'PL'\nPL",
        ];
        for probe in probes {
            assert!(names_its_shells_pid(probe), "{probe}");
        }
    }

    #[test]
    fn a_here_document_without_its_end_line_is_read_as_shell_text() {
        assert!(names_its_shells_pid("exec perl - <<'PL'\nprint $$;\n"));
        assert!(names_its_shells_pid("exec perl - <<-'PL'\nprint $$;\n  PL\n"), "only tabs go before <<-'s end line");
    }

    #[test]
    fn a_line_opens_its_here_documents_in_order() {
        let opened = here_documents("cat <<A<<-'B' >x; x=$((1 << 2)) <<\"C D\"");
        let delimiters: Vec<(&str, bool, bool, bool)> =
            opened.iter().map(|d| (d.delimiter.as_str(), d.quoted, d.strip_tabs, d.ends_its_line)).collect();
        assert_eq!(
            delimiters,
            [
                ("A", false, false, false),
                ("B", true, true, false),
                ("2", false, false, false),
                ("C D", true, false, true)
            ]
        );
    }
}
