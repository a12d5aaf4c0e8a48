//! `check-playbook`: a playbook and its templates checked without any host.

use crate::cli::CheckArgs;
use crate::error::Outcome;
use crate::output::outln;
use crate::run;

/// `check-playbook`: the playbook and its templates, rendered with the
/// playbook's defaults (and the inventory's variables, if given).
pub fn exec(args: &CheckArgs) -> Outcome {
    let summary = run::check_playbook(&args.playbook, args.inventory.as_deref(), &args.extra_vars)?;
    outln!("{summary}");
    Ok(0)
}
