//! One file per command, each thin over the run layer: it reads its
//! arguments into settings, runs, prints the report and returns its exit bits
//! (or the bad input that stopped it) for `main` to turn into the exit code.

pub mod apply;
pub mod audit;
pub mod check_playbook;
pub mod docs;
pub mod drift;
pub mod facts;
pub mod inventory;
mod reach;
pub mod render;

use crate::error::{HOST_FAILED, HOST_UNREACHABLE, INTERRUPTED};
use crate::report;
use crate::run::{HostReport, Status};

/// `-v`: each host's round trips, on stderr.
fn print_log(reports: &[HostReport]) {
    for report in reports {
        for line in &report.log {
            // With -vv a line holds the host's stderr.
            eprintln!("{}: {}", report.name, report::human::printable(line));
        }
    }
}

/// The failed, unreachable and interrupted bits.
fn host_bits(reports: &[HostReport]) -> u8 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_host_status_adds_its_own_exit_bit_and_good_ones_add_none() {
        let hosts = |statuses: &[Status]| -> Vec<HostReport> {
            statuses.iter().map(|&status| HostReport { status, ..HostReport::default() }).collect()
        };
        assert_eq!(host_bits(&hosts(&[Status::Ok, Status::Changed])), 0);
        assert_eq!(host_bits(&hosts(&[Status::Failed, Status::Ok])), HOST_FAILED);
        assert_eq!(host_bits(&hosts(&[Status::Unreachable, Status::Failed])), HOST_FAILED | HOST_UNREACHABLE);
        assert_eq!(host_bits(&hosts(&[Status::Interrupted])), INTERRUPTED);
    }
}
