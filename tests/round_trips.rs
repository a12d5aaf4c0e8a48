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
