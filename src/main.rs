//! sentry-provision: parse the command line, run, map the outcome to an exit code.
//!
//! Exit codes are bits that combine: 0 fine; 1 bad input or internal error
//! (no host touched); 2 changes pending (check, diff, drift); 4 a host
//! failed; 8 a host unreachable; 16 interrupted (SIGINT, SIGTERM or SIGHUP:
//! the report marks the hosts that stopped early or never started; after a
//! second signal, 16 alone and no report).

mod audit;
mod cli;
mod commands;
mod drift;
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
mod remote;
mod render;
mod report;
mod run;
mod secrets;
mod suggest;
mod test_hooks;
mod transport;
mod unwind;

use crate::output::{out, outln};
use clap::Parser;
use cli::{Cli, Command};
use run::{HostReport, Mode, Status};
use std::process::ExitCode;

pub const BAD_INPUT: u8 = 1;
pub const CHANGES_PENDING: u8 = 2;
pub const HOST_FAILED: u8 = 4;
pub const HOST_UNREACHABLE: u8 = 8;
pub const INTERRUPTED: u8 = 16;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { BAD_INPUT } else { 0 });
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = match &cli.command {
        Command::Apply(args) => {
            let mode = if args.check { Mode::Check } else { Mode::Apply };
            runtime.block_on(async {
                interrupt::listen();
                apply(&args.common, mode, args.diff, args.format).await
            })
        }
        Command::Diff(args) => runtime.block_on(async {
            interrupt::listen();
            apply(&args.common, Mode::Check, true, args.format).await
        }),
        Command::Drift(args) => runtime.block_on(async {
            interrupt::listen();
            drift::main(args).await
        }),
        Command::Inventory(args) => commands::inventory(args),
        Command::Facts(args) => runtime.block_on(commands::facts(args)),
        Command::Render(args) => commands::render(args),
        Command::CheckPlaybook(args) => commands::check_playbook(args),
        Command::Audit(args) => runtime.block_on(commands::audit(args)),
        Command::Completions { shell } => commands::completions(*shell),
        Command::Man => commands::man(),
    };
    ExitCode::from(code)
}

async fn apply(args: &cli::CommonArgs, mode: Mode, show_diff: bool, format: cli::OutputFormat) -> u8 {
    let started = std::time::Instant::now();
    let settings = match args.settings(mode) {
        Ok(s) => s,
        Err(e) => return bad_input(&e),
    };
    let prepared = match run::prepare(&settings) {
        Ok(p) => p,
        Err(e) => return bad_input(&e),
    };
    prepared.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
    let reports = match run::execute(prepared, &settings, std::time::Duration::ZERO).await {
        Ok(r) => r,
        Err(e) => return bad_input(&e),
    };
    let check = mode == Mode::Check;
    let mut code = host_bits(&reports) | interrupt::exit_bits();
    if check && run::any_changes(&reports) {
        code |= CHANGES_PENDING;
    }
    print_log(&reports);
    match format {
        cli::OutputFormat::Human => {
            let options = report::human::Options { check, show_diff };
            out!("{}", report::human::render(&reports, &options, &report::human::Style::detect()));
        }
        cli::OutputFormat::Json => {
            let document = report::json::run_document(&reports, check, code, started.elapsed());
            outln!("{}", serde_json::to_string_pretty(&document).expect("the report serializes"));
            eprint!("{}", report::human::summary_line(&reports, check));
        }
    }
    code
}

/// `-v`: each host's round trips, on stderr.
pub fn print_log(reports: &[HostReport]) {
    for report in reports {
        for line in &report.log {
            // With -vv a line holds the host's stderr.
            eprintln!("{}: {}", report.name, report::human::printable(line));
        }
    }
}

/// The failed, unreachable and interrupted bits.
pub fn host_bits(reports: &[HostReport]) -> u8 {
    let mut code = 0;
    if reports.iter().any(|r| r.status == Status::Interrupted) {
        code |= INTERRUPTED;
    }
    if reports.iter().any(|r| r.status == Status::Failed) {
        code |= HOST_FAILED;
    }
    if reports.iter().any(|r| r.status == Status::Unreachable) {
        code |= HOST_UNREACHABLE;
    }
    code
}

pub fn bad_input(message: &str) -> u8 {
    eprintln!("sentry-provision: error: {message}");
    BAD_INPUT
}
