//! "Did you mean …?": the nearest known name to a misspelt one.

/// "; did you mean `x`?" for the known name closest to `wanted`, if any is close.
pub fn nearest<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> String {
    let best = known.map(|k| (edit_distance(wanted, k), k)).min();
    match best {
        Some((distance, name)) if distance <= wanted.chars().count().max(3) / 3 + 1 => {
            format!("; did you mean `{name}`?")
        }
        _ => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Adds a suggestion to serde's "unknown field `x`, expected one of `a`, `b`".
pub fn unknown_field_hint(message: &str) -> String {
    let Some(rest) = message.split("unknown field `").nth(1) else { return String::new() };
    let Some((wanted, expected)) = rest.split_once('`') else { return String::new() };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    nearest(wanted, known.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_known_name_is_suggested_when_close() {
        assert_eq!(nearest("sentri", ["sentry", "web"].into_iter()), "; did you mean `sentry`?");
        assert_eq!(nearest("database", ["sentry", "web"].into_iter()), "");
    }

    #[test]
    fn a_misspelt_key_names_the_right_one() {
        let message = "unknown field `hostz`, expected one of `name`, `hosts`, `vars`";
        assert_eq!(unknown_field_hint(message), "; did you mean `hosts`?");
    }
}
