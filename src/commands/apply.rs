//! `apply` (converge every selected host; `--check` shows what would change)
//! and `diff` (the same check with unified diffs).

use super::{host_bits, print_log};
use crate::cli::{ApplyArgs, CommonArgs, DiffArgs, OutputFormat};
use crate::error::{CHANGES_PENDING, Outcome};
use crate::interrupt;
use crate::output::{out, outln};
use crate::report;
use crate::run::{self, Mode};
use std::time::{Duration, Instant};

pub async fn apply(args: &ApplyArgs) -> Outcome {
    let mode = if args.check { Mode::Check } else { Mode::Apply };
    run_playbook(&args.common, mode, args.diff, args.format).await
}

pub async fn diff(args: &DiffArgs) -> Outcome {
    run_playbook(&args.common, Mode::Check, true, args.format).await
}

async fn run_playbook(args: &CommonArgs, mode: Mode, show_diff: bool, format: OutputFormat) -> Outcome {
    interrupt::listen();
    let started = Instant::now();
    let settings = args.settings(mode)?;
    let prepared = run::prepare(&settings)?;
    prepared.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
    let reports = run::execute(prepared, &settings, Duration::ZERO).await?;
    let check = mode == Mode::Check;
    let mut code = host_bits(&reports) | interrupt::exit_bits();
    if check && run::any_changes(&reports) {
        code |= CHANGES_PENDING;
    }
    print_log(&reports);
    match format {
        OutputFormat::Human => {
            let options = report::human::Options { check, show_diff };
            out!("{}", report::human::render(&reports, &options, &report::human::Style::detect()));
        }
        OutputFormat::Json => {
            let document = report::json::run_document(&reports, check, code, started.elapsed());
            outln!("{}", serde_json::to_string_pretty(&document).expect("the report serializes"));
            eprint!("{}", report::human::summary_line(&reports, check));
        }
    }
    Ok(code)
}
