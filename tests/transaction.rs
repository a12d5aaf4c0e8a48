//! A run is a transaction per host (issue 15), checked on the hosts' real
//! state: a configuration that fails as its service loads it, a file that
//! cannot be replaced and a full disk each fail the host with every file
//! of the run back, no handler run and nothing owed; a rollback leaves the
//! running Redis as the restored file says; a reload that did not happen
//! stays owed until an apply runs it.

mod common;

use common::{Fleet, Outcome, needs};

fn apply(fleet: &Fleet, extra: &[&str]) -> Outcome {
    fleet.apply(extra)
}

/// Every file and link under /etc: path, mode, owner, size, link target and
/// content hash, one line each (the state folder is under /var).
fn etc(fleet: &Fleet, host: usize) -> Vec<String> {
    let listing = fleet.exec(
        host,
        "find /etc \\( -type f -o -type l \\) -print0 | sort -z | xargs -0 stat -c '%n %a %U:%G %s %N'; \
         find /etc -type f -print0 | sort -z | xargs -0 sha256sum",
    );
    listing.lines().map(str::to_owned).collect()
}

/// The lines of `after` not in `before` and the other way round, for a
/// failure message that shows only what moved.
fn moved(before: &[String], after: &[String]) -> String {
    let gone = before.iter().filter(|l| !after.contains(l)).map(|l| format!("- {l}"));
    let new = after.iter().filter(|l| !before.contains(l)).map(|l| format!("+ {l}"));
    gone.chain(new).collect::<Vec<_>>().join("\n")
}

fn assert_etc_unchanged(fleet: &Fleet, host: usize, before: &[String], out: &Outcome) {
    let after = etc(fleet, host);
    assert!(after == before, "/etc moved:\n{}\n{out:?}", moved(before, &after));
}

/// What runs: the web process and the protocol it serves, nginx's workers,
/// Redis's live settings. A handler that ran changes one of them.
fn live(fleet: &Fleet, host: usize) -> String {
    fleet.exec(
        host,
        "echo web pid $(supervisorctl pid sentry-web); \
         echo web protocol $(curl -sS -D - -o /dev/null http://127.0.0.1:9000/ 2>&1 | tr -d '\\r' | grep -i '^x-sentry-web-protocol' || echo none); \
         echo nginx workers $(pgrep -P $(cat /run/nginx.pid) | sort | tr '\\n' ' '); \
         printf 'CONFIG GET %s\\n' save appendonly maxmemory maxmemory-policy | redis-cli | paste -sd' '",
    )
}

/// The handlers the host's pending record still owes (README, Safety: a
/// name a line, cleared by a later line with the name between tabs). Read
/// on the host: `diff` lists only those no planned change notifies anyway.
fn owed(fleet: &Fleet, host: usize) -> Vec<String> {
    let record = fleet.exec(host, "cat /var/lib/sentry-provision/sentry-tuning.pending 2>/dev/null; true");
    let cleared: Vec<&str> = record.lines().filter_map(|l| l.strip_prefix('\t')?.strip_suffix('\t')).collect();
    let mut owed: Vec<String> = Vec::new();
    for name in record.lines().filter(|l| !l.is_empty() && !l.contains('\t') && !cleared.contains(l)) {
        if !owed.iter().any(|o| o == name) {
            owed.push(name.to_owned());
        }
    }
    owed
}

fn redis_live(fleet: &Fleet, host: usize, key: &str) -> String {
    fleet.exec(host, &format!("redis-cli config get {key} | sed -n 2p")).trim().to_owned()
}

/// What must hold: Sentry's own site (a `novhost` host) passes `nginx -t`
/// on its own in sites-available/ but breaks nginx once linked. The host
/// fails (bit 4) with nginx's own message; no handler ran (Sentry web
/// still serves HTTP, Redis untouched); every file under /etc is back byte
/// for byte, the link is not there, `nginx -t` passes; and the host owes
/// nothing: the run had no effect, so no later run or `drift` may
/// count handlers as left over from it.
#[test]
fn a_site_that_breaks_nginx_only_once_linked_fails_the_host_with_every_file_back_and_nothing_owed() {
    needs!(Sandbox);
    let fleet = Fleet::of(&["novhost"]);
    let (files, running) = (etc(&fleet, 1), live(&fleet, 1));
    assert!(running.contains("web protocol X-Sentry-Web-Protocol: http"), "{running}");
    let bogus = ["-e", "nginx_client_max_body_size=\"100m; bogus on\""];

    let out = apply(&fleet, &bogus);
    assert!(out.has_bit(4), "{out:?}");
    assert!(out.stdout.contains("unknown directive \"bogus\""), "nginx's own message: {out:?}");
    assert!(!out.stdout.contains("  handler  "), "no handler ran: {out:?}");
    assert_eq!(live(&fleet, 1), running, "Sentry web, nginx and Redis run as before");
    assert_etc_unchanged(&fleet, 1, &files, &out);
    assert_eq!(fleet.try_exec(1, "test -e /etc/nginx/sites-enabled/sentry").code, 1, "the link is not there");
    fleet.exec(1, "nginx -t 2>/dev/null");
    assert_eq!(owed(&fleet, 1), Vec::<String>::new(), "nothing changed, so nothing is owed");
}

/// Undoes `chattr +i` before the fleet goes (its files could not be removed).
struct Immutable<'a>(&'a Fleet, &'static str);

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_exec(1, &format!("chattr -i {}", self.1));
    }
}

/// What must hold: with `chattr +i` on sentry.conf.py (it works on the
/// sandbox's overlay /etc: a rename over the file or a link to it fails
/// with EPERM) the host fails naming that file with the system's message,
/// and the run is all or nothing: redis.conf and the operator's vhost,
/// which come before it, are not left renamed into place; no handler ran
/// and live Redis is as before (`CONFIG GET save`).
#[test]
fn a_managed_file_that_cannot_be_replaced_fails_the_host_and_no_other_file_moves() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let path = "/etc/sentry/sentry.conf.py";
    fleet.exec(1, &format!("chattr +i {path}"));
    let _undo = Immutable(&fleet, path);
    let (files, running) = (etc(&fleet, 1), live(&fleet, 1));
    assert_eq!(redis_live(&fleet, 1, "save"), "900 1 300 10 60 10000");

    let out = apply(&fleet, &[]);
    assert!(out.has_bit(4), "{out:?}");
    let failure = out.stdout.lines().find(|l| l.trim_start().starts_with("failed  ")).unwrap_or_default();
    assert!(failure.contains(path) && failure.contains("Operation not permitted"), "{out:?}");
    assert!(!out.stdout.contains("  handler  "), "no handler ran: {out:?}");
    assert_etc_unchanged(&fleet, 1, &files, &out);
    assert_eq!(live(&fleet, 1), running);
    assert_eq!(redis_live(&fleet, 1, "save"), "900 1 300 10 60 10000");
    assert_eq!(owed(&fleet, 1), Vec::<String>::new(), "nothing changed, so nothing is owed");
}

/// What must hold: with supervisord's conf.d on a full disk (a small tmpfs
/// mounted over it in the host's mount namespace, filled up), the host
/// fails with a message that says the disk is full ("No space left on
/// device", not dash's "printf: I/O error") and names the folder; nothing
/// is half-written anywhere (no temp file, every file under /etc as
/// before), no handler ran.
#[test]
fn a_full_disk_fails_the_host_saying_so_with_nothing_half_written() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    fleet.exec(
        1,
        "mkdir -p /run/confd && cp -a /etc/supervisor/conf.d/. /run/confd/ && \
         mount -t tmpfs -o size=64k,mode=755 tmpfs /etc/supervisor/conf.d && cp -a /run/confd/. /etc/supervisor/conf.d/ && \
         { dd if=/dev/zero of=/etc/supervisor/conf.d/.filler bs=4k 2>/dev/null; true; } && \
         [ \"$(df --output=avail /etc/supervisor/conf.d | tail -1 | tr -d ' ')\" = 0 ]",
    );
    let (files, running) = (etc(&fleet, 1), live(&fleet, 1));

    let out = apply(&fleet, &[]);
    assert!(out.has_bit(4), "{out:?}");
    let failure = out.stdout.lines().find(|l| l.trim_start().starts_with("failed  ")).unwrap_or_default();
    assert!(failure.contains("No space left on device"), "says the disk is full: {out:?}");
    assert!(failure.contains("/etc/supervisor/conf.d/"), "names where: {out:?}");
    assert!(!failure.contains("I/O error"), "{out:?}");
    assert!(!out.stdout.contains("  handler  "), "no handler ran: {out:?}");
    assert_etc_unchanged(&fleet, 1, &files, &out);
    assert_eq!(live(&fleet, 1), running);
}

/// What must hold: on a host whose redis.conf has the `save 900 1` lines,
/// a handler after Redis's fails (`restart sentry web` of a program that
/// does not exist), so the run is rolled back (`--rollback-on-failure`,
/// in case the rollback needs asking). Afterwards redis.conf is the
/// original and live Redis runs what it says: `CONFIG GET save` is its
/// `save` lines (not ""), `maxmemory-policy` its default (noeviction, not
/// allkeys-lru), `maxmemory` 0.
#[test]
fn a_rollback_leaves_live_redis_as_the_restored_file_says() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let conf = fleet.exec(1, "sha256sum < /etc/redis/redis.conf");
    let saves = fleet.exec(1, "grep '^save ' /etc/redis/redis.conf | cut -d' ' -f2- | paste -sd' '");
    assert_eq!(saves.trim(), "900 1 300 10 60 10000");

    let out = apply(&fleet, &["-e", "sentry_web_program=nosuchprogram", "--rollback-on-failure"]);
    assert!(out.has_bit(4), "{out:?}");
    assert!(out.stdout.contains("rolled back  /etc/redis/redis.conf"), "{out:?}");
    assert_eq!(fleet.exec(1, "sha256sum < /etc/redis/redis.conf"), conf, "the file is the original");
    assert_eq!(redis_live(&fleet, 1, "save"), saves.trim(), "live save is the restored file's: {out:?}");
    assert_eq!(redis_live(&fleet, 1, "maxmemory-policy"), "noeviction", "{out:?}");
    assert_eq!(redis_live(&fleet, 1, "maxmemory"), "0", "{out:?}");
}

/// What must hold: with nginx stopped before the apply, `test and reload
/// nginx` cannot take effect: the host fails (bit 4) and the handler stays
/// owed (the host's pending record keeps it). Once nginx runs again, the next apply runs the
/// handler, ends ok (exit 0), and nginx serves the new configuration: the
/// operator's vhost answers over uwsgi.
#[test]
fn a_reload_that_did_not_happen_stays_owed_and_the_next_apply_runs_it() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    fleet.exec(1, "nginx -s quit && for _ in $(seq 50); do pgrep -x nginx >/dev/null || break; sleep 0.1; done");
    assert_eq!(fleet.try_exec(1, "pgrep -x nginx").code, 1, "nginx is stopped");

    let out = apply(&fleet, &[]);
    assert!(out.has_bit(4), "{out:?}");
    assert!(owed(&fleet, 1).contains(&"test and reload nginx".to_owned()), "still owed after: {out:?}");

    fleet.exec(1, "nginx");
    let next = apply(&fleet, &[]);
    assert_eq!(next.code, 0, "{next:?}");
    assert!(next.stdout.contains("  handler  test and reload nginx"), "the owed reload ran: {next:?}");
    let served = fleet.curl(1, &["-si", "-H", &format!("Host: {}", fleet.server_name(1)), "http://127.0.0.1/"]);
    assert!(served.stdout.starts_with("HTTP/1.1 200"), "{served:?}");
    assert!(served.stdout.contains("X-Sentry-Web-Protocol: uwsgi"), "{served:?}");
    assert!(fleet.exec(1, "nginx -T 2>/dev/null").contains("uwsgi_pass 127.0.0.1:9000;"));
}
