"""Processes, namespaces and interfaces, read from /proc and /sys (no ps/ss/ip parsing).

Everything here acts only on PIDs the caller hands in: nothing is found or killed by name.
"""
import os
import signal
import subprocess
import time


def pid_alive(pid):
    """True if `pid` exists and is not a zombie."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ('Z', 'X')


def terminal_signals():
    """A Popen preexec_fn: the child takes ^C (SIGINT) as it would in a terminal, even when
    its parent was started in the background by a shell, which ignores SIGINT there
    and passes that on (Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_process(proc, timeout=5.0):
    """SIGTERM a Popen we started, wait, SIGKILL if needed. Returns its exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        except ProcessLookupError:
            pass
    return proc.returncode


def netns_of(pid):
    """The network namespace id of `pid` ('net:[4026531840]'), or None."""
    try:
        return os.readlink('/proc/%d/ns/net' % pid)
    except OSError:
        return None


def pids_in_netns(ns):
    """PIDs of all processes whose network namespace is `ns`."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                if os.readlink('/proc/%s/ns/net' % entry) == ns:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def root_interfaces():
    """Interface names in this (the root) network namespace."""
    return sorted(os.listdir('/sys/class/net'))


def wait_until(predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
