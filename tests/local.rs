//! Every step kind, handlers, tags and limits, end to end through the
//! `local` connection (`ansible_connection=local`) on files in a temporary
//! folder: no SSH needed, the same scripts as on a remote host.

mod common;

use common::bin;

use std::fs;
use std::path::Path;
use std::process::Command;

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(playbook: &str, inventory: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        fs::create_dir_all(dir.path().join("templates")).unwrap();
        fs::create_dir_all(dir.path().join("playbooks")).unwrap();
        fs::create_dir_all(dir.path().join("inventory")).unwrap();
        fs::create_dir_all(dir.path().join("host")).unwrap();
        fs::write(dir.path().join("playbooks/site.yml"), playbook.replace("ROOT", &root)).unwrap();
        fs::write(dir.path().join("inventory/hosts.ini"), inventory.replace("ROOT", &root)).unwrap();
        Project { dir }
    }

    fn template(self, name: &str, text: &str) -> Project {
        fs::write(self.dir.path().join("templates").join(name), text).unwrap();
        self
    }

    fn file(&self, path: &str) -> String {
        fs::read_to_string(self.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn path(&self, path: &str) -> std::path::PathBuf {
        self.dir.path().join("host").join(path)
    }

    fn write(&self, path: &str, text: &str) {
        fs::write(self.path(path), text).unwrap();
    }

    fn run(&self, args: &[&str]) -> common::Outcome {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("-i")
            .arg(self.dir.path().join("inventory"))
            .arg("-p")
            .arg(self.dir.path().join("playbooks/site.yml"));
        common::run(cmd)
    }
}

const PLAYBOOK: &str = r#"
- name: every step kind
  hosts: all
  vars:
    greeting: hello
    root: ROOT/host
  steps:
    - name: render the app config
      template: {src: app.conf.j2, dest: "{{ root }}/app.conf", mode: "0640"}
      notify: reload app
      tags: [app]
    - name: drop old settings
      line: {path: "{{ root }}/settings", regexp: '^old_', state: absent}
      notify: reload app
    - name: set the port
      line: {path: "{{ root }}/settings", regexp: '^port\s*=', line: "port = {{ port }}"}
      notify: reload app
    - name: manage a block
      block: {path: "{{ root }}/settings", block: "a = 1\nb = {{ greeting }}\n"}
    - name: link the config
      link: {src: "{{ root }}/app.conf", dest: "{{ root }}/current.conf"}
    - name: make the cache once
      command: {cmd: "echo made >> {{ root }}/made", creates: "{{ root }}/made"}
  handlers:
    - name: reload app
      command: echo reloaded >> {{ root }}/reloads
"#;

const INVENTORY: &str = "[local]\nbox ansible_connection=local port=8080 sentry_provision_state_dir=ROOT/state\n";

fn project() -> Project {
    let p =
        Project::new(PLAYBOOK, INVENTORY).template("app.conf.j2", "greeting={{ greeting }}\ncpus={{ facts.cpus }}\n");
    p.write("settings", "old_a = 1\nport = 1\nold_b = 2\n");
    p
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn apply_runs_every_step_kind_once_and_then_changes_nothing() {
    let p = project();
    let out = p.run(&["apply"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(p.file("app.conf").starts_with("greeting=hello\ncpus="));
    assert_eq!(mode_of(&p.path("app.conf")), 0o640);
    assert_eq!(
        p.file("settings"),
        "port = 8080\n# BEGIN SENTRY-PROVISION MANAGED BLOCK\na = 1\nb = hello\n# END SENTRY-PROVISION MANAGED BLOCK\n"
    );
    assert_eq!(fs::read_link(p.path("current.conf")).unwrap(), p.path("app.conf"));
    assert_eq!(p.file("made"), "made\n");
    assert_eq!(p.file("reloads"), "reloaded\n", "the handler ran once for three notifying steps");

    let again = p.run(&["apply"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("summary: 1 host(s): 1 ok, 0 changed"), "{again:?}");
    assert_eq!(p.file("reloads"), "reloaded\n", "no handler on a converged host");
    assert_eq!(p.file("made"), "made\n");
}

#[test]
fn check_reports_pending_changes_with_exit_2_and_writes_nothing() {
    let p = project();
    let out = p.run(&["apply", "--check", "--diff"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stdout.contains("+port = 8080") && out.stdout.contains("-old_a = 1"), "{out:?}");
    assert!(out.stdout.contains("would run handler  reload app"), "{out:?}");
    assert!(!p.path("app.conf").exists() && !p.path("made").exists() && !p.path("reloads").exists());
    assert_eq!(p.file("settings"), "old_a = 1\nport = 1\nold_b = 2\n");
}

#[test]
fn tags_select_steps_and_extra_variables_win() {
    let p = project();
    let out = p.run(&["apply", "-t", "app", "-e", "greeting=bonjour"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(p.file("app.conf").starts_with("greeting=bonjour\n"));
    assert_eq!(p.file("settings"), "old_a = 1\nport = 1\nold_b = 2\n", "untagged steps did not run");
}

#[test]
fn a_handler_that_fails_is_reported_with_its_command_and_stderr_and_runs_again_next_time() {
    let p = Project::new(
        &PLAYBOOK.replace("command: echo reloaded >> {{ root }}/reloads", "command: \"test -e {{ root }}/ready || { echo not ready >&2; exit 3; }; echo reloaded >> {{ root }}/reloads\""),
        INVENTORY,
    )
    .template("app.conf.j2", "x\n");
    p.write("settings", "port = 1\n");
    let out = p.run(&["apply"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("handler `reload app`") && out.stdout.contains("exited 3: not ready"), "{out:?}");
    // The run was taken back (the handler failing again on the old files
    // stays owed), so the next run finds the files to change again.
    assert!(out.stdout.contains("rolled back  ") && p.file("settings") == "port = 1\n", "{out:?}");

    p.write("ready", "");
    let retry = p.run(&["apply"]);
    assert_eq!(retry.code, 0, "{retry:?}");
    assert!(retry.stdout.contains("  handler  reload app"), "{retry:?}");
    assert_eq!(p.file("reloads"), "reloaded\n");
}

#[test]
fn a_limit_that_matches_nothing_is_bad_input() {
    let p = project();
    let out = p.run(&["apply", "-l", "nosuchhost"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("`nosuchhost` matches no host or group"), "{out:?}");
    assert!(!p.path("app.conf").exists());
}

#[test]
fn an_unknown_playbook_key_is_bad_input_with_file_line_and_column() {
    let p = Project::new(
        &PLAYBOOK.replace("    - name: link the config\n", "    - name: link the config\n      notfy: x\n"),
        INVENTORY,
    )
    .template("app.conf.j2", "x\n");
    let out = p.run(&["apply"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("site.yml:21:7") && out.stderr.contains("notfy"), "{out:?}");
}

#[test]
fn a_pending_handler_no_longer_in_the_playbook_is_warned_about_and_dropped_once_handlers_are_recorded_again() {
    let p = project();
    let state = p.dir.path().join("state");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("site.pending"), "renamed away\n").unwrap();

    let check = p.run(&["apply", "--check"]);
    assert!(
        check
            .stdout
            .contains("pending handler `renamed away` from an earlier run is not in this playbook, so it cannot run"),
        "{check:?}"
    );
    let out = p.run(&["apply"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("the host's record keeps it until an apply records handlers again"), "{out:?}");
    assert_eq!(p.file("reloads"), "reloaded\n");
    assert!(!state.join("site.pending").exists(), "this apply recorded `reload app`, ran it, and nothing is owed");
    let again = p.run(&["apply"]);
    assert!(!again.stdout.contains("renamed away"), "{again:?}");
}

const ROLLING: &str = r#"
- name: rolling
  hosts: all
  steps:
    - name: fail on a, mark the others
      command:
        cmd: "{% if inventory_hostname == 'a' %}exit 3{% else %}echo ran >> ROOT/host/{{ inventory_hostname }}{% endif %}"
"#;

fn rolling(hosts: &[&str]) -> Project {
    let lines: Vec<String> = hosts
        .iter()
        .map(|h| format!("{h} ansible_connection=local sentry_provision_state_dir=ROOT/state-{h}\n"))
        .collect();
    Project::new(ROLLING, &format!("[local]\n{}", lines.concat()))
}

#[test]
fn a_rolling_run_stops_when_every_host_of_a_batch_failed_as_ansible_does() {
    let p = rolling(&["a", "b", "c"]);
    let out = p.run(&["apply", "--serial", "1"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(out.stdout.matches("not run: every host of batch 1 failed (1 of 1)").count(), 2, "{out:?}");
    assert!(!p.path("b").exists() && !p.path("c").exists(), "later batches did not start");
}

#[test]
fn a_rolling_run_goes_on_when_part_of_a_batch_survived() {
    let p = rolling(&["b", "a", "c"]);
    let out = p.run(&["apply", "--serial", "2"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(!out.stdout.contains("not run"), "{out:?}");
    assert_eq!(p.file("b"), "ran\n");
    assert_eq!(p.file("c"), "ran\n", "the second batch ran");
}

const VHOST_PLAYBOOK: &str = r#"
- name: nginx in front of an app on uwsgi
  hosts: all
  steps:
    - name: the site
      vhost:
        search: ROOT/host/enabled/* ROOT/host/conf.d/*.conf
        upstream: 127.0.0.1:9000
        src: site.j2
        dest: ROOT/host/available/app
        enable: ROOT/host/enabled/app
        validate: "true"
      notify: reload nginx
  handlers:
    - name: reload nginx
      command: echo reloaded >> ROOT/host/reloads
"#;

const OPERATOR_VHOST: &str = "server {\n    listen 443 ssl;\n    server_name app.example.com;\n    add_header X-Ours yes;\n\n    location / {\n        proxy_pass http://localhost:9000/;\n        proxy_set_header Host $host;\n    }\n}\n";

fn vhost_project() -> Project {
    let p = Project::new(VHOST_PLAYBOOK, INVENTORY)
        .template("site.j2", "server { location / { uwsgi_pass 127.0.0.1:9000; } }\n");
    for folder in ["available", "enabled", "conf.d"] {
        fs::create_dir_all(p.path(folder)).unwrap();
    }
    p.write("available/default", "server { listen 80 default_server; root /var/www/html; }\n");
    std::os::unix::fs::symlink("../available/default", p.path("enabled/default")).unwrap();
    p
}

#[test]
fn the_operators_vhost_found_through_a_pattern_is_switched_in_place_and_then_left_alone() {
    let p = vhost_project();
    p.write("conf.d/app.conf", OPERATOR_VHOST);
    let out = p.run(&["apply"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        p.file("conf.d/app.conf"),
        OPERATOR_VHOST.replace(
            "proxy_pass http://localhost:9000/;",
            "include uwsgi_params;\n        uwsgi_pass 127.0.0.1:9000;\n        uwsgi_param HTTP_TRANSFER_ENCODING \"\";"
        )
    );
    assert!(!p.path("available/app").exists() && !p.path("enabled/app").exists(), "no site of ours beside it");
    assert_eq!(p.file("available/default"), "server { listen 80 default_server; root /var/www/html; }\n");
    assert_eq!(p.file("reloads"), "reloaded\n");

    let again = p.run(&["apply"]);
    assert!(again.stdout.contains("summary: 1 host(s): 1 ok, 0 changed"), "{again:?}");
    assert_eq!(p.file("reloads"), "reloaded\n");
}

#[test]
fn a_host_whose_vhosts_do_not_serve_the_app_gets_the_template_and_its_link() {
    let p = vhost_project();
    let out = p.run(&["apply"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(p.file("available/app"), "server { location / { uwsgi_pass 127.0.0.1:9000; } }\n");
    assert_eq!(fs::read_link(p.path("enabled/app")).unwrap(), p.path("available/app"));
    let again = p.run(&["apply"]);
    assert!(again.stdout.contains("summary: 1 host(s): 1 ok, 0 changed"), "{again:?}");
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    // A diff well past a pipe's buffer (and under the lines past which a
    // diff is summarised), so the write meets the closed pipe.
    let big: String = (0..300).map(|i| format!("line {i} {}\n", "x".repeat(400))).collect();
    let p = Project::new(PLAYBOOK, INVENTORY).template("app.conf.j2", &big);
    p.write("settings", "port = 1\n");
    let script = format!(
        "{} diff -i {} -p {} 2>{}/stderr | head -1; echo \"status ${{PIPESTATUS[0]}}\"",
        bin(),
        p.dir.path().join("inventory").display(),
        p.dir.path().join("playbooks/site.yml").display(),
        p.dir.path().display()
    );
    let out = common::run({
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(script);
        cmd
    });
    assert!(out.stdout.ends_with("status 141\n"), "ended as SIGPIPE ends a command: {out:?}");
    let stderr = fs::read_to_string(p.dir.path().join("stderr")).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

const ORDER: &str = r#"
- name: say when each host's turn came
  hosts: all
  steps:
    - name: note the host
      command: {cmd: "echo {{ inventory_hostname }} >> ROOT/host/order"}
"#;

#[test]
fn with_forks_hosts_start_in_inventory_order() {
    // Enough hosts that tasks racing for a fork would, now and then, start
    // out of order; with one fork, each host's note is written before the
    // next host starts, so the file's order is the start order.
    let names: Vec<String> = (1..=24).map(|i| format!("h{i:02}")).collect();
    let lines: Vec<String> = names
        .iter()
        .map(|h| format!("{h} ansible_connection=local sentry_provision_state_dir=ROOT/state-{h}\n"))
        .collect();
    let p = Project::new(ORDER, &format!("[local]\n{}", lines.concat()));
    for forks in ["1", "3"] {
        let _ = fs::remove_file(p.path("order"));
        let out = p.run(&["apply", "--forks", forks]);
        assert_eq!(out.code, 0, "{out:?}");
        let order: Vec<String> = p.file("order").lines().map(str::to_owned).collect();
        if forks == "1" {
            assert_eq!(order, names, "--forks 1");
        } else {
            // With 3 at once a host may finish before one started earlier,
            // but the i-th starts only once all but 2 of those before it
            // are done, their notes written.
            for (i, name) in names.iter().enumerate() {
                let noted = order.iter().position(|n| n == name).unwrap();
                assert!(noted + 2 >= i, "--forks 3: {name} noted {noted}th: {order:?}");
            }
        }
    }
}

#[test]
fn scheduled_json_passes_on_stdout_are_json_lines_one_compact_document_a_pass() {
    use std::io::BufRead;
    let p = project();
    let history = p.dir.path().join("history.jsonl");
    let mut child = Command::new(bin())
        .args(["drift", "--every", "1s", "--format", "json", "--history"])
        .arg(&history)
        .env("XDG_STATE_HOME", common::state_home())
        .arg("-i")
        .arg(p.dir.path().join("inventory"))
        .arg("-p")
        .arg(p.dir.path().join("playbooks/site.yml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if sender.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut passes = Vec::new();
    while passes.len() < 3 {
        match lines.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(line) => passes.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("waiting for three lines: {e}; got {passes:?}");
            }
        }
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    for line in &passes {
        let pass: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(pass["summary"]["hosts"], 1, "{line}");
        assert_eq!(pass["hosts"][0]["status"], "pending", "never applied: {line}");
    }
    assert!(fs::read_to_string(&history).unwrap().lines().count() >= 3);
}

const SECRET_IN_PLAYBOOK_VARS: &str = r#"
- name: a secret only the playbook knows
  hosts: all
  vars:
    root: ROOT/host
    api_token: Play-Token-5150
  steps:
    - name: the client config
      template: {src: client.conf.j2, dest: "{{ root }}/client.conf", mode: "0644"}
    - name: register the client
      command: {cmd: "echo {{ api_token }} > {{ root }}/registered", creates: "{{ root }}/registered"}
"#;

#[test]
fn a_secret_in_the_playbooks_vars_is_masked_in_the_human_and_json_output_of_diff_and_apply() {
    let p = Project::new(SECRET_IN_PLAYBOOK_VARS, INVENTORY).template("client.conf.j2", "token = {{ api_token }}\n");
    let outputs = [
        p.run(&["diff"]),
        p.run(&["diff", "--format", "json"]),
        p.run(&["apply", "--check", "--diff", "-vv"]),
        p.run(&["apply", "--diff", "--format", "json", "-vv"]),
    ];
    assert!(outputs[0].stdout.contains("+token = ********"), "the diff is shown, masked: {:?}", outputs[0]);
    let json: serde_json::Value = serde_json::from_str(&outputs[3].stdout).unwrap();
    assert_eq!(json["hosts"][0]["steps"][1]["subject"], format!("echo ******** > {}", p.path("registered").display()));
    for out in &outputs {
        assert!(!out.stdout.contains("Play-Token-5150") && !out.stderr.contains("Play-Token-5150"), "{out:?}");
    }
    assert_eq!(p.file("client.conf"), "token = Play-Token-5150\n", "the host has it");
}

const FAILING_API_CALL: &str = r#"
- name: call an API
  hosts: all
  steps:
    - name: announce the deploy
      command:
        cmd: >-
          curl() { echo "curl: (22) 401 for {{ db_password }}" >&2; return 22; };
          curl -sf -H 'Authorization: Bearer Header-Secret-77' --password Option-Secret-88
          -u ops:Basic-Pass-12 https://ops:Url-Pass-34@sentry.example.com/api/
"#;

#[test]
fn a_command_steps_text_is_masked_in_the_human_output_the_json_subject_and_its_error() {
    let inventory = INVENTORY.replace("port=8080", "db_password=Db-Secret-66");
    let p = Project::new(FAILING_API_CALL, &inventory);
    let secrets = ["Header-Secret-77", "Option-Secret-88", "Basic-Pass-12", "Url-Pass-34", "Db-Secret-66"];
    let check = p.run(&["diff"]);
    assert_eq!(check.code, 2, "{check:?}");
    assert!(check.stdout.contains("-H 'Authorization: Bearer ********' --password ********"), "{check:?}");
    let human = p.run(&["apply"]);
    let json = p.run(&["apply", "--format", "json"]);
    for out in [&human, &json] {
        assert_eq!(out.code, 4, "the command fails the host: {out:?}");
    }
    assert!(human.stdout.contains("401 for ********"), "the error keeps what it says: {human:?}");
    let document: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let subject = document["hosts"][0]["steps"][0]["subject"].as_str().unwrap();
    assert!(subject.contains("-u ops:******** https://ops:********@sentry.example.com/api/"), "{subject}");
    assert!(document["hosts"][0]["error"].as_str().unwrap().contains("curl -sf -H"), "{document:#}");
    for out in [&check, &human, &json] {
        for secret in secrets {
            assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret), "{secret} leaked: {out:?}");
        }
    }
}
