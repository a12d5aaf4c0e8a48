//! Each host's facts from its last drift pass, kept on the controller: the
//! next pass renders its early probes with them, before its snapshot has
//! read the facts again (a guess, checked against the facts it reads).

use crate::facts::Facts;
use crate::inventory::Host;
use crate::report::model::HostReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Host name -> where it was reached and what its snapshot read there.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownFacts(BTreeMap<String, Remembered>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Remembered {
    address: String,
    facts: Facts,
}

impl KnownFacts {
    /// The facts `host` had at its last pass, if it was reached at the same
    /// address (a name given to another machine starts over).
    pub fn of(&self, host: &Host) -> Option<&Facts> {
        self.0.get(&host.name).filter(|known| known.address == host.address()).map(|known| &known.facts)
    }

    /// Takes in the facts each host's snapshot read; whether any changed.
    pub fn learn(&mut self, reports: &[HostReport]) -> bool {
        let mut changed = false;
        for report in reports {
            let Some(facts) = &report.facts else { continue };
            let remembered = Remembered { address: report.address.clone(), facts: facts.clone() };
            if self.0.get(&report.name) != Some(&remembered) {
                self.0.insert(report.name.clone(), remembered);
                changed = true;
            }
        }
        changed
    }

    /// The file's facts; none when it is missing or unreadable, and when it
    /// is not a regular file this user owns, written by no one else (the
    /// facts it holds render commands run as root on the hosts).
    pub fn load(path: &Path) -> KnownFacts {
        let read = || -> std::io::Result<Vec<u8>> {
            // O_NOFOLLOW and O_NONBLOCK: a link is refused, a FIFO does not hang the pass.
            let mut file =
                std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
            let meta = file.metadata()?;
            // SAFETY: geteuid has no preconditions and cannot fail.
            let euid = unsafe { libc::geteuid() };
            if !meta.is_file() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
                return Err(std::io::Error::other("not a regular file of this user's, writable by it alone"));
            }
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        read().ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
    }

    /// Replaces the file whole (a temp file beside it, renamed over it,
    /// never written through a link or into a device), readable by its
    /// owner only: it names hosts and their addresses.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut temp = tempfile::Builder::new()
            .prefix(".facts.")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)?;
        temp.write_all(&serde_json::to_vec(self).expect("facts serialize"))?;
        temp.persist(path).map(drop).map_err(|e| e.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Connection;

    fn host(name: &str, address: &str) -> Host {
        let connection = Connection::Ssh { address: address.into(), port: None, user: None, key_file: None };
        Host { name: name.into(), vars: Default::default(), connection, become_root: false }
    }

    fn report(name: &str, address: &str, cpus: u32) -> HostReport {
        let facts = Facts { cpus, ..Facts::placeholder(&[]) };
        HostReport { name: name.into(), address: address.into(), facts: Some(facts), ..HostReport::default() }
    }

    #[test]
    fn a_host_is_known_by_its_name_at_the_address_it_was_reached_at() {
        let mut known = KnownFacts::default();
        assert!(
            known.learn(&[report("web1", "10.0.0.1", 16), HostReport { name: "down".into(), ..HostReport::default() }])
        );
        assert_eq!(known.of(&host("web1", "10.0.0.1")).map(|f| f.cpus), Some(16));
        assert_eq!(known.of(&host("web1", "10.0.0.2")), None, "the name now names another machine");
        assert_eq!(known.of(&host("down", "")), None, "a host not reached teaches nothing");
        assert!(!known.learn(&[report("web1", "10.0.0.1", 16)]), "nothing new: nothing to write");
        assert!(known.learn(&[report("web1", "10.0.0.1", 32)]));
    }

    #[test]
    fn the_file_is_written_for_its_owner_alone_and_read_back_only_if_no_one_else_could_write_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/facts.json");
        let mut known = KnownFacts::default();
        known.learn(&[report("web1", "10.0.0.1", 16)]);
        known.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(KnownFacts::load(&path), known);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(KnownFacts::load(&path), KnownFacts::default(), "writable by others");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(KnownFacts::load(&link), KnownFacts::default(), "a link");
        let fifo = dir.path().join("fifo.json");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert_eq!(KnownFacts::load(&fifo), KnownFacts::default(), "a FIFO, without waiting for a writer");
        assert_eq!(KnownFacts::load(&dir.path().join("missing.json")), KnownFacts::default());

        // Saving over a link replaces the link, not what it points at.
        known.save(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    }
}
