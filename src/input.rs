//! Reading the user's input files (inventory, playbook, templates, vars):
//! text only, UTF-8 only, and of a sane size, with errors that name the file.

use std::path::Path;

/// Larger than any real playbook, inventory or template; a file this big is a mistake.
pub const MAX_INPUT_BYTES: u64 = 8 * 1024 * 1024;

pub fn read_text(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if metadata.is_dir() {
        return Err(format!("{}: is a folder, not a file", path.display()));
    }
    if metadata.len() > MAX_INPUT_BYTES {
        return Err(format!(
            "{}: {} bytes is too large for an input file (at most {MAX_INPUT_BYTES})",
            path.display(),
            metadata.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.as_bytes()[..at]);
        let line = text.matches('\n').count() + 1;
        let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{column}: not valid UTF-8 text", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_reported_with_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yml");
        std::fs::write(&path, b"a: 1\nb: \xff\n").unwrap();
        let err = read_text(&path).unwrap_err();
        assert!(err.ends_with("p.yml:2:4: not valid UTF-8 text"), "{err}");
    }

    #[test]
    fn a_huge_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.yml");
        std::fs::File::create(&path).unwrap().set_len(MAX_INPUT_BYTES + 1).unwrap();
        assert!(read_text(&path).unwrap_err().contains("too large"));
    }
}
