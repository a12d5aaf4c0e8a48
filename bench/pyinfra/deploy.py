"""The Sentry tuning as a pyinfra deploy, equivalent to
playbooks/sentry-tuning.yml, for scripts/bench. Same templates."""

import os
import shlex

from jinja2.ext import Extension
from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.facts.server import Command
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

class Quote(Extension):
    """The templates' `quote` filter, as Ansible's and sentry-provision's: shlex.quote."""

    def __init__(self, environment):
        super().__init__(environment)
        environment.filters["quote"] = lambda value: shlex.quote(str(value))


# As sentry-provision and Ansible render templates: a block tag takes its
# newline, and `quote` quotes for the shell. A fresh dict for each template
# (pyinfra pops from it).
def jinja():
    return {"trim_blocks": True, "extensions": [Quote]}
TEMPLATES = os.path.join(os.path.dirname(__file__), "..", "..", "templates")
cpus = int(host.get_fact(Command, "nproc"))
v = dict(
    redis_conf="/etc/redis/redis.conf",
    redis_maxmemory="1gb",
    redis_maxmemory_policy="allkeys-lru",
    sentry_conf_dir="/etc/sentry",
    sentry_bin=host.data.get("sentry_bin", "/www/sentry/bin/sentry"),
    sentry_web_host="127.0.0.1",
    sentry_web_port=9000,
    sentry_web_workers=max(3, cpus * 3),
    sentry_web_program=host.data.get("sentry_web_program", "sentry-web"),
    nginx_listen="80",
    nginx_server_name=host.data.get("inventory_hostname", host.name),
    nginx_client_max_body_size="100m",
    nginx_ssl_certificate="",
    nginx_ssl_certificate_key="",
    nginx_ssl_listen="443",
    supervisor_conf_dir="/etc/supervisor/conf.d",
    sentry_worker_concurrency=4,
    sentry_worker_numprocs=max(16, cpus * 2),
    sentry_worker_loglevel="WARNING",
    sentry_worker_directory=host.data.get("sentry_worker_directory", "/www/sentry"),
    superlance_venv="/opt/superlance",
    memmon_limit="400MB",
    memmon_email="ops@example.com",
)

redis = [
    files.line(name="Remove RDB snapshot lines", path=v["redis_conf"], line=r"^\s*save\s\s*[0-9]", present=False),
    files.line(name="Snapshots off", path=v["redis_conf"], line=r"^\s*save\s", replace='save ""'),
    files.line(name="AOF off", path=v["redis_conf"], line=r"^\s*appendonly\s", replace="appendonly no"),
    files.line(name="Cap memory", path=v["redis_conf"], line=r"^\s*maxmemory\s", replace="maxmemory " + v["redis_maxmemory"]),
    files.line(name="LRU", path=v["redis_conf"], line=r"^\s*maxmemory-policy\s", replace="maxmemory-policy " + v["redis_maxmemory_policy"]),
]
web = files.block(
    name="Sentry web over uwsgi",
    path=v["sentry_conf_dir"] + "/sentry.conf.py",
    marker="# {mark} sentry-provision: web server options",
    content="SENTRY_WEB_HOST = '%s'\nSENTRY_WEB_PORT = %d\nSENTRY_WEB_OPTIONS = {\n    'protocol': 'uwsgi',\n    'workers': %d,\n}"
    % (v["sentry_web_host"], v["sentry_web_port"], v["sentry_web_workers"]),
)
nginx = [
    files.template(name="nginx site", src=os.path.join(TEMPLATES, "nginx-sentry.conf.j2"), dest="/etc/nginx/sites-available/sentry", mode="644", jinja_env_kwargs=jinja(), **v),
    files.link(name="enable site", path="/etc/nginx/sites-enabled/sentry", target="/etc/nginx/sites-available/sentry"),
]
if host.get_fact(File, path=v["superlance_venv"] + "/bin/memmon") is None:
    server.shell(
        name="Install superlance (memmon)",
        commands=["python3 -m venv %s && %s/bin/pip install --quiet superlance" % (v["superlance_venv"], v["superlance_venv"])],
    )
supervisor = [
    files.template(name="workers", src=os.path.join(TEMPLATES, "supervisor-sentry-worker.conf.j2"), dest=v["supervisor_conf_dir"] + "/sentry-worker.conf", mode="644", jinja_env_kwargs=jinja(), **v),
    files.template(name="memmon", src=os.path.join(TEMPLATES, "supervisor-memmon.conf.j2"), dest=v["supervisor_conf_dir"] + "/memmon.conf", mode="644", jinja_env_kwargs=jinja(), **v),
]

server.shell(
    name="apply redis settings live",
    commands=[
        "for kv in \"save ''\" 'appendonly no' 'maxmemory 1gb' 'maxmemory-policy allkeys-lru'; do eval \"set -- $kv\"; "
        "[ \"$(redis-cli CONFIG SET \"$1\" \"$2\")\" = OK ] || exit 1; done",
    ],
    _if=any_changed(*redis),
)
server.shell(
    name="restart sentry web",
    commands=["supervisorctl restart %s" % v["sentry_web_program"]],
    _if=web.did_change,
)
# As sentry-provision's handler: wait until the master has replaced its workers.
server.shell(
    name="test and reload nginx",
    commands=[
        "nginx -t 2>&1 || exit 1; "
        "workers() { pgrep -P \"$(cat /run/nginx.pid)\" | sort | tr '\\n' ' '; }; "
        "before=$(workers); nginx -s reload; "
        "for _ in $(seq 50); do [ \"$(workers)\" != \"$before\" ] && break; sleep 0.1; done"
    ],
    _if=any_changed(*nginx),
)
server.shell(
    name="update supervisor",
    commands=[
        "supervisorctl update && sleep 1 && "
        "for _ in $(seq 20); do status=$(supervisorctl status); printf '%s\\n' \"$status\" | grep -q STARTING || break; sleep 0.5; done; "
        "! printf '%s\\n' \"$status\" | grep -E 'FATAL|BACKOFF|EXITED'"
    ],
    _if=any_changed(*supervisor),
)
