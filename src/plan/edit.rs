//! Line and block edits of a file's text, like Ansible's lineinfile and
//! blockinfile. Pure functions: text in, text out, no I/O.

use regex::Regex;

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// The lines, each ending in a newline, in a string of exactly that size:
/// one host's plan keeps it until the run ends, so spare capacity adds up.
fn join(lines: &[&str]) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Ensures `line` is present. With a `regexp`, the last matching line is
/// replaced by `line` (so a setting is changed where it stands); without a
/// match, or without a regexp, `line` is appended unless already there.
pub fn ensure_line(text: &str, line: &str, regexp: Option<&Regex>) -> String {
    let mut current = lines(text);
    if let Some(re) = regexp
        && let Some(last) = current.iter().rposition(|l| re.is_match(l))
    {
        current[last] = line;
        return join(&current);
    }
    if !current.contains(&line) {
        current.push(line);
    }
    join(&current)
}

/// Removes every line matching `regexp`, or equal to `line` when no regexp is given.
pub fn remove_lines(text: &str, line: Option<&str>, regexp: Option<&Regex>) -> String {
    let keep = |l: &&str| match (regexp, line) {
        (Some(re), _) => !re.is_match(l),
        (None, Some(exact)) => *l != exact,
        (None, None) => true,
    };
    let kept: Vec<&str> = lines(text).into_iter().filter(keep).collect();
    join(&kept)
}

pub struct Markers {
    pub begin: String,
    pub end: String,
}

impl Markers {
    pub fn from_template(marker: &str) -> Markers {
        Markers { begin: marker.replace("{mark}", "BEGIN"), end: marker.replace("{mark}", "END") }
    }
}

/// Puts `block` between the markers, replacing what was there, or appends
/// the marked block at the end of the file.
pub fn set_block(text: &str, markers: &Markers, block: &str) -> String {
    let mut current = lines(text);
    let mut replacement = vec![markers.begin.as_str()];
    replacement.extend(block.lines());
    replacement.push(markers.end.as_str());
    match find_block(&current, markers) {
        Some((begin, end)) => {
            current.splice(begin..=end, replacement);
        }
        None => current.extend(replacement),
    }
    join(&current)
}

/// Removes the marked block, markers included.
pub fn remove_block(text: &str, markers: &Markers) -> String {
    let mut current = lines(text);
    if let Some((begin, end)) = find_block(&current, markers) {
        current.drain(begin..=end);
    }
    join(&current)
}

fn find_block(lines: &[&str], markers: &Markers) -> Option<(usize, usize)> {
    let begin = lines.iter().position(|l| l.trim_end() == markers.begin)?;
    let end = lines[begin..].iter().position(|l| l.trim_end() == markers.end)? + begin;
    Some((begin, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(pattern: &str) -> Regex {
        Regex::new(pattern).unwrap()
    }

    #[test]
    fn a_matching_line_is_replaced_where_it_stands() {
        let text = "a 1\nmaxmemory 0\nb 2\n";
        let out = ensure_line(text, "maxmemory 1gb", Some(&re(r"^\s*maxmemory\s")));
        assert_eq!(out, "a 1\nmaxmemory 1gb\nb 2\n");
    }

    #[test]
    fn a_missing_line_is_appended_and_a_final_newline_added() {
        assert_eq!(ensure_line("a", "b", None), "a\nb\n");
        assert_eq!(ensure_line("", "b", Some(&re("^b"))), "b\n");
    }

    #[test]
    fn ensuring_a_present_line_changes_nothing() {
        let text = "appendonly no\n";
        assert_eq!(ensure_line(text, "appendonly no", Some(&re("^appendonly "))), text);
        assert_eq!(ensure_line(text, "appendonly no", None), text);
    }

    #[test]
    fn only_the_last_match_is_replaced() {
        let out = ensure_line("x=1\nx=2\n", "x=3", Some(&re("^x=")));
        assert_eq!(out, "x=1\nx=3\n");
    }

    #[test]
    fn every_matching_line_is_removed() {
        let text = "save 900 1\n# save 1 1\nsave 60 10000\nappendonly no\n";
        assert_eq!(remove_lines(text, None, Some(&re(r"^\s*save\s+\d"))), "# save 1 1\nappendonly no\n");
        assert_eq!(remove_lines("a\nb\na\n", Some("a"), None), "b\n");
    }

    #[test]
    fn a_block_is_appended_then_replaced_in_place() {
        let markers = Markers::from_template("# {mark} MANAGED");
        let once = set_block("head\n", &markers, "x = 1\n");
        assert_eq!(once, "head\n# BEGIN MANAGED\nx = 1\n# END MANAGED\n");
        let edited = format!("{once}tail\n");
        let twice = set_block(&edited, &markers, "x = 2\ny = 3\n");
        assert_eq!(twice, "head\n# BEGIN MANAGED\nx = 2\ny = 3\n# END MANAGED\ntail\n");
        assert_eq!(set_block(&twice, &markers, "x = 2\ny = 3\n"), twice);
    }

    #[test]
    fn a_removed_block_takes_its_markers_with_it() {
        let markers = Markers::from_template("# {mark} M");
        assert_eq!(remove_block("a\n# BEGIN M\nx\n# END M\nb\n", &markers), "a\nb\n");
    }
}
