//! Unified diffs of a managed file's old and new content (similar), with
//! binary content summarised rather than dumped.

use similar::TextDiff;

/// A unified diff between two versions of `path`; `None` for "did not exist".
pub fn unified(path: &str, old: Option<&[u8]>, new: Option<&[u8]>, context: usize) -> String {
    let (old_text, new_text) = match (text_of(old), text_of(new)) {
        (Some(o), Some(n)) => (o, n),
        _ => {
            return format!("binary file {path}: {} -> {}\n", size_of(old), size_of(new));
        }
    };
    let diff = TextDiff::from_lines(old_text, new_text);
    let old_name = if old.is_some() { format!("a{path}") } else { "/dev/null".to_owned() };
    let new_name = if new.is_some() { format!("b{path}") } else { "/dev/null".to_owned() };
    let text = diff.unified_diff().context_radius(context).header(&old_name, &new_name).to_string();
    let lines = text.lines().count();
    if lines > MAX_DIFF_LINES {
        let added = text.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")).count();
        let removed = text.lines().filter(|l| l.starts_with('-') && !l.starts_with("---")).count();
        return format!("large change to {path}: +{added} -{removed} lines (a {lines}-line diff, not shown)\n");
    }
    text
}

/// Diffs longer than this are summarised: they would bury the rest.
const MAX_DIFF_LINES: usize = 400;

fn text_of(bytes: Option<&[u8]>) -> Option<&str> {
    match bytes {
        None => Some(""),
        Some(b) if b.contains(&0) => None,
        Some(b) => std::str::from_utf8(b).ok(),
    }
}

fn size_of(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(|| "absent".to_owned(), |b| format!("{} bytes", b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_diffed_against_nothing() {
        let diff = unified("/etc/x.conf", None, Some(b"a\n"), 3);
        assert!(diff.starts_with("--- /dev/null\n+++ b/etc/x.conf\n"), "{diff}");
        assert!(diff.contains("+a\n"), "{diff}");
    }

    #[test]
    fn a_changed_line_shows_as_removed_and_added_with_context() {
        let diff = unified("/r.conf", Some(b"a\nsave 900 1\nb\n"), Some(b"a\nsave \"\"\nb\n"), 1);
        assert!(diff.contains("@@ -1,3 +1,3 @@"), "{diff}");
        assert!(diff.contains("-save 900 1\n+save \"\"\n"), "{diff}");
    }

    #[test]
    fn a_huge_change_is_summarised() {
        let old: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let new: String = (0..1000).map(|i| format!("row {i}\n")).collect();
        let diff = unified("/big", Some(old.as_bytes()), Some(new.as_bytes()), 3);
        assert!(diff.starts_with("large change to /big: +1000 -1000 lines"), "{diff}");
    }

    #[test]
    fn binary_content_is_summarised() {
        let diff = unified("/bin/x", Some(b"\0\x01"), Some(b"\0"), 3);
        assert_eq!(diff, "binary file /bin/x: 2 bytes -> 1 bytes\n");
    }
}
