//! Reading what a script printed: tagged lines (`TAG word word…`), a last
//! line `END` (or `END <token>`) that says it said everything, base64 where
//! a value could hold anything, and counted raw bytes between lines that
//! carry the run's token. The one reader every parser of a host's reply
//! uses; a host could print anything, so nothing here trusts it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// A base64 value a script printed.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    B64.decode(text.trim()).map_err(|e| format!("bad base64 from host: {e}"))
}

/// A base64 value a script printed, as text (bytes that are not UTF-8
/// shown as U+FFFD), trimmed.
pub fn decode_text(text: &str) -> Result<String, String> {
    Ok(String::from_utf8_lossy(&decode(text)?).trim().to_owned())
}

/// What a parser says of a line it read.
pub enum Line {
    /// Read on.
    Next,
    /// The script's last line: it said everything (read on, all the same).
    End,
    /// Stop here: what came so far is the answer (a failure, say).
    Stop,
}

/// Reads `stdout` line by line with `read`, which says what each line is.
/// Fails with "the `what` ended early" when no line was the end and none
/// stopped the reading.
pub fn read_lines(stdout: &[u8], what: &str, mut read: impl FnMut(&str) -> Result<Line, String>) -> Result<(), String> {
    let mut complete = false;
    for line in String::from_utf8_lossy(stdout).lines() {
        match read(line)? {
            Line::Next => {}
            Line::End => complete = true,
            Line::Stop => return Ok(()),
        }
    }
    if complete { Ok(()) } else { Err(ended_early(what)) }
}

pub fn ended_early(what: &str) -> String {
    format!("the {what} ended early")
}

/// An index a host printed: a number, or a message saying it is not one.
pub fn index(word: &str) -> Result<usize, String> {
    word.parse().map_err(|_| format!("bad index {word}"))
}

/// What a script printed, read line by line and, where it says so, byte by byte.
pub struct Printed<'a> {
    rest: &'a [u8],
}

impl<'a> Printed<'a> {
    pub fn new(stdout: &'a [u8]) -> Printed<'a> {
        Printed { rest: stdout }
    }

    /// The next line without its newline; `None` at the end.
    pub fn line(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.iter().position(|&b| b == b'\n').unwrap_or(self.rest.len());
        let line = &self.rest[..end];
        self.rest = self.rest.get(end + 1..).unwrap_or_default();
        Some(line)
    }

    /// How many bytes are left to read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next `count` bytes, if there are as many.
    pub fn bytes(&mut self, count: usize) -> Option<&'a [u8]> {
        let taken = self.rest.get(..count)?;
        self.rest = &self.rest[count..];
        Some(taken)
    }

    /// Up to the next NUL, which is passed over.
    pub fn nul_terminated(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == 0)?;
        self.bytes(end + 1).map(|taken| &taken[..end])
    }

    /// Passes over `"\n" + line + "\n"`, or says it is not next.
    pub fn closing(&mut self, line: &str) -> bool {
        let expected = format!("\n{line}\n");
        match self.rest.strip_prefix(expected.as_bytes()) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }
}

/// The line after which a reply framed by `token` has said everything.
pub fn end_line(token: &str) -> String {
    format!("END {token}")
}
