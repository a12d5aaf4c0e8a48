//! Facts about a host, read in the snapshot round trip and offered to
//! templates as `facts.*` (cpus, memory, os, service manager, tools).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub cpus: u32,
    pub memory_mb: u64,
    pub os_id: String,
    pub os_version: String,
    pub hostname: String,
    /// The remote user the scripts run as (before `become`).
    pub user: String,
    /// `systemd` when systemd runs the host, else `none`: handlers then use
    /// each daemon's own controls.
    pub service_manager: String,
    pub systemd: bool,
    /// Which of the tools the playbook cares about are installed.
    pub tools: BTreeMap<String, bool>,
}

impl Facts {
    pub fn from_snapshot(
        values: &BTreeMap<String, String>,
        tools_present: &[String],
        known_tools: &[&str],
    ) -> Result<Facts, String> {
        let get = |key: &str| values.get(key).cloned().unwrap_or_default();
        let number = |key: &str| {
            get(key).trim().parse::<u64>().map_err(|_| format!("fact `{key}` is not a number: `{}`", get(key)))
        };
        let service_manager = get("service_manager");
        Ok(Facts {
            cpus: number("cpus")?.max(1) as u32,
            memory_mb: number("memory_kb")? / 1024,
            os_id: get("os_id"),
            os_version: get("os_version"),
            hostname: get("hostname"),
            user: get("user"),
            systemd: service_manager == "systemd",
            service_manager,
            tools: known_tools.iter().map(|t| (t.to_string(), tools_present.iter().any(|p| p == t))).collect(),
        })
    }

    /// Stand-in facts for checking templates and variables before any host
    /// is contacted: same shape, plausible values.
    pub fn placeholder(known_tools: &[&str]) -> Facts {
        Facts {
            cpus: 2,
            memory_mb: 4096,
            os_id: "debian".into(),
            os_version: "12".into(),
            hostname: "placeholder".into(),
            user: "root".into(),
            service_manager: "none".into(),
            systemd: false,
            tools: known_tools.iter().map(|t| (t.to_string(), true)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_read_from_the_snapshot_values() {
        let values: BTreeMap<String, String> =
            [("cpus", "8"), ("memory_kb", "16384000"), ("os_id", "debian"), ("service_manager", "systemd")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let facts = Facts::from_snapshot(&values, &["nginx".into()], &["nginx", "redis-cli"]).unwrap();
        assert_eq!(facts.cpus, 8);
        assert_eq!(facts.memory_mb, 16000);
        assert!(facts.systemd);
        assert!(facts.tools["nginx"] && !facts.tools["redis-cli"]);
    }

    #[test]
    fn a_garbled_fact_is_an_error() {
        let values = BTreeMap::from([("cpus".to_string(), "lots".to_string())]);
        assert!(Facts::from_snapshot(&values, &[], &[]).unwrap_err().contains("cpus"));
    }
}
