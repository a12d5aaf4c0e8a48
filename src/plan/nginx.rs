//! The operator's own nginx vhost, switched to Sentry's uwsgi protocol in
//! place: the `proxy_pass` to Sentry's web address becomes the guide's
//! three lines, and every other byte (listen, TLS, server names, headers,
//! other locations, comments) stays as the operator wrote it. Pure: text in,
//! text out.

/// One `name args...;` or `name args... {` of an nginx file, with where it
/// stands in the text.
#[derive(Debug)]
struct Directive {
    name: String,
    args: Vec<String>,
    /// Byte offset of the name.
    start: usize,
    /// Byte offset just past the `;` (or the `{` of a block directive).
    end: usize,
    /// The block it is in: the index of its opening directive, `None` at the top.
    parent: Option<usize>,
}

/// Reads the directives of an nginx configuration: words, quoted strings,
/// `;`, `{`, `}` and `#` comments, as nginx tokenizes them. `None` when the
/// braces or quotes do not close (such a file is not nginx's to load, and
/// not ours to edit).
fn directives(text: &str) -> Option<Vec<Directive>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // A `#` at the start of a word starts a comment (one inside a
            // word is taken by the word).
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_whitespace() => i += 1,
            b';' | b'{' => {
                let name = words.first()?.clone();
                let directive =
                    Directive { name, args: words.split_off(1), start, end: i + 1, parent: open.last().copied() };
                words.clear();
                if bytes[i] == b'{' {
                    open.push(found.len());
                }
                found.push(directive);
                i += 1;
            }
            b'}' => {
                if !words.is_empty() {
                    return None;
                }
                open.pop()?;
                i += 1;
            }
            quote @ (b'"' | b'\'') => {
                if words.is_empty() {
                    start = i;
                }
                let mut word = String::new();
                i += 1;
                loop {
                    let c = *bytes.get(i)?;
                    if c == quote {
                        break;
                    }
                    if c == b'\\' && i + 1 < bytes.len() {
                        i += 1;
                    }
                    let next = text[i..].chars().next()?;
                    word.push(next);
                    i += next.len_utf8();
                }
                i += 1;
                words.push(word);
            }
            _ => {
                if words.is_empty() {
                    start = i;
                }
                let end = word_end(text, i);
                words.push(text[i..end].to_owned());
                i = end;
            }
        }
    }
    (open.is_empty() && words.is_empty()).then_some(found)
}

/// Where a bare word starting at `i` ends: at whitespace, `;`, `{` or `}`,
/// except that a variable written `${name}` is part of the word, as nginx
/// reads it.
fn word_end(text: &str, mut i: usize) -> usize {
    let bytes = text.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                i = text[i..].find('}').map_or(text.len(), |n| i + n + 1);
            }
            c if c.is_ascii_whitespace() || matches!(c, b';' | b'{' | b'}') => return i,
            _ => i += 1,
        }
    }
    i
}

/// Sentry web's address as nginx may name it: `localhost` and `127.0.0.1`
/// are one host to the operator who wrote either.
fn same_address(written: &str, upstream: &str) -> bool {
    let split = |address: &str| -> Option<(String, String)> {
        let (host, port) = address.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let host = if matches!(host.as_str(), "localhost" | "::1") { "127.0.0.1".to_owned() } else { host };
        Some((host, port.to_owned()))
    };
    split(written).is_some_and(|w| split(upstream).is_some_and(|u| w == u))
}

/// `http://HOST:PORT` or `http://HOST:PORT/`: a `proxy_pass` that hands the
/// request to Sentry web unchanged (a longer URI would rewrite paths, which
/// uwsgi cannot).
///
/// With the trailing `/`, nginx swaps the location's prefix for `/`: the
/// same request only under `location /`.
fn proxies_to(directive: &Directive, all: &[Directive], upstream: &str) -> bool {
    if directive.name != "proxy_pass" || directive.args.len() != 1 {
        return false;
    }
    let Some(rest) = directive.args[0].strip_prefix("http://") else { return false };
    let under_root = directive.parent.and_then(|p| all.get(p)).is_some_and(|l| l.name == "location" && l.args == ["/"]);
    match rest.strip_suffix('/') {
        Some(address) => under_root && same_address(address, upstream),
        None => same_address(rest, upstream),
    }
}

fn uwsgi_passes_to(directive: &Directive, upstream: &str) -> bool {
    directive.name == "uwsgi_pass" && directive.args.len() == 1 && same_address(&directive.args[0], upstream)
}

fn includes_uwsgi_params(directive: &Directive) -> bool {
    directive.name == "include" && directive.args.len() == 1 && directive.args[0].ends_with("uwsgi_params")
}

fn clears_transfer_encoding(directive: &Directive) -> bool {
    directive.name == "uwsgi_param" && directive.args.first().is_some_and(|a| a == "HTTP_TRANSFER_ENCODING")
}

/// Whether some block hands requests to Sentry web at `upstream` over HTTP
/// (`proxy_pass`), in a configuration or in `nginx -T`'s listing of one.
pub fn proxies_over_http(text: &str, upstream: &str) -> bool {
    directives(text).is_some_and(|all| all.iter().any(|d| proxies_to(d, &all, upstream)))
}

/// The file with every block that hands requests to Sentry web at
/// `upstream` doing so over uwsgi, as the tuning guide writes it:
/// `include uwsgi_params; uwsgi_pass <upstream>; uwsgi_param
/// HTTP_TRANSFER_ENCODING "";` in place of the `proxy_pass`, each on a line
/// of its own at the `proxy_pass` line's indentation. A block already on
/// uwsgi gets only what it lacks of the three. `Ok(None)` when the file does
/// not serve Sentry web; an error when it cannot be read as nginx
/// configuration yet names Sentry web's port beside a `proxy_pass` (left
/// alone, it would answer 502 once Sentry web speaks uwsgi).
pub fn switch_to_uwsgi(text: &str, upstream: &str) -> Result<Option<String>, String> {
    let Some(all) = directives(text) else {
        let port = upstream.rsplit_once(':').map_or(upstream, |(_, port)| port);
        if text.contains("proxy_pass") && text.contains(&format!(":{port}")) {
            return Err(format!(
                "cannot read it as nginx configuration, and it may proxy to Sentry web at {upstream}: \
                 switch it to uwsgi by hand, or leave it out of nginx_vhost_search"
            ));
        }
        return Ok(None);
    };
    let sentry: Vec<&Directive> =
        all.iter().filter(|d| proxies_to(d, &all, upstream) || uwsgi_passes_to(d, upstream)).collect();
    if sentry.is_empty() {
        return Ok(None);
    }
    // Replacements as (start, end, new text), applied back to front.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for pass in sentry {
        let siblings = || all.iter().filter(|d| d.parent == pass.parent);
        let line_start = text[..pass.start].rfind('\n').map_or(0, |n| n + 1);
        let indent: String = text[line_start..pass.start].chars().take_while(|c| c.is_whitespace()).collect();
        let mut lines = Vec::new();
        if !siblings().any(includes_uwsgi_params) {
            lines.push("include uwsgi_params;".to_owned());
        }
        // A uwsgi_pass already there stays as the operator spelled it.
        lines.push(match pass.name.as_str() {
            "uwsgi_pass" => text[pass.start..pass.end].to_owned(),
            _ => format!("uwsgi_pass {upstream};"),
        });
        if !siblings().any(clears_transfer_encoding) {
            lines.push("uwsgi_param HTTP_TRANSFER_ENCODING \"\";".to_owned());
        }
        let replacement = lines.join(&format!("\n{indent}"));
        if text[pass.start..pass.end] != replacement {
            edits.push((pass.start, pass.end, replacement));
        }
    }
    let mut out = text.to_owned();
    edits.sort_by_key(|(start, _, _)| std::cmp::Reverse(*start));
    for (start, end, replacement) in edits {
        out.replace_range(start..end, &replacement);
    }
    Ok(Some(out))
}

/// Whether the file begins as Sentry's own site does (the rendered
/// template's first line): the site this tool installed, not a vhost of the
/// operator's that happens to sit at the same path.
pub fn is_ours(text: &[u8], template: &[u8]) -> bool {
    let first_line = |t: &[u8]| t.split(|&b| b == b'\n').next().unwrap_or_default().to_vec();
    let ours = first_line(template);
    !ours.is_empty() && first_line(text) == ours
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR_TLS: &str = r#"# Sentry, as our docs say.
server {
    listen 80;
    server_name sentry.example.com;
    return 301 https://$host$request_uri;
}

server {
    listen 443 ssl;
    server_name sentry.example.com;
    ssl_certificate /etc/ssl/certs/sentry.pem;
    ssl_certificate_key /etc/ssl/private/sentry.key;
    proxy_read_timeout 30s;

    location / {
        proxy_pass        http://localhost:9000;   # Sentry web
        proxy_set_header Host $host;
        add_header Strict-Transport-Security "max-age=31536000" always;
    }

    location /robots.txt { return 200 "User-agent: *\nDisallow: /\n"; }
}
"#;

    #[test]
    fn the_proxy_pass_to_sentry_becomes_the_guides_three_lines_and_nothing_else_moves() {
        let switched = switch_to_uwsgi(OPERATOR_TLS, "127.0.0.1:9000").unwrap().unwrap();
        let expected = OPERATOR_TLS.replace(
            "proxy_pass        http://localhost:9000;",
            "include uwsgi_params;\n        uwsgi_pass 127.0.0.1:9000;\n        uwsgi_param HTTP_TRANSFER_ENCODING \"\";",
        );
        assert_eq!(switched, expected);
    }

    #[test]
    fn a_switched_vhost_is_left_as_it_is() {
        let switched = switch_to_uwsgi(OPERATOR_TLS, "127.0.0.1:9000").unwrap().unwrap();
        assert_eq!(switch_to_uwsgi(&switched, "127.0.0.1:9000").unwrap().unwrap(), switched);
        assert!(!proxies_over_http(&switched, "127.0.0.1:9000"));
        assert!(proxies_over_http(OPERATOR_TLS, "127.0.0.1:9000"));
    }

    #[test]
    fn a_uwsgi_block_missing_one_of_the_three_lines_gets_it_back() {
        let text = "location / {\n    include uwsgi_params;\n    uwsgi_pass 127.0.0.1:9000;\n}\n";
        assert_eq!(
            switch_to_uwsgi(text, "127.0.0.1:9000").unwrap().unwrap(),
            "location / {\n    include uwsgi_params;\n    uwsgi_pass 127.0.0.1:9000;\n    uwsgi_param HTTP_TRANSFER_ENCODING \"\";\n}\n"
        );
    }

    #[test]
    fn a_vhost_proxying_elsewhere_is_not_sentrys() {
        let other = "server { location / { proxy_pass http://127.0.0.1:8080; } }\n";
        assert_eq!(switch_to_uwsgi(other, "127.0.0.1:9000"), Ok(None));
        assert!(!proxies_over_http(other, "127.0.0.1:9000"));
        let rewriting = "server { location /api { proxy_pass http://127.0.0.1:9000/v2/; } }\n";
        assert_eq!(switch_to_uwsgi(rewriting, "127.0.0.1:9000"), Ok(None));
    }

    #[test]
    fn commented_out_proxying_is_not_proxying() {
        let text = "server {\n    location / {\n        # proxy_pass http://127.0.0.1:9000;\n        root /var/www/html;\n    }\n}\n";
        assert_eq!(switch_to_uwsgi(text, "127.0.0.1:9000"), Ok(None));
    }

    #[test]
    fn debians_default_site_does_not_serve_sentry() {
        let default = "server {\n\tlisten 80 default_server;\n\tlisten [::]:80 default_server;\n\troot /var/www/html;\n\
                       \tindex index.html index.htm index.nginx-debian.html;\n\tserver_name _;\n\
                       \tlocation / {\n\t\t# First attempt to serve request as file\n\t\ttry_files $uri $uri/ =404;\n\t}\n\
                       \t#location ~ \\.php$ {\n\t#\tfastcgi_pass unix:/run/php/php7.4-fpm.sock;\n\t#}\n}\n";
        assert!(!proxies_over_http(default, "127.0.0.1:9000"));
        assert_eq!(switch_to_uwsgi(default, "127.0.0.1:9000"), Ok(None));
    }

    #[test]
    fn a_file_whose_braces_do_not_close_is_not_edited_and_is_an_error_if_it_may_proxy_to_sentry() {
        let err = switch_to_uwsgi("server { location / { proxy_pass http://127.0.0.1:9000;\n", "127.0.0.1:9000");
        assert!(err.unwrap_err().contains("cannot read it as nginx configuration"));
        assert_eq!(switch_to_uwsgi("server { location / { root /srv;\n", "127.0.0.1:9000"), Ok(None));
    }

    #[test]
    fn a_variable_in_braces_is_part_of_its_word() {
        let text = "server { return 301 https://${host}$request_uri; }\nserver { location / { proxy_pass http://127.0.0.1:9000; } }\n";
        let switched = switch_to_uwsgi(text, "127.0.0.1:9000").unwrap().unwrap();
        assert!(switched.contains("https://${host}$request_uri;") && switched.contains("uwsgi_pass 127.0.0.1:9000;"));
    }

    #[test]
    fn a_location_whose_prefix_proxy_pass_strips_is_not_switched() {
        let text = "server { location /sentry/ { proxy_pass http://127.0.0.1:9000/; } }\n";
        assert_eq!(switch_to_uwsgi(text, "127.0.0.1:9000"), Ok(None));
    }

    #[test]
    fn a_uwsgi_pass_spelled_otherwise_is_kept_as_it_is() {
        let text = "location / {\n    include uwsgi_params;\n    uwsgi_pass  localhost:9000;\n    uwsgi_param HTTP_TRANSFER_ENCODING \"\";\n}\n";
        assert_eq!(switch_to_uwsgi(text, "127.0.0.1:9000").unwrap().unwrap(), text);
    }

    #[test]
    fn only_a_file_that_starts_as_the_template_does_is_ours() {
        let template = b"# Managed by sentry-provision: Sentry web.\nserver {}\n";
        assert!(is_ours(b"# Managed by sentry-provision: Sentry web.\nserver { listen 8080; }\n", template));
        assert!(!is_ours(b"server { location / { proxy_pass http://127.0.0.1:9000; } }\n", template));
    }

    #[test]
    fn every_block_that_proxies_to_sentry_is_switched() {
        let text = "server { listen 80; location / { proxy_pass http://127.0.0.1:9000/; } }\n\
                    server { listen 8080; location / { proxy_pass http://127.0.0.1:9000; } }\n";
        let switched = switch_to_uwsgi(text, "127.0.0.1:9000").unwrap().unwrap();
        assert_eq!(switched.matches("uwsgi_pass 127.0.0.1:9000;").count(), 2, "{switched}");
        assert!(!switched.contains("proxy_pass"), "{switched}");
    }
}
