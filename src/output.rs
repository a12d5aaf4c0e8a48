//! What the tool prints on stdout, where the reader may go away first: a
//! closed pipe (`sentry-provision diff | head -1`) ends the process quietly
//! with status 141, as a command that SIGPIPE ended reports, instead of a
//! panic. (Rust ignores SIGPIPE so that a dead ssh child cannot kill the
//! controller; stdout is the one place where a closed reader means "done".)

use std::io::{ErrorKind, Write};

/// The exit status of a command ended by SIGPIPE, as a shell reports it.
pub const BROKEN_PIPE: i32 = 128 + 13;

/// Writes `text` to stdout and flushes it; a closed pipe ends the process.
pub fn write(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(BROKEN_PIPE);
        }
        eprintln!("sentry-provision: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `print!` through [`write`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write(&format!($($arg)*)) };
}

/// `println!` through [`write`].
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::write(&format!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {out, outln};
