"""Runs one benchmark case and prints "wall_seconds controller_peak_kb ssh_peak_kb exit_code".

    python3 bench/measure.py LOG COMMAND [ARG...]

The command's output goes to LOG. Memory is sampled every 50 ms over the
command's whole process tree, the controller (the command and any workers
it forks) apart from the ssh processes it starts. Each process counts by its
PSS (proportional set size: a page shared by n processes counts 1/n), so a
forked worker, or a child in the instant between fork and exec, does not
count its parent's pages twice. This process makes itself a child
subreaper, so ssh masters that detach (ControlPersist) stay in the tree.
"""

import ctypes
import os
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
INTERVAL = 0.05


def descendants(root):
    found, i = [root], 0
    while i < len(found):
        pid = found[i]
        i += 1
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    found.extend(int(c) for c in f.read().split())
        except OSError:
            pass  # gone since it was listed
    return found[1:]


def memory_kb(pid):
    """(name, PSS in kB) of a live process; None once it has exited."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            name = f.read().strip()
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return name, int(line.split()[1])
    except OSError:
        pass
    return None  # gone, or a zombie


def main():
    log, command = sys.argv[1], sys.argv[2:]
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    controller_peak = ssh_peak = 0
    with open(log, "wb") as out:
        start = time.monotonic()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        while child.poll() is None:
            controller = ssh = 0
            for pid in descendants(os.getpid()):
                found = memory_kb(pid)
                if found is None:
                    continue
                name, pss = found
                if name == "ssh":
                    ssh += pss
                else:
                    controller += pss
            controller_peak = max(controller_peak, controller)
            ssh_peak = max(ssh_peak, ssh)
            time.sleep(INTERVAL)
        wall = time.monotonic() - start
    print(f"{wall:.3f} {controller_peak} {ssh_peak} {child.returncode}")


main()
