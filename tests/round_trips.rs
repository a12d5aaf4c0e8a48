//! The number of SSH round trips per host is fixed by the phases, not by
//! the number of steps: a playbook of 5 steps and one of 50 cost the same.

mod common;

use common::{Fleet, needs};
use serde_json::Value;

/// A playbook of `steps` steps: templates and line edits over several files, all notifying one handler.
fn playbook(dir: &std::path::Path, steps: usize) -> String {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("templates/item.j2"),
        "item {{ item }} on {{ inventory_hostname }} ({{ facts.cpus }} cpus)\n",
    )
    .unwrap();
    let mut text = String::from("- name: many steps\n  hosts: all\n  steps:\n");
    for i in 0..steps {
        if i % 2 == 0 {
            text.push_str(&format!(
                "    - name: file {i}\n      template: {{src: item.j2, dest: /etc/sp-many/file{i}.conf}}\n      notify: reload\n"
            ));
        } else {
            text.push_str(&format!(
                "    - name: line {i}\n      line: {{path: /etc/sp-many/lines.conf, regexp: '^key{i} ', line: 'key{i} {{{{ item }}}}', create: true}}\n      notify: reload\n"
            ));
        }
    }
    text.push_str("  handlers:\n    - name: reload\n      command: echo reloaded >> /var/tmp/sp-many-reloads\n");
    let path = dir.join("play.yml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn round_trips(fleet: &Fleet, args: &[&str]) -> (i32, u64) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--format", "json", "-q"]);
    let out = fleet.provision(&all);
    let document: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (out.code, document["hosts"][0]["round_trips"].as_u64().unwrap())
}

#[test]
fn five_steps_and_fifty_steps_cost_the_same_round_trips() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    for steps in [5, 50] {
        let dir = tempfile::tempdir().unwrap();
        let play = playbook(dir.path(), steps);
        assert_eq!(
            round_trips(&fleet, &["diff", "-p", &play, "-e", "item=1"]),
            (2, 1),
            "{steps} steps: check with changes pending"
        );
        assert_eq!(
            round_trips(&fleet, &["apply", "-p", &play, "-e", "item=1"]),
            (0, 3),
            "{steps} steps: apply that changes files"
        );
        assert_eq!(
            round_trips(&fleet, &["diff", "-p", &play, "-e", "item=1"]),
            (0, 1),
            "{steps} steps: converged check"
        );
        assert_eq!(
            round_trips(&fleet, &["apply", "-p", &play, "-e", "item=1"]),
            (0, 1),
            "{steps} steps: converged apply"
        );
        assert_eq!(
            round_trips(&fleet, &["apply", "-p", &play, "-e", "item=2"]),
            (0, 3),
            "{steps} steps: a second change"
        );
    }
    assert_eq!(fleet.exec(1, "wc -l < /var/tmp/sp-many-reloads").trim(), "4", "one reload per changing apply");
}

/// A playbook of one file and `probes` (name, command) as its verify list.
fn probed_playbook(dir: &std::path::Path, probes: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/item.j2"), "probed\n").unwrap();
    let mut text = String::from(
        "- name: probed\n  hosts: all\n  steps:\n    - name: a file\n      template: {src: item.j2, dest: /etc/sp-probed/file.conf}\n  verify:\n",
    );
    for (name, command) in probes {
        text.push_str(&format!("    - name: {name}\n      command: {command}\n"));
    }
    let path = dir.join("play.yml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn drift(fleet: &Fleet, play: &str) -> (i32, Value) {
    let out = fleet.provision(&["drift", "-p", play, "--format", "json", "--history", "/dev/null"]);
    let document: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (out.code, document["hosts"][0].clone())
}

#[test]
fn a_drift_pass_reads_files_and_live_state_in_one_round_trip_and_probes_using_facts_take_two_only_on_a_first_pass() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let dir = tempfile::tempdir().unwrap();
    let plain = probed_playbook(dir.path(), &[("the file is there", "test -f /etc/sp-probed/file.conf")]);
    assert_eq!(round_trips(&fleet, &["apply", "-p", &plain]).0, 0);

    let (code, host) = drift(&fleet, &plain);
    assert_eq!((code, host["round_trips"].as_u64()), (0, Some(1)), "{host}");
    assert_eq!(host["items"].as_array().map(Vec::len), Some(0), "{host}");

    // The same findings as a probe run on its own would give.
    fleet.exec(1, "mv /etc/sp-probed/file.conf /etc/sp-probed/file.moved");
    let (code, host) = drift(&fleet, &plain);
    assert_eq!((code, host["round_trips"].as_u64()), (2, Some(1)), "{host}");
    let live: Vec<(&str, &str)> = host["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["kind"] == "live")
        .map(|item| (item["subject"].as_str().unwrap(), item["state"].as_str().unwrap()))
        .collect();
    assert_eq!(live, [("the file is there", "host_drift")], "{host}");
    fleet.exec(1, "mv /etc/sp-probed/file.moved /etc/sp-probed/file.conf");

    // A probe that facts change is known only after the snapshot: on a
    // host's first pass, rendered with stand-in facts, it misses and runs
    // again in a round trip of its own; from then on the facts the host had
    // at its last pass render it (kept on the controller, for its owner alone).
    let known = fleet.state_home().join("sentry-provision/facts.json");
    std::fs::remove_file(&known).unwrap();
    let factual =
        probed_playbook(dir.path(), &[("the host knows its name", "test \"$(hostname)\" = '{{ facts.hostname }}'")]);
    let (code, host) = drift(&fleet, &factual);
    assert_eq!((code, host["round_trips"].as_u64()), (0, Some(2)), "{host}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&known).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let (code, host) = drift(&fleet, &factual);
    assert_eq!((code, host["round_trips"].as_u64()), (0, Some(1)), "{host}");
}
