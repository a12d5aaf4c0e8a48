//! Running a shell script on a host and collecting its output: over one
//! multiplexed SSH master per host, or locally. Each call is one round trip.
//! Knows nothing of playbooks; the scripts themselves are built in `remote`.

pub mod control;
pub mod local;
pub mod payload;
pub mod ssh;

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

pub use payload::Script;
pub use ssh::{HostKeys, SshOptions, SshTarget};

/// The most one round trip may print on stdout. A snapshot carries every
/// managed file whole (the shipped playbook's are a few KiB; an operator's
/// templates seldom reach a MiB), so 64 MiB leaves room for large files
/// while a host that prints without end (a forced `cat /dev/zero`) costs
/// the controller at most this much a host in flight, not all its memory.
pub const STDOUT_CAP: usize = 64 << 20;

/// The most one round trip may print on stderr: only messages go there, and
/// the scripts keep just the tail of a failing command's (a few KiB), so
/// 1 MiB is far more than an honest host writes.
pub const STDERR_CAP: usize = 1 << 20;

/// Why a host was cut off: it printed more than `cap` bytes on `stream`.
fn over_cap(stream: &str, cap: usize) -> Error {
    Error::Failed(format!(
        "the host printed more than {} MiB on {stream}, the most a round trip may print: reading stopped and its \
         connection was closed (the command on the host was left to end)",
        cap >> 20
    ))
}

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
    /// Closes the script's stdin, which lets it finish, and waits for it,
    /// at most `timeout`: the holder lets go only once the run's scripts on
    /// the host are done, and one that hung (the reason a round trip timed
    /// out) would keep the run waiting for ever. Given up, the host keeps
    /// its lock until that script ends, as it should.
    pub async fn release(self, timeout: Option<Duration>, held_for: HeldFor) {
        let wait = async {
            match self {
                Held::Ssh(child, heartbeat) => {
                    heartbeat.stop(held_for).await;
                    let _ = child.wait().await;
                }
                Held::Local(mut child, heartbeat) => {
                    heartbeat.stop(held_for).await;
                    let _ = child.wait().await;
                }
                Held::Done => {}
            }
        };
        match timeout {
            Some(limit) => {
                let _ = tokio::time::timeout(limit, wait).await;
            }
            None => wait.await,
        }
    }
}

/// What a run did while it held a host's lock, said as it lets go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HeldFor {
    /// It sent nothing more: no script of the run changes the host, and the
    /// holder need not wait for one (it is told `idle`).
    Nothing,
    /// It sent scripts (they may still run, if their replies were lost).
    Work,
}

/// How often a held script hears from the controller. The host gives the
/// lock up after `remote::HOLDER_PATIENCE_SECONDS` without a word, so
/// that a partition does not keep it held until sshd notices the dead
/// connection (minutes).
const HEARTBEAT: Duration = Duration::from_secs(2);

/// A held script's stdin, written a line every [`HEARTBEAT`] until stopped
/// (or dropped): then closed, which tells the script to let go.
pub struct Heartbeat {
    stop: Option<tokio::sync::oneshot::Sender<HeldFor>>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    fn start(mut stdin: impl tokio::io::AsyncWrite + Unpin + Send + 'static) -> Heartbeat {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<HeldFor>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    held_for = &mut stopped => {
                        if held_for == Ok(HeldFor::Nothing) {
                            let _ = stdin.write_all(b"idle\n").await;
                            let _ = stdin.flush().await;
                        }
                        break;
                    }
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

    /// Stops the heartbeat and closes stdin, first saying `idle` when the
    /// run sent nothing while it held the script.
    async fn stop(mut self, held_for: HeldFor) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(held_for);
        }
        let _ = (&mut self.task).await;
    }
}

/// What [`feed_and_read_to_end_marker`] read.
enum Marked {
    /// Up to the end line, which was printed: the script goes on.
    Held(Vec<u8>),
    /// The script ended first; its stderr is for the caller to collect.
    Ended(Vec<u8>),
    /// More than [`STDOUT_CAP`] bytes and no end line.
    OverCap,
}

/// Writes `script` (keeping stdin open) and reads stdout up to the line `end_line`.
async fn feed_and_read_to_end_marker(
    stdin: &mut (impl tokio::io::AsyncWrite + Unpin),
    stdout: &mut (impl AsyncRead + Unpin),
    script: &Script,
    end_line: &str,
) -> std::io::Result<Marked> {
    use tokio::io::AsyncBufReadExt;
    // A host that exits without reading its script (a forced command in
    // authorized_keys) closes the pipe: what it printed, and its exit
    // status, still say what happened, as for any other round trip.
    if let Err(e) = async {
        script.write_to(stdin).await?;
        stdin.flush().await
    }
    .await
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e);
    }
    // One byte past the cap tells a host at the cap from one beyond it.
    let mut reader = tokio::io::BufReader::new(stdout.take(STDOUT_CAP as u64 + 1));
    let mut collected = Vec::new();
    loop {
        let start = collected.len();
        if reader.read_until(b'\n', &mut collected).await? == 0 {
            return Ok(if collected.len() > STDOUT_CAP { Marked::OverCap } else { Marked::Ended(collected) });
        }
        if collected[start..].strip_suffix(b"\n") == Some(end_line.as_bytes()) {
            return Ok(Marked::Held(collected));
        }
    }
}

/// `stream` to its end, or `None` once it has given more than `cap` bytes
/// (then the rest is left unread).
async fn read_capped(stream: impl AsyncRead + Unpin, cap: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    stream.take(cap as u64 + 1).read_to_end(&mut bytes).await?;
    Ok((bytes.len() <= cap).then_some(bytes))
}

/// A script's stdout and stderr, read together so that neither pipe fills
/// and blocks it, each within its cap; `Err` names the stream over its cap
/// as soon as one is, without waiting for the other.
async fn collect_capped(
    stdout: impl AsyncRead + Unpin,
    stderr: impl AsyncRead + Unpin,
) -> std::io::Result<Result<(Vec<u8>, Vec<u8>), Error>> {
    let out = read_capped(stdout, STDOUT_CAP);
    let err = read_capped(stderr, STDERR_CAP);
    tokio::pin!(out, err);
    let (mut stdout, mut stderr) = (None, None);
    while stdout.is_none() || stderr.is_none() {
        tokio::select! {
            read = &mut out, if stdout.is_none() => match read? {
                Some(bytes) => stdout = Some(bytes),
                None => return Ok(Err(over_cap("stdout", STDOUT_CAP))),
            },
            read = &mut err, if stderr.is_none() => match read? {
                Some(bytes) => stderr = Some(bytes),
                None => return Ok(Err(over_cap("stderr", STDERR_CAP))),
            },
        }
    }
    Ok(Ok((stdout.unwrap_or_default(), stderr.unwrap_or_default())))
}

/// Feeds `script` to stdin while `collect` reads the script's output, and
/// returns what `collect` returns as soon as it does: a host that stops
/// reading its stdin (or never starts) cannot hold the run on the write.
async fn feed_and_collect<T>(
    mut stdin: impl tokio::io::AsyncWrite + Unpin,
    script: &Script,
    collect: impl std::future::Future<Output = T>,
) -> T {
    let write = async move {
        // A script that exits early closes its stdin; that is its own error to report.
        let _ = script.write_to(&mut stdin).await;
        let _ = stdin.shutdown().await;
        drop(stdin);
        std::future::pending::<()>().await
    };
    tokio::select! {
        collected = collect => collected,
        () = write => unreachable!("the write never ends by itself"),
    }
}

fn piped() -> (Stdio, Stdio, Stdio) {
    (Stdio::piped(), Stdio::piped(), Stdio::piped())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run_locally(script: &str) -> Result<Output, Error> {
        Transport::Local.run(&Script::from(script.to_owned()), false, None).await
    }

    #[tokio::test]
    async fn a_round_trip_printing_past_the_stdout_cap_fails_and_names_the_cap() {
        let Err(Error::Failed(message)) = run_locally("head -c 70000000 /dev/zero; echo more").await else {
            panic!("a host over the cap fails")
        };
        assert!(message.contains("more than 64 MiB on stdout"), "{message}");
    }

    #[tokio::test]
    async fn a_round_trip_printing_past_the_stderr_cap_fails_even_while_stdout_is_quiet() {
        let Err(Error::Failed(message)) = run_locally("head -c 2000000 /dev/zero >&2; sleep 600").await else {
            panic!("a host over the cap fails")
        };
        assert!(message.contains("more than 1 MiB on stderr"), "{message}");
    }

    #[tokio::test]
    async fn output_at_the_caps_is_read_whole() {
        let output = run_locally("head -c 67108864 /dev/zero; head -c 1048576 /dev/zero >&2").await.unwrap();
        assert_eq!((output.stdout.len(), output.stderr.len()), (STDOUT_CAP, STDERR_CAP));
    }

    #[tokio::test]
    async fn a_held_script_without_its_end_line_stops_being_read_at_the_cap() {
        // No newline at all: a reader looking for the end line would grow for ever.
        let script = Script::from("cat /dev/zero\n".to_owned());
        let Err(Error::Failed(message)) = Transport::Local.run_and_hold(&script, "END x", false, None).await else {
            panic!("a host over the cap fails")
        };
        assert!(message.contains("more than 64 MiB on stdout"), "{message}");
    }

    #[tokio::test]
    async fn a_host_that_never_reads_its_script_does_not_hold_the_round_trip_on_the_write() {
        // Several MiB of script, and a shell that exits without reading it.
        let script = format!("exit 3\n#{}\n", "x".repeat(8 << 20));
        let output = tokio::time::timeout(Duration::from_secs(20), run_locally(&script)).await.expect("no hang");
        assert_eq!(output.unwrap().status, 3);
    }
}
