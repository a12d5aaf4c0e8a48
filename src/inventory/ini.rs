//! The Ansible INI inventory format: `[group]` host lines with `key=value`
//! variables, `[group:vars]`, `[group:children]` and host ranges such as
//! `web[01:20]`. No crate parses this dialect, so it is done here, by line,
//! as Ansible's own INI plugin does: host lines are split like a shell's
//! words (`shlex`), and every value is read as a Python literal
//! ([`pyliteral`](super::pyliteral)), so `042` stays text and `42` is a number.

use super::{Error, RawInventory, Vars, pyliteral};
use std::path::Path;

enum Section {
    Hosts(String),
    Vars(String),
    Children(String),
}

/// Parses INI inventory text; `file` is only used in error messages.
pub fn parse(text: &str, file: &Path, inv: &mut RawInventory) -> Result<(), Error> {
    let mut section = Section::Hosts("ungrouped".to_owned());
    for (index, raw_line) in text.lines().enumerate() {
        let at = |message: String| Error::at(file, index + 1, 1, message);
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            // `[web]  # a comment` is a header; Ansible allows the comment.
            let header = strip_comment(header)
                .strip_suffix(']')
                .ok_or_else(|| at(format!("section header `{line}` is missing its closing `]`")))?;
            section = match header.split_once(':') {
                None => Section::Hosts(checked_group_name(header).map_err(at)?),
                Some((group, "vars")) => Section::Vars(checked_group_name(group).map_err(at)?),
                Some((group, "children")) => Section::Children(checked_group_name(group).map_err(at)?),
                Some((_, other)) => {
                    return Err(at(format!("unknown section kind `:{other}` (expected `:vars` or `:children`)")));
                }
            };
            match &section {
                Section::Hosts(g) | Section::Vars(g) | Section::Children(g) => inv.group_mut(g),
            };
            continue;
        }
        match &section {
            Section::Hosts(group) => {
                let tokens = split_words(line).map_err(at)?;
                // A line that is all comment after its first `#`.
                let Some((pattern, assignments)) = tokens.split_first() else { continue };
                let (hosts, mut vars) = host_pattern(pattern).map_err(at)?;
                for assignment in assignments {
                    let (key, value) = assignment
                        .split_once('=')
                        .ok_or_else(|| at(format!("`{assignment}` is not a `key=value` host variable")))?;
                    vars.insert(key.to_owned(), pyliteral::value(value));
                }
                for host in hosts {
                    inv.add_host(group, &host, vars.clone(), file, index + 1)?;
                }
            }
            Section::Vars(group) => {
                // Everything after the first `=` is one value, comment and
                // all, read as a Python literal (`42 # c` is 42, `a b # c` text).
                let (key, value) =
                    line.split_once('=').ok_or_else(|| at(format!("`{line}` is not a `key=value` group variable")))?;
                inv.group_mut(group).vars.insert(key.trim().to_owned(), pyliteral::value(value.trim()));
            }
            Section::Children(group) => {
                let child = checked_group_name(strip_comment(line)).map_err(at)?;
                inv.group_mut(&child);
                inv.group_mut(group).children.push(child);
            }
        }
    }
    Ok(())
}

fn checked_group_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(format!("`{name}` is not a valid group name (letters, digits, `_`, `-`, `.`)"));
    }
    Ok(name.to_owned())
}

/// Cuts a `#` comment that starts the text or follows a space.
fn strip_comment(text: &str) -> &str {
    let cut = text.char_indices().find(|(i, c)| *c == '#' && (*i == 0 || text[..*i].ends_with(char::is_whitespace)));
    cut.map_or(text, |(i, _)| &text[..i]).trim_end()
}

/// Splits a host line into words as Python's `shlex.split(line,
/// comments=True)` does, which is what Ansible uses: quotes group and are
/// removed (`key="a value"`), a backslash escapes outside single quotes, and
/// a `#` outside quotes ends the line, even inside a word.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => match chars.next() {
                Some(next @ ('"' | '\\')) => current.push(next),
                Some(next) => {
                    current.push('\\');
                    current.push(next);
                }
                None => return Err(format!("unterminated \" quote in `{line}`")),
            },
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                let next = chars.next().ok_or_else(|| format!("nothing after the last `\\` in `{line}`"))?;
                current.push(next);
                in_word = true;
            }
            (None, '#') => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote in `{line}`"));
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// A host line's first word: the hosts it names (`web[01:20]`) and, from a
/// `:port` suffix (`web1:2222`), `ansible_port`, which the line's own
/// variables may override, as in Ansible. IPv6 addresses are not split.
pub fn host_pattern(pattern: &str) -> Result<(Vec<String>, Vars), String> {
    let mut depth = 0i32;
    let mut colons = Vec::new();
    for (i, c) in pattern.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => colons.push(i),
            _ => {}
        }
    }
    let mut vars = Vars::new();
    // One colon outside the ranges; more would be an IPv6 address.
    let name = match colons[..] {
        [at] => {
            let port = &pattern[at + 1..];
            let number: u16 = port
                .parse()
                .ok()
                .filter(|_| port.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("`{pattern}`: `{port}` after the `:` is not a port number"))?;
            vars.insert("ansible_port".into(), number.into());
            &pattern[..at]
        }
        _ => pattern,
    };
    Ok((expand_range(name)?, vars))
}

/// Expands one host range (`web[01:20]`, `db-[a:c]`, `n[0:10:5]`); names
/// without brackets pass through. Leading zeros set the width.
pub fn expand_range(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else {
        return Ok(vec![pattern.to_owned()]);
    };
    let close =
        pattern[open..].find(']').map(|i| open + i).ok_or_else(|| format!("host range `{pattern}` is missing `]`"))?;
    let (prefix, spec, suffix) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let parts: Vec<&str> = spec.split(':').collect();
    let (start, end, step) = match parts.as_slice() {
        [s, e] => (*s, *e, "1"),
        [s, e, st] => (*s, *e, *st),
        _ => {
            return Err(format!("host range `[{spec}]` must be `[start:end]` or `[start:end:step]`"));
        }
    };
    let step: usize = step
        .parse()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("host range step `{step}` must be a positive number"))?;
    let middles: Vec<String> = if let (Ok(a), Ok(b)) = (start.parse::<u64>(), end.parse::<u64>()) {
        if a > b {
            return Err(format!("host range `[{spec}]` runs backwards"));
        }
        let width = if start.starts_with('0') && start.len() > 1 { start.len() } else { 0 };
        (a..=b).step_by(step).map(|n| format!("{n:0width$}")).collect()
    } else if let ([a], [b]) = (start.as_bytes(), end.as_bytes()) {
        if !a.is_ascii_alphabetic() || !b.is_ascii_alphabetic() || a > b {
            return Err(format!("host range `[{spec}]` must run forwards over letters or numbers"));
        }
        (*a..=*b).step_by(step).map(|c| (c as char).to_string()).collect()
    } else {
        return Err(format!("host range `[{spec}]` must be numbers or single letters"));
    };
    let mut hosts = Vec::new();
    for middle in middles {
        for rest in expand_range(suffix)? {
            hosts.push(format!("{prefix}{middle}{rest}"));
        }
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ranges_keep_their_leading_zeros() {
        let hosts = expand_range("web[01:03].example.com").unwrap();
        assert_eq!(hosts, ["web01.example.com", "web02.example.com", "web03.example.com"]);
    }

    #[test]
    fn ranges_accept_letters_and_steps() {
        assert_eq!(expand_range("db-[a:c]").unwrap(), ["db-a", "db-b", "db-c"]);
        assert_eq!(expand_range("n[0:10:5]").unwrap(), ["n0", "n5", "n10"]);
    }

    #[test]
    fn a_port_after_a_host_or_a_range_is_ansible_port() {
        let (hosts, vars) = host_pattern("web[1:2]:2200").unwrap();
        assert_eq!((hosts, vars["ansible_port"].clone()), (vec!["web1".to_owned(), "web2".to_owned()], 2200.into()));
        let (hosts, vars) = host_pattern("10.0.0.5:22").unwrap();
        assert_eq!((hosts, vars["ansible_port"].clone()), (vec!["10.0.0.5".to_owned()], 22.into()));
        let (hosts, vars) = host_pattern("fe80::1").unwrap();
        assert_eq!((hosts, vars.len()), (vec!["fe80::1".to_owned()], 0), "an IPv6 address has no port");
        assert!(host_pattern("web1:ssh").unwrap_err().contains("not a port number"));
    }

    #[test]
    fn a_backwards_range_is_an_error() {
        assert!(expand_range("web[9:1]").unwrap_err().contains("backwards"));
    }

    #[test]
    fn quoted_words_keep_their_spaces() {
        let words = split_words(r#"h1 greeting="hello world" x='a b' # comment"#).unwrap();
        assert_eq!(words, ["h1", "greeting=hello world", "x=a b"]);
    }

    #[test]
    fn host_lines_split_like_shlex_with_comments() {
        let words = split_words(r#"h1 a=x#y b=2"#).unwrap();
        assert_eq!(words, ["h1", "a=x"], "a # ends the line even inside a word");
        let words = split_words(r#"h1 a="q\"uote" b=a\ b c="'042'" d="""#).unwrap();
        assert_eq!(words, ["h1", r#"a=q"uote"#, "b=a b", "c='042'", "d="]);
        assert!(split_words("h1 a='open").unwrap_err().contains("unterminated"));
    }

    fn parsed(text: &str) -> RawInventory {
        let mut raw = RawInventory::default();
        parse(text, Path::new("hosts.ini"), &mut raw).unwrap();
        raw
    }

    #[test]
    fn ini_values_are_python_literals_on_host_lines_and_in_vars_sections() {
        let raw = parsed(
            "[web]\nweb1 num=042 n=42 f=1.5 t=true T=True y=yes q=\"quoted\" l=[1,2] s=\"'042'\" sp=\"a b\"\n\
             [web:vars]\nnum=042\nn=42 # a comment\nt=true\nd={'a': 1}\nq=\"quoted\"\ns=a b # kept\n",
        );
        let host = &raw.host_vars["web1"];
        let group = &raw.groups["web"].vars;
        use serde_json::json;
        for (key, want) in [
            ("num", json!("042")),
            ("n", json!(42)),
            ("f", json!(1.5)),
            ("t", json!("true")),
            ("T", json!(true)),
            ("y", json!("yes")),
            ("q", json!("quoted")),
            ("l", json!([1, 2])),
            ("s", json!("042")),
            ("sp", json!("a b")),
        ] {
            assert_eq!(host[key], want, "host {key}");
        }
        for (key, want) in [
            ("num", json!("042")),
            ("n", json!(42)),
            ("t", json!("true")),
            ("d", json!({"a": 1})),
            ("q", json!("quoted")),
            ("s", json!("a b # kept")),
        ] {
            assert_eq!(group[key], want, "group {key}");
        }
    }

    #[test]
    fn headers_and_children_may_carry_comments() {
        let raw = parsed("[web] # the web tier\nweb1\n[sentry:children]  # roles\nweb # the web tier\n");
        assert_eq!(raw.groups["sentry"].children, ["web"]);
        assert_eq!(raw.groups["web"].hosts, ["web1"]);
    }
}
