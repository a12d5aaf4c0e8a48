//! Drift, item by item: what the host has against what the playbook wants
//! and what the last apply recorded on the host. Told apart: *host drift*
//! (the host moved since the last apply), *pending* (the playbook or its
//! variables moved) and *never applied*. Pure: hashes and comparisons only.

use super::{Desired, Entry};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// What an apply recorded on the host: per managed path, the fingerprint it
/// left there, the playbook digest and the time (seconds since the epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub paths: BTreeMap<String, AppliedPath>,
    /// The fingerprints are keyed with the host's secret (see
    /// [`Fingerprints`]); records written before keys are not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keyed: bool,
}

/// How fingerprints are made: with the host's secret (HMAC-SHA256; the
/// secret is kept in the host's state folder), so that the record of what
/// was applied is no offline oracle for guessing what a file others may
/// not read holds (a `requirepass` in redis.conf); unkeyed (sha256) only to
/// read a record written before keys.
#[derive(Debug, Clone, Default)]
pub struct Fingerprints {
    key: Option<Vec<u8>>,
}

impl Fingerprints {
    pub fn keyed(key: &[u8]) -> Fingerprints {
        Fingerprints { key: Some(key.to_vec()) }
    }

    /// The fingerprints to compare with `record`: keyed as it is.
    fn for_record(&self, record: &Applied) -> Fingerprints {
        if record.keyed { self.clone() } else { Fingerprints::default() }
    }

    fn of(&self, parts: &[&[u8]]) -> String {
        match &self.key {
            None => sha256(parts),
            Some(key) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
                for part in parts {
                    mac.update(part);
                    mac.update(&[0]);
                }
                mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
            }
        }
    }

    /// The fingerprint of what a path should be: content and mode, or a
    /// link target. Owners are compared apart, since a new file's owner is
    /// whoever wrote it.
    pub fn of_desired(&self, desired: &Desired) -> String {
        match desired {
            Desired::File { content, mode, .. } => self.of(&[b"file", format!("{mode:o}").as_bytes(), content]),
            Desired::Link { target } => self.of(&[b"link", target.as_bytes()]),
        }
    }

    pub fn of_entry(&self, entry: &Entry) -> Option<String> {
        match entry {
            Entry::File { content, mode, .. } => Some(self.of(&[b"file", format!("{mode:o}").as_bytes(), content])),
            Entry::Link { target } => Some(self.of(&[b"link", target.as_bytes()])),
            Entry::Missing | Entry::Other { .. } => None,
        }
    }
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
    fingerprints: &Fingerprints,
) -> Vec<FileDrift> {
    let mut items = Vec::new();
    let recorded_as = applied.map(|a| fingerprints.for_record(a)).unwrap_or_default();
    for (path, want) in desired {
        let entry = entries.get(path).cloned().unwrap_or(Entry::Missing);
        if fingerprints.of_entry(&entry) == Some(fingerprints.of_desired(want)) && !owner_differs(want, &entry) {
            continue;
        }
        let recorded = applied.and_then(|a| a.paths.get(path));
        let state = match recorded {
            None => ItemState::NeverApplied,
            Some(r)
                if recorded_as.of_entry(&entry).as_deref() == Some(r.fingerprint.as_str())
                    && !owner_differs(want, &entry) =>
            {
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
/// old time and digest. A record written before keys starts anew, keyed.
pub fn record<'a>(
    previous: Option<&Applied>,
    desired: impl IntoIterator<Item = (&'a String, &'a Desired)>,
    digest: &str,
    now: u64,
    fingerprints: &Fingerprints,
) -> Applied {
    let keyed = fingerprints.key.is_some();
    let mut applied = previous.filter(|p| p.keyed == keyed).cloned().unwrap_or_default();
    applied.keyed = keyed;
    for (path, want) in desired {
        let fingerprint = fingerprints.of_desired(want);
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
    use crate::plan::tests::file;
    use bytes::Bytes;

    fn want(content: &str) -> Desired {
        Desired::File { content: Bytes::copy_from_slice(content.as_bytes()), mode: 0o644, owner: None, group: None }
    }

    fn one(path: &str, d: Desired) -> BTreeMap<String, Desired> {
        BTreeMap::from([(path.to_owned(), d)])
    }

    fn entries(path: &str, e: Entry) -> BTreeMap<String, Entry> {
        BTreeMap::from([(path.to_owned(), e)])
    }

    fn key() -> Fingerprints {
        Fingerprints::keyed(b"host secret")
    }

    fn record(previous: Option<&Applied>, desired: &BTreeMap<String, Desired>, digest: &str, now: u64) -> Applied {
        super::record(previous, desired, digest, now, &key())
    }

    fn classify(
        desired: &BTreeMap<String, Desired>,
        entries: &BTreeMap<String, Entry>,
        applied: Option<&Applied>,
    ) -> Vec<FileDrift> {
        super::classify(desired, entries, applied, &key())
    }

    #[test]
    fn a_record_holds_keyed_fingerprints_that_plain_hashes_of_a_guess_do_not_match() {
        let applied = record(None, &one("/a", want("requirepass hunter2\n")), "d1", 1);
        assert!(applied.keyed);
        let guess = Fingerprints::default().of_desired(&want("requirepass hunter2\n"));
        assert_ne!(applied.paths["/a"].fingerprint, guess, "no offline oracle");
        assert_eq!(applied.paths["/a"].fingerprint, key().of_desired(&want("requirepass hunter2\n")));
        assert_ne!(Fingerprints::keyed(b"another host").of_desired(&want("x")), key().of_desired(&want("x")));
    }

    #[test]
    fn a_record_from_before_keys_is_still_read_and_the_next_one_is_keyed() {
        let old = super::record(None, &one("/a", want("x\n")), "d1", 1, &Fingerprints::default());
        assert!(!old.keyed);
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("keyed"), "as records were written before: {json}");
        let items = classify(&one("/a", want("y\n")), &entries("/a", file("x\n")), Some(&old));
        assert_eq!(items[0].state, ItemState::Pending, "compared unkeyed, as it was written");
        let next = record(Some(&old), &one("/a", want("y\n")), "d2", 2);
        assert!(next.keyed && next.paths["/a"].fingerprint == key().of_desired(&want("y\n")));
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
