//! What a host prints is not to be trusted: a broken or hostile host can
//! print anything. Every parser of a host's reply is fed random bytes, and
//! random lines made of the tags the scripts print with random words
//! (huge numbers, indexes past the end, the run's token), and must answer
//! with a value or an error, never a panic; indexes it returns stay within
//! what was sent.

use crate::remote;
use proptest::prelude::*;

const TOKEN: &str = "0123456789abcdef";

const TAGS: &[&str] = &[
    "FACT",
    "TOOL",
    "ERROR",
    "MISSING",
    "OTHER",
    "FOUND",
    "FILES",
    "LINKS",
    "GUARD",
    "META",
    "CONTENT",
    "CONTENT-END",
    "LINKS-END",
    "END",
    "LOCKBUSY",
    "LOCKHELD",
    "DONE",
    "BACKUP",
    "STUCK",
    "RAN",
    "FAIL",
    "PROBE",
    "HOK",
    "HFAIL",
    "HNOEFFECT",
    "CPUS",
    "REDIS",
    "FILE",
    "NGINX",
    "WEB",
    "WEBRUNS",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        (0usize..6).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just(usize::MAX.to_string()),
        Just(format!("{}0", usize::MAX)),
        Just("-1".to_owned()),
        (0usize..4).prop_map(|k| format!("f{k}")),
        Just("pending".to_owned()),
        Just("applied".to_owned()),
        Just(TOKEN.to_owned()),
        "[0-7]{1,12}",
        "[A-Za-z0-9+/=]{0,16}",
        "[ -~]{0,8}",
    ]
}

/// A tagged line as the scripts print them, with random words.
fn tagged_line() -> impl Strategy<Value = Vec<u8>> {
    (proptest::sample::select(TAGS), proptest::collection::vec(word(), 0..6)).prop_map(|(tag, words)| {
        std::iter::once(tag.to_owned()).chain(words).collect::<Vec<_>>().join(" ").into_bytes()
    })
}

/// Tagged lines, raw bytes and NULs (link targets end with one), one after another.
fn reply() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => tagged_line(),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => Just(b"\0".to_vec()),
        1 => Just(format!("END {TOKEN}").into_bytes()),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.join(&b'\n'))
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..4096), reply()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_snapshot_reply_panics_the_parser(stdout in bytes()) {
        let paths = ["/etc/redis/redis.conf", "/etc/nginx/sites-enabled/sentry"];
        let patterns = ["/etc/nginx/sites-enabled/*"];
        if let Ok(out) = remote::parse_snapshot(&stdout, &paths, &patterns, TOKEN) {
            let _ = crate::facts::Facts::from_snapshot(&out.facts, &out.tools, remote::TOOLS);
        }
        let _ = remote::parse_snapshot(&stdout, &[], &[], TOKEN);
    }

    #[test]
    fn no_install_reply_panics_the_parser(stdout in bytes()) {
        let _ = remote::parse_install(&stdout);
    }

    #[test]
    fn no_probes_reply_panics_the_parser(stdout in bytes(), count in 0usize..4) {
        if let Ok(results) = remote::parse_probes(&stdout, count) {
            prop_assert_eq!(results.len(), count);
        }
    }

    #[test]
    fn no_handlers_reply_panics_the_parser_nor_names_a_handler_not_sent(
        stdout in bytes(),
        handlers in 0usize..4,
        probes in 0usize..3,
    ) {
        if let Ok(out) = remote::parse_handlers(&stdout, handlers, probes) {
            prop_assert!(out.succeeded <= handlers, "{out:?}");
            if let Some((i, _, _)) = out.failure {
                prop_assert!(i < handlers, "{out:?}");
            }
        }
    }

    #[test]
    fn no_audit_reply_panics_the_parser_nor_the_analysis(stdout in bytes()) {
        if let Ok(seen) = crate::audit::parse(&stdout) {
            let _ = crate::audit::analyse(&seen);
        }
    }
}

#[test]
fn extra_handler_lines_and_indexes_past_those_sent_are_refused() {
    // What crashed run.rs's `to_run[..succeeded]` and `to_run[i]`.
    assert!(remote::parse_handlers(b"HOK 0\nHOK 1\nEND\n", 1, 0).is_err());
    assert!(remote::parse_handlers(b"HFAIL 7 1 eA==\n", 2, 0).is_err());
    assert!(remote::parse_handlers(b"HNOEFFECT 18446744073709551615 1 eA==\n", 2, 0).is_err());
    let out = remote::parse_handlers(b"HOK 0\nHFAIL 1 3\n", 2, 0).unwrap();
    assert_eq!((out.succeeded, out.failure.map(|f| (f.0, f.1))), (1, Some((1, 3))));
}

#[test]
fn file_sizes_that_overflow_when_summed_are_refused() {
    let max = usize::MAX;
    let stdout = format!("FILES 0 1\nMETA 644 root root {max}\nMETA 644 root root {max}\nCONTENT {TOKEN}\n");
    let paths = ["/a", "/b"];
    let error = remote::parse_snapshot(stdout.as_bytes(), &paths, &[], TOKEN).unwrap_err();
    assert!(error.contains("overflow"), "{error}");
}

#[test]
fn huge_worker_numbers_from_a_host_do_not_overflow_the_audit() {
    use base64::Engine;
    let conf = "[program:worker]\ncommand=sentry run worker -c 4294967295\nnumprocs=4294967295\n";
    let text = base64::engine::general_purpose::STANDARD.encode(conf);
    let name = base64::engine::general_purpose::STANDARD.encode("/etc/supervisor/conf.d/w.conf");
    let stdout = format!("CPUS 4294967295\nFILE {name} {text}\nWEB http 1\nWEBRUNS\nEND\n");
    let findings = crate::audit::analyse(&crate::audit::parse(stdout.as_bytes()).unwrap());
    assert!(findings.iter().any(|f| f.advice.contains("18446744065119617025 slots")), "{findings:?}");
}
