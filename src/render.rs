//! The minijinja environment: Jinja2 syntax, strict undefined, no
//! auto-escaping, trailing newline kept. Templates are compiled once, up
//! front, so a syntax error stops the run before any host is touched.

use crate::random::random_u64;
use crate::vars::Vars;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, syntax::SyntaxConfig};
use serde_json::Value as Json;
use std::path::Path;

pub struct Renderer {
    env: Environment<'static>,
    /// The prefix of the names under which playbook strings are compiled
    /// and kept: every host renders the same strings (a probe is kilobytes
    /// of Perl), and compiling them cost more than rendering them. It is
    /// random, so that no value (a computed `include` name) can name one
    /// and have its text rendered as a template.
    strings: String,
}

/// Variables made ready for templates, once for all the templates of a
/// host's play: converting them costs more than rendering most strings
/// (the shipped playbook's variables hold a few kilobytes of scripts).
pub struct Scope(Value);

impl Scope {
    pub fn of(vars: &Vars) -> Scope {
        Scope(Value::from(minijinja::value::Serde(vars)))
    }
}

/// A template error with the file (or playbook field) and line it happened at.
pub fn describe(error: &minijinja::Error) -> String {
    let mut text = match (error.name(), error.line()) {
        (Some(name), Some(line)) => format!("{name}:{line}: {}", error.kind()),
        (Some(name), None) => format!("{name}: {}", error.kind()),
        _ => error.kind().to_string(),
    };
    if let Some(detail) = error.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(" ({cause})"));
        source = cause.source();
    }
    text
}

impl Renderer {
    /// Compiles each named template from `dir`; the names in errors are the
    /// paths as the user wrote them, joined to `dir`.
    pub fn new(dir: &Path, sources: &[&str]) -> Result<Renderer, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_syntax(
            SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .trim_blocks(true)
                .build()
                .expect("default delimiters are valid"),
        );
        env.add_filter("redis_bytes", redis_bytes);
        env.add_filter("quote", quote);
        let strings = format!("\0playbook string {:016x}{:016x}\0", random_u64(), random_u64());
        let prefix = strings.clone();
        env.set_loader(move |name| Ok(name.strip_prefix(prefix.as_str()).map(str::to_owned)));
        for source in sources {
            let path = dir.join(source);
            let text = crate::input::read_text(&path)?;
            env.add_template_owned(path.display().to_string(), text).map_err(|e| describe(&e))?;
        }
        Ok(Renderer { env, strings })
    }

    pub fn render_file(&self, dir: &Path, source: &str, scope: &Scope) -> Result<String, String> {
        let name = dir.join(source).display().to_string();
        let template = self.env.get_template(&name).map_err(|e| describe(&e))?;
        template.render(&scope.0).map_err(|e| describe(&e))
    }

    /// Renders a string from the playbook; `origin` names it in errors.
    pub fn render_str(&self, origin: &str, text: &str, scope: &Scope) -> Result<String, String> {
        if !is_template(text) {
            return Ok(text.to_owned());
        }
        match self.env.get_template(&format!("{}{text}", self.strings)).and_then(|t| t.render(&scope.0)) {
            Ok(rendered) => Ok(rendered),
            // Told again under the name of where the string is written, as
            // its error names it: rendering is the same every time.
            Err(_) => self.env.render_named_str(origin, text, &scope.0).map_err(|e| describe(&e)),
        }
    }

    /// Evaluates a `when:` expression to a boolean.
    pub fn test(&self, origin: &str, expression: &str, scope: &Scope) -> Result<bool, String> {
        let compiled = self.env.compile_expression(expression).map_err(|e| format!("{origin}: {}", describe(&e)))?;
        let value = compiled.eval(&scope.0).map_err(|e| format!("{origin}: {}", describe(&e)))?;
        Ok(value.is_true())
    }

    /// Renders variables whose values are templates (`"{{ facts.cpus * 3 }}"`)
    /// against the other variables. Each round renders every such variable
    /// from its text as written, against what the round before rendered
    /// (the others as written, at first), until a round renders them all
    /// as the one before did: so they may refer to each other in any way
    /// a template can (`set`, `with`, `include`), and what a variable
    /// renders to is a value, never a template again, so that a fact a host
    /// reports (`ID="{{ secret }}"` in its os-release) stays the text it
    /// is. A result that reads as an integer becomes a number.
    pub fn resolve_vars(&self, vars: &Vars) -> Result<Vars, String> {
        let written: Vec<(String, String)> = vars
            .iter()
            .filter_map(|(key, value)| {
                value.as_str().filter(|text| is_template(text)).map(|t| (key.clone(), t.to_owned()))
            })
            .collect();
        // One round is enough when no template can see another's value:
        // none names one, or includes a template that could.
        let names_another = written.iter().any(|(_, text)| {
            ["include", "import", "extends"].iter().any(|word| text.contains(word))
                || written.iter().any(|(other, _)| names(text, other))
        });
        let mut resolved = vars.clone();
        let mut changed: Vec<&str> = Vec::new();
        // A chain of n variables settles in n rounds; one more shows it has.
        for _ in 0..=written.len() {
            let scope = Scope::of(&resolved);
            changed.clear();
            for (key, text) in &written {
                let rendered = self.render_str(&format!("variable `{key}`"), text, &scope)?;
                let value = match rendered.trim().parse::<i64>() {
                    Ok(n) => Json::from(n),
                    Err(_) => Json::String(rendered),
                };
                if resolved.get(key) != Some(&value) {
                    changed.push(key);
                }
                resolved.insert(key.clone(), value);
            }
            if !names_another || changed.is_empty() {
                return Ok(resolved);
            }
        }
        Err(format!("variables refer to each other in a loop: {}", changed.join(", ")))
    }
}

/// Whether `text` mentions `name` as a word (it may not refer to it: a
/// mention is enough to look again).
fn names(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| !text[..at].ends_with(word) && !text[at + name.len()..].starts_with(word))
}

/// Redis' memory units (`1gb` = 1073741824, `1g` = 10^9, `100mb`, plain
/// bytes) as a number of bytes, to compare with what `CONFIG GET` answers.
fn redis_bytes(value: Value) -> Result<u64, minijinja::Error> {
    let text = value.to_string().trim().to_ascii_lowercase();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => u64::MAX,
    };
    number.parse::<u64>().ok().filter(|_| scale != u64::MAX).and_then(|n| n.checked_mul(scale)).ok_or_else(|| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("`{text}` is not a Redis memory size such as 1gb"),
        )
    })
}

/// A value as one word of a POSIX shell command, so that a variable meant as
/// data stays data (`-e 'x=a; rm -rf /'` is a strange value, not a second
/// command). As Ansible's `quote` (Python's `shlex.quote`): a word made only
/// of characters no shell treats specially (ASCII letters, digits and
/// `@%+=:,./-_`) stays bare, so that ordinary values (paths, numbers, names)
/// render as before; anything else, the empty string included, is put in
/// single quotes, inside which the shell reads every byte as it is but `'`,
/// written `'\''` (close, an escaped quote, reopen).
fn quote(value: Value) -> String {
    let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
    let bare = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !text.is_empty() && text.chars().all(bare) {
        return text;
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, Json)]) -> Vars {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn renderer_with(template: &str) -> (tempfile::TempDir, Renderer) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.j2"), template).unwrap();
        let renderer = Renderer::new(dir.path(), &["t.j2"]).unwrap();
        (dir, renderer)
    }

    #[test]
    fn the_trailing_newline_is_kept_and_nothing_is_escaped() {
        let (dir, r) = renderer_with("a <{{ x }}> & b\n");
        let out = r.render_file(dir.path(), "t.j2", &Scope::of(&vars(&[("x", "'\"".into())]))).unwrap();
        assert_eq!(out, "a <'\"> & b\n");
    }

    #[test]
    fn an_undefined_variable_is_an_error_naming_it() {
        let (dir, r) = renderer_with("{{ missing }}\n");
        let err = r.render_file(dir.path(), "t.j2", &Scope::of(&Vars::new())).unwrap_err();
        assert!(err.contains("t.j2:1"), "{err}");
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn a_syntax_error_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.j2"), "ok\n{% if %}\n").unwrap();
        let err = Renderer::new(dir.path(), &["t.j2"]).err().unwrap();
        assert!(err.contains("t.j2:2"), "{err}");
    }

    #[test]
    fn redis_memory_sizes_convert_to_bytes_as_redis_does() {
        let (_dir, r) = renderer_with("");
        let out = r
            .render_str(
                "t",
                "{{ '1gb' | redis_bytes }} {{ '1g' | redis_bytes }} {{ 512 | redis_bytes }}",
                &Scope::of(&Vars::new()),
            )
            .unwrap();
        assert_eq!(out, "1073741824 1000000000 512");
        assert!(
            r.render_str("t", "{{ 'lots' | redis_bytes }}", &Scope::of(&Vars::new())).unwrap_err().contains("lots")
        );
    }

    /// `printf %s WORD` run by `sh`, with WORD as the filter rendered it.
    fn through_sh(word: &str) -> Vec<u8> {
        let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {word}")).output().unwrap();
        assert!(out.status.success(), "sh -c 'printf %s {word}': {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    #[test]
    fn a_quoted_value_comes_back_from_the_shell_byte_for_byte() {
        let (_dir, r) = renderer_with("");
        for value in [
            "allkeys-lru; touch /tmp/pwned",
            "$(id)",
            "`id`",
            "a'b",
            "'",
            "''",
            "say \"hi\"",
            "back\\slash\\",
            "two\nlines\n",
            "*",
            "?",
            "[a-z]*",
            "~root",
            "a b\tc",
            "#comment",
            "x && y || z | w > v < u &",
            "",
            "caf\u{e9} \u{2603}",
        ] {
            let word = r.render_str("t", "{{ v | quote }}", &Scope::of(&vars(&[("v", value.into())]))).unwrap();
            assert_eq!(String::from_utf8(through_sh(&word)).unwrap(), value, "rendered as {word}");
        }
    }

    #[test]
    fn quote_leaves_plain_words_and_numbers_bare_and_quotes_the_empty_string() {
        let (_dir, r) = renderer_with("");
        let v = vars(&[("path", "/etc/redis/redis.conf".into()), ("n", 16.into()), ("empty", "".into())]);
        let out = r.render_str(
            "t",
            "{{ path | quote }} {{ n | quote }} {{ '1gb' | redis_bytes | quote }} {{ empty | quote }}",
            &Scope::of(&v),
        );
        assert_eq!(out.unwrap(), "/etc/redis/redis.conf 16 1073741824 ''");
        assert_eq!(r.render_str("t", "{{ \"it's\" | quote }}", &Scope::of(&Vars::new())).unwrap(), "'it'\\''s'");
    }

    #[test]
    fn templated_variables_resolve_against_each_other_and_become_numbers() {
        let (_dir, r) = renderer_with("");
        let v = vars(&[("cpus", 4.into()), ("workers", "{{ cpus * 3 }}".into()), ("label", "w={{ workers }}".into())]);
        let out = r.resolve_vars(&v).unwrap();
        assert_eq!(out["workers"], 12);
        assert_eq!(out["label"], "w=12");
    }

    #[test]
    fn a_chain_of_eight_variables_resolves_and_a_loop_is_named() {
        let (_dir, r) = renderer_with("");
        let mut chain = vec![("v0".to_owned(), Json::from("a"))];
        chain.extend((1..=8).map(|i| (format!("v{i}"), Json::from(format!("{{{{ v{} }}}}x", i - 1)))));
        let out = r.resolve_vars(&chain.into_iter().collect()).unwrap();
        assert_eq!(out["v8"], "axxxxxxxx");
        let looped = vars(&[("a", "{{ b }}".into()), ("b", "{{ a }}".into()), ("c", "{{ 1 }}".into())]);
        let err = r.resolve_vars(&looped).unwrap_err();
        assert!(err.ends_with("in a loop: a, b"), "{err}");
        let itself = vars(&[("a", "{{ a }}x".into())]);
        assert!(r.resolve_vars(&itself).unwrap_err().ends_with("in a loop: a"));
    }

    #[test]
    fn variables_named_through_set_with_filter_blocks_and_dead_branches_resolve() {
        let (_dir, r) = renderer_with("");
        let b = ("b", Json::from("{{ 'B' ~ 1 }}"));
        for (a, expected) in [
            ("{% set b = b %}{{ b }}", "B1"),
            ("{% set c %}[{{ b }}]{% endset %}{{ c }}", "[B1]"),
            ("{% with c = b %}{{ c }}{% endwith %}", "B1"),
            ("{% filter replace('x', b) %}x{% endfilter %}", "B1"),
        ] {
            let out = r.resolve_vars(&vars(&[("a", a.into()), b.clone()])).unwrap();
            assert_eq!(out["a"], expected, "{a}");
        }
        let dead = vars(&[("a", "{% if false %}{{ b }}{% endif %}ok".into()), ("b", "{{ a }}".into())]);
        let out = r.resolve_vars(&dead).unwrap();
        assert_eq!((&out["a"], &out["b"]), (&Json::from("ok"), &Json::from("ok")), "no loop where none runs");
        let looped = vars(&[("a", "{% set b = b %}{{ b }}".into()), ("b", "{% set a = a %}{{ a }}".into())]);
        assert!(r.resolve_vars(&looped).is_err(), "a loop through set is a loop");
    }

    #[test]
    fn what_a_variable_renders_to_is_not_rendered_again_and_a_length_is_of_the_value() {
        let (_dir, r) = renderer_with("");
        let facts = serde_json::json!({"os_id": "{{ secret }}", "cpus": 4});
        let v = vars(&[
            ("facts", facts),
            ("secret", "s3cret".into()),
            ("os", "{{ facts.os_id }}".into()),
            ("width", "{{ name | length }}".into()),
            ("name", "{{ 'w' ~ facts.cpus }}".into()),
        ]);
        let out = r.resolve_vars(&v).unwrap();
        assert_eq!(out["os"], "{{ secret }}", "a host's fact is text, not a template");
        assert_eq!(out["name"], "w4");
        assert_eq!(out["width"], 2, "the length of what name renders to, not of its template");
    }

    #[test]
    fn a_string_compiled_once_renders_each_scope_and_its_errors_name_where_it_is_written() {
        let (_dir, r) = renderer_with("");
        let text = "{{ name }} has {{ cpus * 2 }}";
        for (name, cpus) in [("a", 1), ("b", 4), ("a", 1)] {
            let scope = Scope::of(&vars(&[("name", name.into()), ("cpus", cpus.into())]));
            assert_eq!(r.render_str("field", text, &scope).unwrap(), format!("{name} has {}", cpus * 2));
        }
        let err = r.render_str("step `x`: dest", text, &Scope::of(&vars(&[("name", "a".into())]))).unwrap_err();
        assert!(err.starts_with("step `x`: dest:1: ") && err.contains("`cpus` is undefined"), "{err}");
        let err = r.render_str("step `y`: line", "{{ name ", &Scope::of(&Vars::new())).unwrap_err();
        assert!(err.starts_with("step `y`: line:1: syntax error"), "{err}");
    }

    #[test]
    fn no_template_reaches_a_playbook_string_by_a_name_it_could_write() {
        let (dir, r) = renderer_with("{% include name %}");
        let text = "pw={{ pw }}";
        let scope = |name: &str| Scope::of(&vars(&[("pw", "hunter2".into()), ("name", name.into())]));
        assert_eq!(r.render_str("field", text, &scope("x")).unwrap(), "pw=hunter2");
        for name in ["x".to_owned(), format!("\0playbook string\0{text}")] {
            let err = r.render_file(dir.path(), "t.j2", &scope(&name)).unwrap_err();
            assert!(err.contains("not found"), "{name:?}: {err}");
        }
    }
}
