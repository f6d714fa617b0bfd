"""Open vSwitch in userspace: start it if nobody did, and stop it only if we did.

There is no kernel module here, so bridges must be ``datapath_type=netdev``.
"""
import logging
import subprocess

from .procs import wait_until

OVS_CTL = '/usr/share/openvswitch/scripts/ovs-ctl'
log = logging.getLogger('kp_lab.ovs')
_started_by_us = False


def _vsctl(*args, timeout=5):
    return subprocess.run(['ovs-vsctl', '--timeout=2'] + list(args), capture_output=True,
                          text=True, timeout=timeout)


def ovs_running():
    try:
        return _vsctl('show').returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ovs_bridges():
    r = _vsctl('list-br')
    return r.stdout.split() if r.returncode == 0 else []


def ensure_ovs(timeout=20):
    """Start OVS (ovsdb-server + ovs-vswitchd) unless it runs. True if we started it."""
    global _started_by_us
    if ovs_running():
        return False
    r = subprocess.run([OVS_CTL, 'start', '--system-id=random', '--no-mlockall'],
                       capture_output=True, text=True, timeout=timeout)
    if not wait_until(ovs_running, 10):
        raise RuntimeError('ovs-ctl start did not bring OVS up:\n%s%s' % (r.stdout, r.stderr))
    _started_by_us = True
    log.info('started Open vSwitch (userspace)')
    return True


def started_by_us():
    return _started_by_us


def stop_ovs_if_started(force=False):
    """Stop OVS if ensure_ovs() started it in this process and no bridge is left (others'
    bridges keep it running unless `force`). True if it was stopped."""
    global _started_by_us
    if not _started_by_us:
        return False
    bridges = ovs_bridges()
    if bridges and not force:
        log.warning('leaving Open vSwitch running: bridges %s still exist', bridges)
        return False
    subprocess.run([OVS_CTL, 'stop'], capture_output=True, text=True, timeout=30)
    _started_by_us = False
    return True
