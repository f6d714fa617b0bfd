"""Fixtures for kp's integration tests: real traffic through Mininet (root needed).

- ``ovs`` (session): Open vSwitch in userspace, started if needed, stopped at the end
  only if this session started it (and no bridge of anyone else is left).
- ``switch_kind`` ('kpswitch' or 'ovs'; parametrized over SWITCH_CASES: kp-switch, Open
  vSwitch making sessions itself, Open vSwitch in packet-in mode): every test that uses
  it runs in each case with the same assertions.  A test marked ``both_port_io`` runs
  kp-switch on AF_XDP and on AF_PACKET by name (``switch_port_io``; skipped with the
  reason where the kernel has no AF_XDP) instead of on kp-switch's default. When kp-switch fails its contract probe
  (``kp_lab.kp_switch_works``) the kpswitch case is reported XFAIL with the reason;
  ``KP_REQUIRE_KPSWITCH=1`` turns that into a failure.
- ``controller_app`` (default 'kp_app') and ``controller_rest`` (default: whether the app
  is kp_app): override them in a test module to run another Ryu app, e.g.::

      @pytest.fixture
      def controller_app():
          return 'ryu.app.simple_switch_13'

- ``controller_extra_args`` (default []): more ryu-manager arguments for kp_app.
- ``controller``: a started ``kp_lab.ControllerProcess`` on free ports (``.of_port``,
  ``.wsapi_port``, ``.url(path)``, ``.log_tail()``), stopped after the test.
- ``lab_factory``: ``lab_factory('kpnode', clients=2, pods=3)`` builds a topology on
  ``switch_kind`` connected to ``controller``; every lab is closed after the test.
- ``kpnode``: ``lab_factory('kpnode', clients=2, pods=3)``.
"""
import os
import sys

import pytest

TOPOLOGIES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'topologies')
_why_not = None
try:
    import kp_lab  # (a package of the project once setup.cfg maps topologies/kp_lab)
except ImportError:
    if TOPOLOGIES not in sys.path:
        sys.path.insert(0, TOPOLOGIES)
    try:
        import kp_lab
    except ImportError as e:       # no Mininet here
        kp_lab = None
        _why_not = 'Mininet or kp_lab not importable: %s' % e
if _why_not is None and os.geteuid() != 0:
    _why_not = 'integration tests need root (Mininet)'


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)
            if _why_not:
                item.add_marker(pytest.mark.skip(reason=_why_not))
    _deselect_switch_kept_sessions(config, items)


@pytest.fixture(scope='session')
def ovs():
    """Open vSwitch (userspace) is running for the session."""
    started = kp_lab.ensure_ovs()
    yield started
    kp_lab.stop_ovs_if_started()


@pytest.fixture(scope='session')
def kpswitch_status():
    """(ok, detail) of kp-switch's contract probe, once per session."""
    return kp_lab.kp_switch_works()


# The switches and the modes kp_app runs them in: kp-switch makes sessions itself in its
# C data path ('kpswitch', lb: kp_app's default there), Open vSwitch with its conntrack
# ('ovs', ct: the default there) or leaves them to the controller ('ovs-packet-in', as
# any OpenFlow 1.3 switch).
SWITCH_CASES = {'kpswitch': ('kpswitch', 'lb'), 'ovs': ('ovs', 'ct'),
                'ovs-packet-in': ('ovs', 'packet-in'),
                'kpswitch-afxdp': ('kpswitch', 'lb'), 'kpswitch-afpacket': ('kpswitch', 'lb')}
SWITCH_KEEPS_SESSIONS = ('ct', 'lb')
# kp-switch's --ports per case: 'kpswitch' is its default (auto: AF_XDP where the ports
# take it).  Tests marked both_port_io run on each backend by name instead.
PORT_IO = {'kpswitch-afxdp': 'afxdp', 'kpswitch-afpacket': 'afpacket'}
DEFAULT_CASES = ['kpswitch', 'ovs', 'ovs-packet-in']
BOTH_PORT_IO_CASES = ['kpswitch-afxdp', 'kpswitch-afpacket', 'ovs', 'ovs-packet-in']


def pytest_generate_tests(metafunc):
    if 'switch_kind' in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker('both_port_io') is not None
        metafunc.parametrize('switch_kind', BOTH_PORT_IO_CASES if both else DEFAULT_CASES,
                             indirect=True)


def _case(item):
    callspec = getattr(item, 'callspec', None)
    return callspec.params.get('switch_kind') if callspec is not None else None


def _deselect_switch_kept_sessions(config, items):
    """Tests of what the controller's own session table shows (`packet_in_sessions`) do
    not run where the switch keeps the sessions: deselected, and counted as such."""
    kept, dropped = [], []
    for item in items:
        wants = item.get_closest_marker('packet_in_sessions') is not None
        mode = SWITCH_CASES.get(_case(item), (None, None))[1]
        (dropped if wants and mode in SWITCH_KEEPS_SESSIONS else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def switch_kind(request):
    kind, _ = SWITCH_CASES[request.param]
    request.node.add_marker(getattr(pytest.mark, kind))
    if kind == 'ovs':
        request.getfixturevalue('ovs')
    else:
        if PORT_IO.get(request.param) == 'afxdp':
            why = _af_xdp_refusal()
            if why:
                pytest.skip(why)
        ok, detail = request.getfixturevalue('kpswitch_status')
        if not ok:
            if os.environ.get('KP_REQUIRE_KPSWITCH') == '1':
                pytest.fail('kp-switch does not work: %s' % detail)
            lines = [l.strip() for l in detail.splitlines() if l.strip()]
            short = lines[0] + (' ... ' + lines[-1] if len(lines) > 1 else '')
            pytest.xfail('kp-switch does not work yet: %s' % short)
    return kind


def _af_xdp_refusal():
    """Why this kernel has no AF_XDP sockets, or ''."""
    import socket
    try:
        socket.socket(44, socket.SOCK_RAW, 0).close()      # AF_XDP
    except OSError as e:
        return 'the kernel refuses AF_XDP sockets: %s' % (e.strerror or e)
    return ''


@pytest.fixture
def switch_port_io(request):
    """kp-switch's --ports in this test's switch case, or None (its default)."""
    return PORT_IO.get(_case(request.node))


@pytest.fixture
def controller_app():
    return 'kp_app'


@pytest.fixture
def controller_rest(controller_app):
    return controller_app == 'kp_app'


@pytest.fixture
def controller_mode(request):
    """kp_app's --kp-mode for this test's switch case (None: kp_app's default)."""
    return SWITCH_CASES.get(_case(request.node), (None, None))[1]


@pytest.fixture
def controller_extra_args():
    """More ryu-manager arguments for the controller (override in a test module)."""
    return []


@pytest.fixture
def controller(controller_app, controller_rest, controller_mode, controller_extra_args,
               request):
    extra = ['--kp-mode', controller_mode] if controller_mode and controller_app == 'kp_app' \
        else []
    extra += list(controller_extra_args)
    ctl = kp_lab.ControllerProcess(controller_app, rest=controller_rest, extra_args=extra)
    ctl.start()
    yield ctl
    ctl.stop()
    failed = getattr(request.node, 'rep_call', None)
    if failed is not None and failed.failed:
        sys.stderr.write('\n--- controller log (%s) ---\n%s' % (ctl.log_file, ctl.log_tail()))
    else:
        ctl.remove_log()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, 'rep_' + rep.when, rep)


@pytest.fixture
def lab_factory(switch_kind, switch_port_io, controller, request):
    labs = []

    def make(topo_name='kpnode', **topo_args):
        lab = kp_lab.build_net(topo_name, switch=switch_kind,
                               controller_port=controller.of_port, port_io=switch_port_io,
                               **topo_args)
        labs.append(lab)
        if switch_port_io:    # the switches run on what the case names, not a fallback
            for name, modes in lab.switch_port_io().items():
                assert modes and all(m.split()[0] == switch_port_io for m in modes), \
                    (name, modes, lab.switch_logs([name]))
        return lab

    yield make
    failed = getattr(request.node, 'rep_call', None)
    for lab in labs:
        if failed is not None and failed.failed and not lab.closed:
            sys.stderr.write(lab.switch_logs())
        lab.close()


@pytest.fixture
def kpnode(lab_factory):
    return lab_factory('kpnode', clients=2, pods=3)
