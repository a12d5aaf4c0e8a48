//! `facts`: each selected host's facts (cpus, memory, os, service manager,
//! tools) from one snapshot round trip, printed as JSON.

use super::reach::Reach;
use crate::cli::FactsArgs;
use crate::error::{HOST_UNREACHABLE, Outcome};
use crate::facts::Facts;
use crate::output::outln;
use crate::remote;
use crate::transport;
use serde_json::{Map, Value, json};

/// `facts`: one snapshot round trip per host, facts printed as JSON.
pub async fn exec(args: &FactsArgs) -> Outcome {
    let reach = Reach::new(&args.common)?;
    let hosts = reach.hosts();
    let state = remote::StateFiles::new(remote::STATE_DIR, "facts");
    let snapshot = remote::snapshot(&state, &[], &[], &[]);
    let results = reach.run_everywhere(snapshot.text).await.into_iter().map(|output| {
        let parsed =
            remote::parse_snapshot(&output?.stdout, &[], &[], &snapshot.token).map_err(transport::Error::Failed)?;
        Facts::from_snapshot(&parsed.facts, &parsed.tools, remote::TOOLS).map_err(transport::Error::Failed)
    });
    let mut document = Map::new();
    let mut code = 0;
    for (host, result) in hosts.iter().zip(results) {
        let value = match result {
            Ok(facts) => serde_json::to_value(facts).expect("facts serialize"),
            Err(e) => {
                code |= HOST_UNREACHABLE;
                json!({ "error": e.to_string() })
            }
        };
        document.insert(host.name.clone(), value);
    }
    outln!("{}", serde_json::to_string_pretty(&Value::Object(document)).expect("facts serialize"));
    Ok(code)
}
