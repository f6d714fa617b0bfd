"""The switch's ports: numbers, names, addresses, OpenFlow config and state.

`PortSet` is plain data the pipeline asks "where does FLOOD go, is this port live";
`read_link()` reads what Linux knows about an interface (sysfs; the only I/O here).
"""

from ryu.ofproto import ofproto_v1_3 as ofp

# Port-mod config bits kp honours (OFPPC_NO_RECV is refused: the fast path cannot).
SUPPORTED_CONFIG = ofp.OFPPC_PORT_DOWN | ofp.OFPPC_NO_FWD | ofp.OFPPC_NO_PACKET_IN


def read_link(ifname):
    """(hw_addr str, link_up bool, speed_kbps int) of a Linux interface."""
    base = "/sys/class/net/%s/" % ifname

    def rd(name, default=""):
        try:
            with open(base + name) as f:
                return f.read().strip()
        except OSError:
            return default

    hw = rd("address", "00:00:00:00:00:00") or "00:00:00:00:00:00"
    up = rd("carrier", "0") == "1" and rd("operstate", "down") in ("up", "unknown")
    try:
        speed = int(rd("speed", "-1"))
    except ValueError:
        speed = -1
    return hw, up, (speed * 1000 if speed > 0 else 10000000)


class Port:
    __slots__ = ("port_no", "name", "hw_addr", "config", "link_up", "speed_kbps", "added")

    def __init__(self, port_no, name, hw_addr="00:00:00:00:00:00", link_up=True,
                 speed_kbps=10000000, now=0.0):
        self.port_no = port_no
        self.name = name
        self.hw_addr = hw_addr
        self.config = 0
        self.link_up = link_up
        self.speed_kbps = speed_kbps
        self.added = now

    @property
    def state(self):
        s = 0
        if not self.link_up:
            s |= ofp.OFPPS_LINK_DOWN
        if self.live:
            s |= ofp.OFPPS_LIVE
        return s

    @property
    def live(self):
        return self.link_up and not self.config & ofp.OFPPC_PORT_DOWN

    @property
    def forwards(self):
        return not self.config & (ofp.OFPPC_PORT_DOWN | ofp.OFPPC_NO_FWD)


class PortSet:
    def __init__(self, ports=()):
        self.ports = {p.port_no: p for p in ports}

    def __contains__(self, port_no):
        return port_no in self.ports

    def __iter__(self):
        return iter(sorted(self.ports.values(), key=lambda p: p.port_no))

    def get(self, port_no):
        return self.ports.get(port_no)

    def can_output(self, port_no):
        p = self.ports.get(port_no)
        return p is not None and p.forwards

    def flood(self, in_port):
        """Ports FLOOD and ALL send to: every forwarding port but the ingress one."""
        return [p.port_no for p in self if p.port_no != in_port and p.forwards]

    def is_live(self, port_no):
        p = self.ports.get(port_no)
        return p is not None and p.live

    def packet_in_allowed(self, port_no):
        p = self.ports.get(port_no)
        return p is None or not p.config & ofp.OFPPC_NO_PACKET_IN
