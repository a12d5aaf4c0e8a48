//! `audit`: reads each host (one round trip, read-only, no playbook needed)
//! and says in plain words where it strays from Sentry's tuning guide, and
//! why it matters. The analysis is pure; the one script is at the bottom.
//! `sentry.conf.py` is read, never run (audit_web_options.py): it is the
//! host's code, and the audit runs as root.

use crate::remote::wire::{self, Line};
use serde::Serialize;
use std::collections::BTreeMap;

/// What the audit script read from a host.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub cpus: u32,
    /// `CONFIG GET` answers, when redis-cli is there and Redis answers.
    pub redis: BTreeMap<String, String>,
    /// supervisord configuration files and their text.
    pub supervisor_files: BTreeMap<String, String>,
    /// `nginx -T`, when nginx is there.
    pub nginx: Option<String>,
    /// `SENTRY_WEB_OPTIONS` protocol and workers from sentry.conf.py (Sentry's
    /// defaults where it sets none); `None` where they could not be read.
    pub web_protocol: Option<String>,
    pub web_workers: Option<u32>,
    /// What of `SENTRY_WEB_OPTIONS` could not be read without running the
    /// file, and why: "… is dynamic: not evaluated (`os.cpu_count() * 2`)".
    pub web_unread: Vec<String>,
    /// Whether something listens on Sentry web's port: a host that runs the
    /// workers alone has `sentry.conf.py` too, and no web to size.
    pub web_runs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub topic: &'static str,
    /// What is wrong, in a line.
    pub found: String,
    /// Why it matters, and what the guide recommends.
    pub advice: String,
}

pub fn analyse(seen: &Observed) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut add = |topic, found: String, advice: String| findings.push(Finding { topic, found, advice });
    if let Some(save) = seen.redis.get("save").filter(|s| !s.trim().is_empty()) {
        add(
            "redis",
            format!("RDB snapshots are on (save \"{save}\")"),
            "Sentry keeps only temporal data in Redis; each snapshot forks Redis and writes the whole dataset to disk for \
             nothing. Set `save \"\"` in redis.conf (an absent save line means the default schedule) and at runtime."
                .into(),
        );
    }
    if seen.redis.get("appendonly").is_some_and(|a| a == "yes") {
        add(
            "redis",
            "the append-only file is on".into(),
            "Every write is also logged to disk; set `appendonly no`.".into(),
        );
    }
    if seen.redis.get("maxmemory").is_some_and(|m| m.trim() == "0") {
        add(
            "redis",
            "Redis has no memory cap (maxmemory 0)".into(),
            "Without a cap Redis grows until the kernel kills it or the host swaps; set `maxmemory` (the guide: 1gb)."
                .into(),
        );
    }
    if let Some(policy) = seen.redis.get("maxmemory-policy").filter(|p| !p.is_empty() && *p != "allkeys-lru") {
        add(
            "redis",
            format!("Redis evicts with `{policy}` at its cap"),
            "With `noeviction` writes fail when memory is full; Sentry's data is all disposable, so evict any key, least \
             recently used first: `maxmemory-policy allkeys-lru`."
                .into(),
        );
    }
    let worker = regex::Regex::new(r"run\s+worker\b.*\s-c\s*(\d+)").expect("valid regex");
    let numprocs = regex::Regex::new(r"(?m)^\s*numprocs\s*=\s*(\d+)").expect("valid regex");
    for (file, text) in &seen.supervisor_files {
        for line in text.lines().filter(|l| !l.trim_start().starts_with([';', '#'])) {
            if let Some(c) = worker.captures(line).and_then(|c| c[1].parse::<u32>().ok()).filter(|c| *c > 4) {
                let procs = numprocs.captures(text).and_then(|n| n[1].parse::<u32>().ok()).unwrap_or(1);
                // The host's numbers: any size; their product fits in a u64.
                let total = u64::from(c) * u64::from(procs);
                add(
                    "workers",
                    format!("{file}: Sentry workers run at concurrency -c {c} ({procs} process(es))"),
                    format!(
                        "Above -c 4 the worker's master contends for locks; many processes at -c 4 do more: \
                         numprocs={} with `-c 4` gives the same {total} slots.",
                        total.div_ceil(4)
                    ),
                );
            }
        }
    }
    // memmon watches workers: a host that runs none (Sentry web alone) needs none.
    let runs_workers = seen.supervisor_files.values().any(|t| worker.is_match(t));
    if runs_workers && !seen.supervisor_files.values().any(|t| t.contains("[eventlistener:memmon]")) {
        add(
            "memory",
            "no memmon event listener under supervisord".into(),
            "A leaking worker grows unnoticed; superlance's memmon restarts processes above a limit and mails you: \
             `[eventlistener:memmon]` with `command=memmon -a 400MB -m ops@example.com`, `events=TICK_60`."
                .into(),
        );
    }
    if let Some(nginx) = &seen.nginx {
        // Sentry web's default address; a vhost proxying to other apps is not Sentry's.
        if crate::plan::nginx::proxies_over_http(nginx, "127.0.0.1:9000")
            && seen.web_protocol.as_deref() != Some("uwsgi")
        {
            add(
                "web",
                "Sentry web speaks HTTP behind nginx `proxy_pass`".into(),
                "Parsing HTTP twice costs; the guide runs Sentry web on the uwsgi protocol (`'protocol': 'uwsgi'` in \
                 SENTRY_WEB_OPTIONS) with nginx `include uwsgi_params; uwsgi_pass 127.0.0.1:9000;` — switch both together."
                    .into(),
            );
        }
    }
    if let Some(workers) = seen.web_workers.filter(|w| seen.web_runs && *w < seen.cpus.max(1).saturating_mul(2)) {
        add(
            "web",
            format!("{workers} web worker(s) for {} core(s)", seen.cpus),
            format!(
                "Sentry's default of 3 leaves cores idle under load; the guide scales web workers with the cores \
                 (36 or more on big hosts): try {}.",
                seen.cpus.max(1).saturating_mul(3)
            ),
        );
    }
    if seen.web_runs {
        for unread in &seen.web_unread {
            add(
                "web",
                unread.clone(),
                "The audit reads sentry.conf.py without running it (it is the host's code, and the audit runs as \
                 root), so a value computed there is not known and not checked: write it as a literal, or check by \
                 hand that Sentry web speaks uwsgi with enough workers."
                    .into(),
            );
        }
    }
    findings
}

/// What audit_web_options.py read of one setting: not set (`null`), a
/// literal, or the source of what would have to run to know it.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Setting {
    Value(serde_json::Value),
    Dynamic(String),
}

#[derive(Debug, serde::Deserialize)]
struct WebOptions {
    protocol: Option<Setting>,
    workers: Option<Setting>,
    error: Option<String>,
}

/// Fills the web fields of `seen` from audit_web_options.py's answer.
fn read_web_options(seen: &mut Observed, answer: &str) {
    let options: WebOptions = match serde_json::from_str(answer.trim()) {
        Ok(options) => options,
        Err(_) => {
            let answer: String = answer.trim().chars().take(300).collect();
            seen.web_unread.push(format!("SENTRY_WEB_OPTIONS could not be read: {answer}"));
            return;
        }
    };
    if let Some(error) = options.error {
        seen.web_unread.push(format!("sentry.conf.py does not parse as Python ({error}): SENTRY_WEB_OPTIONS not read"));
        return;
    }
    let dynamic = |key: &str, source: &str| format!("SENTRY_WEB_OPTIONS{key} is dynamic: not evaluated (`{source}`)");
    // One statement that leaves both unknown is said once.
    if let (Some(Setting::Dynamic(a)), Some(Setting::Dynamic(b))) = (&options.protocol, &options.workers)
        && a == b
    {
        seen.web_unread.push(dynamic("", a));
        return;
    }
    // Sentry's defaults where the file sets none.
    match options.protocol {
        None => seen.web_protocol = Some("http".into()),
        Some(Setting::Value(serde_json::Value::String(protocol))) => seen.web_protocol = Some(protocol),
        Some(Setting::Value(other)) => {
            seen.web_unread.push(format!("SENTRY_WEB_OPTIONS['protocol'] is {other}, not a protocol name"))
        }
        Some(Setting::Dynamic(source)) => seen.web_unread.push(dynamic("['protocol']", &source)),
    }
    match options.workers {
        None => seen.web_workers = Some(3),
        Some(Setting::Value(value)) => {
            // Sentry passes it to uwsgi, which takes "8" as well as 8.
            let number = match &value {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            match number.and_then(|n| u32::try_from(n).ok()) {
                Some(workers) => seen.web_workers = Some(workers),
                None => seen.web_unread.push(format!("SENTRY_WEB_OPTIONS['workers'] is {value}, not a number")),
            }
        }
        Some(Setting::Dynamic(source)) => seen.web_unread.push(dynamic("['workers']", &source)),
    }
}

/// The read-only script: prints tagged, base64-encoded observations.
pub fn script(sentry_conf: &str) -> String {
    format!(
        r#"PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
b64() {{ base64 -w0; }}
printf 'CPUS %s\n' "$(nproc 2>/dev/null || echo 1)"
if command -v redis-cli >/dev/null 2>&1; then
    for key in save appendonly maxmemory maxmemory-policy; do
        answer=$(redis-cli CONFIG GET "$key" 2>/dev/null) && [ -n "$answer" ] && printf 'REDIS %s %s\n' "$key" "$(printf '%s' "$answer" | sed -n 2p | b64)"
    done
fi
for f in /etc/supervisor/supervisord.conf /etc/supervisor/conf.d/*.conf /etc/supervisord.conf; do
    [ -f "$f" ] && printf 'FILE %s %s\n' "$(printf '%s' "$f" | b64)" "$(b64 < "$f")"
done
command -v nginx >/dev/null 2>&1 && printf 'NGINX %s\n' "$(nginx -T 2>/dev/null | b64)"
[ -n "$(ss -Hltn 'sport = :9000' 2>/dev/null)" ] && echo WEBRUNS
if [ -f {conf} ] && command -v python3 >/dev/null 2>&1; then
    # Isolated (-I -S): no module from the working folder, the user's site or
    # PYTHON* variables is loaded either.
    printf 'WEB %s\n' "$(python3 -I -S - {conf} 2>&1 <<'PY' | b64
{reader}
PY
)"
fi
echo END
"#,
        conf = crate::remote::quote(sentry_conf),
        reader = include_str!("audit_web_options.py").trim_end()
    )
}

pub fn parse(stdout: &[u8]) -> Result<Observed, String> {
    let decode = |t: &str| wire::decode(t).map(|b| String::from_utf8_lossy(&b).into_owned());
    let mut seen = Observed::default();
    wire::read_lines(stdout, "audit script", |line| {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["CPUS", n] => seen.cpus = n.parse().unwrap_or(1),
            ["REDIS", key, value] => {
                seen.redis.insert((*key).to_owned(), decode(value)?);
            }
            ["REDIS", key] => {
                seen.redis.insert((*key).to_owned(), String::new());
            }
            ["FILE", name, text] => {
                seen.supervisor_files.insert(decode(name)?, decode(text)?);
            }
            ["NGINX", text] => seen.nginx = Some(decode(text)?),
            ["WEB", answer] => read_web_options(&mut seen, &decode(answer)?),
            ["WEBRUNS"] => seen.web_runs = true,
            ["END"] => return Ok(Line::End),
            _ => {}
        }
        Ok(Line::Next)
    })?;
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn before_tuning() -> Observed {
        Observed {
            cpus: 8,
            redis: BTreeMap::from([
                ("save".into(), "900 1 300 10".into()),
                ("appendonly".into(), "no".into()),
                ("maxmemory".into(), "0".into()),
                ("maxmemory-policy".into(), "noeviction".into()),
            ]),
            supervisor_files: BTreeMap::from([(
                "/etc/supervisor/conf.d/sentry-worker.conf".into(),
                "[program:worker]\ncommand=/www/sentry/bin/sentry run worker -c 64 -l WARNING\nnumprocs=1\n".into(),
            )]),
            nginx: Some("server {\n  location / {\n    proxy_pass http://127.0.0.1:9000;\n  }\n}\n".into()),
            web_protocol: Some("http".into()),
            web_workers: Some(3),
            web_runs: true,
            ..Observed::default()
        }
    }

    /// audit_web_options.py run by this machine's python3 as the audit runs
    /// it, on a sentry.conf.py of `text`, and its answer as parse reads it.
    fn read_conf(text: &str) -> (Observed, tempfile::TempDir) {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentry.conf.py");
        std::fs::write(&conf, text).unwrap();
        let mut python = std::process::Command::new("python3")
            .args(["-I", "-S", "-"])
            .arg(&conf)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        python.stdin.take().unwrap().write_all(include_bytes!("audit_web_options.py")).unwrap();
        let answer = python.wait_with_output().unwrap();
        assert!(answer.status.success());
        let mut seen = Observed { web_runs: true, ..Observed::default() };
        read_web_options(&mut seen, &String::from_utf8(answer.stdout).unwrap());
        (seen, dir)
    }

    #[test]
    fn sentry_conf_is_read_without_running_it() {
        let (seen, dir) = read_conf(
            "import os\nopen(os.path.join(os.path.dirname(__file__), 'executed'), 'w')\n\
             SENTRY_WEB_OPTIONS = {'protocol': 'http', 'workers': 2}\n\
             SENTRY_WEB_OPTIONS['protocol'] = 'uwsgi'\n",
        );
        assert!(!dir.path().join("executed").exists(), "the file ran");
        assert_eq!((seen.web_protocol.as_deref(), seen.web_workers), (Some("uwsgi"), Some(2)), "{seen:?}");
        assert_eq!(seen.web_unread, Vec::<String>::new());
    }

    #[test]
    fn options_sentry_conf_computes_are_reported_as_dynamic_and_not_evaluated() {
        let (seen, _dir) =
            read_conf("import os\nSENTRY_WEB_OPTIONS = {'protocol': 'uwsgi', 'workers': os.cpu_count() * 2}\n");
        assert_eq!((seen.web_protocol.as_deref(), seen.web_workers), (Some("uwsgi"), None));
        assert_eq!(seen.web_unread, ["SENTRY_WEB_OPTIONS['workers'] is dynamic: not evaluated (`os.cpu_count() * 2`)"]);
        let findings = analyse(&seen);
        assert!(findings.iter().any(|f| f.topic == "web" && f.found == seen.web_unread[0]), "{findings:?}");

        let (seen, _dir) = read_conf("if DEBUG:\n    SENTRY_WEB_OPTIONS = {'workers': 1}\n");
        assert_eq!((seen.web_protocol.as_deref(), seen.web_workers), (None, None));
        assert_eq!(
            seen.web_unread,
            ["SENTRY_WEB_OPTIONS is dynamic: not evaluated (`if DEBUG: SENTRY_WEB_OPTIONS = {'workers': 1}`)"]
        );
    }

    #[test]
    fn sentry_conf_without_web_options_means_sentrys_defaults_and_a_broken_one_says_so() {
        let (seen, _dir) =
            read_conf("from sentry.conf.server import *\nSENTRY_WEB_OPTIONS = {\n    # 'workers': 3,\n}\n");
        assert_eq!((seen.web_protocol.as_deref(), seen.web_workers), (Some("http"), Some(3)));
        let (seen, _dir) = read_conf("SENTRY_WEB_OPTIONS = {\n");
        assert!(seen.web_unread[0].starts_with("sentry.conf.py does not parse as Python (SyntaxError"), "{seen:?}");
    }

    #[test]
    fn a_web_only_host_is_not_asked_for_memmon_nor_a_vhost_proxying_elsewhere_for_uwsgi() {
        let web_only = Observed {
            cpus: 1,
            supervisor_files: BTreeMap::from([(
                "/etc/supervisor/conf.d/sentry-web.conf".into(),
                "[program:sentry-web]\ncommand=/www/sentry/bin/sentry run web\n".into(),
            )]),
            nginx: Some("server { location / { proxy_pass http://127.0.0.1:8080; } }\n".into()),
            web_protocol: Some("uwsgi".into()),
            web_workers: Some(3),
            ..Observed::default()
        };
        assert_eq!(analyse(&web_only), []);
    }

    #[test]
    fn a_host_before_tuning_strays_in_every_way_the_guide_names() {
        let findings = analyse(&before_tuning());
        let topics: Vec<&str> = findings.iter().map(|f| f.found.split(':').next().unwrap()).collect();
        assert_eq!(
            topics,
            [
                "RDB snapshots are on (save \"900 1 300 10\")",
                "Redis has no memory cap (maxmemory 0)",
                "Redis evicts with `noeviction` at its cap",
                "/etc/supervisor/conf.d/sentry-worker.conf",
                "no memmon event listener under supervisord",
                "Sentry web speaks HTTP behind nginx `proxy_pass`",
                "3 web worker(s) for 8 core(s)",
            ]
        );
    }

    #[test]
    fn worker_advice_keeps_the_same_number_of_slots() {
        let findings = analyse(&before_tuning());
        let workers = findings.iter().find(|f| f.topic == "workers").unwrap();
        assert!(workers.advice.contains("numprocs=16 with `-c 4` gives the same 64 slots"), "{}", workers.advice);
    }

    #[test]
    fn a_tuned_host_has_no_findings() {
        let mut tuned = before_tuning();
        tuned.redis = BTreeMap::from([
            ("save".into(), String::new()),
            ("appendonly".into(), "no".into()),
            ("maxmemory".into(), "1073741824".into()),
            ("maxmemory-policy".into(), "allkeys-lru".into()),
        ]);
        tuned.supervisor_files = BTreeMap::from([(
            "/etc/supervisor/conf.d/sentry-worker.conf".into(),
            "[program:worker]\ncommand=sentry run worker -c 4\nnumprocs=16\n[eventlistener:memmon]\n".into(),
        )]);
        tuned.nginx = Some("location / { include uwsgi_params; uwsgi_pass 127.0.0.1:9000; }\n".into());
        tuned.web_protocol = Some("uwsgi".into());
        tuned.web_workers = Some(24);
        assert_eq!(analyse(&tuned), []);
    }
}
