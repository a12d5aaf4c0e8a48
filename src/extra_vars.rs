//! `-e` extra variables: `key=value` pairs, `@file`s and `{...}` mappings
//! read into variables. Both the command line and the run layer read them,
//! so they live below both (in cli.rs they made an import cycle with run).

use crate::inventory::Vars;

/// `-e key=value ...`, `-e @vars.yml`, or `-e '{"key": "value"}'`.
///
/// Like Ansible, one `-e` may hold several `key=value` pairs separated by
/// whitespace, a quoted value keeps its spaces (`-e 'a="x y" b=2'`) and
/// stays text. Unlike Ansible, an unquoted value that reads back exactly as
/// a number or a boolean (`4`, `1.5`, `true`) is one, so `-e numprocs=8`
/// compares and counts as a number in templates; `042` or `1e3` stay text.
pub fn parse_extra_vars(items: &[String]) -> Result<Vars, String> {
    let mut vars = Vars::new();
    for item in items {
        if let Some(file) = item.strip_prefix('@') {
            let loaded =
                crate::inventory::read_vars_file(std::path::Path::new(file)).map_err(|e| format!("-e {item}: {e}"))?;
            vars.extend(loaded);
        } else if item.trim_start().starts_with('{') {
            match serde_yaml::from_str::<serde_json::Value>(item) {
                Ok(serde_json::Value::Object(map)) => vars.extend(map),
                _ => return Err(format!("-e `{item}`: not a mapping of variables")),
            }
        } else {
            let words = split_key_values(item).map_err(|e| format!("-e `{item}`: {e}"))?;
            if words.is_empty() {
                return Err(format!("-e `{item}`: expected KEY=VALUE, @FILE or a {{...}} mapping"));
            }
            for word in words {
                let (key, value) = word.split_once('=').ok_or_else(|| {
                    let hint =
                        if word.starts_with(['/', '.']) { " (a file is named with @, as in @vars.yml)" } else { "" };
                    format!("-e `{item}`: expected KEY=VALUE, @FILE or a {{...}} mapping; `{word}` has no `=`{hint}")
                })?;
                let key = key.trim();
                if key.is_empty()
                    || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || key.starts_with(|c: char| c.is_ascii_digit())
                {
                    return Err(format!("-e `{item}`: `{key}` is not a variable name (letters, digits, _)"));
                }
                vars.insert(key.to_owned(), extra_value(value));
            }
        }
    }
    Ok(vars)
}

/// Splits `a=1 b="x y"` on whitespace outside quotes and `{{ }}`, `{% %}`,
/// as Ansible's `split_args` does; the quotes stay in the words.
fn split_key_values(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut braces = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                word.push(c);
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                continue;
            }
            '"' | '\'' if quote.is_none() => quote = Some(c),
            c if Some(c) == quote => quote = None,
            '{' if quote.is_none() && matches!(chars.peek(), Some('{' | '%' | '#')) => braces += 1,
            '}' | '%' | '#' if quote.is_none() && braces > 0 && chars.peek() == Some(&'}') => {
                braces -= 1;
                word.push(c);
                word.push(chars.next().expect("peeked"));
                continue;
            }
            c if c.is_whitespace() && quote.is_none() && braces == 0 => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                continue;
            }
            _ => {}
        }
        word.push(c);
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

/// A value quoted whole is the text inside; an unquoted one is a number or a
/// boolean when it reads back exactly as written, else text.
fn extra_value(value: &str) -> serde_json::Value {
    let bytes = value.as_bytes();
    if bytes.len() >= 2 && matches!(bytes[0], b'"' | b'\'') && bytes[0] == bytes[bytes.len() - 1] {
        return serde_json::Value::String(value[1..value.len() - 1].to_owned());
    }
    match serde_yaml::from_str::<serde_json::Value>(value) {
        Ok(v @ serde_json::Value::Bool(_)) => v,
        Ok(serde_json::Value::Number(n)) if n.to_string() == value => serde_json::Value::Number(n),
        _ => serde_json::Value::String(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_variables_read_numbers_as_numbers_and_the_rest_as_text() {
        let vars =
            parse_extra_vars(&["n=4".into(), "maxmemory=2gb".into(), "flag=true".into(), "empty=".into()]).unwrap();
        assert_eq!(vars["n"], 4);
        assert_eq!(vars["maxmemory"], "2gb");
        assert_eq!(vars["flag"], true);
        assert_eq!(vars["empty"], "");
    }

    #[test]
    fn a_malformed_extra_variable_names_itself() {
        assert!(parse_extra_vars(&["novalue".into()]).unwrap_err().contains("`novalue`"));
        assert!(parse_extra_vars(&["bad-key=1".into()]).unwrap_err().contains("`bad-key`"));
        assert!(parse_extra_vars(&["a='open".into()]).unwrap_err().contains("unterminated"));
        assert!(parse_extra_vars(&["./vars.yml".into()]).unwrap_err().contains("@vars.yml"));
    }

    #[test]
    fn one_extra_variable_flag_holds_several_pairs_split_on_whitespace() {
        let vars = parse_extra_vars(&["a=1 b=2".into()]).unwrap();
        assert_eq!(vars.len(), 2);
        assert_eq!(vars["a"], 1);
        assert_eq!(vars["b"], 2);
    }

    #[test]
    fn quoted_extra_values_keep_their_spaces_and_stay_text() {
        let vars = parse_extra_vars(&[r#"a="x y" b=2 c='4' d=x"y z""#.into()]).unwrap();
        assert_eq!(vars["a"], "x y");
        assert_eq!(vars["b"], 2);
        assert_eq!(vars["c"], "4");
        assert_eq!(vars["d"], r#"x"y z""#);
    }

    #[test]
    fn template_expressions_in_extra_values_are_one_word() {
        let vars = parse_extra_vars(&["greeting={{ 'hello' ~ name }} n=1".into()]).unwrap();
        assert_eq!(vars["greeting"], "{{ 'hello' ~ name }}");
        assert_eq!(vars["n"], 1);
    }

    #[test]
    fn extra_numbers_are_numbers_only_when_they_read_back_as_written() {
        let vars = parse_extra_vars(&["a=042 b=1e3 c=-3 d=1.5 e=True".into()]).unwrap();
        assert_eq!(vars["a"], "042");
        assert_eq!(vars["b"], "1e3");
        assert_eq!(vars["c"], -3);
        assert_eq!(vars["d"], 1.5);
        assert_eq!(vars["e"], true);
    }

    #[test]
    fn extra_variable_files_and_mappings_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vars.yml");
        std::fs::write(&file, "from_file: 1\n").unwrap();
        let vars = parse_extra_vars(&[format!("@{}", file.display()), r#"{"j": [1, 2]}"#.into()]).unwrap();
        assert_eq!(vars["from_file"], 1);
        assert_eq!(vars["j"], serde_json::json!([1, 2]));
    }
}
