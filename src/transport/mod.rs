//! Running a shell script on a host and collecting its output: over one
//! multiplexed SSH master per host, or locally. Each call is one round trip.
//! Knows nothing of playbooks; the scripts themselves are built in `script`.

pub mod control;
pub mod local;
pub mod script;
pub mod ssh;

use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub use script::Script;
pub use ssh::{HostKeys, SshOptions, SshTarget};

#[derive(Debug)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

#[derive(Debug)]
pub enum Error {
    /// The host could not be reached, or the connection died.
    Unreachable(String),
    /// The connection works but the command could not be run.
    Failed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Unreachable(m) | Error::Failed(m) => f.write_str(m),
        }
    }
}

pub enum Transport {
    Ssh(openssh::Session),
    Local,
}

/// Where to reach a host, as the inventory says.
#[derive(Debug, Clone)]
pub enum Target {
    Ssh(SshTarget),
    Local,
}

impl Transport {
    pub async fn connect(target: &Target, options: &SshOptions) -> Result<Transport, Error> {
        match target {
            Target::Local => Ok(Transport::Local),
            Target::Ssh(t) => ssh::connect(t, options).await.map(Transport::Ssh),
        }
    }

    /// Runs `script` with `sh -s` (under `sudo -n` when `become_root`),
    /// feeding it on stdin while reading its output, so neither side blocks.
    pub async fn run(&self, script: &Script, become_root: bool, timeout: Option<Duration>) -> Result<Output, Error> {
        let program = shell(become_root);
        let work = async {
            match self {
                Transport::Ssh(session) => ssh::run(session, program, script).await,
                Transport::Local => local::run(program, script).await,
            }
        };
        within(timeout, work).await
    }

    /// Runs `script` and keeps it running after it prints the line
    /// `end_line`: returns what it printed up to there, and a handle whose
    /// release ends it. A lock the script takes is held until then, or until
    /// this process dies (the script's stdin closes either way).
    pub async fn run_and_hold(
        &self,
        script: &Script,
        end_line: &str,
        become_root: bool,
        timeout: Option<Duration>,
    ) -> Result<(Output, Held<'_>), Error> {
        let program = shell(become_root);
        let work = async {
            match self {
                Transport::Ssh(session) => ssh::run_and_hold(session, program, script, end_line).await,
                Transport::Local => local::run_and_hold(program, script, end_line).await,
            }
        };
        within(timeout, work).await
    }

    pub async fn close(self) {
        if let Transport::Ssh(session) = self {
            let _ = session.close().await;
        }
    }
}

/// A short folder for control sockets (see [`control`]).
pub fn control_directory() -> std::io::Result<control::ControlFolder> {
    control::ControlFolder::new()
}

/// The remote shell that reads a script on stdin, under `sudo -n` to become root.
fn shell(become_root: bool) -> &'static str {
    if become_root { "sudo -n sh -s" } else { "sh -s" }
}

/// `work`, failed if it takes longer than `timeout`.
async fn within<T>(
    timeout: Option<Duration>,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match timeout {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(Error::Failed(format!("the command did not finish within {}s", limit.as_secs())))),
    }
}

/// A script left running by [`Transport::run_and_hold`].
pub enum Held<'a> {
    Ssh(openssh::Child<&'a openssh::Session>, Heartbeat),
    Local(tokio::process::Child, Heartbeat),
    /// The script ended by itself.
    Done,
}

impl Held<'_> {
    /// Closes the script's stdin, which lets it finish, and waits for it.
    pub async fn release(self) {
        match self {
            Held::Ssh(child, heartbeat) => {
                heartbeat.stop().await;
                let _ = child.wait().await;
            }
            Held::Local(mut child, heartbeat) => {
                heartbeat.stop().await;
                let _ = child.wait().await;
            }
            Held::Done => {}
        }
    }
}

/// How often a held script hears from the controller. The host gives the
/// lock up after [`script::HOLDER_PATIENCE_SECONDS`] without a word, so
/// that a partition does not keep it held until sshd notices the dead
/// connection (minutes).
const HEARTBEAT: Duration = Duration::from_secs(2);

/// A held script's stdin, written a line every [`HEARTBEAT`] until stopped
/// (or dropped): then closed, which tells the script to let go.
pub struct Heartbeat {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    fn start(mut stdin: impl tokio::io::AsyncWrite + Unpin + Send + 'static) -> Heartbeat {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(HEARTBEAT) => {
                        if stdin.write_all(b"\n").await.is_err() || stdin.flush().await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Heartbeat { stop: Some(stop), task }
    }

    /// Stops the heartbeat and closes stdin.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Writes `script` (keeping stdin open) and reads stdout up to the line `end_line`.
/// `Ok(None)` means the script ended first; its remaining output is for the caller to collect.
async fn feed_and_read_to_end_marker(
    stdin: &mut (impl tokio::io::AsyncWrite + Unpin),
    stdout: &mut (impl tokio::io::AsyncRead + Unpin),
    script: &Script,
    end_line: &str,
) -> std::io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncBufReadExt;
    script.write_to(stdin).await?;
    stdin.flush().await?;
    let mut reader = tokio::io::BufReader::new(stdout);
    let mut collected = Vec::new();
    loop {
        let start = collected.len();
        if reader.read_until(b'\n', &mut collected).await? == 0 {
            return Ok((collected, false));
        }
        if collected[start..].strip_suffix(b"\n") == Some(end_line.as_bytes()) {
            return Ok((collected, true));
        }
    }
}

async fn feed_and_collect(
    mut stdin: impl tokio::io::AsyncWrite + Unpin,
    script: &Script,
    wait: impl std::future::Future<Output = std::io::Result<std::process::Output>>,
) -> std::io::Result<std::process::Output> {
    let write = async move {
        // A script that exits early closes its stdin; that is its own error to report.
        let _ = script.write_to(&mut stdin).await;
        let _ = stdin.shutdown().await;
    };
    let ((), output) = tokio::join!(write, wait);
    output
}

fn piped() -> (Stdio, Stdio, Stdio) {
    (Stdio::piped(), Stdio::piped(), Stdio::piped())
}
