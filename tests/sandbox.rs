//! The sandbox itself: hosts start as Debian's packages and Sentry's docs
//! leave them, each kind with its roles' daemons and no others, and `reset`
//! puts back what a run changed. No sentry-provision here; the other tests
//! rely on this.

mod common;

use common::{Fleet, needs};

const KINDS: [&str; 7] = ["plain", "tls", "novhost", "stockredis", "redis", "web", "workers"];

/// The daemons a host runs, by name, sorted.
fn daemons(fleet: &Fleet, host: usize) -> String {
    fleet.exec(
        host,
        "for d in redis-server nginx supervisord uwsgi sshd; do pgrep -x $d >/dev/null && printf '%s ' $d; done; true",
    )
}

#[test]
fn every_kind_starts_as_packages_and_docs_leave_it_and_reset_puts_it_back() {
    needs!(Sandbox);
    let fleet = Fleet::of(&KINDS);
    assert_eq!(fleet.hosts_of("web"), vec![6]);

    for host in 1..=fleet.hosts {
        let expected = match fleet.kind(host) {
            "redis" => "redis-server sshd ",
            "web" => "nginx supervisord uwsgi sshd ",
            "workers" => "supervisord sshd ",
            _ => "redis-server nginx supervisord uwsgi sshd ",
        };
        assert_eq!(daemons(&fleet, host), expected, "host{host} ({})", fleet.kind(host));
    }

    // Debian's default site stays enabled wherever nginx is, and answers other names.
    for host in [1, 2, 3, 4, 6] {
        assert_eq!(
            fleet.exec(host, "readlink /etc/nginx/sites-enabled/default"),
            "/etc/nginx/sites-available/default\n"
        );
        assert!(fleet.exec(host, "nginx -t 2>&1").contains("test is successful"));
        let other = fleet.curl(host, &["-H", "Host: other.test", "http://127.0.0.1/"]);
        assert!(other.stdout.contains("Welcome to nginx"), "host{host}: {other:?}");
    }

    // The operator's vhost: a regular file in sites-enabled, nothing in sites-available.
    for host in [1, 2, 4, 6] {
        assert_eq!(fleet.exec(host, "stat -c %F /etc/nginx/sites-enabled/sentry"), "regular file\n");
        assert_eq!(fleet.exec(host, "ls /etc/nginx/sites-available"), "default\n");
    }
    let plain = fleet.curl(1, &["-i", "-H", "Host: sentry.host1.test", "http://127.0.0.1/"]);
    assert!(plain.stdout.contains("X-Sentry-Web-Protocol: http"), "{plain:?}");
    assert!(plain.stdout.contains("Strict-Transport-Security: max-age=31536000"), "{plain:?}");

    let name = fleet.server_name(2);
    let https =
        fleet.curl(2, &["-i", "-k", "--resolve", &format!("{name}:443:127.0.0.1"), &format!("https://{name}/")]);
    assert!(https.stdout.contains("X-Sentry-Web-Protocol: http"), "{https:?}");
    assert!(https.stdout.contains("Strict-Transport-Security"), "{https:?}");
    let redirect = fleet.curl(2, &["-i", "-H", &format!("Host: {name}"), "http://127.0.0.1/a?b=1"]);
    assert!(redirect.stdout.starts_with("HTTP/1.1 301"), "{redirect:?}");
    assert!(redirect.stdout.contains(&format!("Location: https://{name}/a?b=1")), "{redirect:?}");

    assert!(!fleet.exec(3, "ls /etc/nginx/sites-enabled").contains("sentry"));
    assert_eq!(fleet.exec(1, "grep -c '^save' /etc/redis/redis.conf"), "3\n");
    assert_eq!(fleet.try_exec(4, "grep -c '^save' /etc/redis/redis.conf").stdout, "0\n");
    assert_eq!(fleet.exec(5, "ls -d /etc/nginx /etc/supervisor /etc/sentry 2>/dev/null; true"), "");
    assert_eq!(fleet.exec(6, "ls -d /etc/redis /etc/supervisor/conf.d/sentry-worker.conf 2>/dev/null; true"), "");
    assert_eq!(
        fleet.exec(7, "ls /etc/supervisor/conf.d /etc/sentry; ls -d /etc/nginx /etc/redis 2>/dev/null; true"),
        "/etc/sentry:\nsentry.conf.py\n\n/etc/supervisor/conf.d:\nsentry-worker.conf\n"
    );

    let inventory = std::fs::read_to_string(fleet.inventory().join("hosts.ini")).unwrap();
    assert!(inventory.contains("[sentry_redis]\nhost1 ansible_host="), "{inventory}");
    assert!(inventory.contains("[sentry_workers]\nhost1\nhost2\nhost3\nhost4\nhost7 ansible_host="), "{inventory}");

    // Reset: files the tool changed or added go back, and so does live state.
    let before: Vec<String> = (1..=fleet.hosts).map(|host| fleet.fingerprint(host)).collect();
    fleet.exec(
        1,
        "echo '# edited' >> /etc/nginx/sites-enabled/sentry && touch /etc/nginx/sites-available/sentry \
         /etc/supervisor/conf.d/memmon.conf && redis-cli config set maxmemory 1gb >/dev/null && \
         mkdir -p /var/lib/sentry-provision",
    );
    fleet.exec(5, "mkdir -p /etc/nginx/sites-enabled && touch /etc/nginx/sites-enabled/sentry");
    assert_ne!(fleet.fingerprint(1), before[0]);
    fleet.reset();
    for host in 1..=fleet.hosts {
        let now = fleet.fingerprint(host);
        let strip_pids = |f: &str| {
            f.lines()
                .filter(|l| !l.starts_with("nginx workers") && !l.starts_with("supervised"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip_pids(&now), strip_pids(&before[host - 1]), "host{host}");
    }
    assert_eq!(fleet.exec(5, "ls -d /etc/nginx 2>/dev/null; true"), "");
}
