//! The `local` connection (`ansible_connection=local`): scripts run on this machine.

use super::{Error, Output, feed_and_collect, piped};
use tokio::process::Command;

pub async fn run(program: &str, script: &str) -> Result<Output, Error> {
    let (stdin, stdout, stderr) = piped();
    let mut words = program.split(' ');
    let mut child = Command::new(words.next().expect("program is not empty"))
        .args(words)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Failed(format!("cannot start `{program}`: {e}")))?;
    let input = child.stdin.take().expect("stdin is piped");
    let output = feed_and_collect(input, script, child.wait_with_output())
        .await
        .map_err(|e| Error::Failed(format!("`{program}`: {e}")))?;
    Ok(Output { status: output.status.code().unwrap_or(-1), stdout: output.stdout, stderr: output.stderr })
}
