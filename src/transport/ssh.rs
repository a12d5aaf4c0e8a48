//! SSH through the `openssh` crate: the system `ssh` with one ControlMaster
//! per host, so every round trip after the first reuses the connection, and
//! each round trip speaks the master's mux protocol directly (native-mux)
//! rather than starting another `ssh` process.
//! `~/.ssh/config` (or `--ssh-config`) is honoured; host keys are checked strictly.

use super::{
    Error, Heartbeat, Held, Marked, Output, STDOUT_CAP, Script, collect_capped, feed_and_collect,
    feed_and_read_to_end_marker, over_cap,
};
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SshTarget {
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeys {
    /// Refuse unknown and changed keys.
    Strict,
    /// Add unknown keys; still refuse changed ones.
    AcceptNew,
}

#[derive(Debug, Clone)]
pub struct SshOptions {
    pub config_file: Option<PathBuf>,
    pub host_keys: HostKeys,
    pub control_directory: PathBuf,
    pub connect_timeout: Duration,
}

pub async fn connect(target: &SshTarget, options: &SshOptions) -> Result<Session, Error> {
    let mut builder = SessionBuilder::default();
    builder
        .known_hosts_check(match options.host_keys {
            HostKeys::Strict => KnownHosts::Strict,
            HostKeys::AcceptNew => KnownHosts::Add,
        })
        .control_directory(&options.control_directory)
        .connect_timeout(options.connect_timeout)
        .server_alive_interval(Duration::from_secs(15))
        // A run closes its masters as it ends, also when interrupted (see
        // `control`); one a SIGKILL left behind goes away by itself after a
        // minute idle, or sooner, when the next run sweeps it. Not shorter:
        // a master must outlive the pause between two round trips of a host
        // on a controller loaded by hundreds of hosts.
        .control_persist(ControlPersist::IdleFor(std::num::NonZeroUsize::new(60).expect("60 is not zero")));
    if let Some(config) = &options.config_file {
        builder.config_file(config);
    }
    if let Some(user) = &target.user {
        builder.user(user.clone());
    }
    if let Some(port) = target.port {
        builder.port(port);
    }
    if let Some(key) = &target.key_file {
        builder.keyfile(key);
    }
    super::control::master_begun(&options.control_directory);
    let session = builder
        .connect_mux(&target.address)
        .await
        .map_err(|e| Error::Unreachable(explain_host_key(&target.address, chain(&e))))?;
    super::control::master_started(&options.control_directory, session.control_socket()).await;
    Ok(session)
}

/// ssh's host-key refusals, said plainly with what to do about them.
fn explain_host_key(address: &str, message: String) -> String {
    if message.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        format!(
            "the host key of {address} has CHANGED since it was recorded in known_hosts: refused. This may be an \
             attack, or the host was reinstalled. If you know why, remove the old key (`ssh-keygen -R {address}`) \
             and check the new fingerprint; --accept-new-host-keys never accepts a changed key. ({message})"
        )
    } else if message.contains("Host key verification failed") {
        format!(
            "the host key of {address} is unknown (not in known_hosts): refused by strict host-key checking. Check \
             its fingerprint and add it (`ssh-keyscan {address} >> ~/.ssh/known_hosts`), or run with \
             --accept-new-host-keys to add unknown keys. ({message})"
        )
    } else {
        message
    }
}

pub async fn run(session: &Session, program: &str, script: &Script) -> Result<Output, Error> {
    let mut child = spawn(session, program).await?;
    let input = child.stdin().take().expect("stdin is piped");
    let stdout = child.stdout().take().expect("stdout is piped");
    let stderr = child.stderr().take().expect("stderr is piped");
    let collect = async move {
        let lost = |e: std::io::Error| Error::Unreachable(e.to_string());
        let (stdout, stderr) =
            collect_capped(stdout, stderr).await.map_err(lost)?.map_err(|over| cut_off(session, over))?;
        let status = child.wait().await.map_err(|e| Error::Unreachable(chain(&e)))?;
        let status = connection_kept(status, &stderr)?;
        Ok(Output { status, stdout, stderr })
    };
    feed_and_collect(input, script, collect).await
}

pub async fn run_and_hold<'a>(
    session: &'a Session,
    program: &str,
    script: &Script,
    end_line: &str,
) -> Result<(Output, Held<'a>), Error> {
    let mut child = spawn(session, program).await?;
    let mut input = child.stdin().take().expect("stdin is piped");
    let mut output = child.stdout().take().expect("stdout is piped");
    let marked = feed_and_read_to_end_marker(&mut input, &mut output, script, end_line)
        .await
        .map_err(|e| Error::Unreachable(format!("the connection was lost: {e}")))?;
    let collected = match marked {
        Marked::Held(collected) => {
            let heartbeat = Heartbeat::start(input);
            return Ok((Output { status: 0, stdout: collected, stderr: Vec::new() }, Held::Ssh(child, heartbeat)));
        }
        Marked::OverCap => return Err(cut_off(session, over_cap("stdout", STDOUT_CAP))),
        Marked::Ended(collected) => collected,
    };
    drop(input);
    let stderr = child.stderr().take().expect("stderr is piped");
    let (_, stderr) = match collect_capped(output, stderr).await.map_err(|e| Error::Unreachable(e.to_string()))? {
        Ok(streams) => streams,
        Err(over) => return Err(cut_off(session, over)),
    };
    let status = child.wait().await.map_err(|e| Error::Unreachable(chain(&e)))?;
    let status = connection_kept(status, &stderr)?;
    Ok((Output { status, stdout: collected, stderr }, Held::Done))
}

/// A host over a cap: its connection is closed now (its master stopped),
/// so that it sends nothing more; the command on the host is left to end.
fn cut_off(session: &Session, over: Error) -> Error {
    super::control::stop_master(session.control_socket());
    over
}

/// `program` over the session with its three streams piped.
async fn spawn<'a>(session: &'a Session, program: &str) -> Result<openssh::Child<&'a Session>, Error> {
    session
        .raw_command(program)
        .stdin(openssh::Stdio::piped())
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::piped())
        .spawn()
        .await
        .map_err(|e| lost_or_failed(&e))
}

/// The remote exit status; ssh reports a dropped connection as 255.
fn connection_kept(status: std::process::ExitStatus, stderr: &[u8]) -> Result<i32, Error> {
    match status.code().unwrap_or(-1) {
        255 => {
            let stderr = String::from_utf8_lossy(stderr).trim().to_owned();
            Err(Error::Unreachable(format!("the connection was lost: {stderr}")))
        }
        status => Ok(status),
    }
}

fn lost_or_failed(error: &openssh::Error) -> Error {
    match error {
        openssh::Error::Disconnected | openssh::Error::RemoteProcessTerminated | openssh::Error::Master(_) => {
            Error::Unreachable(chain(error))
        }
        _ => Error::Failed(chain(error)),
    }
}

/// An error with its causes, which is where ssh's own message is.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(cause.to_string().trim());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_host_key_says_how_to_proceed() {
        let text = explain_host_key("10.0.0.1", "No ED25519 host key is known. Host key verification failed.".into());
        assert!(text.contains("is unknown") && text.contains("--accept-new-host-keys"), "{text}");
    }

    #[test]
    fn a_changed_host_key_is_refused_with_a_warning() {
        let text =
            explain_host_key("h", "REMOTE HOST IDENTIFICATION HAS CHANGED! Host key verification failed.".into());
        assert!(text.contains("has CHANGED") && text.contains("ssh-keygen -R h"), "{text}");
    }
}
