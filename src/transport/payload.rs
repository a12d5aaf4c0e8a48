//! A script as it travels to a host: shell text, and file contents sent
//! as base64 lines encoded while they are written. Knows nothing of what
//! the script does (that is `remote`'s).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use std::fmt::Write;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A script as it is sent: shell text with file contents spliced in,
/// base64-encoded a chunk at a time while it is written, so that a host's
/// new files are not held a second time, as text, while they travel.
#[derive(Debug, Clone, Default)]
pub struct Script {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    /// Base64 in lines of 76 characters, each ending in a newline.
    Base64(Bytes),
}

/// Input bytes per base64 line.
const LINE_BYTES: usize = 57;
/// Input bytes encoded per write: 64 lines.
pub(crate) const CHUNK_BYTES: usize = LINE_BYTES * 64;

impl Script {
    pub fn push_str(&mut self, text: &str) {
        match self.parts.last_mut() {
            Some(Part::Text(last)) => last.push_str(text),
            _ => self.parts.push(Part::Text(text.to_owned())),
        }
    }

    pub fn push_base64_lines(&mut self, content: &Bytes) {
        self.parts.push(Part::Base64(content.clone()));
    }

    /// How many bytes [`Script::write_to`] sends.
    pub fn sent_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.len(),
                Part::Base64(content) => content.len().div_ceil(3) * 4 + content.len().div_ceil(LINE_BYTES),
            })
            .sum()
    }

    pub async fn write_to(&self, out: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        let mut buffer = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.write_all(text.as_bytes()).await?,
                Part::Base64(content) => {
                    for chunk in content.chunks(CHUNK_BYTES) {
                        buffer.clear();
                        base64_lines(chunk, &mut buffer);
                        out.write_all(buffer.as_bytes()).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The whole script, as a shell would read it.
    #[cfg(test)]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.sent_bytes());
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => bytes.extend_from_slice(t.as_bytes()),
                Part::Base64(content) => {
                    text.clear();
                    base64_lines(content, &mut text);
                    bytes.extend_from_slice(text.as_bytes());
                }
            }
        }
        bytes
    }

    /// The whole script as text (bytes that are not UTF-8 shown as U+FFFD).
    #[cfg(test)]
    pub fn to_text(&self) -> String {
        String::from_utf8_lossy(&self.to_bytes()).into_owned()
    }
}

impl From<String> for Script {
    fn from(text: String) -> Script {
        Script { parts: vec![Part::Text(text)] }
    }
}

impl Write for Script {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.push_str(text);
        Ok(())
    }
}

fn base64_lines(bytes: &[u8], out: &mut String) {
    for line in bytes.chunks(LINE_BYTES) {
        B64.encode_string(line, out);
        out.push('\n');
    }
}
