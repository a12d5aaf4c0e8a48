//! Drift, item by item: what the host has against what the playbook wants
//! and what the last apply recorded on the host. Told apart: *host drift*
//! (the host moved since the last apply), *pending* (the playbook or its
//! variables moved) and *never applied*. Pure: hashes and comparisons only.

use super::{Desired, Entry};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// What an apply recorded on the host: per managed path, the fingerprint it
/// left there, the playbook digest and the time (seconds since the epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub paths: BTreeMap<String, AppliedPath>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedPath {
    pub fingerprint: String,
    pub playbook_digest: String,
    pub time: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// The host no longer matches what was last applied: someone changed it.
    HostDrift,
    /// The host still has what was last applied; the playbook wants something else.
    Pending,
    /// No apply has recorded this path on the host.
    NeverApplied,
}

#[derive(Debug, Clone)]
pub struct FileDrift {
    pub path: String,
    pub state: ItemState,
    pub expected: String,
    pub actual: String,
}

fn sha256(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0]);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of what a path should be: content and mode, or a link
/// target. Owners are compared apart, since a new file's owner is whoever wrote it.
pub fn fingerprint_desired(desired: &Desired) -> String {
    match desired {
        Desired::File { content, mode, .. } => sha256(&[b"file", format!("{mode:o}").as_bytes(), content]),
        Desired::Link { target } => sha256(&[b"link", target.as_bytes()]),
    }
}

pub fn fingerprint_entry(entry: &Entry) -> Option<String> {
    match entry {
        Entry::File { content, mode, .. } => Some(sha256(&[b"file", format!("{mode:o}").as_bytes(), content])),
        Entry::Link { target } => Some(sha256(&[b"link", target.as_bytes()])),
        Entry::Missing | Entry::Other { .. } => None,
    }
}

fn describe(entry: &Entry) -> String {
    match entry {
        Entry::Missing => "absent".into(),
        Entry::File { content, mode, owner, group } => {
            format!("{} bytes, mode {mode:04o}, {owner}:{group}, sha256 {}", content.len(), &sha256(&[content])[..12])
        }
        Entry::Link { target } => format!("link to {target}"),
        Entry::Other { kind } => kind.clone(),
    }
}

fn describe_desired(desired: &Desired) -> String {
    match desired {
        Desired::File { content, mode, owner, group } => format!(
            "{} bytes, mode {mode:04o}, {}:{}, sha256 {}",
            content.len(),
            owner.as_deref().unwrap_or("*"),
            group.as_deref().unwrap_or("*"),
            &sha256(&[content])[..12]
        ),
        Desired::Link { target } => format!("link to {target}"),
    }
}

fn owner_differs(desired: &Desired, entry: &Entry) -> bool {
    match (desired, entry) {
        (Desired::File { owner, group, .. }, Entry::File { owner: o, group: g, .. }) => {
            owner.as_ref().is_some_and(|want| want != o) || group.as_ref().is_some_and(|want| want != g)
        }
        _ => false,
    }
}

/// Every managed path that differs from what the playbook wants, classified.
pub fn classify(
    desired: &BTreeMap<String, Desired>,
    entries: &BTreeMap<String, Entry>,
    applied: Option<&Applied>,
) -> Vec<FileDrift> {
    let mut items = Vec::new();
    for (path, want) in desired {
        let entry = entries.get(path).cloned().unwrap_or(Entry::Missing);
        let actual = fingerprint_entry(&entry);
        let wanted = fingerprint_desired(want);
        if actual.as_deref() == Some(wanted.as_str()) && !owner_differs(want, &entry) {
            continue;
        }
        let recorded = applied.and_then(|a| a.paths.get(path));
        let state = match recorded {
            None => ItemState::NeverApplied,
            Some(r) if actual.as_deref() == Some(r.fingerprint.as_str()) && !owner_differs(want, &entry) => {
                ItemState::Pending
            }
            Some(_) => ItemState::HostDrift,
        };
        items.push(FileDrift { path: path.clone(), state, expected: describe_desired(want), actual: describe(&entry) });
    }
    items
}

/// The record to leave once the `desired` paths are in place: other paths
/// keep their entries, and a path whose fingerprint did not change keeps its
/// old time and digest.
pub fn record<'a>(
    previous: Option<&Applied>,
    desired: impl IntoIterator<Item = (&'a String, &'a Desired)>,
    digest: &str,
    now: u64,
) -> Applied {
    let mut applied = previous.cloned().unwrap_or_default();
    for (path, want) in desired {
        let fingerprint = fingerprint_desired(want);
        if applied.paths.get(path).is_some_and(|old| old.fingerprint == fingerprint) {
            continue;
        }
        applied.paths.insert(path.clone(), AppliedPath { fingerprint, playbook_digest: digest.to_owned(), time: now });
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn file(content: &str) -> Entry {
        Entry::File {
            content: Bytes::copy_from_slice(content.as_bytes()),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
        }
    }

    fn want(content: &str) -> Desired {
        Desired::File { content: Bytes::copy_from_slice(content.as_bytes()), mode: 0o644, owner: None, group: None }
    }

    fn one(path: &str, d: Desired) -> BTreeMap<String, Desired> {
        BTreeMap::from([(path.to_owned(), d)])
    }

    fn entries(path: &str, e: Entry) -> BTreeMap<String, Entry> {
        BTreeMap::from([(path.to_owned(), e)])
    }

    #[test]
    fn a_host_matching_the_playbook_has_no_items() {
        let applied = record(None, &one("/a", want("x\n")), "d1", 1);
        assert!(classify(&one("/a", want("x\n")), &entries("/a", file("x\n")), Some(&applied)).is_empty());
    }

    #[test]
    fn a_hand_edit_since_the_last_apply_is_host_drift() {
        let applied = record(None, &one("/a", want("x\n")), "d1", 1);
        let items = classify(&one("/a", want("x\n")), &entries("/a", file("edited\n")), Some(&applied));
        assert_eq!(items[0].state, ItemState::HostDrift);
    }

    #[test]
    fn a_playbook_change_since_the_last_apply_is_pending() {
        let applied = record(None, &one("/a", want("x\n")), "d1", 1);
        let items = classify(&one("/a", want("y\n")), &entries("/a", file("x\n")), Some(&applied));
        assert_eq!(items[0].state, ItemState::Pending);
    }

    #[test]
    fn a_path_no_apply_recorded_is_never_applied() {
        let items = classify(&one("/a", want("y\n")), &entries("/a", file("x\n")), None);
        assert_eq!(items[0].state, ItemState::NeverApplied);
        assert_eq!(items[0].actual.split(',').next().unwrap(), "2 bytes");
    }

    #[test]
    fn an_owner_changed_by_hand_is_host_drift() {
        let applied = record(None, &one("/a", want("x\n")), "d1", 1);
        let owned =
            Desired::File { content: Bytes::from_static(b"x\n"), mode: 0o644, owner: Some("root".into()), group: None };
        let mut entry = file("x\n");
        if let Entry::File { owner, .. } = &mut entry {
            *owner = "nobody".into();
        }
        let items = classify(&one("/a", owned), &entries("/a", entry), Some(&applied));
        assert_eq!(items[0].state, ItemState::HostDrift);
    }

    #[test]
    fn recording_keeps_the_time_of_paths_that_did_not_change() {
        let first = record(None, &one("/a", want("x\n")), "d1", 1);
        assert_eq!(record(Some(&first), &one("/a", want("x\n")), "d2", 5), first);
        let changed = record(Some(&first), &one("/a", want("y\n")), "d2", 5);
        assert_eq!(changed.paths["/a"].time, 5);
        assert_eq!(changed.paths["/a"].playbook_digest, "d2");
    }
}
