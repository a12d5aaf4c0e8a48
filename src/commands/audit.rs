//! `audit`: one read-only round trip per host (no playbook, nothing
//! written), and where each host strays from Sentry's tuning guide.

use super::reach::Reach;
use crate::cli::{AuditArgs, OutputFormat};
use crate::error::{CHANGES_PENDING, HOST_FAILED, HOST_UNREACHABLE, Outcome};
use crate::output::{out, outln};
use crate::transport;
use serde_json::json;

/// `audit`: one read-only round trip per host; findings against the guide.
pub async fn exec(args: &AuditArgs) -> Outcome {
    let reach = Reach::new(&args.common)?;
    let hosts = reach.hosts();
    let results: Vec<_> = reach
        .run_everywhere(crate::audit::script(&args.sentry_conf))
        .await
        .into_iter()
        .map(|output| {
            let output = output?;
            let seen = crate::audit::parse(&output.stdout).map_err(|e| {
                transport::Error::Failed(format!(
                    "{e} (exit status {}; stderr: {})",
                    output.status,
                    output.stderr_text()
                ))
            })?;
            Ok::<_, transport::Error>(crate::audit::analyse(&seen))
        })
        .collect();
    let mut code = 0;
    let mut document = Vec::new();
    let mut text = String::new();
    for (host, result) in hosts.iter().zip(&results) {
        match result {
            Ok(findings) => {
                if !findings.is_empty() {
                    code |= CHANGES_PENDING;
                }
                document.push(json!({"host": host.name, "findings": findings}));
                text.push_str(&crate::report::human::render_findings(&host.name, findings));
            }
            Err(e) => {
                code |= if matches!(e, transport::Error::Unreachable(_)) { HOST_UNREACHABLE } else { HOST_FAILED };
                document.push(json!({"host": host.name, "error": e.to_string()}));
                // The error quotes the host's stderr.
                text.push_str(&format!(
                    "{}: {} {}\n",
                    host.name,
                    if code & HOST_UNREACHABLE != 0 { "unreachable" } else { "failed" },
                    crate::report::human::printable(&e.to_string())
                ));
            }
        }
    }
    let with = results.iter().filter(|r| r.as_ref().is_ok_and(|f| !f.is_empty())).count();
    let clean = results.iter().filter(|r| r.as_ref().is_ok_and(|f| f.is_empty())).count();
    match args.format {
        OutputFormat::Json => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({"exit_code": code, "hosts": document})).expect("serializes")
            )
        }
        OutputFormat::Human => {
            out!("{text}");
            outln!(
                "summary: {} host(s): {with} stray from the tuning guide, {clean} as it recommends, {} not read",
                hosts.len(),
                hosts.len() - with - clean
            );
        }
    }
    Ok(code)
}
