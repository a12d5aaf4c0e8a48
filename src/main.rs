//! sentry-provision: parse the command line, run, map the outcome to an exit code.
//!
//! Exit codes are bits that combine: 0 fine; 1 bad input or internal error
//! (no host touched); 2 changes pending (check, diff); 4 a host failed;
//! 8 a host unreachable.

mod cli;
mod facts;
mod inventory;
mod plan;
mod playbook;
mod render;
mod report;
mod run;
mod transport;

use clap::Parser;
use cli::{Cli, Command};
use run::Status;
use std::process::ExitCode;

const BAD_INPUT: u8 = 1;
const CHANGES_PENDING: u8 = 2;
const HOST_FAILED: u8 = 4;
const HOST_UNREACHABLE: u8 = 8;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { BAD_INPUT } else { 0 });
        }
    };
    let (args, force_check, show_diff) = match &cli.command {
        Command::Apply(args) => (args, false, args.diff),
        Command::Diff(args) => (args, true, true),
    };
    let settings = match args.settings(force_check) {
        Ok(s) => s,
        Err(e) => return bad_input(&e),
    };
    let prepared = match run::prepare(&settings) {
        Ok(p) => p,
        Err(e) => return bad_input(&e),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let reports = match runtime.block_on(run::execute(prepared, &settings)) {
        Ok(r) => r,
        Err(e) => return bad_input(&e),
    };
    let options = report::human::Options { check: settings.check, show_diff };
    print!("{}", report::human::render(&reports, &options, &report::human::Style::detect()));

    let mut code = 0;
    if settings.check && run::any_changes(&reports) {
        code |= CHANGES_PENDING;
    }
    if reports.iter().any(|r| r.status == Status::Failed) {
        code |= HOST_FAILED;
    }
    if reports.iter().any(|r| r.status == Status::Unreachable) {
        code |= HOST_UNREACHABLE;
    }
    ExitCode::from(code)
}

fn bad_input(message: &str) -> ExitCode {
    eprintln!("sentry-provision: error: {message}");
    ExitCode::from(BAD_INPUT)
}
