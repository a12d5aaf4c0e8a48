//! `audit`: reads each host (one round trip, read-only, no playbook needed)
//! and says in plain words where it strays from Sentry's tuning guide, and
//! why it matters. The analysis is pure; the one script is at the bottom.

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
    /// `SENTRY_WEB_OPTIONS` protocol and workers from sentry.conf.py.
    pub web_protocol: Option<String>,
    pub web_workers: Option<u32>,
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
    findings
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
    python3 - {conf} <<'PY' 2>/dev/null
import sys
ns = {{}}
try:
    exec(open(sys.argv[1]).read(), ns)
except Exception:
    sys.exit(0)
opts = ns.get("SENTRY_WEB_OPTIONS") or {{}}
print("WEB %s %s" % (opts.get("protocol", "http"), int(opts.get("workers", 3))))
PY
fi
echo END
"#,
        conf = crate::transport::script::quote(sentry_conf)
    )
}

pub fn parse(stdout: &[u8]) -> Result<Observed, String> {
    use base64::Engine;
    let decode = |t: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(t.trim())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("bad base64 from host: {e}"))
    };
    let mut seen = Observed::default();
    let mut complete = false;
    for line in String::from_utf8_lossy(stdout).lines() {
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
            ["WEB", protocol, workers] => {
                seen.web_protocol = Some((*protocol).to_owned());
                seen.web_workers = workers.parse().ok();
            }
            ["WEBRUNS"] => seen.web_runs = true,
            ["END"] => complete = true,
            _ => {}
        }
    }
    if !complete {
        return Err("the audit script ended early".into());
    }
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
        }
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
