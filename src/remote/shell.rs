//! The one way shell text for a host is put together: fixed bodies come
//! from the `.sh` files beside this one, and every value spliced in is a
//! [`Word`], single-quoted unless explicitly made raw. A value never enters
//! a script any other way, so no path, name or content is run as a command.

use crate::random::random_u64;
use std::fmt::Write;

/// One word of shell: a value quoted (the default), or text the script
/// writes as it is ([`Word::raw`]: a number, a variable, a glob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word(String);

impl Word {
    /// `value` as one single-quoted word: `'...'` with each `'` written as `'\''`.
    pub fn quoted(value: &str) -> Word {
        let mut word = String::with_capacity(value.len() + 2);
        word.push('\'');
        for part in value.split_inclusive('\'') {
            match part.strip_suffix('\'') {
                Some(text) => {
                    word.push_str(text);
                    word.push_str("'\\''");
                }
                None => word.push_str(part),
            }
        }
        word.push('\'');
        Word(word)
    }

    /// Text that goes into the script as it is. Only for what the program
    /// itself makes (numbers, names of its own), never for a value from a
    /// playbook, an inventory or a host.
    pub fn raw(text: impl Into<String>) -> Word {
        Word(text.into())
    }

    /// A search pattern as one word the shell expands as a glob: `*` and
    /// `?` bare, everything else quoted.
    pub fn glob(pattern: &str) -> Word {
        let mut word = String::new();
        for part in pattern.split_inclusive(['*', '?']) {
            let (literal, wildcard) = match part.strip_suffix(['*', '?']) {
                Some(literal) => (literal, &part[literal.len()..]),
                None => (part, ""),
            };
            if !literal.is_empty() {
                word.push_str(&Word::quoted(literal).0);
            }
            word.push_str(wildcard);
        }
        Word(word)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Word {
    fn from(value: &str) -> Word {
        Word::quoted(value)
    }
}

impl From<&String> for Word {
    fn from(value: &String) -> Word {
        Word::quoted(value)
    }
}

impl From<usize> for Word {
    fn from(number: usize) -> Word {
        Word(number.to_string())
    }
}

impl std::fmt::Display for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quotes a value for sh: `'...'` with each `'` written as `'\''`.
pub fn quote(value: &str) -> String {
    Word::quoted(value).0
}

/// One line of a generated call list: `name word word…`.
pub fn call(script: &mut impl Write, name: &str, words: &[Word]) {
    let _ = script.write_str(name);
    for word in words {
        let _ = write!(script, " {word}");
    }
    let _ = script.write_char('\n');
}

/// Words separated by spaces.
pub fn words(words: &[Word]) -> String {
    let texts: Vec<&str> = words.iter().map(Word::as_str).collect();
    texts.join(" ")
}

/// Shell variables set to values: `name='value' name='value'`, one line.
pub fn assign(script: &mut impl Write, pairs: &[(&str, Word)]) {
    for (i, (name, value)) in pairs.iter().enumerate() {
        let _ = write!(script, "{}{name}={value}", if i == 0 { "" } else { " " });
    }
    let _ = script.write_char('\n');
}

/// A call of a function of the script that runs `cmd` (with
/// `sh -c '. /dev/fd/3'`), giving it the command's text on descriptor 3
/// from a here-document under a random end word, so that the text is on no
/// command line, where `/proc/PID/cmdline` shows it to every user of the
/// host (a password in `REDISCLI_AUTH=...` would be). The document's first
/// line closes the descriptor.
pub fn call_with_command(script: &mut impl Write, name: &str, words: &[Word], cmd: &str) {
    let end = format!("SP_COMMAND_{:016x}", random_u64());
    let _ = script.write_str(name);
    for word in words {
        let _ = write!(script, " {word}");
    }
    let _ = write!(script, " 3<<'{end}'\nexec 3<&-\n{cmd}\n{end}\n");
}

/// A command's first line, with `…` when more follow: enough to name it in
/// a message (the whole text of a 30-line check helps no one there).
pub fn first_line(cmd: &str) -> String {
    let mut lines = cmd.trim().lines();
    let first = lines.next().unwrap_or_default().trim_end().to_owned();
    if lines.next().is_some() { first + " …" } else { first }
}

/// Every script starts here: the tools' usual folders, the C locale, and
/// `b64`.
pub const PRELUDE: &str = include_str!("prelude.sh");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_one_shell_word_with_only_its_wildcards_bare() {
        let glob_word = |pattern: &str| Word::glob(pattern).to_string();
        assert_eq!(glob_word("/etc/nginx/sites-enabled/*"), "'/etc/nginx/sites-enabled/'*");
        assert_eq!(glob_word("/etc/it's/*.conf"), "'/etc/it'\\''s/'*'.conf'");
        assert_eq!(glob_word("/etc/$(id)/a?"), "'/etc/$(id)/a'?");
    }

    #[test]
    fn a_quoted_word_writes_each_quote_as_quote_backslash_quote_quote() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("''"), "''\\'''\\'''");
    }
}
