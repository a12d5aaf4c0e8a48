//! Python literals, the way Ansible reads an INI inventory's values: it
//! hands each to `ast.literal_eval` and keeps the text when that fails. So
//! `42` is a number but `042` stays the text "042" (Python refuses leading
//! zeros), `True` is a boolean but `true` and `yes` are text, `[1, 2]` is a
//! list and `'x'` is the text inside the quotes.
//!
//! What `literal_eval` reads and JSON cannot hold (complex numbers, integers
//! beyond 64 bits, infinities) is kept as the text, as written.

use serde_json::{Map, Number, Value};

/// The value of `text` as Ansible's INI parser makes it.
pub fn value(text: &str) -> Value {
    let mut parser = Parser { chars: text.trim_start_matches([' ', '\t']).chars().collect(), at: 0 };
    parser
        .expression()
        .filter(|_| {
            parser.skip_blank();
            parser.at == parser.chars.len()
        })
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    /// Skips spaces and a `#` comment, which runs to the end of the line.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c == '#' {
                self.at = self.chars.len();
            } else if c.is_whitespace() {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_blank();
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expression(&mut self) -> Option<Value> {
        self.skip_blank();
        match self.peek()? {
            // literal_eval allows one sign, and only before a number.
            sign @ ('-' | '+') => {
                self.at += 1;
                let number = self.signed_operand()?;
                if sign == '+' {
                    return Some(number);
                }
                let Value::Number(n) = number else { return None };
                Some(match n.as_i64() {
                    Some(i) => Value::from(i.checked_neg()?),
                    None => Value::Number(Number::from_f64(-n.as_f64()?)?),
                })
            }
            '[' => {
                self.at += 1;
                self.sequence(']').map(Value::Array)
            }
            '(' => {
                self.at += 1;
                if self.eat(')') {
                    return Some(Value::Array(Vec::new()));
                }
                let first = self.expression()?;
                if self.eat(')') {
                    return Some(first);
                }
                if !self.eat(',') {
                    return None;
                }
                let mut items = vec![first];
                items.extend(self.sequence(')')?);
                Some(Value::Array(items))
            }
            '{' => {
                self.at += 1;
                self.mapping_or_set()
            }
            '.' if self.peek_at(1) == Some('.') && self.peek_at(2) == Some('.') => {
                self.at += 3;
                Some(Value::String("...".into()))
            }
            c if c.is_ascii_digit() || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) => {
                self.number()
            }
            _ => self.word_or_string(),
        }
    }

    /// After a sign: a number, possibly in parentheses (`-(1)` is -1).
    fn signed_operand(&mut self) -> Option<Value> {
        self.skip_blank();
        if self.peek() == Some('(') {
            self.at += 1;
            let inner = self.signed_operand()?;
            return self.eat(')').then_some(inner);
        }
        match self.peek()? {
            c if c.is_ascii_digit() || c == '.' => self.number(),
            _ => None,
        }
    }

    /// Items up to `close`, separated by commas, a trailing comma allowed.
    fn sequence(&mut self, close: char) -> Option<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.expression()?);
            if !self.eat(',') {
                return self.eat(close).then_some(items);
            }
        }
    }

    /// `{}` and `{k: v, ...}` are mappings; `{a, b}` is a set, a list here.
    fn mapping_or_set(&mut self) -> Option<Value> {
        if self.eat('}') {
            return Some(Value::Object(Map::new()));
        }
        let first = self.expression()?;
        if !self.eat(':') {
            let mut items = vec![first];
            if self.eat(',') {
                items.extend(self.sequence('}')?);
            } else if !self.eat('}') {
                return None;
            }
            let mut unique: Vec<Value> = Vec::new();
            for item in items {
                if !unique.contains(&item) {
                    unique.push(item);
                }
            }
            return Some(Value::Array(unique));
        }
        let mut map = Map::new();
        let mut key = first;
        loop {
            let value = self.expression()?;
            map.insert(key_text(&key)?, value);
            if self.eat('}') {
                return Some(Value::Object(map));
            }
            if !self.eat(',') {
                return None;
            }
            if self.eat('}') {
                return Some(Value::Object(map));
            }
            key = self.expression()?;
            if !self.eat(':') {
                return None;
            }
        }
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.at;
        let digits_from = |p: &mut Parser, ok: fn(char) -> bool| {
            // Digits with single underscores between them: `1_000`.
            let from = p.at;
            while let Some(c) = p.peek() {
                if ok(c) || (c == '_' && p.at > from && p.peek_at(1).is_some_and(ok)) {
                    p.at += 1;
                } else {
                    break;
                }
            }
            p.at > from
        };
        let radix = match (self.peek(), self.peek_at(1).map(|c| c.to_ascii_lowercase())) {
            (Some('0'), Some('x')) => Some(16),
            (Some('0'), Some('o')) => Some(8),
            (Some('0'), Some('b')) => Some(2),
            _ => None,
        };
        let value = if let Some(radix) = radix {
            self.at += 2;
            if self.peek() == Some('_') {
                self.at += 1;
            }
            let from = self.at;
            let ok: fn(char) -> bool = match radix {
                16 => |c| c.is_ascii_hexdigit(),
                8 => |c| ('0'..='7').contains(&c),
                _ => |c| c == '0' || c == '1',
            };
            if !digits_from(self, ok) {
                return None;
            }
            let text: String = self.chars[from..self.at].iter().filter(|c| **c != '_').collect();
            Value::from(i64::from_str_radix(&text, radix).ok()?)
        } else {
            let int_part = digits_from(self, |c| c.is_ascii_digit());
            let mut float = false;
            if self.peek() == Some('.') {
                self.at += 1;
                float = true;
                digits_from(self, |c| c.is_ascii_digit());
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                let mark = self.at;
                self.at += 1;
                if matches!(self.peek(), Some('+' | '-')) {
                    self.at += 1;
                }
                if digits_from(self, |c| c.is_ascii_digit()) {
                    float = true;
                } else {
                    self.at = mark;
                }
            }
            if !int_part && !float {
                return None;
            }
            let text: String = self.chars[start..self.at].iter().filter(|c| **c != '_').collect();
            if float {
                Value::Number(Number::from_f64(text.parse::<f64>().ok().filter(|f| f.is_finite())?)?)
            } else {
                // Python allows leading zeros only in a zero: `00` but not `042`.
                if text.len() > 1 && text.starts_with('0') && text.bytes().any(|b| b != b'0') {
                    return None;
                }
                Value::from(text.parse::<i64>().ok()?)
            }
        };
        // A number runs into no letter, digit or dot: `1j` (complex), `1.5.2`
        // and `10.0.0.1` are not numbers here.
        match self.peek() {
            Some(c) if c.is_alphanumeric() || c == '_' || c == '.' => None,
            _ => Some(value),
        }
    }

    /// `True`, `False`, `None`, or string literals, adjacent ones joined.
    fn word_or_string(&mut self) -> Option<Value> {
        let from = self.at;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.at += 1;
        }
        let word: String = self.chars[from..self.at].iter().collect();
        match (word.as_str(), self.peek()) {
            ("True", _) => return Some(Value::Bool(true)),
            ("False", _) => return Some(Value::Bool(false)),
            ("None", _) => return Some(Value::Null),
            (_, Some('\'' | '"')) => {}
            _ => return None,
        }
        self.at = from;
        let mut text = String::new();
        let mut bytes = None;
        loop {
            self.skip_blank();
            let from = self.at;
            while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                self.at += 1;
            }
            let prefix: String = self.chars[from..self.at].iter().map(|c| c.to_ascii_lowercase()).collect();
            let (raw, is_bytes) = match prefix.as_str() {
                "" | "u" => (false, false),
                "r" => (true, false),
                "b" => (false, true),
                "br" | "rb" => (true, true),
                _ if from == self.at => (false, false),
                _ => return None,
            };
            if !matches!(self.peek(), Some('\'' | '"')) {
                if text.is_empty() && bytes.is_none() {
                    return None;
                }
                self.at = from;
                return Some(Value::String(text));
            }
            // Python refuses to join bytes and text.
            if *bytes.get_or_insert(is_bytes) != is_bytes {
                return None;
            }
            text.push_str(&self.string(raw, is_bytes)?);
        }
    }

    /// One quoted literal, the cursor on its opening quote.
    fn string(&mut self, raw: bool, is_bytes: bool) -> Option<String> {
        let quote = self.peek()?;
        let triple = self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote);
        self.at += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            if c == quote && (!triple || (self.peek_at(1) == Some(quote) && self.peek_at(2) == Some(quote))) {
                self.at += if triple { 3 } else { 1 };
                return Some(out);
            }
            self.at += 1;
            if c != '\\' {
                out.push(c);
                continue;
            }
            let next = self.peek()?;
            self.at += 1;
            if raw {
                out.push('\\');
                out.push(next);
                continue;
            }
            let simple = match next {
                '\\' => Some('\\'),
                '\'' => Some('\''),
                '"' => Some('"'),
                'a' => Some('\x07'),
                'b' => Some('\x08'),
                'f' => Some('\x0c'),
                'n' => Some('\n'),
                'r' => Some('\r'),
                't' => Some('\t'),
                'v' => Some('\x0b'),
                _ => None,
            };
            if let Some(s) = simple {
                out.push(s);
                continue;
            }
            let hex = |p: &mut Parser, n: usize| {
                let digits: String = p.chars.get(p.at..p.at + n)?.iter().collect();
                if digits.len() != n || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                p.at += n;
                char::from_u32(u32::from_str_radix(&digits, 16).ok()?)
            };
            match next {
                '0'..='7' => {
                    let mut code = next.to_digit(8)?;
                    for _ in 0..2 {
                        match self.peek().and_then(|c| c.to_digit(8)) {
                            Some(d) => {
                                code = code * 8 + d;
                                self.at += 1;
                            }
                            None => break,
                        }
                    }
                    out.push(char::from_u32(code)?);
                }
                'x' => out.push(hex(self, 2)?),
                'u' if !is_bytes => out.push(hex(self, 4)?),
                'U' if !is_bytes => out.push(hex(self, 8)?),
                // `\N{name}` needs Unicode's names; not worth carrying.
                'N' if !is_bytes => return None,
                other => {
                    // Python keeps an unknown escape as written.
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }
}

/// A mapping key as JSON has it: text, or the key printed as Python's json does.
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".into()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each case as `ansible-inventory --list` (ansible-core 2.19) shows it.
    #[test]
    fn values_read_as_ansible_reads_them() {
        let cases = [
            ("042", json!("042")),
            ("42", json!(42)),
            ("00", json!(0)),
            ("-3", json!(-3)),
            ("+5", json!(5)),
            ("--3", json!("--3")),
            ("-(1)", json!(-1)),
            ("0x1f", json!(31)),
            ("-0x10", json!(-16)),
            ("0o17", json!(15)),
            ("0b101", json!(5)),
            ("1_000", json!(1000)),
            ("1__0", json!("1__0")),
            ("0_7", json!("0_7")),
            ("1.5", json!(1.5)),
            (".5", json!(0.5)),
            ("5.", json!(5.0)),
            ("1e3", json!(1000.0)),
            ("-1.5e-3", json!(-0.0015)),
            ("1.5.2", json!("1.5.2")),
            ("10.0.0.1", json!("10.0.0.1")),
            ("1j", json!("1j")),
            ("inf", json!("inf")),
            ("true", json!("true")),
            ("True", json!(true)),
            ("FALSE", json!("FALSE")),
            ("yes", json!("yes")),
            ("None", json!(null)),
            ("\"quoted\"", json!("quoted")),
            ("'x' 'y'", json!("xy")),
            ("'a\\nb'", json!("a\nb")),
            ("r'\\d'", json!("\\d")),
            ("b'x'", json!("x")),
            ("'\\x41\\u00e9'", json!("Aé")),
            ("[1,2]", json!([1, 2])),
            ("(1,2)", json!([1, 2])),
            ("(1,)", json!([1])),
            ("()", json!([])),
            ("{1,2}", json!([1, 2])),
            ("{'a': 1}", json!({"a": 1})),
            ("{'a': 1,}", json!({"a": 1})),
            ("{}", json!({})),
            ("[1, 'two', {'k': None}]", json!([1, "two", {"k": null}])),
            ("42 # a comment", json!(42)),
            ("a b # c", json!("a b # c")),
            ("foo=bar", json!("foo=bar")),
            ("[1,", json!("[1,")),
            ("1 + 2", json!("1 + 2")),
            ("", json!("")),
            ("...", json!("...")),
            ("-x", json!("-x")),
            ("1:2", json!("1:2")),
            ("#notcomment", json!("#notcomment")),
            ("/www/sentry/bin/sentry", json!("/www/sentry/bin/sentry")),
            ("2gb", json!("2gb")),
            ("ops@example.com", json!("ops@example.com")),
        ];
        for (text, want) in cases {
            assert_eq!(value(text), want, "{text:?}");
        }
    }

    #[test]
    fn what_json_cannot_hold_stays_text() {
        assert_eq!(value("99999999999999999999"), json!("99999999999999999999"));
        assert_eq!(value("1e400"), json!("1e400"));
    }
}
