//! Secrets: which variables hold them, and the one masking every text the
//! tool shows goes through (reports, JSON, errors, `-v` logs, history).
//!
//! A host's [`Secrets`] are built from its merged, rendered variables (the
//! playbook's `vars` and the inventory's, after templating), so a value put
//! together from a secret (`REDISCLI_AUTH={{ redis_password }}`) is masked
//! wherever it shows. Apart from those values, [`Secrets::mask`] hides
//! credentials that can be told by their form alone (see [`mask_forms`]).
//! Diffs get the values masked, and, for files others may not read, every
//! line that looks secret ([`mask_secret_lines`]).

use crate::vars::Vars;
use std::sync::LazyLock;

/// What a secret is shown as.
pub const MASK: &str = "********";

/// The values a host's reports must not show.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Longest first, so a secret that contains another is masked whole.
    values: Vec<String>,
}

impl Secrets {
    /// The values of the variables in `vars` that are secret by name or
    /// listed in `secret_vars` (see [`is_secret_variable`]).
    pub fn of(vars: &Vars) -> Secrets {
        let listed = listed(vars);
        let mut secrets = Secrets::default();
        for (name, value) in vars {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => continue,
            };
            // Three characters or fewer would mask every `on` and `1gb` around them.
            if is_secret_variable(name, &listed) && text.chars().count() >= 4 {
                // As the `quote` filter writes it into a command, too.
                if text.contains('\'') {
                    secrets.values.push(text.replace('\'', r"'\''"));
                }
                secrets.values.push(text);
            }
        }
        secrets.settle();
        secrets
    }

    pub fn extend(&mut self, other: &Secrets) {
        self.values.extend(other.values.iter().cloned());
        self.settle();
    }

    fn settle(&mut self) {
        self.values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.values.dedup();
    }

    /// `text` with the values of secret variables and the credentials
    /// recognisable by their form masked: for anything but a diff.
    pub fn mask(&self, text: &str) -> String {
        mask_forms(&self.mask_values(text))
    }

    /// A diff: the values of secret variables masked and, when the file is
    /// `sensitive` (others may not read it), the values of secret-looking lines.
    pub fn mask_diff(&self, diff: &str, sensitive: bool) -> String {
        let masked = self.mask_values(diff);
        if sensitive { mask_secret_lines(&masked) } else { masked }
    }

    fn mask_values(&self, text: &str) -> String {
        self.values.iter().fold(text.to_owned(), |masked, secret| masked.replace(secret.as_str(), MASK))
    }
}

/// The names listed in the variable `secret_vars`.
fn listed(vars: &Vars) -> Vec<&str> {
    vars.get("secret_vars")
        .and_then(|v| v.as_array())
        .map(|names| names.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default()
}

/// A variable is secret when its name contains `password`, `passwd`,
/// `secret` or `token`, or ends in `_key` (but is not `ansible_*`), or when
/// it is `listed` in `secret_vars`.
pub fn is_secret_variable(name: &str, listed: &[&str]) -> bool {
    let lower = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"].iter().any(|w| lower.contains(w))
        || (lower.ends_with("_key") && !lower.starts_with("ansible_"))
        || listed.contains(&name)
}

/// Credentials told by their form, in any text but a diff (whose lines are
/// the files' own: see [`Secrets::mask_diff`]):
///
/// - a header whose name is a secret word (`Authorization`,
///   `Proxy-Authorization`, `X-Api-Key`, `X-Auth-Token`, `Private-Token`)
///   written quoted (`'Authorization: Bearer …'`) or after `-H`/`--header`:
///   its value, keeping the scheme (`Bearer`, `Basic`, `Token`, …);
/// - a long option whose name is a secret word (`--password X`,
///   `--password=X`, `--pass`, `--token`, `--api-key`, `--auth`; not
///   `--no-password`, nor a value that starts with `-`);
/// - an assignment to a secret-looking name (`REDISCLI_AUTH=X`,
///   `PGPASSWORD=X`, `db_password=X`);
/// - short options only where the program is known to take a password
///   there, in the same command: `redis-cli -a X`, `sshpass -p X`,
///   `mysql`/`mysqldump`/`mysqladmin` `-pX`, `curl`'s `-u user:X` and
///   `--user user:X` (`-p` alone is a port or a prefix to most programs);
/// - the password of a URL (`redis://:X@host`, `https://user:X@host`).
pub fn mask_forms(text: &str) -> String {
    static URL: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'`]*):([^@\s/'`]+)@").expect("valid regex")
    });
    let text = URL.replace_all(text, format!("${{1}}:{MASK}@"));
    let words = words(&text);
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut programs: Vec<String> = Vec::new();
    for (i, &(start, end)) in words.iter().enumerate() {
        let raw = &text[start..end];
        let plain = unquoted(raw);
        let previous = i.checked_sub(1).map(|p| unquoted(&text[words[p].0..words[p].1]));
        let next = words.get(i + 1).map(|&(s, e)| (s, e, &text[s..e]));
        // Programs are remembered until the command ends.
        if raw.ends_with([';', '|', '&']) || ["|", "||", "&&", ";", "&"].contains(&raw) {
            programs.clear();
            continue;
        }
        programs.push(plain.rsplit('/').next().unwrap_or_default().to_owned());
        let runs = |names: &[&str]| programs.iter().any(|p| names.contains(&p.as_str()));

        // A header: `'Name: value'`, or `-H Name:value`.
        let after_header_flag = matches!(previous.as_deref(), Some("-H" | "--header"));
        let header = plain.strip_prefix("--header=").unwrap_or(&plain);
        if (raw.contains(['\'', '"']) || after_header_flag || plain.starts_with("--header="))
            && let Some((name, value)) = header.split_once(':')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && is_secret_word(name)
        {
            let value = value.trim_start();
            let value = match value.split_once(' ') {
                Some((scheme, rest)) if is_auth_scheme(scheme) => rest.trim_start(),
                _ => value,
            };
            if !value.is_empty() {
                cut_value(&mut cuts, raw, start, value);
            }
            continue;
        }
        // `--name=value`, `--name value`.
        if let Some(option) = plain.strip_prefix("--") {
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (option, None),
            };
            if is_secret_word(name) && !name.starts_with("no-") {
                match value {
                    Some(value) if !value.is_empty() => cut_value(&mut cuts, raw, start, value),
                    Some(_) => {}
                    None => cut_next(&mut cuts, next),
                }
                continue;
            }
            if name == "user" && runs(&["curl"]) {
                match value {
                    Some(value) => cut_after_colon(&mut cuts, raw, start, value),
                    None => {
                        if let Some((s, e, word)) = next {
                            cut_after_colon(&mut cuts, word, s, &text[s..e]);
                        }
                    }
                }
                continue;
            }
        }
        // `NAME=value`, also inside another (`redis_cli=REDISCLI_AUTH=x`).
        if let Some(value) = assigned_secret(&plain) {
            cut_value(&mut cuts, raw, start, value);
            continue;
        }
        // Short options of programs known to take a password there.
        match plain.as_str() {
            "-a" if runs(&["redis-cli"]) => cut_next(&mut cuts, next),
            "-p" if runs(&["sshpass"]) => cut_next(&mut cuts, next),
            "-u" if runs(&["curl"]) => {
                if let Some((s, e, word)) = next {
                    cut_after_colon(&mut cuts, word, s, &text[s..e]);
                }
            }
            short if short.len() > 2 && short.starts_with("-p") && runs(&["mysql", "mysqldump", "mysqladmin"]) => {
                cut_value(&mut cuts, raw, start, &short[2..]);
            }
            short if short.len() > 2 && short.starts_with("-u") && runs(&["curl"]) => {
                cut_after_colon(&mut cuts, raw, start, &short[2..]);
            }
            _ => {}
        }
    }
    let mut out = text.into_owned();
    cuts.sort_unstable();
    for (start, end) in cuts.into_iter().rev() {
        out.replace_range(start..end, MASK);
    }
    out
}

/// The value in `NAME=value` when NAME looks secret, looking through
/// assignments of other names.
fn assigned_secret(word: &str) -> Option<&str> {
    let mut rest = word;
    while let Some((name, value)) = rest.split_once('=') {
        let is_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !is_name || value.is_empty() {
            return None;
        }
        if is_secret_word(name) || is_secret_variable(name, &[]) {
            return Some(value);
        }
        rest = value;
    }
    None
}

/// Masks `value`, the tail of the word `raw` that starts at `start` (the
/// closing quote, if any, stays); the whole rest of the word when `value`
/// is not found in it as written (escapes).
fn cut_value(cuts: &mut Vec<(usize, usize)>, raw: &str, start: usize, value: &str) {
    let closing = raw.len() - raw.trim_end_matches(['\'', '"']).len();
    let body = &raw[..raw.len() - closing];
    match body.rfind(value) {
        Some(at) => cuts.push((start + at, start + at + value.len())),
        None => {
            let from = body.find([':', '=']).map_or(0, |i| i + 1);
            cuts.push((start + from, start + body.len()));
        }
    }
}

/// Masks the next word whole, unless it is another option.
fn cut_next(cuts: &mut Vec<(usize, usize)>, next: Option<(usize, usize, &str)>) {
    if let Some((start, end, word)) = next
        && !word.starts_with('-')
    {
        cuts.push((start, end));
    }
}

/// `user:password`: masks what follows the first colon.
fn cut_after_colon(cuts: &mut Vec<(usize, usize)>, raw: &str, start: usize, value: &str) {
    if let Some((_, password)) = unquoted(value).split_once(':')
        && !password.is_empty()
    {
        cut_value(cuts, raw, start, password);
    }
}

fn is_auth_scheme(word: &str) -> bool {
    ["bearer", "basic", "token", "digest", "negotiate", "bot", "apikey"].contains(&word.to_ascii_lowercase().as_str())
}

/// The words of `text`, as byte ranges: runs of non-space, where quotes
/// (`'…'`, `"…"`) hold spaces in the word, as a shell reads them.
fn words(text: &str) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut start = None;
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            // A quote that never closes is an apostrophe (`the host's lock`).
            (None, '\'' | '"') if text[i + 1..].contains(c) => {
                quote = Some(c);
                start.get_or_insert(i);
            }
            (None, c) if c.is_whitespace() => {
                if let Some(s) = start.take() {
                    words.push((s, i));
                }
            }
            (None, _) => {
                start.get_or_insert(i);
            }
        }
    }
    if let Some(s) = start {
        words.push((s, text.len()));
    }
    // Messages quote commands in backticks: they are not part of a word.
    words
        .into_iter()
        .filter_map(|(s, e)| {
            let word = &text[s..e];
            let inner = word.trim_matches('`');
            let s = s + (word.len() - word.trim_start_matches('`').len());
            (!inner.is_empty()).then_some((s, s + inner.len()))
        })
        .collect()
}

/// A word without its quotes.
fn unquoted(word: &str) -> String {
    word.chars().filter(|c| !matches!(c, '\'' | '"')).collect()
}

/// In a diff of a sensitive file, a line with a secret-like word keeps what
/// comes up to that word and its `=`/`:`, and loses the rest.
pub fn mask_secret_lines(diff: &str) -> String {
    static WORD: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"[A-Za-z0-9_.-]+").expect("valid regex"));
    let mut out = String::new();
    for line in diff.lines() {
        let is_body = line.starts_with(['+', '-', ' ']) && !line.starts_with("+++") && !line.starts_with("---");
        // The words of the line after its diff marker.
        let found =
            WORD.find_iter(line.get(1..).unwrap_or("")).filter(|_| is_body).find(|w| is_secret_word(w.as_str()));
        let Some(found) = found else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        // Keep the name, whatever closes it (`"]`), and the separator.
        let rest = &line[1 + found.end()..];
        let after_name = rest.trim_start_matches(['"', '\'', ']', ')']);
        let value = after_name.trim_start_matches([' ', '\t', '=', ':']);
        if value.is_empty() {
            out.push_str(line);
        } else {
            out.push_str(&line[..line.len() - value.len()]);
            out.push_str(MASK);
        }
        out.push('\n');
    }
    out
}

/// A word that names a secret by itself, not one that merely contains such a
/// name (`allkeys-lru`, `monkey`, `authorized_keys` are not): a known
/// directive (`requirepass`, `masterauth`), or a word whose last part, split
/// at `_`, `-` and `.`, is `password`, `passwd`, `pass`, `secret`, `token`,
/// `key`, `auth` or the like (`SECRET_KEY`, `system.secret-key`, `api_token`).
pub fn is_secret_word(word: &str) -> bool {
    let word = word.to_ascii_lowercase();
    const WHOLE: [&str; 7] =
        ["requirepass", "masterauth", "authorization", "proxy-authorization", "passphrase", "apikey", "credentials"];
    const LAST: [&str; 11] = [
        "password",
        "passwd",
        "pass",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
        "credentials",
        "apikey",
        "passphrase",
    ];
    WHOLE.contains(&word.as_str()) || word.rsplit(['_', '-', '.']).next().is_some_and(|last| LAST.contains(&last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_lines_of_sensitive_files_lose_their_values() {
        let diff = "--- a/etc/redis/redis.conf\n+++ b/etc/redis/redis.conf\n-requirepass old\n+requirepass hunter2\n+maxmemory 1gb\n";
        assert_eq!(
            mask_secret_lines(diff),
            "--- a/etc/redis/redis.conf\n+++ b/etc/redis/redis.conf\n-requirepass ********\n+requirepass ********\n+maxmemory 1gb\n"
        );
    }

    #[test]
    fn words_that_merely_contain_key_or_pass_are_not_masked() {
        let diff =
            " maxmemory-policy allkeys-lru\n+requirepass hunter2\n masterauth s3cret\n+maxmemory-policy allkeys-lru\n";
        assert_eq!(
            mask_secret_lines(diff),
            " maxmemory-policy allkeys-lru\n+requirepass ********\n masterauth ********\n+maxmemory-policy allkeys-lru\n"
        );
        for plain in ["+bypass on", "+authorized_keys /root/.ssh/authorized_keys", "+monkey business", "+keyspace 3"] {
            assert_eq!(mask_secret_lines(plain), format!("{plain}\n"));
        }
    }

    #[test]
    fn secret_names_are_masked_in_the_forms_configs_write_them() {
        for (line, masked) in [
            ("+SECRET_KEY = 'abc'", "+SECRET_KEY = ********"),
            ("+SENTRY_OPTIONS[\"system.secret-key\"] = 'abc'", "+SENTRY_OPTIONS[\"system.secret-key\"] = ********"),
            ("+api_token: abc", "+api_token: ********"),
            ("+db_password=abc", "+db_password=********"),
            ("+ssl_certificate_key /etc/ssl/private/site.key;", "+ssl_certificate_key ********"),
            ("+# the password", "+# the password"),
        ] {
            assert_eq!(mask_secret_lines(line), format!("{masked}\n"), "{line}");
        }
    }

    #[test]
    fn secret_variables_are_masked_by_name_or_by_list() {
        let vars: Vars = serde_json::from_str(
            r#"{"redis_password": "hunter22", "api_token": "tok-123456", "plain": "visible",
                "memmon_email": "ops@example.com", "secret_vars": ["memmon_email"]}"#,
        )
        .unwrap();
        let masked =
            Secrets::of(&vars).mask("requirepass hunter22\ntoken tok-123456\nplain=visible\nmail ops@example.com");
        assert_eq!(masked, "requirepass ********\ntoken ********\nplain=visible\nmail ********");
    }

    #[test]
    fn a_secret_that_holds_another_is_masked_whole_and_its_shell_quoted_form_too() {
        let vars: Vars = serde_json::from_str(r#"{"db_password": "it's-long-pass", "short_token": "long"}"#).unwrap();
        let secrets = Secrets::of(&vars);
        assert_eq!(secrets.mask("x it's-long-pass y"), "x ******** y");
        assert_eq!(secrets.mask("psql 'it'\\''s-long-pass'"), "psql '********'");
    }

    #[test]
    fn header_values_are_masked_and_their_scheme_kept() {
        for (text, masked) in [
            (
                "curl -sf -H 'Authorization: Bearer abc.DEF-123' https://sentry.example.com/api/0/",
                "curl -sf -H 'Authorization: Bearer ********' https://sentry.example.com/api/0/",
            ),
            ("curl --header \"X-Api-Key: k-9876\" http://x/", "curl --header \"X-Api-Key: ********\" http://x/"),
            ("wget --header=Private-Token:glpat-xyz http://x/", "wget --header=Private-Token:******** http://x/"),
            ("curl -H Proxy-Authorization:Basic=dXNlcg== http://x/", "curl -H Proxy-Authorization:******** http://x/"),
            (
                "curl -H 'Content-Type: application/json' http://x/",
                "curl -H 'Content-Type: application/json' http://x/",
            ),
        ] {
            assert_eq!(mask_forms(text), masked, "{text}");
        }
    }

    #[test]
    fn password_options_and_assignments_are_masked() {
        for (text, masked) in [
            ("tool --password hunter2 --user ops", "tool --password ******** --user ops"),
            ("tool --password=hunter2", "tool --password=********"),
            ("tool --api-key 'k 1' --token=t0k", "tool --api-key ******** --token=********"),
            ("psql --no-password -h db", "psql --no-password -h db"),
            ("tool --password --verbose", "tool --password --verbose"),
            ("REDISCLI_AUTH=hunter2 redis-cli ping", "REDISCLI_AUTH=******** redis-cli ping"),
            ("-e redis_cli=REDISCLI_AUTH=hunter2", "-e redis_cli=REDISCLI_AUTH=********"),
            ("PGPASSWORD='a b' psql", "PGPASSWORD='********' psql"),
            ("maxmemory=1gb policy=allkeys-lru", "maxmemory=1gb policy=allkeys-lru"),
            ("the host's lock: tool --password hunter2", "the host's lock: tool --password ********"),
            (
                "command `curl -H 'Authorization: Bearer abc' http://x/` exited 22",
                "command `curl -H 'Authorization: Bearer ********' http://x/` exited 22",
            ),
        ] {
            assert_eq!(mask_forms(text), masked, "{text}");
        }
    }

    #[test]
    fn short_options_are_masked_only_for_programs_known_to_take_a_password_there() {
        for (text, masked) in [
            ("redis-cli -h 127.0.0.1 -p 6379 -a hunter2 ping", "redis-cli -h 127.0.0.1 -p 6379 -a ******** ping"),
            ("/usr/bin/redis-cli -a 'hunter 2' ping", "/usr/bin/redis-cli -a ******** ping"),
            ("sshpass -p hunter2 ssh db", "sshpass -p ******** ssh db"),
            ("mysql -uroot -phunter2 sentry", "mysql -uroot -p******** sentry"),
            ("curl -u ops:hunter2 http://x/", "curl -u ops:******** http://x/"),
            ("curl --user ops:hunter2 http://x/", "curl --user ops:******** http://x/"),
            // The port, a prefix, an archive: not passwords.
            ("nginx -p /srv/nginx -t; tar -a -cf x.tgz .", "nginx -p /srv/nginx -t; tar -a -cf x.tgz ."),
            ("redis-cli ping; tar -a -cf x.tgz .", "redis-cli ping; tar -a -cf x.tgz ."),
        ] {
            assert_eq!(mask_forms(text), masked, "{text}");
        }
    }

    #[test]
    fn the_password_of_a_url_is_masked() {
        assert_eq!(mask_forms("redis://:hunter2@10.0.0.1:6379/0"), "redis://:********@10.0.0.1:6379/0");
        assert_eq!(mask_forms("see https://ops:pw@x.example/ now"), "see https://ops:********@x.example/ now");
        assert_eq!(mask_forms("http://10.0.0.1:9000/api"), "http://10.0.0.1:9000/api");
    }

    #[test]
    fn plain_messages_are_left_as_they_are() {
        for text in [
            "handler `reload`: `nginx -s reload` exited 1: key: not found",
            "install: step `x`: command `echo a:b` exited 3",
            "warning: /etc/supervisor/conf.d/sentry-worker.conf: Sentry workers run at concurrency -c 64",
        ] {
            assert_eq!(mask_forms(text), text);
        }
    }
}
