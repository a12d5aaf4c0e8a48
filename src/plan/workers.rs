//! The tuning guide's one warning the plan gives of a host as found:
//! Sentry workers at a concurrency above 4.

use super::{Desired, Entry, Snapshot};
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The tuning guide's warning about worker concurrency: many workers at
/// `-c 4` beat one at `-c 64`, because of lock contention in the master.
///
/// Said of the host as the snapshot found it. Where the playbook's version
/// of the file (`desired`) runs at `-c 4` or less, the warning says so; and
/// when `applying`, it speaks of the host before this run, since the report
/// is read after the file changed.
pub fn concurrency_warnings(snapshot: &Snapshot, desired: &BTreeMap<String, Desired>, applying: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    for (path, entry) in &snapshot.entries {
        let Entry::File { content, .. } = entry else {
            continue;
        };
        let after = match desired.get(path) {
            Some(Desired::File { content: wanted, .. }) if wanted != content => {
                Some(worker_concurrencies(wanted).into_iter().max())
            }
            _ => None,
        };
        for c in worker_concurrencies(content).into_iter().filter(|c| *c > 4) {
            warnings.push(match after {
                Some(new) if new.is_none_or(|n| n <= 4) => {
                    let now = new.map_or("no worker at all".to_owned(), |n| format!("-c {n}"));
                    if applying {
                        format!(
                            "{path}: Sentry workers were running at concurrency -c {c} before this run (above 4 is \
                             a smell: lock contention); the playbook's file has {now}"
                        )
                    } else {
                        format!(
                            "{path}: Sentry workers run at concurrency -c {c}; above 4 is a smell (lock contention); \
                             the playbook's file has {now}"
                        )
                    }
                }
                _ => format!(
                    "{path}: Sentry workers run at concurrency -c {c}; above 4 is a smell (lock contention): \
                     prefer more worker processes (numprocs) at -c 4"
                ),
            });
        }
    }
    warnings
}

/// The `-c N` of each `sentry run worker` command line, comments aside.
fn worker_concurrencies(content: &[u8]) -> Vec<u32> {
    static WORKER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"sentry\S*\s.*\brun\s+worker\b.*\s-c\s*(\d+)").expect("valid regex"));
    let worker = &*WORKER;
    String::from_utf8_lossy(content)
        .lines()
        .filter(|l| !l.trim_start().starts_with(['#', ';']))
        .filter_map(|line| worker.captures(line).and_then(|c| c[1].parse::<u32>().ok()))
        .collect()
}
