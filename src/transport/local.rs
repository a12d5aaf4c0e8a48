//! The `local` connection (`ansible_connection=local`): scripts run on this machine.

use super::{Error, Heartbeat, Held, Output, Script, feed_and_collect, feed_and_read_to_end_marker, piped};
use tokio::process::{Child, Command};

/// `program` (words separated by spaces) with its three streams piped.
fn spawn(program: &str) -> Result<Child, Error> {
    let (stdin, stdout, stderr) = piped();
    let mut words = program.split(' ');
    Command::new(words.next().expect("program is not empty"))
        .args(words)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        // Not in this process's group: a Ctrl-C at the terminal reaches the
        // whole group, and a script must not be cut short by it (the
        // controller waits for the script instead).
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Failed(format!("cannot start `{program}`: {e}")))
}

pub async fn run(program: &str, script: &Script) -> Result<Output, Error> {
    let mut child = spawn(program)?;
    let input = child.stdin.take().expect("stdin is piped");
    let output = feed_and_collect(input, script, child.wait_with_output())
        .await
        .map_err(|e| Error::Failed(format!("`{program}`: {e}")))?;
    Ok(Output { status: output.status.code().unwrap_or(-1), stdout: output.stdout, stderr: output.stderr })
}

pub async fn run_and_hold(program: &str, script: &Script, end_line: &str) -> Result<(Output, Held<'static>), Error> {
    let mut child = spawn(program)?;
    let mut input = child.stdin.take().expect("stdin is piped");
    let mut output = child.stdout.take().expect("stdout is piped");
    let (collected, held) = feed_and_read_to_end_marker(&mut input, &mut output, script, end_line)
        .await
        .map_err(|e| Error::Failed(format!("`{program}`: {e}")))?;
    if held {
        let heartbeat = Heartbeat::start(input);
        return Ok((Output { status: 0, stdout: collected, stderr: Vec::new() }, Held::Local(child, heartbeat)));
    }
    drop(input);
    let rest = child.wait_with_output().await.map_err(|e| Error::Failed(format!("`{program}`: {e}")))?;
    let status = rest.status.code().unwrap_or(-1);
    Ok((Output { status, stdout: collected, stderr: rest.stderr }, Held::Done))
}
