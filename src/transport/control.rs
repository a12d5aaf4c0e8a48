//! The run's folder of ssh control sockets (`/tmp/sp-*`: socket paths are
//! limited to ~100 bytes), and the masters that listen in it. A folder
//! holds a pid file that its run keeps locked; it goes away with its
//! masters when the run ends, or when a second signal stops the run. A run
//! killed outright (SIGKILL) cannot clean up: its masters would linger for
//! their ControlPersist idle time and its folder for good, so each run
//! first sweeps folders whose pid file nobody holds any more.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file a run keeps locked (flock) in its folder, holding its pid.
const PID_FILE: &str = "sentry-provision.pid";

/// The folders of this process's runs still going, for a second signal.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Per folder of this process: how many masters were begun in it, and the
/// pids of those whose control socket said it (the mux protocol's alive
/// check). Stopping a folder's masters reads only these pids' command
/// lines; while any begun master did not say its pid (a connection that
/// failed, or one cut short), every process's, as a sweep does.
static MASTERS: Mutex<Vec<Masters>> = Mutex::new(Vec::new());

struct Masters {
    folder: PathBuf,
    begun: usize,
    pids: Vec<i32>,
}

/// `f` on `folder`'s entry in [`MASTERS`], made if need be.
fn with_masters(folder: &Path, f: impl FnOnce(&mut Masters)) {
    let Ok(mut all) = MASTERS.lock() else { return };
    let at = match all.iter().position(|m| m.folder == folder) {
        Some(at) => at,
        None => {
            all.push(Masters { folder: folder.to_path_buf(), begun: 0, pids: Vec::new() });
            all.len() - 1
        }
    };
    f(&mut all[at]);
}

/// A master is about to be started in `folder`.
pub fn master_begun(folder: &Path) {
    with_masters(folder, |masters| masters.begun += 1);
}

/// The master begun in `folder` listens on `socket`: asks it its pid (a
/// master that does not say within seconds leaves its folder to a search).
pub async fn master_started(folder: &Path, socket: &Path) {
    let said = async { openssh_mux_client::Connection::connect(socket).await?.send_alive_check().await };
    let said = tokio::time::timeout(std::time::Duration::from_secs(5), said).await;
    if let Ok(Ok(Ok(pid))) = said.map(|said| said.map(|pid| i32::try_from(pid.get()))) {
        with_masters(folder, |masters| masters.pids.push(pid));
    }
}

/// The pids of `folder`'s masters, when every master begun there said it.
fn known_masters(folder: &Path) -> Option<Vec<i32>> {
    let all = MASTERS.lock().ok()?;
    match all.iter().find(|m| m.folder == folder) {
        Some(masters) if masters.begun == masters.pids.len() => Some(masters.pids.clone()),
        // Another run's folder (a sweep), or one whose masters did not all say.
        _ => None,
    }
}

fn forget_masters(folder: &Path) {
    if let Ok(mut all) = MASTERS.lock() {
        all.retain(|m| m.folder != folder);
    }
}

/// A run's control folder: removed, with any master still listening in
/// it, when dropped.
pub struct ControlFolder {
    dir: Option<tempfile::TempDir>,
    /// Open and locked for as long as the run lasts (flock goes with the
    /// process, however it ends).
    _pid: std::fs::File,
}

impl ControlFolder {
    /// Sweeps what killed runs left, then makes this run's folder.
    pub fn new() -> std::io::Result<ControlFolder> {
        sweep_stale(Path::new("/tmp"));
        ControlFolder::new_in(Path::new("/tmp"))
    }

    fn new_in(parent: &Path) -> std::io::Result<ControlFolder> {
        let dir = tempfile::Builder::new().prefix("sp-").tempdir_in(parent)?;
        // Locked before it takes its name, so a sweep never finds it unheld.
        let staged = dir.path().join(".pid");
        let pid = std::fs::File::create(&staged)?;
        pid.lock()?;
        std::io::Write::write_all(&mut &pid, format!("{}\n", std::process::id()).as_bytes())?;
        std::fs::rename(&staged, dir.path().join(PID_FILE))?;
        if let Ok(mut live) = LIVE.lock() {
            live.push(dir.path().to_path_buf());
        }
        with_masters(dir.path(), |_| {});
        Ok(ControlFolder { dir: Some(dir), _pid: pid })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("the folder lives until dropped").path()
    }
}

impl Drop for ControlFolder {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|p| p != dir.path());
        }
        // Sessions close their masters as they end; one that did not (a
        // host task that failed) must not outlive the run.
        stop_masters(dir.path());
        forget_masters(dir.path());
        let _ = dir.close();
    }
}

/// A second signal: every master of this process's runs stopped and their
/// folders removed, without waiting for the runs.
pub fn abandon_all() {
    let folders = LIVE.lock().map(|live| live.clone()).unwrap_or_default();
    for folder in folders {
        stop_masters(&folder);
        let _ = std::fs::remove_dir_all(&folder);
    }
}

/// Removes the `sp-*` folders in `parent` of this user's runs that are
/// gone (no one holds their pid file), stopping their masters first.
/// Folders without a pid file are not ours to judge and stay.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("sp-") {
            continue;
        }
        let folder = entry.path();
        let owned = std::fs::symlink_metadata(&folder).is_ok_and(|m| m.is_dir() && Some(m.uid()) == uid);
        if !owned {
            continue;
        }
        let Ok(pid) = std::fs::File::open(folder.join(PID_FILE)) else { continue };
        if pid.try_lock().is_ok() {
            stop_masters(&folder);
            let _ = std::fs::remove_dir_all(&folder);
        }
    }
}

/// Sends SIGTERM to every ssh process whose control socket (`-S`) is in
/// `folder`: the pids its masters said when asked (openssh does not tell
/// them), if each is still such a process (a pid may have been reused); or,
/// when one did not say it, those found by reading every process's command
/// line in /proc (~30 ms on a machine that runs thousands).
fn stop_masters(folder: &Path) {
    let proc = Path::new("/proc");
    let pids = match known_masters(folder) {
        Some(pids) => pids.into_iter().filter(|&pid| is_master_in(proc, pid, folder)).collect(),
        None => masters_in(proc, folder),
    };
    for &pid in &pids {
        // SAFETY: kill(2) with a pid just seen in /proc as one of our
        // masters, and a constant signal.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    // Gone before this process is: a run that says it left nothing behind
    // must not leave a master still winding down (at most a second).
    let started = std::time::Instant::now();
    while pids.iter().any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && started.elapsed() < std::time::Duration::from_secs(1)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Sends SIGTERM to the ssh master listening on `socket`: the one
/// connection of a host that must send nothing more (see `ssh::cut_off`).
pub fn stop_master(socket: &Path) {
    for pid in ssh_processes(Path::new("/proc"), |s| s == socket.as_os_str().as_encoded_bytes()) {
        // SAFETY: kill(2) with a pid read from /proc and a constant signal.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

fn masters_in(proc: &Path, folder: &Path) -> Vec<i32> {
    let prefix = format!("{}/", folder.display());
    ssh_processes(proc, |socket| socket.starts_with(prefix.as_bytes()))
}

/// Whether process `pid` in `proc` is an ssh whose control socket is in `folder`.
fn is_master_in(proc: &Path, pid: i32, folder: &Path) -> bool {
    let prefix = format!("{}/", folder.display());
    std::fs::read(proc.join(pid.to_string()).join("cmdline"))
        .is_ok_and(|cmdline| is_ssh_on(&cmdline, |socket| socket.starts_with(prefix.as_bytes())))
}

/// The ssh processes in `proc` whose control socket (`-S`) is one `wanted` takes.
fn ssh_processes(proc: &Path, wanted: impl Fn(&[u8]) -> bool) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(proc) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            is_ssh_on(&cmdline, &wanted).then_some(pid)
        })
        .collect()
}

/// Whether a command line (`/proc/PID/cmdline`) is an ssh's whose control
/// socket (`-S`) is one `wanted` takes.
fn is_ssh_on(cmdline: &[u8], wanted: impl Fn(&[u8]) -> bool) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_ssh = args.first().is_some_and(|a| a.ends_with(b"ssh"));
    is_ssh && args.windows(2).any(|w| w[0] == b"-S" && wanted(w[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_whose_run_is_gone_is_swept_and_a_live_ones_stays() {
        let parent = tempfile::tempdir().unwrap();
        let live = ControlFolder::new_in(parent.path()).unwrap();
        // What a killed run leaves: its pid file, held by no one.
        let dead = parent.path().join("sp-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(PID_FILE), "1\n").unwrap();
        // Someone else's folder of the same prefix, without a pid file.
        let other = parent.path().join("sp-other");
        std::fs::create_dir(&other).unwrap();
        sweep_stale(parent.path());
        assert!(!dead.exists());
        assert!(other.exists() && live.path().exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "a run's folder goes with it");
    }

    #[test]
    fn masters_are_found_by_the_control_socket_in_their_folder() {
        let proc = tempfile::tempdir().unwrap();
        let process = |pid: &str, args: &[&str]| {
            std::fs::create_dir(proc.path().join(pid)).unwrap();
            std::fs::write(proc.path().join(pid).join("cmdline"), args.join("\0") + "\0").unwrap();
        };
        process(
            "10",
            &["ssh", "-E", "/tmp/sp-a/.ssh-connection1/log", "-S", "/tmp/sp-a/.ssh-connection1/master", "-M"],
        );
        process("11", &["/usr/bin/ssh", "-S", "/tmp/sp-ab/.ssh-connection2/master"]);
        process("12", &["vim", "-S", "/tmp/sp-a/session.vim"]);
        process("self", &["ssh", "-S", "/tmp/sp-a/x"]);
        assert_eq!(masters_in(proc.path(), Path::new("/tmp/sp-a")), [10]);
        // One host's master alone, by its socket (a host cut off for its output).
        let one = |socket: &[u8]| socket == b"/tmp/sp-ab/.ssh-connection2/master";
        assert_eq!(ssh_processes(proc.path(), one), [11]);
        // A pid a master said, checked again before it is signalled.
        assert!(is_master_in(proc.path(), 10, Path::new("/tmp/sp-a")));
        assert!(!is_master_in(proc.path(), 12, Path::new("/tmp/sp-a")), "the pid went to another program");
        assert!(!is_master_in(proc.path(), 11, Path::new("/tmp/sp-a")));
        assert!(!is_master_in(proc.path(), 13, Path::new("/tmp/sp-a")), "gone");
    }

    #[test]
    fn a_folder_where_a_begun_master_did_not_say_its_pid_is_searched_in_full() {
        let folder = Path::new("/tmp/sp-known-masters-test");
        assert_eq!(known_masters(folder), None, "a folder this process did not make");
        with_masters(folder, |_| {});
        assert_eq!(known_masters(folder), Some(Vec::new()), "ours, and no master begun: none to stop");
        master_begun(folder);
        master_begun(folder);
        with_masters(folder, |masters| masters.pids.push(41));
        assert_eq!(known_masters(folder), None, "one of two said its pid");
        with_masters(folder, |masters| masters.pids.push(42));
        assert_eq!(known_masters(folder), Some(vec![41, 42]));
        forget_masters(folder);
        assert_eq!(known_masters(folder), None);
    }
}
