//! How a command ends: its exit bits, and the one typed error that ends it
//! before any host is touched. `main` turns either into the exit code.
//!
//! Exit codes are bits that combine: 0 fine; 1 bad input or internal error
//! (no host touched); 2 changes pending (check, diff, drift, audit); 4 a
//! host failed; 8 a host unreachable; 16 interrupted (SIGINT, SIGTERM or
//! SIGHUP: the report marks the hosts that stopped early or never started;
//! after a second signal, 16 alone and no report).

use std::fmt;

pub const BAD_INPUT: u8 = 1;
pub const CHANGES_PENDING: u8 = 2;
pub const HOST_FAILED: u8 = 4;
pub const HOST_UNREACHABLE: u8 = 8;
pub const INTERRUPTED: u8 = 16;

/// A command's outcome: the exit bits of its hosts, or the error that stopped it first.
pub type Outcome = Result<u8, Error>;

#[derive(Debug)]
pub enum Error {
    /// The command line, the inventory, the playbook or a file to write is
    /// wrong: the message says which and why, and no host was touched.
    BadInput(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadInput(_) => BAD_INPUT,
        }
    }

    /// Says the error on stderr, as every command does.
    pub fn print(&self) {
        eprintln!("sentry-provision: error: {self}");
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::BadInput(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

/// The layers below report bad input as a message (loading, checking,
/// rendering offline): by the time one reaches a command, nothing was touched.
impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::BadInput(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_says_its_message_and_exits_1() {
        let error = Error::from("no host `web9` in the inventory".to_owned());
        assert_eq!(error.to_string(), "no host `web9` in the inventory");
        assert_eq!(error.exit_code(), 1);
    }
}
