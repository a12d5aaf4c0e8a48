//! Hosts as they are: stock Debian packages (nginx's default site enabled),
//! a Sentry vhost the operator wrote (plain or TLS), no vhost at all, and
//! hosts with one role each. The shipped playbook converges each, keeps what
//! the operator wrote, touches only each host's roles, and a second apply
//! is idle.

mod common;

use common::{Fleet, needs, tuning_playbook};

/// A request made inside host `host`, with the output of `curl -si` (or of
/// the curl arguments given).
fn curl(fleet: &Fleet, host: usize, args: &str) -> String {
    fleet.exec(host, &format!("curl -si --max-time 5 {args}"))
}

fn sha(fleet: &Fleet, host: usize, path: &str) -> String {
    fleet.exec(host, &format!("if [ -e {path} ]; then sha256sum < {path}; else echo absent; fi"))
}

fn applies_cleanly(fleet: &Fleet) {
    let out = fleet.provision(&["apply", "-p", &tuning_playbook()]);
    assert_eq!(out.code, 0, "{out:?}");
    let again = fleet.provision(&["apply", "-p", &tuning_playbook()]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(!again.stdout.contains("changed  "), "a second apply changes nothing: {again:?}");
    assert!(!again.stdout.contains("handler  "), "a second apply runs no handler: {again:?}");
}

#[test]
fn a_stock_host_converges_keeps_the_operators_vhost_and_the_default_site_still_answers_other_names() {
    needs!(Sandbox);
    let fleet = Fleet::of(&["plain"]);
    let vhost = fleet.exec(1, "cat /etc/nginx/sites-enabled/sentry");
    assert!(fleet.exec(1, "ls /etc/nginx/sites-enabled").contains("default"), "Debian's default site is enabled");

    applies_cleanly(&fleet);

    let switched = fleet.exec(1, "cat /etc/nginx/sites-enabled/sentry");
    let proxy =
        vhost.lines().find(|l| l.contains("proxy_pass http://127.0.0.1:9000;")).expect("the operator's proxy_pass");
    let indent: String = proxy.chars().take_while(|c| c.is_whitespace()).collect();
    let three = format!(
        "{indent}include uwsgi_params;\n{indent}uwsgi_pass 127.0.0.1:9000;\n{indent}uwsgi_param HTTP_TRANSFER_ENCODING \"\";"
    );
    assert_eq!(switched, vhost.replace(proxy, &three), "only the proxy_pass line changed, byte for byte");
    assert!(fleet.exec(1, "ls -la /etc/nginx/sites-enabled/sentry").starts_with('-'), "still a regular file");
    assert_eq!(fleet.exec(1, "ls /etc/nginx/sites-available"), "default\n", "no site of ours beside it");

    let sentry = curl(&fleet, 1, "-H 'Host: sentry.host1.test' http://127.0.0.1/");
    assert!(sentry.starts_with("HTTP/1.1 200"), "{sentry}");
    assert!(sentry.contains("X-Sentry-Web-Protocol: uwsgi"), "Sentry answers over uwsgi: {sentry}");
    assert!(sentry.contains("Strict-Transport-Security: max-age=31536000"), "the operator's header: {sentry}");
    let other = curl(&fleet, 1, "-H 'Host: other.test' http://127.0.0.1/");
    assert!(other.contains("Welcome to nginx"), "the default site answers other names: {other}");
}

#[test]
fn a_tls_vhost_serves_sentry_over_uwsgi_with_the_same_certificate_redirect_and_headers() {
    needs!(Sandbox);
    let fleet = Fleet::of(&["tls"]);
    let name = "sentry.host1.test";
    let certificate = |fleet: &Fleet| {
        fleet.exec(
            1,
            &format!(
                "echo | openssl s_client -connect 127.0.0.1:443 -servername {name} 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
            ),
        )
    };
    let before = certificate(&fleet);
    assert!(before.contains("Fingerprint"), "{before}");

    applies_cleanly(&fleet);

    assert_eq!(certificate(&fleet), before, "the same certificate");
    let https = curl(&fleet, 1, &format!("-k --resolve {name}:443:127.0.0.1 https://{name}/"));
    assert!(https.starts_with("HTTP/1.1 200") || https.starts_with("HTTP/2 200"), "{https}");
    assert!(https.contains("X-Sentry-Web-Protocol: uwsgi"), "Sentry answers over uwsgi: {https}");
    assert!(https.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"), "HSTS kept: {https}");
    let http = curl(&fleet, 1, &format!("-H 'Host: {name}' http://127.0.0.1/"));
    assert!(http.starts_with("HTTP/1.1 301"), "{http}");
    assert!(http.contains(&format!("Location: https://{name}/")), "the redirect is kept: {http}");
}

#[test]
fn a_host_with_no_vhost_gets_sentrys_own_site_beside_the_default_one() {
    needs!(Sandbox);
    let fleet = Fleet::of(&["novhost"]);
    applies_cleanly(&fleet);

    let site = fleet.exec(1, "cat /etc/nginx/sites-available/sentry");
    assert!(site.contains("server_name host1;"), "server_name from the inventory: {site}");
    assert!(!site.contains("default_server"), "{site}");
    assert_eq!(fleet.exec(1, "readlink /etc/nginx/sites-enabled/sentry"), "/etc/nginx/sites-available/sentry\n");
    let sentry = curl(&fleet, 1, "-H 'Host: host1' http://127.0.0.1/");
    assert!(sentry.contains("X-Sentry-Web-Protocol: uwsgi"), "{sentry}");
    let other = curl(&fleet, 1, "-H 'Host: other.test' http://127.0.0.1/");
    assert!(other.contains("Welcome to nginx"), "the default site still answers other names: {other}");
}

#[test]
fn hosts_with_one_role_get_only_their_roles_tuning() {
    needs!(Sandbox);
    let fleet = Fleet::of(&["redis", "web", "workers"]);
    let (redis, web, workers) = (1, 2, 3);
    let untouched =
        |host: usize, paths: &[&str]| -> Vec<String> { paths.iter().map(|p| sha(&fleet, host, p)).collect() };
    let web_files =
        ["/etc/sentry/sentry.conf.py", "/etc/nginx/sites-available/sentry", "/etc/nginx/sites-enabled/sentry"];
    let worker_files = ["/etc/supervisor/conf.d/sentry-worker.conf", "/etc/supervisor/conf.d/memmon.conf"];
    let redis_before = untouched(redis, &[&web_files[..], &worker_files[..]].concat());
    let web_before = untouched(web, &["/etc/redis/redis.conf", worker_files[0], worker_files[1]]);
    let workers_before = untouched(workers, &["/etc/redis/redis.conf", "/etc/sentry/sentry.conf.py", web_files[1]]);

    applies_cleanly(&fleet);

    assert_eq!(fleet.exec(redis, "redis-cli config get maxmemory | sed -n 2p"), "1073741824\n");
    assert_eq!(fleet.exec(redis, "redis-cli config get save | sed -n 2p"), "\n");
    assert_eq!(untouched(redis, &[&web_files[..], &worker_files[..]].concat()), redis_before, "Redis only");

    let sentry = curl(&fleet, web, "-H 'Host: sentry.host2.test' http://127.0.0.1/");
    assert!(sentry.contains("X-Sentry-Web-Protocol: uwsgi"), "{sentry}");
    assert_eq!(untouched(web, &["/etc/redis/redis.conf", worker_files[0], worker_files[1]]), web_before, "web only");

    let status = fleet.exec(workers, "supervisorctl status");
    let running = status.lines().filter(|l| l.starts_with("worker:worker_") && l.contains("RUNNING")).count();
    assert_eq!(running, 16, "{status}");
    assert!(status.lines().any(|l| l.starts_with("memmon") && l.contains("RUNNING")), "{status}");
    assert_eq!(
        untouched(workers, &["/etc/redis/redis.conf", "/etc/sentry/sentry.conf.py", web_files[1]]),
        workers_before,
        "workers only"
    );

    let drift = fleet.provision(&["drift", "-p", &tuning_playbook()]);
    assert_eq!(drift.code, 0, "each host in sync for its roles: {drift:?}");
    let audit = fleet.provision(&["audit"]);
    assert_eq!(audit.code, 0, "nothing strays from the guide on any role: {audit:?}");
}

#[test]
fn every_kind_of_host_converges_and_a_second_apply_is_idle() {
    needs!(Sandbox);
    let kinds = ["plain", "tls", "novhost", "stockredis", "redis", "web", "workers"];
    let fleet = Fleet::of(&kinds);
    applies_cleanly(&fleet);
    let stock = kinds.iter().position(|k| *k == "stockredis").unwrap() + 1;
    // Debian's redis.conf has no save line: without `save ""` Redis would
    // snapshot on its default schedule after a restart.
    fleet.exec(stock, "redis-cli shutdown nosave >/dev/null 2>&1; sleep 0.3; redis-server /etc/redis/redis.conf");
    fleet.exec(stock, "for i in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done");
    assert_eq!(fleet.exec(stock, "redis-cli config get save | sed -n 2p"), "\n", "no snapshots after a restart");
    let drift = fleet.provision(&["drift", "-p", &tuning_playbook()]);
    assert_eq!(drift.code, 0, "{drift:?}");
}
