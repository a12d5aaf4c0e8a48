//! sentry-provision: parse the command line, run the command, and turn its
//! outcome into the exit code (the bits are in `error`).

mod audit;
mod cli;
mod commands;
mod error;
mod extra_vars;
mod facts;
#[cfg(test)]
mod hostile_replies;
mod input;
mod interrupt;
mod inventory;
mod output;
mod plan;
mod playbook;
mod progress;
mod random;
mod remote;
mod render;
mod report;
mod run;
mod secrets;
mod suggest;
mod test_hooks;
mod transport;
mod unwind;
mod vars;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { error::BAD_INPUT } else { 0 });
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = match &cli.command {
        Command::Apply(args) => runtime.block_on(commands::apply::apply(args)),
        Command::Diff(args) => runtime.block_on(commands::apply::diff(args)),
        Command::Drift(args) => runtime.block_on(commands::drift::exec(args)),
        Command::Inventory(args) => commands::inventory::exec(args),
        Command::Facts(args) => runtime.block_on(commands::facts::exec(args)),
        Command::Render(args) => commands::render::exec(args),
        Command::CheckPlaybook(args) => commands::check_playbook::exec(args),
        Command::Audit(args) => runtime.block_on(commands::audit::exec(args)),
        Command::Completions { shell } => commands::docs::completions(*shell),
        Command::Man => commands::docs::man(),
    };
    ExitCode::from(match outcome {
        Ok(bits) => bits,
        Err(e) => {
            e.print();
            e.exit_code()
        }
    })
}
