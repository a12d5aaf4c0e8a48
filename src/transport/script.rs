//! The few shell scripts sent to a host, one per round trip, and the
//! parsers of what they print: the snapshot (facts, managed paths, guards,
//! pending handlers), the install (atomic writes, pending handlers recorded
//! first, commands) and the handlers. Scripts are POSIX sh plus coreutils.
//!
//! Every value from the playbook enters a script single-quoted or base64
//! encoded, so no path or content is ever run as a command.

use crate::plan::{Desired, Entry, Found, Snapshot};
use crate::test_hooks;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A script as it is sent: shell text with file contents spliced in,
/// base64-encoded a chunk at a time while it is written, so that a host's
/// new files are not held a second time, as text, while they travel.
#[derive(Debug, Clone, Default)]
pub struct Script {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    /// Base64 in lines of 76 characters, each ending in a newline.
    Base64(Bytes),
}

/// Input bytes per base64 line.
const LINE_BYTES: usize = 57;
/// Input bytes encoded per write: 64 lines.
const CHUNK_BYTES: usize = LINE_BYTES * 64;

impl Script {
    fn push_str(&mut self, text: &str) {
        match self.parts.last_mut() {
            Some(Part::Text(last)) => last.push_str(text),
            _ => self.parts.push(Part::Text(text.to_owned())),
        }
    }

    fn push_base64_lines(&mut self, content: &Bytes) {
        self.parts.push(Part::Base64(content.clone()));
    }

    /// How many bytes [`Script::write_to`] sends.
    pub fn sent_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.len(),
                Part::Base64(content) => content.len().div_ceil(3) * 4 + content.len().div_ceil(LINE_BYTES),
            })
            .sum()
    }

    pub async fn write_to(&self, out: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        let mut buffer = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.write_all(text.as_bytes()).await?,
                Part::Base64(content) => {
                    for chunk in content.chunks(CHUNK_BYTES) {
                        buffer.clear();
                        base64_lines(chunk, &mut buffer);
                        out.write_all(buffer.as_bytes()).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The whole script, as a shell would read it.
    #[cfg(test)]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.sent_bytes());
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => bytes.extend_from_slice(t.as_bytes()),
                Part::Base64(content) => {
                    text.clear();
                    base64_lines(content, &mut text);
                    bytes.extend_from_slice(text.as_bytes());
                }
            }
        }
        bytes
    }

    /// The whole script as text (bytes that are not UTF-8 shown as U+FFFD).
    #[cfg(test)]
    pub fn to_text(&self) -> String {
        String::from_utf8_lossy(&self.to_bytes()).into_owned()
    }
}

/// The inside of a single-quoted sh word: each `'` becomes `'\''`.
fn quote_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    for &byte in bytes {
        if byte == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(byte);
        }
    }
}

impl From<String> for Script {
    fn from(text: String) -> Script {
        Script { parts: vec![Part::Text(text)] }
    }
}

impl Write for Script {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.push_str(text);
        Ok(())
    }
}

fn base64_lines(bytes: &[u8], out: &mut String) {
    for line in bytes.chunks(LINE_BYTES) {
        B64.encode_string(line, out);
        out.push('\n');
    }
}

/// Where a host keeps what sentry-provision must remember between runs,
/// unless the inventory sets `sentry_provision_state_dir`.
pub const STATE_DIR: &str = "/var/lib/sentry-provision";

/// The files a host keeps for one playbook: handlers still owed, and what
/// the last apply left on each managed path.
#[derive(Debug, Clone)]
pub struct StateFiles {
    pub pending: String,
    pub applied: String,
    /// This run's mark on the host's lock: the holder writes it into
    /// `lock.owner`, and a script that changes the host runs only while it
    /// is there (see [`work_lock`]). Random, so no other run can know it.
    pub token: String,
}

impl StateFiles {
    /// `<dir>/<playbook name>.pending` and `.applied`.
    pub fn new(dir: &str, playbook: &str) -> StateFiles {
        StateFiles {
            pending: format!("{dir}/{playbook}.pending"),
            applied: format!("{dir}/{playbook}.applied"),
            token: format!("{:016x}", random_u64()),
        }
    }

    /// The folder both live in.
    pub fn dir(&self) -> &str {
        folder_of(&self.pending)
    }

    /// Shell variables for the scripts: `$pending` and `$applied`, in `$state`.
    fn shell(&self) -> String {
        format!("pending={}; applied={}; state={}\n", quote(&self.pending), quote(&self.applied), quote(self.dir()))
    }
}

/// The folder a path is in, as `dirname` says it (computed here: every
/// process a script starts costs the host a fork and an exec).
pub fn folder_of(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(slash) => match trimmed[..slash].trim_end_matches('/') {
            "" => "/",
            folder => folder,
        },
        None if path.starts_with('/') => "/",
        None => ".",
    }
}

/// Quotes a value for sh: `'...'` with each `'` written as `'\''`.
pub fn quote(value: &str) -> String {
    let mut quoted = vec![b'\''];
    quote_bytes(value.as_bytes(), &mut quoted);
    quoted.push(b'\'');
    String::from_utf8(quoted).expect("quoting keeps UTF-8 intact")
}

/// A search pattern as one shell word that the shell expands as a glob:
/// `*` and `?` bare, everything else quoted.
pub fn glob_word(pattern: &str) -> String {
    let mut word = String::new();
    for part in pattern.split_inclusive(['*', '?']) {
        let (literal, wildcard) = match part.strip_suffix(['*', '?']) {
            Some(literal) => (literal, &part[literal.len()..]),
            None => (part, ""),
        };
        if !literal.is_empty() {
            word.push_str(&quote(literal));
        }
        word.push_str(wildcard);
    }
    word
}

fn decode(text: &str) -> Result<Vec<u8>, String> {
    B64.decode(text.trim()).map_err(|e| format!("bad base64 from host: {e}"))
}

/// Every script starts here. The snapshot writes nothing on the host, not
/// even a temporary file; the scripts that change things keep stderr in one.
const PRELUDE: &str = r#"PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C
b64() { base64 -w0; }
"#;

/// The scripts that change things keep stderr in `$errlog`: a file named by
/// the script's pid in the state folder (the run holds the host's lock, and
/// the next run to take it removes what a killed one left), so no mktemp
/// process; mktemp only where that folder is missing. Needs `$state`.
/// (`true`, not `:`: a redirection that fails on a special builtin ends
/// the shell.)
const ERRLOG: &str = r#"errlog="$state/.log.$$.err"
{ true >"$errlog"; } 2>/dev/null || errlog=$(mktemp) || exit 97
trap 'rm -f "$errlog"' EXIT
"#;

/// How long the lock's holder on a host waits for a word from the
/// controller (a heartbeat line comes every 2 s) before it lets go.
pub const HOLDER_PATIENCE_SECONDS: u64 = 10;

/// Exit status of a script that changes the host when its run no longer
/// holds the host's lock (see [`work_lock`]).
pub const LOCK_LOST: i32 = 95;

/// The state folder, made or checked before anything is kept there: it
/// must be a folder (not a link) of the user the run works as, that no one
/// else can write to, so that no one else can plant a name the run would
/// write through or read; it is made 0700, and an existing one tightened to
/// 0700. Otherwise the script prints `STATEBAD <why>` and exits 96. Once
/// checked, a `.checked` file of ours there spares later runs the `stat`
/// (no one else can make a file of ours in a folder only we can write, and
/// only we or root can loosen its mode). Its files are made 0600 (umask
/// 077 for what the lock's holder creates; the scripts that change the
/// host create theirs the same way).
const STATE_FOLDER_CHECK: &str = r#"if [ -L "$state" ]; then echo "STATEBAD $state is a symbolic link"; exit 96; fi
[ -d "$state" ] || (umask 077; mkdir -p -- "$state") || { echo "STATEBAD cannot create $state"; exit 96; }
[ -O "$state" ] || { echo "STATEBAD $state is not owned by the user the run works as ($(id -un)): another user could plant files there"; exit 96; }
if ! [ -O "$state/.checked" ] || [ -L "$state/.checked" ]; then
    sp_mode=$(stat -c %a -- "$state") || exit 96
    case $sp_mode in
        *[2367]? | *[2367]) echo "STATEBAD $state is writable by its group or by everyone (mode $sp_mode): another user could plant files there"; exit 96 ;;
        700) ;;
        *) chmod 700 -- "$state" || exit 96 ;;
    esac
    (umask 077; : >"$state/.checked") || exit 96
fi
umask 077
"#;

/// `script` run under the host's lock (`flock` on `<state>/lock`), waiting
/// at most `wait_seconds` for it. Prints only `LOCKBUSY` if the wait ran
/// out.
///
/// Holding the lock, it writes the run's token into `<state>/lock.owner`
/// and removes temp files a killed run left in `dirs` (the folders of
/// managed paths) and in the state folder. After its last line it holds
/// the lock until the controller closes stdin, or says nothing (no
/// heartbeat line) for [`HOLDER_PATIENCE_SECONDS`]: a dead or cut-off
/// controller. The heartbeats are read by one bash (`read -t`, where the
/// host has bash, as Debian always does), not by a `timeout` and an `sh`
/// per line: a line comes every 2 s on every host. Then it waits for the run's scripts still changing the host
/// (each holds `<state>/lock.work` shared, see [`work_lock`]), takes the
/// token out of `lock.owner` so that none starts after it, and only then
/// lets the lock go, and exits (after a silence stdin is still open, and
/// the shell would wait there for more script). A lost connection (SIGHUP,
/// SIGPIPE) does not end it sooner.
pub fn locked(state: &StateFiles, wait_seconds: u64, dirs: &[&str], script: &str) -> String {
    // The leftovers' patterns in the positional parameters; one rm for all
    // of them, and only when one matched (most runs find none): each process
    // costs every host.
    let mut leftovers =
        String::from("set -- \"$state\"/.pending.* \"$state\"/.applied.* \"$state\"/.log.* \"$state\"/.key.*");
    for dir in dirs {
        let _ = write!(leftovers, " {}/.sentry-provision.*", quote(dir.trim_end_matches('/')));
    }
    format!(
        r#"{shell}trap '' HUP PIPE
{STATE_FOLDER_CHECK}exec 9>>"$state/lock" || exit 96
if ! flock -w {wait_seconds} 9; then echo LOCKBUSY; exit 3; fi
printf '%s\n' {token} >|"$state/lock.owner" || exit 96
{leftovers}
for left do if [ -e "$left" ] || [ -L "$left" ]; then rm -rf -- "$@" 2>/dev/null; break; fi; done
[ -s "$state/key" ] || {{ od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$state/.key.$$" && mv -f -- "$state/.key.$$" "$state/key"; }} || exit 96
sh() {{ ( trap - HUP PIPE; exec sh "$@" 9>&- ); }}
{pause}{script}if command -v bash >/dev/null; then bash -c 'while read -r -t {HOLDER_PATIENCE_SECONDS} _; do :; done'; else while timeout {HOLDER_PATIENCE_SECONDS} sh -c 'read -r _' 2>/dev/null; do :; done; fi
{{ command exec 8>>"$state/lock.work"; }} 2>/dev/null && flock -x 8
: >|"$state/lock.owner"
exit 0
"#,
        shell = state.shell(),
        token = quote(&state.token),
        pause =
            if test_hooks::pause_at() == Some("snapshot") { test_hooks::pause_shell() + "\n" } else { String::new() },
    )
}

/// The first lines of every script that changes the host (install,
/// handlers, rollback). It goes on to its end whatever becomes of the
/// connection (SIGHUP and SIGPIPE ignored; the controller waits for it, or
/// is gone), and it runs only under its run's lock: it holds
/// `<state>/lock.work` shared for as long as it runs, which the lock's
/// holder waits for before letting go, and it checks that `lock.owner`
/// still names its run (a holder that gave up has taken the name out), or
/// exits with [`LOCK_LOST`] having done nothing.
///
/// The commands it runs through `sh` get the default signals back, the
/// session's umask, and not the lock's descriptor: a daemon a handler
/// starts must not hold the lock for as long as it lives. What the script
/// itself creates in the state folder is 0600 (umask 077); managed folders
/// it makes get the session's umask. Needs `$state`.
pub fn work_lock(state: &StateFiles) -> String {
    format!(
        r#"trap '' HUP PIPE
sp_umask=$(umask); umask 077
sh() {{ ( trap - HUP PIPE; umask "$sp_umask"; exec sh "$@" 8>&- ); }}
sp_owner=""
{{ command exec 8>>"$state/lock.work"; }} 2>/dev/null && flock -s 8 && {{ read -r sp_owner <"$state/lock.owner"; }} 2>/dev/null
if [ "$sp_owner" != {token} ]; then echo "this run no longer holds the host's lock ($state/lock): nothing was done" >&2; exit {LOCK_LOST}; fi
"#,
        token = quote(&state.token),
    )
}

/// For a run that does not take the lock (`drift`): prints `LOCKHELD`
/// first when handlers are owed and another run holds the host's lock,
/// that is, an apply is running and owes them now.
pub fn lock_probe(state: &StateFiles) -> String {
    format!(
        "[ -f {pending} ] && [ -f {lock} ] && {{ flock -n -E 75 {lock} true 2>/dev/null; [ $? -eq 75 ] && echo LOCKHELD; }}\n",
        pending = quote(&state.pending),
        lock = quote(&format!("{}/lock", state.dir())),
    )
}

/// A command's first line, with `…` when more follow: enough to name it in
/// a message (the whole text of a 30-line check helps no one there).
pub fn first_line(cmd: &str) -> String {
    let mut lines = cmd.trim().lines();
    let first = lines.next().unwrap_or_default().trim_end().to_owned();
    if lines.next().is_some() { first + " …" } else { first }
}

/// `sh` running `cmd` without its text on a command line, where
/// `/proc/PID/cmdline` shows it to every user of the host (a password in
/// `REDISCLI_AUTH=...` would be): the text comes on descriptor 3 from a
/// here-document (closed first thing), under a random end word. Returns the
/// words that stand where `sh -c CMD` stood, and the document, which must
/// come right after the end of that line.
fn hidden(cmd: &str) -> (String, String) {
    let end = format!("SP_COMMAND_{:016x}", random_u64());
    (format!("sh -c '. /dev/fd/3' 3<<'{end}'"), format!("exec 3<&-\n{cmd}\n{end}\n"))
}

/// Facts are what templates may use as `facts.*`.
pub const TOOLS: &[&str] = &["redis-cli", "nginx", "supervisorctl", "python3", "systemctl", "sudo", "uwsgi"];

/// A snapshot script and the token that frames the raw bytes it prints.
///
/// File contents come back as they are, not encoded (an encoder is one more
/// process on every host): the token, which the host cannot know before the
/// script arrives, marks where they end, and the script's last line is
/// [`end_line`]. A file holding a line `END` ends nothing.
pub struct SnapshotScript {
    pub text: String,
    pub token: String,
}

/// The line after which a snapshot framed by `token` has said everything.
pub fn end_line(token: &str) -> String {
    format!("END {token}")
}

/// A random number from the standard library's randomly keyed hasher (each
/// `RandomState` has its own keys, so each call differs): enough for tokens
/// and splay, no crate needed.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

/// The snapshot: facts, then each path, then the files each search pattern
/// finds, then `unless` guards, then the handlers still owed and the record
/// of the last apply.
pub fn snapshot(state: &StateFiles, paths: &[&str], patterns: &[&str], guards: &[(usize, &str)]) -> SnapshotScript {
    let token = format!("{:016x}", random_u64());
    let mut s = String::from(PRELUDE);
    s.push_str(&state.shell());
    let _ = writeln!(s, "token={token}");
    s.push_str(
        // Shell builtins reading /proc and /etc where they do: on a converged
        // host, the processes this script starts are most of what a run
        // costs the host (~1.5 ms of CPU each on a loaded one). `nproc` and
        // `id -un` run only where /proc or /etc/passwd cannot answer.
        r#"cpus= euid=
while read -r key first second _; do
    case $key in Cpus_allowed_list:) cpus=$first ;; Uid:) euid=$second ;; esac
done 2>/dev/null </proc/self/status
count=0 IFS=,
for range in $cpus; do
    case $range in
        *[!0-9-]* | '') count=0; break ;;
        *-*) count=$((count + ${range#*-} - ${range%-*} + 1)) ;;
        *) count=$((count + 1)) ;;
    esac
done
unset IFS
[ "$count" -gt 0 ] || count=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)
printf 'FACT cpus %s\n' "$count"
while read -r key value _; do [ "$key" = MemTotal: ] && printf 'FACT memory_kb %s\n' "$value" && break; done </proc/meminfo
os_id= os_version=
while IFS='=' read -r key value; do
    value=${value#[\"\']} value=${value%[\"\']}
    case $key in ID) os_id=$value ;; VERSION_ID) os_version=$value ;; esac
done 2>/dev/null </etc/os-release
printf 'FACT os_id %s\nFACT os_version %s\n' "${os_id:-unknown}" "$os_version"
{ read -r name </proc/sys/kernel/hostname || name=$(hostname); } 2>/dev/null; printf 'FACT hostname %s\n' "$name"
user=
[ -z "$euid" ] || while IFS=: read -r login _ id _; do
    [ "$id" = "$euid" ] && user=$login && break
done 2>/dev/null </etc/passwd
printf 'FACT user %s\n' "${user:-$(id -un)}"
if [ -d /run/systemd/system ]; then echo 'FACT service_manager systemd'; else echo 'FACT service_manager none'; fi
"#,
    );
    for tool in TOOLS {
        let _ = writeln!(s, "command -v {tool} >/dev/null 2>&1 && echo 'TOOL {tool}'");
    }
    // Regular files are gathered in the positional parameters and read by
    // one stat and one cat for all of them, links by one readlink: not a
    // process or two per path.
    s.push_str("set --; files= links=\n");
    for (i, path) in paths.iter().enumerate() {
        let _ = writeln!(
            s,
            "p={}
if [ -L \"$p\" ]; then link{i}=$p links=\"$links {i}\"
elif [ -f \"$p\" ]; then if [ -r \"$p\" ]; then set -- \"$@\" \"$p\"; files=\"$files {i}\"; else echo 'ERROR {i}'; fi
elif [ -d \"$p\" ]; then echo 'OTHER {i} directory'
elif [ -e \"$p\" ]; then echo 'OTHER {i} special-file'
else echo 'MISSING {i}'; fi",
            quote(path)
        );
    }
    // What a pattern finds is read like a path, named `f<k>` (the k-th
    // found); through a link, cat and `stat -L` read the file it points to,
    // and readlink says which that is.
    if !patterns.is_empty() {
        s.push_str("found=0\n");
    }
    for (i, pattern) in patterns.iter().enumerate() {
        let _ = writeln!(
            s,
            "for f in {}; do
    [ -f \"$f\" ] && [ -r \"$f\" ] || continue
    case $f in *'
'*) continue ;; esac
    printf 'FOUND {i} %s\\n' \"$f\"; set -- \"$@\" \"$f\"; files=\"$files f$found\"
    if [ -L \"$f\" ]; then eval \"linkf$found=\\$f\"; links=\"$links f$found\"; fi
    found=$((found + 1))
done",
            glob_word(pattern)
        );
    }
    for (index, cmd) in guards {
        let (sh, document) = hidden(cmd);
        let _ = write!(s, "if {sh} >/dev/null 2>&1 </dev/null\n{document}then echo 'GUARD {index}'; fi\n");
    }
    s.push_str(
        r#"[ -f "$pending" ] && [ -r "$pending" ] && set -- "$@" "$pending" && files="$files pending"
[ -f "$applied" ] && [ -r "$applied" ] && set -- "$@" "$applied" && files="$files applied"
[ -f "$state/key" ] && [ -r "$state/key" ] && set -- "$@" "$state/key" && files="$files key"
if [ $# -gt 0 ]; then
    echo "FILES$files"
    stat -L -c 'META %a %U %G %s' -- "$@"
    echo "CONTENT $token"
    cat -- "$@"
    printf '\nCONTENT-END %s\n' "$token"
fi
if [ -n "$links" ]; then
    set --
    for i in $links; do eval "set -- \"\$@\" \"\$link$i\""; done
    echo "LINKS$links"
    readlink -z -- "$@"
    printf '\nLINKS-END %s\n' "$token"
fi
echo "END $token"
"#,
    );
    SnapshotScript { text: s, token }
}

const CHANGED_WHILE_READ: &str = "a managed file changed while the snapshot read it; run again";

struct FileMeta {
    mode: u32,
    owner: String,
    group: String,
    size: usize,
}

/// `<mode> <owner> <group> <size>`, as the snapshot's stat prints them.
fn parse_meta(meta: &str) -> Result<FileMeta, String> {
    let words: Vec<&str> = meta.split(' ').collect();
    let [mode, owner, group, size] = words[..] else {
        return Err(format!("bad file metadata `{meta}`"));
    };
    Ok(FileMeta {
        mode: u32::from_str_radix(mode, 8).map_err(|_| format!("bad mode `{mode}`"))?,
        owner: owner.to_owned(),
        group: group.to_owned(),
        size: size.parse().map_err(|_| format!("bad size `{size}`"))?,
    })
}

#[derive(Debug, Default)]
pub struct SnapshotOutput {
    pub facts: BTreeMap<String, String>,
    pub tools: Vec<String>,
    pub snapshot: Snapshot,
    /// The record the last apply left, as the host has it (JSON).
    pub applied: Option<String>,
    /// The host's secret for fingerprints (`<state>/key`), once a run that
    /// writes has made it.
    pub key: Option<String>,
}

/// What a script printed, read line by line and, where it says so, byte by byte.
struct Printed<'a> {
    rest: &'a [u8],
}

impl<'a> Printed<'a> {
    /// The next line without its newline; `None` at the end.
    fn line(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.iter().position(|&b| b == b'\n').unwrap_or(self.rest.len());
        let line = &self.rest[..end];
        self.rest = self.rest.get(end + 1..).unwrap_or_default();
        Some(line)
    }

    fn bytes(&mut self, count: usize) -> Option<&'a [u8]> {
        let taken = self.rest.get(..count)?;
        self.rest = &self.rest[count..];
        Some(taken)
    }

    /// Up to the next NUL, which is passed over.
    fn nul_terminated(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == 0)?;
        self.bytes(end + 1).map(|taken| &taken[..end])
    }

    /// Passes over `"\n" + line + "\n"`, or says it is not next.
    fn closing(&mut self, line: &str) -> bool {
        let expected = format!("\n{line}\n");
        match self.rest.strip_prefix(expected.as_bytes()) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }
}

pub fn parse_snapshot(stdout: &[u8], paths: &[&str], patterns: &[&str], token: &str) -> Result<SnapshotOutput, String> {
    let mut out = SnapshotOutput::default();
    let mut printed = Printed { rest: stdout };
    // What the patterns found, in order: (pattern, listed path); and of each,
    // what it holds and, for a link, where it points.
    let mut found: Vec<(String, String)> = Vec::new();
    let mut found_entries: BTreeMap<usize, Entry> = BTreeMap::new();
    let mut found_targets: BTreeMap<usize, String> = BTreeMap::new();
    let end_line = end_line(token);
    let mut complete = false;
    while let Some(line) = printed.line() {
        let line = String::from_utf8_lossy(line);
        if line == end_line {
            complete = true;
            break;
        }
        let mut words = line.splitn(3, ' ');
        let (tag, first, rest) = (words.next().unwrap_or(""), words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path_at = |i: &str| name_of(i, paths, found.len()).map(|name| name.path(paths, &found));
        match tag {
            "FACT" => {
                out.facts.insert(first.to_owned(), rest.to_owned());
            }
            "TOOL" => out.tools.push(first.to_owned()),
            "ERROR" => return Err(format!("cannot read {}", path_at(first)?)),
            "MISSING" => {
                out.snapshot.entries.insert(path_at(first)?, Entry::Missing);
            }
            "OTHER" => {
                out.snapshot.entries.insert(path_at(first)?, Entry::Other { kind: rest.to_owned() });
            }
            "FOUND" => {
                let pattern = first.parse::<usize>().ok().and_then(|i| patterns.get(i));
                let pattern = pattern.ok_or_else(|| format!("unexpected pattern index {first}"))?;
                found.push((pattern.to_string(), rest.to_owned()));
            }
            "FILES" => {
                let names = line.split(' ').skip(1).map(|word| match word {
                    "pending" => Ok(Read::Pending),
                    "applied" => Ok(Read::Applied),
                    "key" => Ok(Read::Key),
                    word => name_of(word, paths, found.len()).map(Read::Entry),
                });
                let names = names.collect::<Result<_, _>>()?;
                for (name, entry) in read_files(&mut printed, names, token)? {
                    let text = || match &entry {
                        Entry::File { content, .. } => String::from_utf8_lossy(content).into_owned(),
                        _ => String::new(),
                    };
                    match name {
                        Read::Pending => out.snapshot.pending_handlers = owed_handlers(&text()),
                        Read::Applied => out.applied = Some(text()),
                        Read::Key => out.key = Some(text().trim().to_owned()),
                        Read::Entry(Name::Path(i)) => {
                            out.snapshot.entries.insert(paths[i].to_owned(), entry);
                        }
                        Read::Entry(Name::Found(k)) => {
                            found_entries.insert(k, entry);
                        }
                    }
                }
            }
            "LINKS" => {
                for index in line.split(' ').skip(1) {
                    let name = name_of(index, paths, found.len())?;
                    let target = printed.nul_terminated().ok_or(CHANGED_WHILE_READ)?;
                    let target = String::from_utf8_lossy(target).into_owned();
                    match name {
                        Name::Path(i) => {
                            out.snapshot.entries.insert(paths[i].to_owned(), Entry::Link { target });
                        }
                        Name::Found(k) => {
                            found_targets.insert(k, target);
                        }
                    }
                }
                if !printed.closing(&format!("LINKS-END {token}")) {
                    return Err(CHANGED_WHILE_READ.into());
                }
            }
            "GUARD" => {
                out.snapshot.guards_passed.insert(first.parse().map_err(|_| format!("bad guard index {first}"))?);
            }
            _ => {}
        }
    }
    if !complete {
        return Err("the snapshot ended early".into());
    }
    for (k, (pattern, listed)) in found.into_iter().enumerate() {
        let Some(entry) = found_entries.remove(&k) else { continue };
        let path = match found_targets.remove(&k) {
            Some(target) => resolve_link(&listed, &target),
            None => listed.clone(),
        };
        out.snapshot.entries.entry(path.clone()).or_insert(entry);
        out.snapshot.found.push(Found { pattern, listed, path });
    }
    Ok(out)
}

/// Where a link at `link` pointing to `target` leads, one step, as a clean
/// absolute path.
fn resolve_link(link: &str, target: &str) -> String {
    let joined = if target.starts_with('/') { target.to_owned() } else { format!("{}/{target}", folder_of(link)) };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// What a name in a `FILES` or `LINKS` line stands for.
#[derive(Debug, Clone, Copy)]
enum Name {
    /// The i-th managed path.
    Path(usize),
    /// The k-th file a pattern found.
    Found(usize),
}

impl Name {
    fn path(self, paths: &[&str], found: &[(String, String)]) -> String {
        match self {
            Name::Path(i) => paths[i].to_owned(),
            Name::Found(k) => found[k].1.clone(),
        }
    }
}

/// A managed path's index, or `f<k>` for the k-th found file.
fn name_of(word: &str, paths: &[&str], found: usize) -> Result<Name, String> {
    let name = match word.strip_prefix('f') {
        Some(k) => k.parse().ok().filter(|k| *k < found).map(Name::Found),
        None => word.parse().ok().filter(|i| *i < paths.len()).map(Name::Path),
    };
    name.ok_or_else(|| format!("unexpected path index {word}"))
}

/// After `FILES <names>`: a `META` line for each, then their bytes end to
/// end, framed by the token; each comes back as a file entry.
fn read_files(printed: &mut Printed<'_>, names: Vec<Read>, token: &str) -> Result<Vec<(Read, Entry)>, String> {
    let mut metas = Vec::with_capacity(names.len());
    for _ in &names {
        // A file gone between the test and stat leaves one META short.
        match printed.line().map(String::from_utf8_lossy) {
            Some(line) if line.starts_with("META ") => metas.push(parse_meta(&line["META ".len()..])?),
            _ => return Err(CHANGED_WHILE_READ.into()),
        }
    }
    if printed.line() != Some(format!("CONTENT {token}").as_bytes()) {
        return Err("the snapshot ended early".into());
    }
    let total = metas.iter().try_fold(0usize, |sum, m| sum.checked_add(m.size)).ok_or("file sizes overflow")?;
    let content = printed.bytes(total).map(Bytes::copy_from_slice).ok_or(CHANGED_WHILE_READ)?;
    // Fewer or more bytes than stat counted put something else here.
    if !printed.closing(&format!("CONTENT-END {token}")) {
        return Err(CHANGED_WHILE_READ.into());
    }
    let mut start = 0;
    let mut entries = Vec::with_capacity(names.len());
    for (name, meta) in names.into_iter().zip(metas) {
        let bytes = content.slice(start..start + meta.size);
        start += meta.size;
        entries.push((name, Entry::File { content: bytes, mode: meta.mode, owner: meta.owner, group: meta.group }));
    }
    Ok(entries)
}

/// What a name in a `FILES` line stands for.
#[derive(Debug, Clone, Copy)]
enum Read {
    Entry(Name),
    Pending,
    Applied,
    Key,
}

/// One file (or link) to put in place.
pub struct FileWrite<'a> {
    pub path: &'a str,
    /// `None` removes the path (a rollback of a file that did not exist).
    pub desired: Option<&'a Desired>,
    /// Commands that must pass with every file of the run in place, or every file goes back.
    pub validate: &'a [String],
    /// Keep the previous version in the state folder (`backups/<stamp><path>`).
    pub backup: bool,
}

/// Everything one install round trip does.
pub struct Install<'a> {
    pub state: &'a StateFiles,
    /// Handlers owed once the files move; recorded before any file moves.
    pub pending: &'a [String],
    pub writes: &'a [FileWrite<'a>],
    pub commands: &'a [(usize, &'a str)],
    /// The record of what was applied (JSON), written last.
    pub applied: Option<&'a str>,
    /// Names this run's backups: `<state>/backups/<stamp><path>`.
    pub stamp: &'a str,
    /// Random, per run: names the staged files, so no one on the host can
    /// create their names first.
    pub token: &'a str,
    /// Keep each replaced entry (hard-linked as [`kept_path`]) after a
    /// successful install, for [`restore`] to rename back should a handler
    /// fail; [`handlers`] removes them once every handler took effect.
    pub keep_olds: bool,
    /// Test hook ([`crate::test_hooks`]): the script kills itself (SIGKILL) at this named point.
    pub crash_at: Option<&'a str>,
}

/// Where the next version of the state file `var` is staged, quoted for sh.
fn staged_record(var: &str) -> String {
    format!("\"$state/.{var}.$$\"")
}

/// Shell that writes `content`, the next version of the state file named by
/// the variable `var` (`pending` or `applied`), beside it as `$state/.<var>.$$`;
/// [`place_state_file`] renames it into place once an fsync has covered it.
///
/// Named by the script's pid, not by mktemp: the state folder is ours, the
/// script holds the host's lock, and the run that next takes the lock removes
/// what a killed one left. The content is text, quoted, written by the
/// shell's printf: no process.
fn stage_state_file(s: &mut impl Write, var: &str, content: &str, what: &str, fail: &str) {
    let _ = write!(
        s,
        r#"[ -d "$state" ] || mkdir -p -- "$state" 2>"$errlog" || {fail} record "cannot create $state"
{{ printf '%s' {content} >| {staged}; }} 2>|"$errlog" || {fail} record "cannot record {what} in ${var}" "$(full "$state")"
"#,
        content = quote(content),
        staged = staged_record(var),
    );
}

/// Shell that renames the staged state file into place (see
/// [`stage_state_file`]), then offers the crash point `point`. `fail` is
/// the shell function a failure calls (`abort` once files moved).
fn place_state_file(s: &mut impl Write, var: &str, what: &str, point: &str, fail: &str) {
    let _ = write!(
        s,
        r#"mv -f -- {staged} "${var}" 2>"$errlog" || {fail} record "cannot record {what} in ${var}" "$(full "$state")"
crash {point}
"#,
        staged = staged_record(var),
    );
}

/// Shell for the test hooks' named points: `crash NAME` in a script marks
/// a point where a test may kill the script or pause it (see
/// [`crate::test_hooks`]). Only a build with the `test-hooks` feature
/// acts on them.
#[cfg(feature = "test-hooks")]
fn crash_hook(crash_at: Option<&str>) -> String {
    let pause = match test_hooks::pause_at() {
        Some(point) => format!("[ \"$1\" = {} ] && {{ {} }}; ", quote(point), test_hooks::pause_shell()),
        None => String::new(),
    };
    match crash_at {
        Some(point) => format!("crash() {{ [ \"$1\" = {} ] && kill -9 $$; {pause}return 0; }}\n", quote(point)),
        None if pause.is_empty() => "crash() { :; }\n".into(),
        None => format!("crash() {{ {pause}return 0; }}\n"),
    }
}

/// Without the `test-hooks` feature a named point does nothing.
#[cfg(not(feature = "test-hooks"))]
fn crash_hook(_crash_at: Option<&str>) -> String {
    "crash() { :; }\n".into()
}

/// `full DIR` prints why a write in DIR failed when its filesystem has no
/// space left (a shell's printf says only "I/O error"), else nothing: a
/// failure's third argument, said instead of the command's stderr.
/// Said only where the command's own message is none, or says so too: on
/// ext4, df counts without the blocks kept for root, who may still write,
/// and a failure there has another cause worth its own words.
const FULL_DISK: &str = r#"full() { { [ ! -s "$errlog" ] || grep -q -e 'No space left' -e 'I/O error' "$errlog"; } && df -P -- "$1" 2>/dev/null | { read -r _; read -r _ _ _ avail _; [ "${avail:-1}" != 0 ] || printf 'No space left on device (the filesystem of %s is full)' "$1"; }; }
"#;

/// The program that writes staged files (see [`install`]): one `stage`
/// call a file follows it, with the path, owner and group as base64 and the
/// content as base64 lines. Prints a `FAIL file:N` line of the install's
/// protocol and exits 1 on the first error.
const STAGER: &str = r#"import binascii, errno, grp, os, pwd, sys

def folder(path):
    # From / one part at a time: a link is followed only where no one but
    # root can change the folder it is in.
    fd = os.open(b"/", os.O_RDONLY | os.O_DIRECTORY)
    for part in path.split(b"/"):
        if not part:
            continue
        info = os.fstat(fd)
        others_write = info.st_uid != 0 or info.st_mode & 0o022
        try:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | (os.O_NOFOLLOW if others_write else 0), dir_fd=fd)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR) and others_write:
                raise OSError(error.errno, "%s is a link in a folder others can write to: not followed" % part.decode(errors="replace"))
            raise
        finally:
            os.close(fd)
        fd = child
    return fd

def private(path, name):
    # The run's own folder beside `path` (made 0700 here, or made by an
    # earlier call of this run): no one else can add, swap or remove what
    # is in it, wherever someone who can write the folder moves it.
    where = folder(os.path.dirname(path))
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=where)
        except FileExistsError:
            pass
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=where)
    finally:
        os.close(where)
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        os.close(fd)
        raise OSError(errno.EEXIST, "%s was made by someone else: refused" % name)
    return fd

def failed(index, path, error):
    why = error.strerror if isinstance(error, OSError) else "no such user or group %s" % error
    message = "cannot write %s: %s" % (path.decode(errors="replace"), why)
    print("FAIL file:%d %s" % (index, binascii.b2a_base64(message.encode(), newline=False).decode()), flush=True)
    sys.exit(1)

def stage(index, path, name, mode, owner, group, content):
    path = binascii.a2b_base64(path)
    try:
        uid = -1 if owner is None else pwd.getpwnam(binascii.a2b_base64(owner).decode()).pw_uid
        gid = -1 if group is None else grp.getgrnam(binascii.a2b_base64(group).decode()).gr_gid
        where = private(path, name)
        try:
            fd = os.open("new.%d" % index, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=where)
        finally:
            os.close(where)
        try:
            data = memoryview(binascii.a2b_base64(content))
            while data:
                data = data[os.write(fd, data):]
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
    except (OSError, KeyError) as error:
        failed(index, path, error)

def link(index, path, name, target):
    path = binascii.a2b_base64(path)
    try:
        where = private(path, name)
        try:
            os.symlink(binascii.a2b_base64(target), "new.%d" % index, dir_fd=where)
        finally:
            os.close(where)
    except OSError as error:
        failed(index, path, error)

def keep(index, path, name):
    # Only the run's folder, for the previous entry of a path it removes.
    path = binascii.a2b_base64(path)
    try:
        os.close(private(path, name))
    except OSError as error:
        failed(index, path, error)
"#;

/// The run's own folder beside the paths it writes in `folder`, made 0700
/// by the stager: staged files and the entries they replace are kept in it,
/// where no one else (such as redis in Debian's /etc/redis) can swap them
/// between two commands. Named by the run's random token (which no one on
/// the host can know before the script arrives); the run that next takes
/// the host's lock removes what a killed one left.
fn private_name(token: &str) -> String {
    format!(".sentry-provision.{token}")
}

pub fn private_dir(path: &str, token: &str) -> String {
    format!("{}/{}", folder_of(path).trim_end_matches('/'), private_name(token))
}

/// Where the install of the run named by `token` keeps the entry write `i`
/// replaced at `path` (in the run's folder beside it: a rename puts it
/// back, needing no space and keeping its inode, owner and times).
pub fn kept_path(path: &str, token: &str, i: usize) -> String {
    format!("{}/old.{i}", private_dir(path, token))
}

fn staged_path(write: &FileWrite<'_>, token: &str, i: usize) -> String {
    format!("{}/new.{i}", quote(&private_dir(write.path, token)))
}

/// The install, all or nothing: stage every file and link in the run's own
/// folder beside its path (the Python stager: descriptors, owner, mode,
/// fsync); record the handlers owed; then for each path in turn keep its
/// previous entry (a hard link in the run's folder), a backup if asked, and
/// rename the new one into place; then run each check once with every file
/// in place, then the commands, then record what was applied. Any failure
/// from the first rename on puts every path and the pending record back
/// (`undo`). The previous entries stay for a rollback when `keep_olds`.
///
/// The body is one shell function, called on the last line: a script cut
/// short in transit (the controller died while sending it) is a syntax
/// error and runs nothing.
pub fn install(install: &Install<'_>) -> Script {
    let writes = install.writes;
    let mut s = Script::default();
    s.push_str(PRELUDE);
    s.push_str(&install.state.shell());
    s.push_str(&work_lock(install.state)); // interrupts: runs to its end, only under this run's lock
    s.push_str(ERRLOG);
    s.push_str(&crash_hook(install.crash_at));
    s.push_str(FULL_DISK);
    // A failure removes the run's folders (what is staged in them, and the
    // previous entries once put back) and its staged records: nothing
    // outlives the run that made it. Not after a path could not be put back
    // (STUCK): its previous entry stays in the run's folder, for a person.
    let mut run_folders: Vec<String> = writes.iter().map(|w| private_dir(w.path, install.token)).collect();
    run_folders.sort();
    run_folders.dedup();
    let mut unstaged: Vec<String> = Vec::new();
    if !install.pending.is_empty() {
        unstaged.push(staged_record("pending"));
    }
    if install.applied.is_some() {
        unstaged.push(staged_record("applied"));
    }
    let mut unstage = String::new();
    if !run_folders.is_empty() {
        let quoted: Vec<String> = run_folders.iter().map(|f| quote(f)).collect();
        let _ = write!(unstage, "[ -n \"$sp_stuck\" ] || rm -rf -- {} 2>/dev/null; ", quoted.join(" "));
    }
    if !unstaged.is_empty() {
        let _ = write!(unstage, "rm -f -- {} 2>/dev/null; ", unstaged.join(" "));
    }
    let _ = writeln!(
        s,
        r#"fail() {{ {unstage}printf 'FAIL %s %s\n' "$1" "$( {{ printf '%s: ' "$2"; if [ -n "$3" ]; then printf '%s' "$3"; else cat "$errlog"; fi; }} | b64)"; exit 1; }}
abort() {{ undo; fail "$@"; }}
main() {{"#
    );
    let unset: Vec<String> = (0..writes.len()).map(|i| format!("placed{i}= old{i}= was_link{i}=")).collect();
    let _ = writeln!(s, "sp_stuck= placed_pending= old_pending= {}", unset.join(" "));
    // The handlers owed are staged like the files, and recorded before any
    // file moves.
    if !install.pending.is_empty() {
        let names: String = install.pending.iter().map(|h| format!("{h}\n")).collect();
        stage_state_file(&mut s, "pending", &names, "pending handlers", "fail");
    }

    // Stage: folders first (with the host's umask), then every file, made
    // readable by its owner only until its mode is set; `set -C` makes the
    // shell refuse to write through anything already at a staged path
    // (`2>|` overrides it for the error log, which exists).
    let mut made: HashSet<&str> = HashSet::new();
    for (i, write) in writes.iter().enumerate() {
        let folder = folder_of(write.path);
        if write.desired.is_some() && made.insert(folder) {
            let _ = writeln!(
                s,
                "d={}; [ -d \"$d\" ] || (umask \"$sp_umask\"; mkdir -p -- \"$d\") 2>\"$errlog\" || fail file:{i} \"cannot create folder $d\"",
                quote(folder)
            );
        }
    }
    // Files and links are made by one small Python program, through
    // descriptors, in the run's own folder beside each path (see
    // [`private_dir`]), reached from / without following a link where
    // others can write: each file opened new (O_EXCL) without following a
    // link (O_NOFOLLOW), given its owner, then its mode (a chown clears
    // setuid and setgid), then fsynced. Nothing is done by path where a
    // name could turn into a link between two commands.
    if !writes.is_empty() {
        s.push_str("python3 -I -S - <<'SP_STAGE' || fail file:0 \"python3 could not stage the files\"\n");
        s.push_str(STAGER);
        let name = private_name(install.token);
        for (i, write) in writes.iter().enumerate() {
            let path = B64.encode(write.path);
            match write.desired {
                Some(Desired::File { content, mode, owner, group }) => {
                    let id = |value: &Option<String>| {
                        value.as_deref().map_or("None".to_owned(), |v| format!("{:?}", B64.encode(v)))
                    };
                    let _ =
                        writeln!(s, "stage({i}, {path:?}, {name:?}, {mode:#o}, {}, {}, b\"\"\"", id(owner), id(group),);
                    s.push_base64_lines(content);
                    s.push_str("\"\"\")\n");
                }
                Some(Desired::Link { target }) => {
                    let _ = writeln!(s, "link({i}, {path:?}, {name:?}, {:?})", B64.encode(target));
                }
                None => {
                    let _ = writeln!(s, "keep({i}, {path:?}, {name:?})");
                }
            }
        }
        s.push_str("SP_STAGE\n");
    }
    // The files were fsynced as they were written; the pending record is,
    // before any rename: after a crash each path holds the old file or the
    // whole new one, and the handlers it needs are recorded.
    if !install.pending.is_empty() {
        let _ = writeln!(s, "sync -- {} 2>\"$errlog\" || fail record \"fsync\"", staged_record("pending"));
    }

    // Place: every path in turn, its previous entry kept through a hard
    // link beside it (a dot name, which no `include dir/*` loads), so that
    // any failure from here on (a rename, a check, a command) puts every
    // file of the run back, newest first, with one rename each. `undo` lists
    // the writes in reverse; `$placed<i>` says which moved.
    s.push_str(
        // `put_back PATH OLD WAS_LINK`: a kept entry that is a link where
        // the path was not one was swapped by someone who can write the
        // folder, and is not put back.
        // `ours DIR`: the run's own folder, still (a folder, not a link, of
        // the user the run works as: no one else can make one).
        r#"put_back() { if [ -n "$2" ]; then ours "${2%/*}" || return 1; if [ -L "$2" ] && [ -z "$3" ]; then return 1; fi; mv -f -T -- "$2" "$1"; else rm -f -- "$1"; fi; }
ours() { [ -d "$1" ] && ! [ -L "$1" ] && [ -O "$1" ]; }
"#,
    );
    // A path that cannot go back (STUCK) keeps the pending record as this
    // run wrote it: the new file is there, and its handlers are owed. The
    // previous entries of paths not yet placed, and this run's backups, go.
    let mut undo = String::from("undo() {\n    sp_stuck=\"\"\n");
    for (i, write) in writes.iter().enumerate().rev() {
        let _ = writeln!(
            undo,
            "    if [ -n \"$placed{i}\" ]; then put_back {} \"$old{i}\" \"$was_link{i}\" 2>/dev/null || {{ echo 'STUCK {i}'; sp_stuck=1; }}; elif [ -n \"$old{i}\" ]; then rm -f -- \"$old{i}\"; fi",
            quote(write.path)
        );
    }
    if !install.pending.is_empty() {
        undo.push_str(
            "    if [ -z \"$sp_stuck\" ] && [ -n \"$placed_pending\" ]; then put_back \"$pending\" \"$old_pending\" 2>/dev/null; else rm -f -- \"$old_pending\"; fi\n",
        );
    }
    if writes.iter().any(|w| w.backup) && !install.stamp.is_empty() {
        let _ = writeln!(undo, "    rm -rf -- \"$state/backups/\"{} 2>/dev/null", quote(install.stamp));
    }
    undo.push_str("    true\n}\n");
    s.push_str(&undo);
    // The handlers owed are recorded before any file moves, and go back
    // with them.
    if !install.pending.is_empty() {
        s.push_str(
            r#"old_pending=""; if [ -e "$pending" ]; then old_pending="$state/.pending.old.$$"; ln -f -- "$pending" "$old_pending" 2>"$errlog" || fail record "cannot keep the previous record of pending handlers"; fi
"#,
        );
        place_state_file(&mut s, "pending", "pending handlers", "record", "fail");
        s.push_str("placed_pending=1\n");
    }
    for (i, write) in writes.iter().enumerate() {
        if write.desired.is_some() {
            let _ = writeln!(s, "crash file:{i}:staged");
        }
    }
    for (i, write) in writes.iter().enumerate() {
        let _ = writeln!(
            s,
            "p={}; d={}; pd={}; ours \"$pd\" || abort file:{i} \"$pd, the run's own folder, was replaced (someone else can write $d): refused\"; old{i}=\"\"; was_link{i}=\"\"; [ -L \"$p\" ] && was_link{i}=1; if [ -e \"$p\" ] || [ -L \"$p\" ]; then old{i}=\"$pd/old.{i}\"; ln -P -- \"$p\" \"$old{i}\" 2>\"$errlog\" || abort file:{i} \"cannot replace $p\" \"$(full \"$d\")\"; fi",
            quote(write.path),
            quote(folder_of(write.path)),
            quote(&private_dir(write.path, install.token)),
        );
        if write.desired.is_none() {
            let _ = writeln!(
                s,
                "rm -f -- \"$p\" 2>\"$errlog\" || abort file:{i} \"cannot remove $p\"; placed{i}=1; crash file:{i}:placed"
            );
            continue;
        }
        if write.backup {
            let _ = writeln!(
                s,
                "if [ -n \"$old{i}\" ]; then bak=\"$state/backups/\"{stamp}\"$p\"; {{ mkdir -p -- \"${{bak%/*}}\" && cp -P -p -- \"$p\" \"$bak\"; }} 2>\"$errlog\" || abort file:{i} \"cannot keep a backup\" \"$(full \"$state\")\"; printf 'BACKUP {i} %s\\n' \"$(printf '%s' \"$bak\" | b64)\"; fi",
                stamp = quote(install.stamp)
            );
        }
        let _ = writeln!(
            s,
            "mv -f -T -- {} \"$p\" 2>\"$errlog\" || {{ rm -f -- \"$old{i}\"; abort file:{i} \"cannot rename into place\" \"$(full \"$d\")\"; }}; placed{i}=1; crash file:{i}:placed",
            staged_path(write, install.token, i),
        );
    }
    // Every check once, with all of the run's files and links in place, as
    // the services will load them (nginx -t sees the site and its link).
    let mut checks: Vec<(usize, &str)> = Vec::new();
    for (i, write) in writes.iter().enumerate().filter(|(_, w)| w.desired.is_some()) {
        for check in write.validate {
            if !checks.iter().any(|(_, c)| c == check) {
                checks.push((i, check));
            }
        }
    }
    for (first, check) in &checks {
        let (sh, document) = hidden(check);
        let _ = writeln!(
            s,
            "if ! {sh} >\"$errlog\" 2>&1 </dev/null\n{document}then abort check:{first} {}; fi",
            quote(&format!("check `{}` failed with every file of the run in place", first_line(check)))
        );
    }
    for (i, write) in writes.iter().enumerate() {
        if write.desired.is_some() && !checks.is_empty() {
            let _ = writeln!(s, "crash file:{i}:validated");
        }
    }
    // The renames reach the disk before anything runs or is recorded as
    // applied: one sync of every folder written to, not one per file.
    // The record of what was applied is staged here so that the same sync
    // covers it; it moves into place after the commands, if they pass.
    let mut folders: Vec<&str> = writes.iter().map(|w| folder_of(w.path)).collect();
    folders.sort_unstable();
    folders.dedup();
    let mut synced: Vec<String> = folders.iter().map(|f| quote(f)).collect();
    if let Some(record) = install.applied {
        stage_state_file(&mut s, "applied", record, "what was applied", "abort");
        synced.push(staged_record("applied"));
    }
    if !synced.is_empty() {
        let _ = writeln!(s, "sync -- {} 2>/dev/null", synced.join(" "));
    }
    // A command that fails takes the run's files back with it (what the
    // command itself did stays done: it is the command's to be idempotent).
    for (index, cmd) in install.commands {
        let (sh, document) = hidden(cmd);
        let _ = write!(
            s,
            "{sh} >/dev/null 2>\"$errlog\" </dev/null || abort command:{index} \"exit status $?\"; echo 'RAN {index}'; crash command:{index}\n{document}",
        );
    }
    if install.applied.is_some() {
        place_state_file(&mut s, "applied", "what was applied", "applied", "abort");
    }
    // Done: the previous versions go (unless kept for a rollback), and each
    // path counts as written.
    if !install.keep_olds && !run_folders.is_empty() {
        let quoted: Vec<String> = run_folders.iter().map(|f| quote(f)).collect();
        let _ = writeln!(s, "rm -rf -- {} 2>/dev/null", quoted.join(" "));
    }
    if !install.pending.is_empty() {
        s.push_str("rm -f -- \"$old_pending\" 2>/dev/null\n");
    }
    for i in 0..writes.len() {
        let _ = writeln!(s, "echo 'DONE {i}'");
    }
    s.push_str("echo END\n}\nmain\n");
    s
}

/// Live-state probes: each command's exit status and the tail of its output.
pub fn probes(probes: &[&str]) -> String {
    let mut s = String::from(PRELUDE);
    probe_lines(&mut s, probes);
    s.push_str("echo END\n");
    s
}

fn probe_lines(s: &mut String, probes: &[&str]) {
    for (i, cmd) in probes.iter().enumerate() {
        let (sh, document) = hidden(cmd);
        let _ = writeln!(
            s,
            // Most probes pass silently: then no tail and no base64 to start.
            "out=$({sh} 2>&1 </dev/null\n{document}); rc=$?; if [ -z \"$out\" ]; then echo \"PROBE {i} $rc \"; else printf 'PROBE {i} %s %s\\n' \"$rc\" \"$(printf '%s' \"$out\" | tail -c 2000 | b64)\"; fi",
        );
    }
}

/// Exit status and output of each probe, in order.
pub fn parse_probes(stdout: &[u8], count: usize) -> Result<Vec<(i32, String)>, String> {
    let mut results = vec![None; count];
    let mut complete = false;
    for line in String::from_utf8_lossy(stdout).lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["PROBE", i, rc, rest @ ..] => {
                let i: usize = i.parse().map_err(|_| format!("bad probe index {i}"))?;
                let output = String::from_utf8_lossy(&decode(rest.first().copied().unwrap_or(""))?).trim().to_owned();
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some((rc.parse().unwrap_or(-1), output));
                }
            }
            ["END"] => complete = true,
            _ => {}
        }
    }
    if !complete {
        return Err("the probes ended early".into());
    }
    results.into_iter().enumerate().map(|(i, r)| r.ok_or_else(|| format!("probe {i} printed nothing"))).collect()
}

#[derive(Debug, Default)]
pub struct InstallOutput {
    /// Indexes of the writes in place, in the order they were done.
    pub written: Vec<usize>,
    /// Backups kept in the state folder: the write's index and the copy's path.
    pub backups: Vec<(usize, String)>,
    pub commands_ran: Vec<usize>,
    /// Writes that failed and could not be put back either.
    pub stuck: Vec<usize>,
    /// What failed (`file:N` for the Nth write, `record` or `command:N`) and the message with stderr.
    pub failure: Option<(String, String)>,
}

pub fn parse_install(stdout: &[u8]) -> Result<InstallOutput, String> {
    let mut out = InstallOutput::default();
    let mut complete = false;
    for line in String::from_utf8_lossy(stdout).lines() {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("DONE"), Some(i), _) => out.written.push(i.parse().map_err(|_| format!("bad index {i}"))?),
            (Some("BACKUP"), Some(i), Some(path)) => {
                let i = i.parse().map_err(|_| format!("bad index {i}"))?;
                out.backups.push((i, String::from_utf8_lossy(&decode(path)?).into_owned()))
            }
            (Some("STUCK"), Some(i), _) => out.stuck.push(i.parse().map_err(|_| format!("bad index {i}"))?),
            (Some("RAN"), Some(i), _) => out.commands_ran.push(i.parse().map_err(|_| format!("bad index {i}"))?),
            (Some("FAIL"), Some(what), Some(message)) => {
                let message = String::from_utf8_lossy(&decode(message)?).trim().to_owned();
                out.failure = Some((what.to_owned(), message));
                return Ok(out);
            }
            (Some("END"), _, _) => complete = true,
            _ => {}
        }
    }
    if !complete {
        return Err("the install ended early".into());
    }
    Ok(out)
}

/// Whether `name` can stand in a pending record: one line, and no tab or
/// other control character (a tab marks a cleared handler). The playbook
/// refuses handler names that cannot.
pub fn fits_pending_record(name: &str) -> bool {
    !name.is_empty() && !name.contains(char::is_control)
}

/// The handlers a pending record still owes, in the order recorded: one
/// name a line, written by the install; a handler that has run since is
/// cleared by a later line with its name between tabs (see [`handlers`]).
pub fn owed_handlers(record: &str) -> Vec<String> {
    // Only whole, clean lines count: an append cut short by a crash ("\tre"
    // of "\trestart web\t", or zeros on some filesystems) must neither clear
    // another handler nor pass for one; at worst a handler runs again.
    let lines: Vec<&str> = record.split_inclusive('\n').filter_map(|l| l.strip_suffix('\n')).collect();
    let cleared: HashSet<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix('\t')?.strip_suffix('\t'))
        .filter(|name| fits_pending_record(name))
        .collect();
    let mut owed: Vec<String> = Vec::new();
    for &name in lines.iter().filter(|l| fits_pending_record(l) && !cleared.contains(*l)) {
        if !owed.iter().any(|o| o == name) {
            owed.push(name.to_owned());
        }
    }
    owed
}

/// A probe that checks a handler took effect, run right after it.
pub struct Verify<'a> {
    /// The handler's index in the list run.
    pub after: usize,
    pub name: &'a str,
    pub command: &'a str,
}

/// Runs handlers in order. A handler counts as done, and is cleared from the
/// pending record, only when it exited 0 and every probe verifying it then
/// passed: one that failed or did not take effect (or a run that died) stays
/// owed, and the next run runs it again.
pub fn handlers(
    state: &StateFiles,
    handlers: &[(&str, &str)],
    probes: &[Verify<'_>],
    kept: &[String],
    crash_at: Option<&str>,
) -> String {
    let mut s = String::from(PRELUDE);
    s.push_str(&state.shell());
    s.push_str(&work_lock(state)); // interrupts: runs to its end, only under this run's lock
    s.push_str(ERRLOG);
    s.push_str(&crash_hook(crash_at));
    s.push_str("tab='\t'\n");
    s.push_str(
        r#"outlog="$state/.log.$$.out"
{ true >"$outlog"; } 2>/dev/null || outlog=$(mktemp) || exit 97
trap 'rm -f "$errlog" "$outlog"' EXIT
# Clears one handler from the pending record, keeping any others (a
# remedy run by drift leaves owed handlers owed): appends a line with its
# name between tabs, on a line of its own even after a torn append, and
# removes the record once nothing in it is owed. Read by the shell: no
# process unless it removes the record. The record is never rewritten, so
# the handlers still owed cannot be lost in a crash; the append is not
# fsynced: a crash that loses it only runs the handler again, and what a
# torn append leaves (a line cut short, zeros) names no handler.
done_with() {
    [ -f "$pending" ] || return 0
    cleared="
$1
"
    while IFS= read -r name; do case $name in "$tab"*"$tab") name=${name#?}; cleared="$cleared${name%?}
" ;; esac; done < "$pending"
    while IFS= read -r name; do
        case $name in "" | *[[:cntrl:]]*) continue ;; esac
        case $cleared in *"
$name
"*) ;; *) printf '\n\t%s\t\n' "$1" >> "$pending"; return ;; esac
    done < "$pending"
    rm -f -- "$pending"
}
main() {
"#,
    );
    for (i, (name, cmd)) in handlers.iter().enumerate() {
        let (sh, document) = hidden(cmd);
        let _ = write!(s, "{sh} >\"$outlog\" 2>\"$errlog\" </dev/null\n{document}");
        let _ = writeln!(
            s,
            "rc=$?; if [ $rc -ne 0 ]; then printf 'HFAIL {i} %s %s\\n' \"$rc\" \"$( {{ tail -c 2000 \"$errlog\"; tail -c 1000 \"$outlog\"; }} | b64)\"; exit 1; fi"
        );
        let _ = writeln!(s, "crash handler:{i}:ran");
        for (j, probe) in probes.iter().enumerate().filter(|(_, p)| p.after == i) {
            let (sh, document) = hidden(probe.command);
            let _ = writeln!(
                s,
                "out=$({sh} 2>&1 </dev/null\n{document}); rc=$?; printf 'PROBE {j} %s %s\\n' \"$rc\" \"$(printf '%s' \"$out\" | tail -c 2000 | b64)\"",
            );
            let _ = writeln!(
                s,
                "if [ $rc -ne 0 ]; then printf 'HNOEFFECT {i} %s %s\\n' \"$rc\" \"$( {{ printf '%s' {}; printf '%s' \"$out\" | tail -c 2000; }} | b64)\"; exit 1; fi",
                quote(&format!("verify `{}` failed: ", probe.name))
            );
        }
        let _ = writeln!(s, "done_with {} || true; echo 'HOK {i}'", quote(name));
    }
    // Every handler took effect: the run's folders, with the entries the
    // install kept in them for a rollback, are not needed any more.
    if !kept.is_empty() {
        let kept: Vec<String> = kept.iter().map(|k| quote(k)).collect();
        let _ = writeln!(s, "rm -rf -- {} 2>/dev/null", kept.join(" "));
    }
    s.push_str("echo END\n}\nmain\n");
    s
}

/// One path to put back as it was before a run's install.
pub struct Restore<'a> {
    pub path: &'a str,
    /// The entry the install kept ([`kept_path`]), or `None` where the path
    /// did not exist (it is removed).
    pub kept: Option<&'a str>,
}

/// Puts back what an install replaced, each path on its own (one that
/// cannot go back does not keep the others from it): the kept entry is
/// renamed back (no space needed, its inode, owner and times as they were),
/// or a path that did not exist is removed. Then the pending record (the
/// handlers `owed`, or none) and the record of what was applied (`applied`)
/// are written. Prints `BACK i` per path put back, `STUCK i <why>` per path
/// that could not be, then `END`.
pub fn restore(
    state: &StateFiles,
    paths: &[Restore<'_>],
    folders: &[String],
    owed: &[String],
    applied: &str,
) -> String {
    let mut s = String::from(PRELUDE);
    s.push_str(&state.shell());
    s.push_str(&work_lock(state));
    s.push_str(ERRLOG);
    s.push_str(&crash_hook(None));
    s.push_str(FULL_DISK);
    s.push_str(
        r#"fail() { printf 'FAIL %s %s\n' "$1" "$( { printf '%s: ' "$2"; if [ -n "$3" ]; then printf '%s' "$3"; else cat "$errlog"; fi; } | b64)"; exit 1; }
stuck() { printf 'STUCK %s %s\n' "$1" "$( { printf '%s: ' "$2"; cat "$errlog"; } | b64)"; }
ours() { [ -d "$1" ] && ! [ -L "$1" ] && [ -O "$1" ]; }
main() {
"#,
    );
    for (i, restore) in paths.iter().enumerate() {
        let path = quote(restore.path);
        let _ = match restore.kept {
            Some(kept) => writeln!(
                s,
                "if ! ours {folder}; then : >\"$errlog\"; stuck {i} 'the run'\\''s own folder was replaced'; elif [ -e {kept} ] || [ -L {kept} ]; then mv -f -T -- {kept} {path} 2>\"$errlog\" && echo 'BACK {i}' || stuck {i} 'cannot put the previous entry back'; else : >\"$errlog\"; stuck {i} 'the previous entry kept by the install ({kept_text}) is gone'; fi",
                folder = quote(folder_of(kept)),
                kept = quote(kept),
                kept_text = kept.replace('\'', ""),
            ),
            None => writeln!(s, "rm -f -- {path} 2>\"$errlog\" && echo 'BACK {i}' || stuck {i} 'cannot remove it'"),
        };
    }
    if !folders.is_empty() {
        let quoted: Vec<String> = folders.iter().map(|f| quote(f)).collect();
        let _ = writeln!(s, "rm -rf -- {} 2>/dev/null", quoted.join(" "));
    }
    if owed.is_empty() {
        s.push_str("rm -f -- \"$pending\" 2>/dev/null\n");
    } else {
        let names: String = owed.iter().map(|h| format!("{h}\n")).collect();
        stage_state_file(&mut s, "pending", &names, "pending handlers", "fail");
        place_state_file(&mut s, "pending", "pending handlers", "record", "fail");
    }
    stage_state_file(&mut s, "applied", applied, "what was applied", "fail");
    place_state_file(&mut s, "applied", "what was applied", "applied", "fail");
    s.push_str("echo END\n}\nmain\n");
    s
}

#[derive(Debug, Default)]
pub struct RestoreOutput {
    pub back: Vec<usize>,
    /// Paths that could not be put back, and why.
    pub stuck: Vec<(usize, String)>,
    pub failure: Option<String>,
}

pub fn parse_restore(stdout: &[u8]) -> Result<RestoreOutput, String> {
    let mut out = RestoreOutput::default();
    let mut complete = false;
    for line in String::from_utf8_lossy(stdout).lines() {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("BACK"), Some(i), _) => out.back.push(i.parse().map_err(|_| format!("bad index {i}"))?),
            (Some("STUCK"), Some(i), Some(why)) => out.stuck.push((
                i.parse().map_err(|_| format!("bad index {i}"))?,
                String::from_utf8_lossy(&decode(why)?).trim().to_owned(),
            )),
            (Some("FAIL"), Some(_), Some(message)) => {
                out.failure = Some(String::from_utf8_lossy(&decode(message)?).trim().to_owned());
                return Ok(out);
            }
            (Some("END"), _, _) => complete = true,
            _ => {}
        }
    }
    if !complete {
        return Err("the rollback ended early".into());
    }
    Ok(out)
}

#[derive(Debug, Default)]
pub struct HandlersOutput {
    pub succeeded: usize,
    /// Exit status and output of each verifying probe (when every handler succeeded).
    pub probes: Vec<(i32, String)>,
    /// Index, exit status and output of the handler that failed.
    pub failure: Option<(usize, i32, String)>,
    /// The handler that failed exited 0 but a probe verifying it failed
    /// (its status and output are the probe's).
    pub no_effect: bool,
}

/// What the handlers script printed, for `handler_count` handlers run in
/// order: every index is checked against them (a host could print any).
pub fn parse_handlers(stdout: &[u8], handler_count: usize, probe_count: usize) -> Result<HandlersOutput, String> {
    let mut out = HandlersOutput::default();
    let mut complete = false;
    // The handler a line speaks of: the next one to run, as the script runs them.
    let next = |out: &HandlersOutput, i: &str| match i.parse::<usize>() {
        Ok(i) if i == out.succeeded && i < handler_count => Ok(i),
        _ => Err(format!("unexpected handler index {i} (after {} of {handler_count} handlers)", out.succeeded)),
    };
    for line in String::from_utf8_lossy(stdout).lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["HOK", i] => out.succeeded = next(&out, i)? + 1,
            ["HFAIL", i, rc, message] => {
                let message = String::from_utf8_lossy(&decode(message)?).trim().to_owned();
                out.failure = Some((next(&out, i)?, rc.parse().unwrap_or(-1), message));
                return Ok(out);
            }
            ["HNOEFFECT", i, rc, message] => {
                let message = String::from_utf8_lossy(&decode(message)?).trim().to_owned();
                out.failure = Some((next(&out, i)?, rc.parse().unwrap_or(-1), message));
                out.no_effect = true;
                return Ok(out);
            }
            ["HFAIL", i, rc] => {
                out.failure = Some((next(&out, i)?, rc.parse().unwrap_or(-1), String::new()));
                return Ok(out);
            }
            ["END"] => complete = true,
            _ => {}
        }
    }
    if !complete {
        return Err("the handlers ended early".into());
    }
    out.probes = parse_probes(stdout, probe_count)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::process::Command;

    fn install_of(state: &StateFiles) -> Install<'_> {
        Install {
            state,
            pending: &[],
            writes: &[],
            commands: &[],
            applied: None,
            stamp: "0",
            token: "0123456789abcdef",
            keep_olds: false,
            crash_at: None,
        }
    }

    fn write<'a>(path: &'a str, desired: &'a Desired) -> FileWrite<'a> {
        FileWrite { path, desired: Some(desired), validate: &[], backup: false }
    }

    #[tokio::test]
    async fn a_script_sends_the_same_bytes_it_reads_as_and_says_how_many() {
        let binary: Vec<u8> = (0..=255u8).cycle().take(CHUNK_BYTES * 2 + 100).collect();
        let quotes: Vec<u8> = b"it's 'quoted'\n".iter().copied().cycle().take(CHUNK_BYTES * 2 + 7).collect();
        let big = Bytes::from(vec![b'x'; (1 << 20) + 1]);
        for content in [Bytes::new(), Bytes::from_static(b"x"), Bytes::from(binary), Bytes::from(quotes), big] {
            let desired = Desired::File { content: content.clone(), mode: 0o644, owner: None, group: None };
            let script = install(&Install { writes: &[write("/a", &desired)], ..install_of(&test_state()) });
            let mut sent = Vec::new();
            script.write_to(&mut sent).await.unwrap();
            assert_eq!(sent, script.to_bytes());
            assert_eq!(script.sent_bytes(), sent.len());
        }
    }

    #[test]
    fn content_travels_as_base64_in_short_lines() {
        let with_nul = Bytes::from_static(b"a\0b");
        let big = Bytes::from(vec![b'y'; (1 << 20) + 1]);
        for content in [with_nul, big] {
            let desired = Desired::File { content: content.clone(), mode: 0o644, owner: None, group: None };
            let text = install(&Install { writes: &[write("/a", &desired)], ..install_of(&test_state()) }).to_text();
            let after_opener = text.split("b\"\"\"\n").nth(1).expect("sent as base64");
            let body = after_opener.split("\"\"\")").next().unwrap();
            assert!(body.lines().all(|l| l.len() <= 76), "base64 lines are at most 76 characters");
            assert_eq!(B64.decode(body.split_whitespace().collect::<String>()).unwrap(), content);
        }
    }

    #[test]
    fn every_byte_is_written_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all-bytes").display().to_string();
        // Every byte, invalid UTF-8 and dash's internal markers included.
        let content: Vec<u8> = (0..=255u8).chain(b"'\\'' $(x) `y`\n\"\"\"".iter().copied()).collect();
        let desired = Desired::File { content: content.clone().into(), mode: 0o600, owner: None, group: None };
        let script = install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) });
        let out = parse_install(&sh(script.to_bytes())).unwrap();
        assert_eq!(out.written, [0], "{out:?}");
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }

    #[test]
    fn files_are_staged_by_one_python_process_through_descriptors_and_nothing_by_path() {
        let state = test_state();
        let plain = |mode| Desired::File { content: Bytes::from_static(b"x"), mode, owner: None, group: None };
        let owned = Desired::File {
            content: Bytes::from_static(b"x"),
            mode: 0o644,
            owner: Some("root".into()),
            group: Some("root".into()),
        };
        let (a, b, c, d) = (plain(0o644), plain(0o600), plain(0o644), owned.clone());
        let writes = [write("/etc/a", &a), write("/etc/b", &b), write("/srv/c", &c), write("/srv/d", &d)];
        let pending = ["reload nginx".to_owned()];
        let text = install(&Install { writes: &writes, pending: &pending, applied: Some("{}"), ..install_of(&state) })
            .to_text();
        let lines_starting = |word: &str| text.lines().filter(|l| l.starts_with(word)).count();
        assert_eq!(lines_starting("python3 -I -S - "), 1, "{text}");
        assert_eq!(lines_starting("stage("), 4, "{text}");
        assert_eq!(lines_starting("chmod ") + lines_starting("chown "), 0, "{text}");
        assert!(
            text.contains("O_EXCL | os.O_NOFOLLOW") && text.contains("os.fchown(fd") && text.contains("os.fchmod(fd")
        );
        assert_eq!(
            lines_starting("sync -- "),
            2,
            "one for the pending record, one for the folders after the renames and the applied record"
        );
        assert!(text.contains("\".sentry-provision.0123456789abcdef\""), "the run's folder is named by its token");
        // Whatever the script removes whole is the run's own.
        for line in text.lines().filter(|l| l.contains("rm -rf -- ")) {
            let targets = line.split("rm -rf -- ").nth(1).unwrap().split(" 2>").next().unwrap();
            for target in targets.split(' ') {
                assert!(
                    target.contains(".sentry-provision.0123456789abcdef") || target.contains("backups/"),
                    "{target} in {line}"
                );
            }
        }
    }

    #[test]
    fn a_folder_that_others_can_write_is_not_entered_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A folder others may write to, holding a link to a folder of root's.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let target = dir.path().join("private");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, open.join("conf")).unwrap();
        let path = open.join("conf/file").display().to_string();
        let desired = Desired::File { content: Bytes::from_static(b"x"), mode: 0o644, owner: None, group: None };
        let out =
            parse_install(&sh(
                install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_bytes()
            ))
            .unwrap();
        let (what, message) = out.failure.expect("refused");
        assert_eq!(what, "file:0");
        assert!(message.contains("conf is a link in a folder others can write to"), "{message}");
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "nothing written through the link");
    }

    #[test]
    fn a_setgid_mode_sticks_because_the_owner_is_set_before_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool").display().to_string();
        let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        let group = String::from_utf8(Command::new("id").arg("-gn").output().unwrap().stdout).unwrap();
        let desired = Desired::File {
            content: Bytes::from_static(b"#!/bin/sh\n"),
            mode: 0o2755,
            owner: Some(me.trim().to_owned()),
            group: Some(group.trim().to_owned()),
        };
        let out =
            parse_install(&sh(
                install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_bytes()
            ))
            .unwrap();
        assert!(out.failure.is_none(), "{out:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o2755);
    }

    /// Runs the snapshot of `paths` here and reads what it printed.
    fn read_snapshot(state: &StateFiles, paths: &[&str], guards: &[(usize, &str)]) -> Result<SnapshotOutput, String> {
        let script = snapshot(state, paths, &[], guards);
        parse_snapshot(&sh(&script.text), paths, &[], &script.token)
    }

    fn state_path_exists(path: &str) -> bool {
        std::path::Path::new(path).exists()
    }

    /// One state folder for the tests that need no state of their own, as
    /// the lock's holder leaves it for its run (see [`held`]).
    fn test_state() -> StateFiles {
        static STATE: std::sync::OnceLock<StateFiles> = std::sync::OnceLock::new();
        STATE.get_or_init(|| held(&tempfile::tempdir().unwrap().keep().display().to_string(), "p")).clone()
    }

    /// State files in `dir` whose run holds the lock there: `lock.owner`
    /// names it, as the holder writes it, so its scripts run.
    fn held(dir: &str, playbook: &str) -> StateFiles {
        let state = StateFiles::new(dir, playbook);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/lock.owner"), format!("{}\n", state.token)).unwrap();
        state
    }

    fn sh(script: impl AsRef<[u8]>) -> Vec<u8> {
        let mut child = Command::new("sh")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(script.as_ref()).unwrap();
        child.wait_with_output().unwrap().stdout
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Names and contents full of shell syntax are data, never commands:
        /// each round-trips exactly through install and snapshot, and nothing
        /// else appears on disk.
        #[test]
        fn any_name_and_content_round_trip_exactly_and_never_run(
            name in "[a-zA-Z0-9 '\"$;`&|<>(){}*?!#~=%\\\n\t\u{e9}\u{4e2d}\u{1f600}-]{1,40}",
            content in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        ) {
            proptest::prop_assume!(name != "." && name != "..");
            let dir = tempfile::tempdir().unwrap();
            let path = format!("{}/{name}", dir.path().display());
            let desired = Desired::File { content: content.clone().into(), mode: 0o600, owner: None, group: None };
            let out = parse_install(&sh(install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_bytes()))
                .unwrap();
            proptest::prop_assert_eq!(&out.written, &[0], "{:?}", out);
            let paths = [path.as_str()];
            let read = read_snapshot(&test_state(), &paths, &[(0, "false")]).unwrap();
            match &read.snapshot.entries[&path] {
                Entry::File { content: back, .. } => proptest::prop_assert_eq!(back, &content),
                other => proptest::prop_assert!(false, "{:?}", other),
            }
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            proptest::prop_assert_eq!(names.len(), 1, "only the file itself: {:?}", names);
        }
    }

    #[test]
    fn quoting_survives_quotes_dollars_and_newlines() {
        let nasty = "it's $HOME; `x` \\ \"q\"\nnext";
        let out = sh(format!("printf '%s' {}", quote(nasty)));
        assert_eq!(String::from_utf8(out).unwrap(), nasty);
    }

    #[test]
    fn a_file_written_by_install_reads_back_byte_for_byte_through_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd name; $x 'q' é").display().to_string();
        let content = b"line 1\n\xffbinary\0 and 'quotes' $VAR\n".to_vec();
        let desired = Desired::File { content: content.clone().into(), mode: 0o640, owner: None, group: None };
        let out =
            parse_install(&sh(
                install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_bytes()
            ))
            .unwrap();
        assert_eq!(out.written, [0], "{out:?}");
        let paths = [path.as_str()];
        let snap = read_snapshot(&test_state(), &paths, &[]).unwrap();
        match &snap.snapshot.entries[&path] {
            Entry::File { content: read, mode, .. } => {
                assert_eq!(read, &content);
                assert_eq!(*mode, 0o640);
            }
            other => panic!("{other:?}"),
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_failed_write_names_the_path_and_carries_stderr() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let path = dir.path().join("file/inside").display().to_string();
        let desired = Desired::File { content: Bytes::from_static(b"x"), mode: 0o644, owner: None, group: None };
        let out =
            parse_install(&sh(
                install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_bytes()
            ))
            .unwrap();
        let (what, message) = out.failure.unwrap();
        assert_eq!(what, "file:0");
        assert!(message.contains("cannot create folder"), "{message}");
    }

    #[test]
    fn a_rename_that_fails_puts_back_every_file_placed_before_it_and_the_pending_record() {
        let dir = tempfile::tempdir().unwrap();
        let state = held(&dir.path().join("state").display().to_string(), "p");
        std::fs::write(&state.pending, "owed before\n").unwrap();
        let conf = |name: &str| dir.path().join(name).display().to_string();
        let (a, link, blocked) = (conf("a.conf"), conf("enabled"), conf("blocked"));
        std::fs::write(&a, "old\n").unwrap();
        // A folder where a file should go: no rename can replace it.
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(dir.path().join("blocked/inside"), "").unwrap();
        let file = Desired::File { content: Bytes::from_static(b"new\n"), mode: 0o644, owner: None, group: None };
        let to_a = Desired::Link { target: a.clone() };
        let writes = [write(&a, &file), write(&link, &to_a), write(&blocked, &file)];
        let pending = ["reload".to_owned()];
        let out = parse_install(&sh(
            install(&Install { writes: &writes, pending: &pending, ..install_of(&state) }).to_bytes()
        ))
        .unwrap();
        let (what, message) = out.failure.clone().unwrap();
        assert_eq!(what, "file:2", "{message}");
        assert!(out.written.is_empty(), "{out:?}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old\n");
        assert!(std::fs::symlink_metadata(&link).is_err(), "the new link is gone");
        assert_eq!(std::fs::read_to_string(&state.pending).unwrap(), "owed before\n", "the record is as it was");
        let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["a.conf", "blocked", "state"], "nothing staged or kept is left behind");
    }

    #[test]
    fn a_failure_on_a_full_filesystem_says_so_and_otherwise_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let errlog = dir.path().join("err");
        let with_df = |available: &str, stderr: &str| {
            std::fs::write(&errlog, stderr).unwrap();
            let stub = format!(
                "errlog={}; df() {{ echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; echo 'fs 10 10 {available} 100% /'; }}\n",
                quote(&errlog.display().to_string())
            );
            String::from_utf8(sh(format!("{stub}{FULL_DISK}full /etc/nginx"))).unwrap()
        };
        let full = "No space left on device (the filesystem of /etc/nginx is full)";
        assert_eq!(with_df("0", ""), full);
        assert_eq!(with_df("0", "sh: 1: printf: I/O error\n"), full);
        assert_eq!(with_df("12", ""), "");
        // ext4 keeps blocks for root: df says 0, and the cause is another.
        assert_eq!(with_df("0", "ln: Operation not permitted\n"), "", "the command's own message stands");
    }

    #[test]
    fn a_candidate_that_fails_validation_is_replaced_by_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.conf").display().to_string();
        std::fs::write(&path, "good\n").unwrap();
        let desired = Desired::File { content: Bytes::from_static(b"bad\n"), mode: 0o644, owner: None, group: None };
        let validate = [format!("grep -q good {path} || {{ echo 'syntax error in site.conf' >&2; exit 1; }}")];
        let writes = [FileWrite { path: &path, desired: Some(&desired), validate: &validate, backup: false }];
        let out =
            parse_install(&sh(install(&Install { writes: &writes, ..install_of(&test_state()) }).to_bytes())).unwrap();
        let (what, message) = out.failure.unwrap();
        assert_eq!(what, "check:0");
        assert!(message.contains("failed with every file of the run in place"), "{message}");
        assert!(message.contains("syntax error in site.conf"), "the checker's own message: {message}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "good\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_check_runs_once_with_every_file_in_place_and_its_failure_puts_back_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = |name: &str| dir.path().join(name).display().to_string();
        let (a, b, c) = (conf("a.conf"), conf("between"), conf("b.conf"));
        std::fs::write(&a, "good\n").unwrap();
        let log = conf("checks.log");
        // Counts its runs; fails when any .conf file says "bad".
        let check = [format!("echo run >> {log}; ! grep -q bad {}/*.conf", dir.path().display())];
        let file = |text: &'static str| Desired::File {
            content: Bytes::from_static(text.as_bytes()),
            mode: 0o644,
            owner: None,
            group: None,
        };
        let run = |a_text, c_text| {
            let (da, db, dc) = (file(a_text), file("plain\n"), file(c_text));
            let writes = [
                FileWrite { path: &a, desired: Some(&da), validate: &check, backup: false },
                FileWrite { path: &b, desired: Some(&db), validate: &[], backup: false },
                FileWrite { path: &c, desired: Some(&dc), validate: &check, backup: false },
            ];
            parse_install(&sh(install(&Install { writes: &writes, ..install_of(&test_state()) }).to_bytes())).unwrap()
        };

        let failed = run("bad\n", "fine\n");
        let (what, message) = failed.failure.clone().unwrap();
        assert_eq!(what, "check:0", "named by the first file it checks");
        assert!(message.contains("with every file of the run in place"), "{message}");
        assert!(failed.written.is_empty(), "all or nothing: {failed:?}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "good\n", "back as it was");
        assert!(!std::path::Path::new(&b).exists(), "a file outside the check goes back too");
        assert!(!std::path::Path::new(&c).exists(), "a file that did not exist is gone again");

        let passed = run("new\n", "fine\n");
        assert!(passed.failure.is_none(), "{passed:?}");
        assert_eq!(passed.written, [0, 1, 2]);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new\n");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "run\nrun\n", "one check a run, not one a file");
        let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["a.conf", "b.conf", "between", "checks.log"], "no temporary or old file is left behind");
    }

    #[test]
    fn a_backup_keeps_the_previous_version_in_the_state_folder_where_no_include_glob_reaches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.conf").display().to_string();
        let state = held(&dir.path().join("state").display().to_string(), "p");
        std::fs::write(&path, "old\n").unwrap();
        let desired = Desired::File { content: Bytes::from_static(b"new\n"), mode: 0o644, owner: None, group: None };
        let writes = [FileWrite { path: &path, desired: Some(&desired), validate: &[], backup: true }];
        let out =
            parse_install(&sh(
                install(&Install { writes: &writes, stamp: "20261127T100000", ..install_of(&state) }).to_bytes()
            ))
            .unwrap();
        let copy = format!("{}/backups/20261127T100000{path}", state.dir());
        assert_eq!(out.backups, [(0, copy.clone())]);
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), "old\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let beside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(beside.len(), 2, "nothing beside the file but the state folder: {beside:?}");
    }

    #[test]
    fn a_script_cut_short_in_transit_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.conf").display().to_string();
        let desired = Desired::File { content: Bytes::from_static(b"new\n"), mode: 0o644, owner: None, group: None };
        let script = install(&Install { writes: &[write(&path, &desired)], ..install_of(&test_state()) }).to_text();
        for cut in [script.len() / 3, script.len() / 2, script.len() - 6] {
            sh(&script[..cut]);
            assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "cut at {cut} wrote something");
        }
    }

    #[test]
    fn probes_report_each_exit_status_and_output() {
        let out = parse_probes(&sh(probes(&["echo fine", "echo 'maxmemory: 0' >&2; exit 3"])), 2).unwrap();
        assert_eq!(out, [(0, "fine".to_owned()), (3, "maxmemory: 0".to_owned())]);
    }

    #[test]
    fn the_applied_record_is_written_last_and_read_back_by_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let state = held(&dir.path().join("state").display().to_string(), "site");
        let out =
            parse_install(&sh(install(&Install { applied: Some("{\"paths\":{}}"), ..install_of(&state) }).to_bytes()))
                .unwrap();
        assert!(out.failure.is_none(), "{out:?}");
        let snap = read_snapshot(&state, &[], &[]).unwrap();
        assert_eq!(snap.applied.as_deref(), Some("{\"paths\":{}}"));
    }

    #[test]
    fn a_handler_that_succeeds_is_cleared_from_the_pending_record_and_the_others_stay_owed() {
        let dir = tempfile::tempdir().unwrap();
        let state = held(&dir.path().display().to_string(), "site");
        let recorded = "reload nginx\nrestart web\nupdate supervisor\n";
        std::fs::write(&state.pending, recorded).unwrap();
        let ran = [("reload nginx", "true"), ("update supervisor", "true")];
        let out = parse_handlers(&sh(handlers(&state, &ran, &[], &[], None)), ran.len(), 0).unwrap();
        assert_eq!(out.succeeded, 2, "{out:?}");
        let record = std::fs::read_to_string(&state.pending).unwrap();
        assert!(record.starts_with(recorded), "the names owed are never rewritten: {record:?}");
        assert_eq!(owed_handlers(&record), ["restart web"]);
        assert_eq!(read_snapshot(&state, &[], &[]).unwrap().snapshot.pending_handlers, ["restart web"]);

        let last = parse_handlers(&sh(handlers(&state, &[("restart web", "true")], &[], &[], None)), 1, 0).unwrap();
        assert_eq!(last.succeeded, 1, "{last:?}");
        assert!(!std::path::Path::new(&state.pending).exists(), "nothing owed, no record");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with("lock."))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "no temporary file is left behind");
    }

    #[test]
    fn a_handler_whose_verifying_probe_fails_did_not_take_effect_and_stays_owed() {
        let dir = tempfile::tempdir().unwrap();
        let state = held(&dir.path().display().to_string(), "site");
        std::fs::write(&state.pending, "reload nginx\nupdate supervisor\n").unwrap();
        let ran = [("reload nginx", "true"), ("update supervisor", "true")];
        let probes = [Verify { after: 0, name: "nginx runs the configuration on disk", command: "echo stale; exit 1" }];
        let out = parse_handlers(&sh(handlers(&state, &ran, &probes, &[], None)), ran.len(), probes.len()).unwrap();
        assert!(out.no_effect, "{out:?}");
        let (i, status, message) = out.failure.unwrap();
        assert_eq!((i, status), (0, 1));
        assert_eq!(message, "verify `nginx runs the configuration on disk` failed: stale");
        assert_eq!(out.succeeded, 0, "nothing after it ran");
        let record = std::fs::read_to_string(&state.pending).unwrap();
        assert_eq!(owed_handlers(&record), ["reload nginx", "update supervisor"]);

        let passing = [Verify { after: 0, name: "nginx runs the configuration on disk", command: "true" }];
        let out = parse_handlers(&sh(handlers(&state, &ran, &passing, &[], None)), ran.len(), 1).unwrap();
        assert_eq!((out.succeeded, out.probes.len()), (2, 1), "{out:?}");
        assert!(!state_path_exists(&state.pending), "everything owed is done");
    }

    #[test]
    fn a_remedy_that_was_not_owed_leaves_the_owed_handlers_owed() {
        let dir = tempfile::tempdir().unwrap();
        let state = held(&dir.path().display().to_string(), "site");
        std::fs::write(&state.pending, "restart web\n").unwrap();
        let out = parse_handlers(&sh(handlers(&state, &[("reload nginx", "true")], &[], &[], None)), 1, 0).unwrap();
        assert_eq!(out.succeeded, 1, "{out:?}");
        assert_eq!(owed_handlers(&std::fs::read_to_string(&state.pending).unwrap()), ["restart web"]);
    }

    #[test]
    fn what_a_torn_append_left_in_the_pending_record_does_not_keep_it_owing() {
        let dir = tempfile::tempdir().unwrap();
        let state = held(&dir.path().display().to_string(), "site");
        std::fs::write(&state.pending, "restart\nrestart web\nreload nginx\n\0\0\x01\n\trestart").unwrap();
        let ran = [("restart web", "true")];
        let out = parse_handlers(&sh(handlers(&state, &ran, &[], &[], None)), ran.len(), 0).unwrap();
        assert_eq!(out.succeeded, 1, "{out:?}");
        let record = std::fs::read_to_string(&state.pending).unwrap();
        assert_eq!(owed_handlers(&record), ["restart", "reload nginx"], "{record:?}");
        assert_eq!(read_snapshot(&state, &[], &[]).unwrap().snapshot.pending_handlers, ["restart", "reload nginx"]);
        let ran = [("reload nginx", "true"), ("restart", "true")];
        let out = parse_handlers(&sh(handlers(&state, &ran, &[], &[], None)), ran.len(), 0).unwrap();
        assert_eq!(out.succeeded, 2, "{out:?}");
        assert!(!std::path::Path::new(&state.pending).exists(), "nothing owed, no record");
    }

    #[test]
    fn a_pending_record_owes_each_name_until_a_line_with_it_between_tabs_clears_it() {
        assert_eq!(owed_handlers(""), Vec::<String>::new());
        assert_eq!(owed_handlers("a\nb\na\n"), ["a", "b"]);
        assert_eq!(owed_handlers("a\nb\nc\n\n\tb\t\n"), ["a", "c"]);
        assert_eq!(owed_handlers("a\n\n\ta\t\n\n\tx\t\n"), Vec::<String>::new());
        // An append cut short by a crash clears nothing and owes nothing.
        assert_eq!(owed_handlers("a\nab\n\n\ta"), ["a", "ab"]);
        assert_eq!(owed_handlers("a\nab\n\n\ta\n\tab\t\n"), ["a"]);
        assert_eq!(owed_handlers("a\nb\n\0\0\0\tb\t\n"), ["a", "b"]);
    }

    #[test]
    fn the_snapshot_reports_missing_paths_links_and_guards() {
        let dir = tempfile::tempdir().unwrap();
        let (link, other_link) = (dir.path().join("l"), dir.path().join("odd 'link'"));
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        std::os::unix::fs::symlink("../a target\nwith a newline", &other_link).unwrap();
        let missing = dir.path().join("none").display().to_string();
        let (link, other_link) = (link.display().to_string(), other_link.display().to_string());
        let paths = [missing.as_str(), link.as_str(), other_link.as_str()];
        let out = read_snapshot(&test_state(), &paths, &[(4, "true"), (5, "false")]).unwrap();
        assert_eq!(out.snapshot.entries[&missing], Entry::Missing);
        assert_eq!(out.snapshot.entries[&link], Entry::Link { target: "/etc/hostname".into() });
        assert_eq!(out.snapshot.entries[&other_link], Entry::Link { target: "../a target\nwith a newline".into() });
        assert!(out.snapshot.guards_passed.contains(&4) && !out.snapshot.guards_passed.contains(&5));
    }

    #[test]
    fn facts_read_by_the_shell_agree_with_nproc_id_and_os_release() {
        let out = read_snapshot(&test_state(), &[], &[]).unwrap();
        let command = |program: &str, args: &[&str]| {
            let output = Command::new(program).args(args).output().unwrap();
            String::from_utf8(output.stdout).unwrap().trim().to_owned()
        };
        assert_eq!(out.facts["cpus"], command("nproc", &[]));
        assert_eq!(out.facts["user"], command("id", &["-un"]));
        assert!(out.facts["memory_kb"].parse::<u64>().unwrap() > 0);
        assert_eq!(out.facts["hostname"], std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim());
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
        let value = |key: &str| {
            os_release.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim_matches('"').to_owned()).unwrap()
        };
        assert_eq!(out.facts["os_id"], value("ID="));
        assert_eq!(out.facts["os_version"], value("VERSION_ID="));
    }

    #[test]
    fn file_contents_come_back_raw_and_a_line_like_the_end_ends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFiles::new(&dir.path().join("state").display().to_string(), "site");
        std::fs::create_dir(state.dir()).unwrap();
        std::fs::write(&state.pending, "reload nginx\nrestart web\n").unwrap();
        std::fs::write(&state.applied, "{\"paths\":{}}").unwrap();
        let path = dir.path().join("f").display().to_string();
        // What the old framing ended at, and what this one is made of.
        let content = "END\nCONTENT-END x\nLINKS 0\nFILES 0\nMETA 644 root root 1\nERROR 0\nEND";
        std::fs::write(&path, content).unwrap();
        let paths = [path.as_str()];
        let script = snapshot(&state, &paths, &[], &[]);
        let locked = locked(&state, 5, &[], &script.text);
        let stdout = sh(&locked);
        let out = parse_snapshot(&stdout, &paths, &[], &script.token).unwrap();
        match &out.snapshot.entries[&path] {
            Entry::File { content: back, .. } => assert_eq!(back, content.as_bytes()),
            other => panic!("{other:?}"),
        }
        assert_eq!(out.snapshot.pending_handlers, ["reload nginx", "restart web"]);
        assert_eq!(out.applied.as_deref(), Some("{\"paths\":{}}"));
        assert!(String::from_utf8_lossy(&stdout).ends_with(&format!("\n{}\n", end_line(&script.token))));
    }

    #[test]
    fn a_pattern_finds_files_and_links_and_reads_each_link_through_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (available, enabled) = (dir.path().join("sites-available"), dir.path().join("sites-enabled"));
        std::fs::create_dir_all(&available).unwrap();
        std::fs::create_dir_all(enabled.join("a folder")).unwrap();
        std::fs::write(available.join("default"), "server { listen 80 default_server; }\n").unwrap();
        std::os::unix::fs::symlink("../sites-available/default", enabled.join("default")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", enabled.join("dangling")).unwrap();
        std::fs::write(enabled.join("sentry site"), "server { listen 80; }\n").unwrap();
        let pattern = format!("{}/*", enabled.display());
        let script = snapshot(&test_state(), &[], &[&pattern], &[]);
        let out = parse_snapshot(&sh(&script.text), &[], &[&pattern], &script.token).unwrap();
        let at = |name: &str| format!("{}/{name}", enabled.display());
        let default = available.join("default").display().to_string();
        assert_eq!(
            out.snapshot.found,
            [
                Found { pattern: pattern.clone(), listed: at("default"), path: default.clone() },
                Found { pattern: pattern.clone(), listed: at("sentry site"), path: at("sentry site") },
            ]
        );
        let content = |path: &str| match &out.snapshot.entries[path] {
            Entry::File { content, .. } => String::from_utf8_lossy(content).into_owned(),
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(content(&default), "server { listen 80 default_server; }\n");
        assert_eq!(content(&at("sentry site")), "server { listen 80; }\n");
    }

    #[test]
    fn a_pattern_is_one_shell_word_with_only_its_wildcards_bare() {
        assert_eq!(glob_word("/etc/nginx/sites-enabled/*"), "'/etc/nginx/sites-enabled/'*");
        assert_eq!(glob_word("/etc/it's/*.conf"), "'/etc/it'\\''s/'*'.conf'");
        assert_eq!(glob_word("/etc/$(id)/a?"), "'/etc/$(id)/a'?");
    }

    #[test]
    fn a_lock_held_elsewhere_is_reported_before_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let state = held(&dir.path().display().to_string(), "site");
        // std's lock is flock(2), the lock the script takes.
        let lock = std::fs::File::create(dir.path().join("lock")).unwrap();
        lock.lock().unwrap();
        let stdout = sh(locked(&state, 0, &[], &snapshot(&state, &[], &[], &[]).text));
        assert_eq!(String::from_utf8_lossy(&stdout), "LOCKBUSY\n");
    }

    #[test]
    fn a_state_folder_others_could_plant_files_in_is_refused_and_a_loose_one_of_ours_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let run = |state_dir: &std::path::Path| {
            let state = StateFiles::new(&state_dir.display().to_string(), "site");
            // The holder waits for stdin to close: sh() gives it none.
            String::from_utf8_lossy(&sh(locked(&state, 0, &[], "echo SNAPSHOT\n"))).into_owned()
        };
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let out = run(&shared);
        assert!(out.starts_with("STATEBAD ") && out.contains("writable by its group or by everyone"), "{out}");
        assert!(!shared.join("lock").exists(), "nothing kept there");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        assert!(run(&link).contains("is a symbolic link"));

        let loose = dir.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(run(&loose).starts_with("SNAPSHOT"));
        assert_eq!(std::fs::metadata(&loose).unwrap().permissions().mode() & 0o7777, 0o700);
        assert_eq!(std::fs::metadata(loose.join("lock")).unwrap().permissions().mode() & 0o777, 0o600);

        let made = dir.path().join("new/state");
        assert!(run(&made).starts_with("SNAPSHOT"));
        assert_eq!(std::fs::metadata(&made).unwrap().permissions().mode() & 0o7777, 0o700);
    }

    #[test]
    fn the_hosts_secret_for_fingerprints_is_made_once_private_and_read_back_by_the_snapshot() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = StateFiles::new(&dir.path().display().to_string(), "site");
        let script = snapshot(&state, &[], &[], &[]);
        let first = parse_snapshot(&sh(locked(&state, 0, &[], &script.text)), &[], &[], &script.token).unwrap();
        let key = first.key.expect("made by the first run that takes the lock");
        assert!(key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
        let path = dir.path().join("key");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = parse_snapshot(&sh(locked(&state, 0, &[], &script.text)), &[], &[], &script.token).unwrap();
        assert_eq!(again.key.as_deref(), Some(key.as_str()), "kept");
    }

    #[test]
    fn a_command_runs_without_its_text_on_any_command_line() {
        // The probe prints the command lines of its own shell and of the
        // script's: neither holds the probe's text.
        let probe = "secret=hunter22; tr '\\0' ' ' </proc/$$/cmdline; echo; tr '\\0' ' ' </proc/$PPID/cmdline";
        let out = parse_probes(&sh(probes(&[probe])), 1).unwrap();
        let (status, lines) = &out[0];
        assert_eq!(*status, 0, "{lines}");
        assert!(lines.starts_with("sh -c . /dev/fd/3"), "{lines}");
        assert!(!lines.contains("hunter22"), "{lines}");
    }

    #[test]
    fn a_script_that_changes_the_host_does_nothing_once_its_run_no_longer_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = held(&dir.path().join("state").display().to_string(), "site");
        // A holder that gave up took this run's token out of lock.owner.
        std::fs::write(format!("{}/lock.owner", state.dir()), "").unwrap();
        let path = dir.path().join("f").display().to_string();
        let desired = Desired::File { content: Bytes::from_static(b"new"), mode: 0o644, owner: None, group: None };
        let script = install(&Install { writes: &[write(&path, &desired)], ..install_of(&state) });
        let status = Command::new("sh").arg("-c").arg(script.to_text()).status().unwrap();
        assert_eq!(status.code(), Some(LOCK_LOST));
        assert!(!std::path::Path::new(&path).exists());
        let marker = dir.path().join("ran").display().to_string();
        let ran = [("touch", format!("touch {}", quote(&marker)))];
        let ran: Vec<(&str, &str)> = ran.iter().map(|(n, c)| (*n, c.as_str())).collect();
        let status = Command::new("sh").arg("-c").arg(handlers(&state, &ran, &[], &[], None)).status().unwrap();
        assert_eq!(status.code(), Some(LOCK_LOST));
        assert!(!std::path::Path::new(&marker).exists());
    }

    #[test]
    fn handlers_whose_connection_is_gone_run_to_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let state = held(&dir.path().display().to_string(), "site");
        let marker = dir.path().join("second ran").display().to_string();
        let second = format!("sleep 0.3; touch {}", quote(&marker));
        let ran = [("first", "sleep 0.2"), ("second", second.as_str())];
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(handlers(&state, &ran, &[], &[], None))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The connection drops: whatever the script prints next meets a
        // closed pipe (SIGPIPE, or SIGHUP from a terminal).
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(child.stdout.take());
        drop(child.stderr.take());
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
        let status = child.wait().unwrap();
        assert!(status.code().is_some(), "not ended by a signal: {status:?}");
        assert!(std::path::Path::new(&marker).exists(), "the handler after the drop ran");
    }

    #[test]
    fn the_holder_lets_the_lock_go_only_once_the_work_of_its_run_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFiles::new(&dir.path().display().to_string(), "site");
        let script = snapshot(&state, &[], &[], &[]);
        let mut holder = Command::new("sh")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = holder.stdin.take().unwrap();
        use std::io::{BufRead as _, Write as _};
        stdin.write_all(locked(&state, 5, &[], &script.text).as_bytes()).unwrap();
        let mut lines = std::io::BufReader::new(holder.stdout.take().unwrap()).lines();
        assert!(lines.any(|l| l.unwrap() == end_line(&script.token)));
        assert_eq!(
            std::fs::read_to_string(format!("{}/lock.owner", state.dir())).unwrap(),
            format!("{}\n", state.token)
        );
        // A handler of the run, still going when the controller goes away.
        let work = format!("{}sleep 1.5; echo done", work_lock(&state));
        let work = Command::new("sh")
            .arg("-c")
            .arg(format!("state={}\n{work}", quote(state.dir())))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let started = std::time::Instant::now();
        drop(stdin);
        assert!(holder.wait().unwrap().success());
        assert!(started.elapsed().as_secs_f64() > 0.8, "the holder waited for the work");
        assert_eq!(work.wait_with_output().unwrap().stdout, b"done\n");
        assert_eq!(std::fs::read_to_string(format!("{}/lock.owner", state.dir())).unwrap(), "", "no run owns it now");
        let lock = std::fs::File::open(format!("{}/lock", state.dir())).unwrap();
        assert!(lock.try_lock().is_ok(), "the lock is free");
    }

    #[test]
    fn leftovers_of_a_killed_run_are_removed_under_the_lock_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let state = held(&dir.path().join("state").display().to_string(), "site");
        let managed = dir.path().join("etc");
        std::fs::create_dir_all(&managed).unwrap();
        std::fs::create_dir_all(state.dir()).unwrap();
        for left in ["etc/.sentry-provision.123.0", "state/.pending.9"] {
            std::fs::write(dir.path().join(left), "half").unwrap();
        }
        std::fs::write(managed.join("kept.conf"), "x").unwrap();
        let folder = managed.display().to_string();
        let script = snapshot(&state, &[], &[], &[]);
        sh(locked(&state, 5, &[folder.as_str()], &script.text));
        let names = |dir: &std::path::Path| -> Vec<String> {
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
        };
        assert_eq!(names(&managed), ["kept.conf"]);
        let mut kept = names(std::path::Path::new(state.dir()));
        kept.sort();
        assert_eq!(
            kept,
            [".checked", "key", "lock", "lock.owner", "lock.work"],
            "the folder's check and the host's secret for fingerprints are made once and kept"
        );
    }

    #[test]
    fn an_unreadable_file_is_reported_by_name() {
        let paths = ["/etc/redis/redis.conf"];
        let stdout = b"ERROR 0\nEND t\n";
        assert_eq!(parse_snapshot(stdout, &paths, &[], "t").unwrap_err(), "cannot read /etc/redis/redis.conf");
    }

    #[test]
    fn a_file_that_changes_size_while_read_fails_the_snapshot_rather_than_misplacing_bytes() {
        let paths = ["/a", "/b"];
        let framed = |metas: &str, bytes: &str| {
            format!("FILES 0 1\n{metas}CONTENT t\n{bytes}\nCONTENT-END t\nEND t\n").into_bytes()
        };
        let both = "META 644 root root 3\nMETA 600 root root 4\n";
        assert!(parse_snapshot(&framed(both, "abcdefg"), &paths, &[], "t").is_ok());
        // stat saw 3 + 4 bytes; cat then read 3 + 2, or 3 + 6.
        assert_eq!(parse_snapshot(&framed(both, "abcde"), &paths, &[], "t").unwrap_err(), CHANGED_WHILE_READ);
        assert_eq!(parse_snapshot(&framed(both, "abcdefgh\n"), &paths, &[], "t").unwrap_err(), CHANGED_WHILE_READ);
        // A file gone between the test and stat: one META short.
        assert_eq!(
            parse_snapshot(&framed("META 644 root root 3\n", "abc"), &paths, &[], "t").unwrap_err(),
            CHANGED_WHILE_READ
        );
        // A link gone between the test and readlink: one target short.
        let stdout = b"LINKS 0 1\n/etc/x\0\nLINKS-END t\nEND t\n";
        assert_eq!(parse_snapshot(stdout, &paths, &[], "t").unwrap_err(), CHANGED_WHILE_READ);
    }

    #[test]
    fn several_files_read_in_one_pass_come_back_each_with_its_own_bytes_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, empty) = (dir.path().join("a"), dir.path().join("b c"), dir.path().join("empty"));
        std::fs::write(&a, b"first\n").unwrap();
        std::fs::write(&b, b"\0second\xff").unwrap();
        std::fs::write(&empty, b"").unwrap();
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [(&a, 0o644), (&empty, 0o644), (&b, 0o600)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let names: Vec<String> = [&a, &empty, &b].iter().map(|p| p.display().to_string()).collect();
        let paths: Vec<&str> = names.iter().map(String::as_str).collect();
        let out = read_snapshot(&test_state(), &paths, &[]).unwrap();
        let content_and_mode = |path: &str| match &out.snapshot.entries[path] {
            Entry::File { content, mode, .. } => (content.to_vec(), *mode),
            other => panic!("{other:?}"),
        };
        assert_eq!(content_and_mode(paths[0]), (b"first\n".to_vec(), 0o644));
        assert_eq!(content_and_mode(paths[1]), (Vec::new(), 0o644));
        assert_eq!(content_and_mode(paths[2]), (b"\0second\xff".to_vec(), 0o600));
    }

    #[test]
    fn folders_are_named_as_dirname_names_them() {
        for (path, folder) in [
            ("/etc/redis/redis.conf", "/etc/redis"),
            ("/x", "/"),
            ("/", "/"),
            ("/a//b/", "/a"),
            ("name", "."),
            ("a/b", "a"),
        ] {
            assert_eq!(folder_of(path), folder, "{path}");
        }
    }
}
