//! The `local` connection (`ansible_connection=local`): scripts run on this machine.

use super::{
    Error, Heartbeat, Held, Marked, Output, STDOUT_CAP, Script, collect_capped, feed_and_collect,
    feed_and_read_to_end_marker, over_cap, piped,
};
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
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    // Over a cap, the child is dropped, which kills it.
    let collect = async move {
        let (stdout, stderr) = match collect_capped(stdout, stderr).await? {
            Ok(streams) => streams,
            Err(over) => return Ok(Err(over)),
        };
        let status = child.wait().await?;
        Ok(Ok(Output { status: status.code().unwrap_or(-1), stdout, stderr }))
    };
    let collected: std::io::Result<Result<Output, Error>> = feed_and_collect(input, script, collect).await;
    collected.map_err(|e| Error::Failed(format!("`{program}`: {e}")))?
}

pub async fn run_and_hold(program: &str, script: &Script, end_line: &str) -> Result<(Output, Held<'static>), Error> {
    let mut child = spawn(program)?;
    let mut input = child.stdin.take().expect("stdin is piped");
    let mut output = child.stdout.take().expect("stdout is piped");
    let marked = feed_and_read_to_end_marker(&mut input, &mut output, script, end_line)
        .await
        .map_err(|e| Error::Failed(format!("`{program}`: {e}")))?;
    let collected = match marked {
        Marked::Held(collected) => {
            let heartbeat = Heartbeat::start(input);
            return Ok((Output { status: 0, stdout: collected, stderr: Vec::new() }, Held::Local(child, heartbeat)));
        }
        Marked::OverCap => return Err(over_cap("stdout", STDOUT_CAP)),
        Marked::Ended(collected) => collected,
    };
    drop(input);
    let stderr = child.stderr.take().expect("stderr is piped");
    let (_, stderr) =
        collect_capped(output, stderr).await.map_err(|e| Error::Failed(format!("`{program}`: {e}")))??;
    let status = child.wait().await.map_err(|e| Error::Failed(format!("`{program}`: {e}")))?;
    Ok((Output { status: status.code().unwrap_or(-1), stdout: collected, stderr }, Held::Done))
}
