//! `audit`: one read-only round trip per host (no playbook, nothing
//! written), and where each host strays from Sentry's tuning guide.

use super::reach::Reach;
use crate::cli::{AuditArgs, OutputFormat};
use crate::error::{CHANGES_PENDING, HOST_FAILED, HOST_UNREACHABLE, Outcome};
use crate::output::{out, outln};
use crate::transport;
use serde_json::{Value, json};

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
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let (code, document, text) = audit_outcome(&names, &results);
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

/// The exit bits, the JSON entries and the text of an audit: each host's
/// findings, or its error labelled by its own result (unreachable or failed).
fn audit_outcome(
    hosts: &[&str],
    results: &[Result<Vec<crate::audit::Finding>, transport::Error>],
) -> (u8, Vec<Value>, String) {
    let mut code = 0;
    let mut document = Vec::new();
    let mut text = String::new();
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Ok(findings) => {
                if !findings.is_empty() {
                    code |= CHANGES_PENDING;
                }
                document.push(json!({"host": host, "findings": findings}));
                text.push_str(&crate::report::human::render_findings(host, findings));
            }
            Err(e) => {
                let unreachable = matches!(e, transport::Error::Unreachable(_));
                code |= if unreachable { HOST_UNREACHABLE } else { HOST_FAILED };
                document.push(json!({"host": host, "error": e.to_string()}));
                // The error quotes the host's stderr.
                text.push_str(&format!(
                    "{host}: {} {}\n",
                    if unreachable { "unreachable" } else { "failed" },
                    crate::report::human::printable(&e.to_string())
                ));
            }
        }
    }
    (code, document, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_host_after_an_unreachable_one_is_still_called_failed() {
        let results = [
            Err(transport::Error::Unreachable("connection refused".into())),
            Err(transport::Error::Failed("exit status 1".into())),
            Ok(Vec::new()),
        ];
        let (code, document, text) = audit_outcome(&["db01", "web01", "web02"], &results);
        assert!(text.starts_with("db01: unreachable connection refused\nweb01: failed exit status 1\n"), "{text}");
        assert_eq!(code, HOST_UNREACHABLE | HOST_FAILED);
        assert_eq!(document[1], json!({"host": "web01", "error": "exit status 1"}));
    }
}
