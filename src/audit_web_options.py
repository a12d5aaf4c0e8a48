# SENTRY_WEB_OPTIONS read from sentry.conf.py (argv[1]) without running the
# file: it is the host's code, often writable by the `sentry` user, and the
# audit runs as root. The file is parsed; each top-level statement that sets
# the options is followed in order, values read with ast.literal_eval. What
# is not a literal (a name, a call, an f-string, a conditional assignment)
# is reported as dynamic, with its source, and never evaluated.
#
# Prints one JSON object: {"protocol": READ, "workers": READ, "error": TEXT},
# READ being null (not set: Sentry's default), {"value": V} or
# {"dynamic": SOURCE}.
import ast
import json
import sys

NAME = "SENTRY_WEB_OPTIONS"
KEYS = ("protocol", "workers")


def source(node, text):
    segment = ast.get_source_segment(text, node) or ast.dump(node)
    segment = " ".join(segment.split())
    return segment if len(segment) <= 120 else segment[:117] + "..."


def literal(node):
    try:
        return True, ast.literal_eval(node)
    except Exception:
        return False, None


def plain(value):
    """A literal as JSON can carry it: anything else as its repr."""
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def is_options(node):
    return isinstance(node, ast.Name) and node.id == NAME


def read(path):
    with open(path, "rb") as f:
        text_bytes = f.read()
    tree = ast.parse(text_bytes, path)
    text = text_bytes.decode("utf-8", "replace")
    options = {key: None for key in KEYS}

    def everything(dynamic):
        for key in KEYS:
            options[key] = {"dynamic": dynamic}

    def update(pairs, whole):
        """Keys and values of a dict display or of keyword arguments."""
        for key_node, value_node in pairs:
            known, key = literal(key_node) if key_node is not None else (False, None)
            if not known:
                # `**other` or a computed key: any of ours may be in it.
                everything(whole)
                continue
            if key in KEYS:
                known, value = literal(value_node)
                options[key] = {"value": plain(value)} if known else {"dynamic": source(value_node, text)}

    def assign(value, whole):
        for key in KEYS:
            options[key] = None
        if isinstance(value, ast.Dict):
            update(zip(value.keys, value.values), whole)
            return
        known, value = literal(value)
        if known and isinstance(value, dict):
            for key in KEYS:
                if key in value:
                    options[key] = {"value": plain(value[key])}
        else:
            everything(whole)

    for statement in tree.body:
        whole = source(statement, text)
        targets = []
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        if any(is_options(target) for target in targets):
            assign(value, whole)
            continue
        subscripts = [t for t in targets if isinstance(t, ast.Subscript) and is_options(t.value)]
        if subscripts and len(targets) == 1:
            update([(subscripts[0].slice, value)], whole)
            continue
        call = statement.value if isinstance(statement, ast.Expr) else None
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and is_options(call.func.value)
            and call.func.attr == "update"
        ):
            if all(isinstance(arg, ast.Dict) for arg in call.args):
                for arg in call.args:
                    update(zip(arg.keys, arg.values), whole)
                update([(ast.Constant(k.arg) if k.arg else None, k.value) for k in call.keywords], whole)
            else:
                everything(whole)
            continue
        # Anything else that may set or change the options (inside an `if`
        # or a `try`, a method call, `del`, `|=`): its effect is not known.
        for node in ast.walk(statement):
            if (
                (isinstance(node, ast.Name) and node.id == NAME and not isinstance(node.ctx, ast.Load))
                or (isinstance(node, ast.Subscript) and is_options(node.value) and not isinstance(node.ctx, ast.Load))
                or (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_options(node.func.value))
            ):
                everything(whole)
                break
    return options


try:
    result = read(sys.argv[1])
    result["error"] = None
except Exception as error:
    result = {key: None for key in KEYS}
    result["error"] = f"{type(error).__name__}: {error}"
print(json.dumps(result))
