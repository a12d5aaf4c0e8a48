//! Documents generated from the command line's own definition: shell
//! completions and the manual page.

use crate::cli::Cli;
use crate::error::Outcome;
use crate::output::out;
use clap::CommandFactory;

/// `completions SHELL`: the shell's completion script.
pub fn completions(shell: clap_complete::Shell) -> Outcome {
    clap_complete::generate(shell, &mut Cli::command(), "sentry-provision", &mut std::io::stdout());
    Ok(0)
}

/// `man`: the manual page, in roff.
pub fn man() -> Outcome {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page).map_err(|e| e.to_string())?;
    out!("{}", String::from_utf8_lossy(&page));
    Ok(0)
}
