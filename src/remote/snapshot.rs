//! The first round trip: one read-only script (`snapshot.sh`, run under
//! the host's lock by `lock.sh` on an apply) that prints the host's facts,
//! every managed path (content, mode, owner; a link's target), the files
//! each search pattern finds, which `unless` guards pass, the handlers
//! still owed and the record of the last apply; and its parser.
//!
//! File contents come back as they are, not encoded (an encoder is one more
//! process on every host): the token, which the host cannot know before the
//! script arrives, marks where they end, and the script's last line is
//! [`end_line`]. A file holding a line `END` ends nothing.

use super::probes::{PROBES_SH, one_perl_on_stdin, probes_by_kind};
use super::shell::{PRELUDE, Word, assign, call, call_with_command};
use super::state::{StateFiles, folder_of, owed_handlers};
use super::wire::{Printed, end_line, ended_early};
use crate::plan::{Entry, Found, Snapshot};
use crate::random::random_u64;
use bytes::Bytes;
use std::collections::BTreeMap;

const SNAPSHOT_SH: &str = include_str!("snapshot.sh");

/// Facts are what templates may use as `facts.*`.
pub const TOOLS: &[&str] = &["redis-cli", "nginx", "supervisorctl", "python3", "systemctl", "sudo", "uwsgi"];

/// A snapshot script and the token that frames the raw bytes it prints.
pub struct SnapshotScript {
    pub text: String,
    pub token: String,
}

/// The snapshot: facts, then each path, then the files each search pattern
/// finds, then `unless` guards, then the handlers still owed and the record
/// of the last apply.
pub fn snapshot(state: &StateFiles, paths: &[&str], patterns: &[&str], guards: &[(usize, &str)]) -> SnapshotScript {
    snapshot_then_probes(state, paths, patterns, guards, &[])
}

/// The snapshot, and the live probes after it in the same round trip (a
/// drift pass that writes nothing): the Perl ones in the snapshot's one
/// perl, the others after the snapshot, which runs in a subshell so that
/// its variables and functions end with it and they start as
/// [`probes`](super::probes()) starts them.
pub fn snapshot_then_probes(
    state: &StateFiles,
    paths: &[&str],
    patterns: &[&str],
    guards: &[(usize, &str)],
    probes: &[&str],
) -> SnapshotScript {
    let token = format!("{:016x}", random_u64());
    let (in_perl, probe_calls) = probes_by_kind(probes);
    let mut s = String::new();
    if !probes.is_empty() {
        s.push_str(PRELUDE);
        s.push_str(PROBES_SH);
        s.push_str("(\n");
    }
    s.push_str(PRELUDE);
    s.push_str(&state.shell());
    assign(&mut s, &[("token", Word::raw(&token))]);
    s.push_str(SNAPSHOT_SH);
    let tools: Vec<Word> = TOOLS.iter().map(|tool| Word::raw(*tool)).collect();
    call(&mut s, "tools", &tools);
    for (i, path) in paths.iter().enumerate() {
        s.push_str(&format!(
            "p={}; kind {i}; case $? in 0) set -- \"$@\" \"$p\" ;; 1) set -- \"$p\" \"$@\" ;; esac\n",
            Word::quoted(path)
        ));
    }
    for (i, pattern) in patterns.iter().enumerate() {
        s.push_str(&format!(
            "for f in {}; do found {i}; case $? in 0) set -- \"$@\" \"$f\" ;; 1) set -- \"$f\" \"$@\" \"$f\" ;; esac; done\n",
            Word::glob(pattern)
        ));
    }
    for (index, cmd) in guards {
        call_with_command(&mut s, "guard", &[Word::from(*index)], cmd);
    }
    let indexes: Vec<String> = in_perl.iter().map(|(i, _)| i.to_string()).collect();
    assign(&mut s, &[("perl_probes", Word::raw(format!("'{}'", indexes.join(" "))))]);
    s.push_str("send \"$@\"");
    s.push_str(&one_perl_on_stdin(&in_perl));
    if !probes.is_empty() {
        s.push_str(") || exit\n");
        s.push_str(&probe_calls);
        s.push_str("echo END\n");
    }
    SnapshotScript { text: s, token }
}

pub(super) const CHANGED_WHILE_READ: &str = "a managed file changed while the snapshot read it; run again";

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
    /// Where what the script printed after the snapshot's end line begins
    /// (the probes of a drift pass).
    pub after_end: usize,
}

pub fn parse_snapshot(stdout: &[u8], paths: &[&str], patterns: &[&str], token: &str) -> Result<SnapshotOutput, String> {
    let mut out = SnapshotOutput::default();
    let mut printed = Printed::new(stdout);
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
            out.after_end = stdout.len() - printed.remaining();
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
        return Err(ended_early("snapshot"));
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
        return Err(ended_early("snapshot"));
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
