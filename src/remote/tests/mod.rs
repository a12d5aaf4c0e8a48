//! The scripts run here, by this machine's sh: what they write and read
//! back, and what they print, as a host would. Helpers here, the tests
//! by round trip beside.

mod install;
mod lock_and_handlers;
mod snapshot;

use super::FULL_DISK_SH;
use super::snapshot::{CHANGED_WHILE_READ, SnapshotOutput};
use super::state::owed_handlers;
use super::*;
use crate::plan::{Desired, Entry, Found};
use crate::transport::payload::CHUNK_BYTES;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use bytes::Bytes;
use std::process::Command;

pub fn install_of(state: &StateFiles) -> Install<'_> {
    Install {
        state,
        pending: &[],
        writes: &[],
        commands: &[],
        applied: None,
        stamp: "0",
        token: "0123456789abcdef",
        keep_olds: false,
        crash_at: None,
    }
}

pub fn write<'a>(path: &'a str, desired: &'a Desired) -> FileWrite<'a> {
    FileWrite { path, desired: Some(desired), validate: &[], backup: false }
}

/// Runs the snapshot of `paths` here and reads what it printed.
pub fn read_snapshot(state: &StateFiles, paths: &[&str], guards: &[(usize, &str)]) -> Result<SnapshotOutput, String> {
    let script = snapshot(state, paths, &[], guards);
    parse_snapshot(&sh(&script.text), paths, &[], &script.token)
}

pub fn state_path_exists(path: &str) -> bool {
    std::path::Path::new(path).exists()
}

/// One state folder for the tests that need no state of their own, as
/// the lock's holder leaves it for its run (see [`held`]).
pub fn test_state() -> StateFiles {
    static STATE: std::sync::OnceLock<StateFiles> = std::sync::OnceLock::new();
    STATE.get_or_init(|| held(&tempfile::tempdir().unwrap().keep().display().to_string(), "p")).clone()
}

/// State files in `dir` whose run holds the lock there: `lock.owner`
/// names it, as the holder writes it, so its scripts run.
pub fn held(dir: &str, playbook: &str) -> StateFiles {
    let state = StateFiles::new(dir, playbook);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(format!("{dir}/lock.owner"), format!("{}\n", state.token)).unwrap();
    state
}

/// `sh -s` with its stdin and stdout piped: the script is written to it.
pub fn sh_reading_stdin() -> std::process::Child {
    Command::new("sh")
        .arg("-s")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn sh(script: impl AsRef<[u8]>) -> Vec<u8> {
    let mut child = sh_reading_stdin();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(script.as_ref()).unwrap();
    child.wait_with_output().unwrap().stdout
}
