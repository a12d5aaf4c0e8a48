//! A corpus of malformed inputs: each exits 1 with a message naming the
//! file, line and column or the offending value, never panics, and touches
//! no host (one sandbox host's files, mtimes and daemons are compared before
//! and after the whole corpus).

mod common;

use common::{Fleet, bin, needs};
use std::path::Path;
use std::process::Command;

const PLAY_HEAD: &str = "- name: t\n  hosts: all\n  steps:\n";
const STEP: &str = "    - name: site\n      template: {src: site.j2, dest: /etc/sp-test/site.conf}\n";

/// One malformed input: files to write over a good project, arguments, and
/// what the error must say.
struct Case {
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    args: Vec<String>,
    expect: Vec<String>,
}

fn case(name: &'static str) -> Case {
    Case { name, files: Vec::new(), args: Vec::new(), expect: Vec::new() }
}

impl Case {
    fn file(mut self, path: &'static str, text: impl Into<Vec<u8>>) -> Case {
        self.files.push((path, text.into()));
        self
    }
    fn playbook(self, text: &str) -> Case {
        self.file("play.yml", text)
    }
    fn steps(self, steps: &str) -> Case {
        self.playbook(&format!("{PLAY_HEAD}{steps}"))
    }
    fn arg(mut self, arg: &str) -> Case {
        self.args.push(arg.to_owned());
        self
    }
    fn expect(mut self, fragment: &str) -> Case {
        self.expect.push(fragment.to_owned());
        self
    }
}

fn corpus() -> Vec<Case> {
    let long = "x".repeat(9 * 1024 * 1024);
    vec![
        case("yaml syntax").playbook("- name: t\n  hosts: all\n  steps: [\n").expect("play.yml:4:1"),
        case("yaml tab indentation").playbook("- name: t\n\thosts: all\n").expect("play.yml:2:1"),
        case("playbook not a list").playbook("hosts: all\n").expect("play.yml:1:1").expect("sequence"),
        case("empty playbook").playbook("").expect("the playbook is empty"),
        case("playbook of no plays").playbook("[]\n").expect("the playbook has no plays"),
        case("unknown play key")
            .playbook(&format!("- name: t\n  hostz: all\n  steps:\n{STEP}"))
            .expect("play.yml:2:3")
            .expect("hostz"),
        case("unknown step key").steps(&format!("{STEP}      notfy: x\n")).expect("play.yml:6:7").expect("notfy"),
        case("unknown step kind")
            .steps("    - name: copy it\n      copy: {src: a, dest: /b}\n")
            .expect("play.yml:5:7")
            .expect("copy"),
        case("step without a name")
            .steps("    - template: {src: site.j2, dest: /etc/x}\n")
            .expect("play.yml:4:7")
            .expect("name"),
        case("step with two actions")
            .steps("    - name: both\n      template: {src: site.j2, dest: /etc/x}\n      link: {src: /a, dest: /b}\n")
            .expect("step `both`: names more than one action"),
        case("step without an action").steps("    - name: idle\n").expect("step `idle`: names no action"),
        case("steps not a list").playbook("- name: t\n  steps: nope\n").expect("play.yml:2:10"),
        case("numeric mode")
            .steps("    - name: m\n      template: {src: site.j2, dest: /etc/x, mode: 644}\n")
            .expect("quoted octal"),
        case("bad octal mode")
            .steps("    - name: m\n      template: {src: site.j2, dest: /etc/x, mode: \"0999\"}\n")
            .expect("`0999` is not an octal file mode"),
        case("bad regexp")
            .steps("    - name: r\n      line: {path: /etc/x, regexp: 'save(', state: absent}\n")
            .expect("regexp `save(` is invalid"),
        case("missing template")
            .steps("    - name: t\n      template: {src: nope.j2, dest: /etc/x}\n")
            .expect("template `nope.j2` not found (looked for"),
        case("template syntax").file("templates/site.j2", "ok\n{% if %}\n").steps(STEP).expect("site.j2:2"),
        case("template undefined variable")
            .file("templates/site.j2", "port {{ prot }}\n")
            .steps(STEP)
            .expect("site.j2:1")
            .expect("undefined"),
        case("undefined variable in a path")
            .steps("    - name: p\n      template: {src: site.j2, dest: \"{{ nowhere }}/x\"}\n")
            .expect("step `p`: dest")
            .expect("undefined"),
        case("relative path")
            .steps("    - name: p\n      template: {src: site.j2, dest: etc/x}\n")
            .expect("`etc/x` is not an absolute path"),
        case("path with dot dot")
            .steps("    - name: p\n      template: {src: site.j2, dest: /etc/../x}\n")
            .expect("`/etc/../x` contains `..`"),
        case("unknown handler")
            .steps(&format!("{STEP}      notify: reload\n"))
            .expect("notifies `reload`, which is not a handler"),
        case("duplicate handler")
            .playbook(&format!(
                "{PLAY_HEAD}{STEP}  handlers:\n    - {{name: h, command: 'true'}}\n    - {{name: h, command: 'true'}}\n"
            ))
            .expect("handler `h` is defined twice"),
        case("unknown remedy")
            .playbook(&format!("{PLAY_HEAD}{STEP}  verify:\n    - {{name: v, command: 'true', remedy: fix}}\n"))
            .expect("remedy `fix` is not a handler"),
        case("line without text")
            .steps("    - name: l\n      line: {path: /etc/x, regexp: '^a'}\n")
            .expect("`line` is required"),
        case("marker without mark")
            .steps("    - name: b\n      block: {path: /etc/x, block: a, marker: '# managed'}\n")
            .expect("must contain {mark}"),
        case("bad when expression").steps(&format!("{STEP}      when: \"1 +\"\n")).expect("step `site`: when"),
        case("invalid utf-8 playbook")
            .playbook("")
            .file("play.yml", b"- name: t\n  hosts: \xff\n".to_vec())
            .expect("play.yml:2:10: not valid UTF-8"),
        case("huge playbook").file("play.yml", long.clone()).expect("too large"),
        case("variables in a loop")
            .playbook(&format!("- name: t\n  vars: {{a: \"{{{{ b }}}}\", b: \"{{{{ a }}}}\"}}\n  steps:\n{STEP}"))
            .expect("variables refer to each other in a loop"),
        case("play for an unknown group")
            .playbook(&format!("- name: t\n  hosts: webz\n  steps:\n{STEP}"))
            .expect("`webz` matches no host or group"),
        case("ini unknown section kind")
            .file("inventory/hosts.ini", "[web:foo]\nh1\n")
            .expect("hosts.ini:1:1")
            .expect(":foo"),
        case("ini unclosed section")
            .file("inventory/hosts.ini", "[web\nh1\n")
            .expect("hosts.ini:1:1")
            .expect("closing `]`"),
        case("ini bad host variable")
            .file("inventory/hosts.ini", "[web]\nh1 ansible_port\n")
            .expect("hosts.ini:2:1")
            .expect("ansible_port"),
        case("ini backwards range")
            .file("inventory/hosts.ini", "[web]\nweb[9:1]\n")
            .expect("hosts.ini:2:1")
            .expect("backwards"),
        case("ini unterminated quote")
            .file("inventory/hosts.ini", "[web]\nh1 x=\"open\n")
            .expect("hosts.ini:2:1")
            .expect("unterminated"),
        case("cyclic groups").file("inventory/hosts.ini", "[a:children]\nb\n[b:children]\na\n").expect("cycle: "),
        case("host named like a group")
            .file("inventory/hosts.ini", "[web]\nh1\n[other]\nweb\n")
            .expect("hosts.ini:4:1")
            .expect("`web` is already a group"),
        case("bad ansible_port")
            .file("inventory/hosts.ini", "[web]\nh1 ansible_port=ssh\n")
            .expect("ansible_port `ssh` is not a port number"),
        case("unsupported connection")
            .file("inventory/hosts.ini", "[web]\nh1 ansible_connection=winrm\n")
            .expect("`winrm` is not supported"),
        case("yaml inventory unknown key")
            .file("inventory/hosts.ini", "all:\n  hostz:\n    h1:\n")
            .expect("hosts.ini:2:3")
            .expect("hostz"),
        case("yaml inventory wrong type")
            .file("inventory/hosts.ini", "all:\n  hosts: [h1, h2]\n")
            .expect("hosts.ini:2:10"),
        case("yaml inventory duplicate host")
            .file("inventory/hosts.ini", "all:\n  hosts:\n    h1:\n    h1:\n")
            .expect("hosts.ini:3:5")
            .expect("duplicate entry with key \"h1\""),
        case("invalid utf-8 inventory")
            .file("inventory/hosts.ini", b"[web]\nh\xff1\n".to_vec())
            .expect("hosts.ini:2:2: not valid UTF-8"),
        case("group_vars yaml error").file("inventory/group_vars/all.yml", "a: [1\n").expect("all.yml:2:1"),
        case("group_vars not a mapping")
            .file("inventory/group_vars/all.yml", "- a\n")
            .expect("expected a mapping of variables"),
        case("relative state dir")
            .file("inventory/hosts.ini", "[web]\nh1 sentry_provision_state_dir=var/lib\n")
            .expect("`var/lib` is not an absolute path"),
        case("extra variable without a value").arg("-e").arg("novalue").expect("-e `novalue`: expected KEY=VALUE"),
        case("extra variable with a bad name").arg("-e").arg("bad-name=1").expect("`bad-name` is not a variable name"),
        case("extra variables with a word that is no pair")
            .arg("-e")
            .arg("a=1 stray")
            .expect("-e `a=1 stray`: expected KEY=VALUE")
            .expect("`stray` has no `=`"),
        case("extra variables from a missing file")
            .arg("-e")
            .arg("@/nonexistent/vars.yml")
            .expect("/nonexistent/vars.yml"),
        case("limit that matches nothing").arg("-l").arg("nosuchhost").expect("`nosuchhost` matches no host or group"),
        case("zero forks").arg("--forks").arg("0").expect("--forks"),
        case("missing ssh config")
            .arg("--ssh-config")
            .arg("/nonexistent/ssh_config")
            .expect("/nonexistent/ssh_config is not a file"),
        case("missing playbook").arg("-p").arg("/nonexistent/play.yml").expect("/nonexistent/play.yml"),
        case("drift with a bad duration").arg("DRIFT").arg("--every").arg("soon").expect("`soon` is not a duration"),
        case("drift with too short a period").arg("DRIFT").arg("--every").arg("1ms").expect("too short"),
    ]
}

/// A good project in `dir`: inventory naming the sandbox host, playbook, template.
fn write_good_project(dir: &Path, fleet: &Fleet) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::create_dir_all(dir.join("inventory")).unwrap();
    std::fs::copy(fleet.inventory().join("hosts.ini"), dir.join("inventory/hosts.ini")).unwrap();
    std::fs::write(dir.join("templates/site.j2"), "port {{ port | default(80) }}\n").unwrap();
    std::fs::write(dir.join("play.yml"), format!("{PLAY_HEAD}{STEP}")).unwrap();
}

#[test]
fn every_malformed_input_exits_1_with_a_pointed_message_and_touches_no_host() {
    needs!(Sandbox);
    let fleet = Fleet::up(1);
    let corpus = corpus();
    assert!(corpus.len() >= 40, "{} cases", corpus.len());
    let before = fleet.fingerprint(1);
    let mut failures = Vec::new();
    for case in &corpus {
        let dir = tempfile::tempdir().unwrap();
        write_good_project(dir.path(), &fleet);
        for (path, content) in &case.files {
            let target = dir.path().join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, content).unwrap();
        }
        let drift = case.args.first().is_some_and(|a| a == "DRIFT");
        let mut cmd = Command::new(bin());
        cmd.current_dir(dir.path()).arg(if drift { "drift" } else { "apply" });
        cmd.args(["-i", "inventory"]);
        if !case.args.iter().any(|a| a == "-p") {
            cmd.args(["-p", "play.yml"]);
        }
        if !case.args.iter().any(|a| a == "--ssh-config") {
            cmd.arg("--ssh-config").arg(fleet.ssh_config());
        }
        cmd.args(case.args.iter().filter(|a| *a != "DRIFT"));
        let out = common::run(cmd);
        let problems: Vec<String> = [
            (out.code != 1).then(|| format!("exit {} instead of 1", out.code)),
            out.stderr.contains("panicked").then(|| "it panicked".to_owned()),
            (!out.stdout.is_empty()).then(|| "a host was contacted (stdout not empty)".to_owned()),
        ]
        .into_iter()
        .flatten()
        .chain(
            case.expect.iter().filter(|e| !out.stderr.contains(e.as_str())).map(|e| format!("no `{e}` in the message")),
        )
        .collect();
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{out:?}", case.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), corpus.len(), failures.join("\n\n"));
    assert_eq!(fleet.fingerprint(1), before, "no host was touched");
}
