"""The OpenFlow agent: channels to controllers, the slow path, timeouts, port watch.

Threads (plain threads and blocking sockets; no eventlet):
- one connector per `--controller` target: connects, runs the channel, reconnects with
  backoff (1 s doubling to 8 s) when the controller goes away; the tables stay as they
  are meanwhile, so the switch keeps forwarding (fail-secure);
- one acceptor per `--listen` address (management connections: ovs-ofctl and friends;
  at most limits.MAX_MGMT_CONNECTIONS at once);
- per connection a reader (decodes and handles requests, paced by a token bucket: see
  limits.py for what a connection may cost) and a writer (a bounded queue, so a slow
  controller never blocks the slow path: packet-ins beyond it are dropped);
- the slow path: `dp.next_misses()` -> pipeline -> `dp.execute()` (+ `dp.cache_insert()`
  when cacheable, with the megaflow mask the pipeline computed unless the answer cannot
  be one: FASTPATH.md "Megaflows") -> packet-ins;
- a housekeeping tick about once a second: flow timeouts (cache hits count as use),
  link state of the ports (port-status), echo keepalives, handshake deadlines.

Locking: `self.lock` guards the tables, groups, ports and buffers.  The slow path holds
it from the lookup to the cache insert, and flow-mods hold it while they change tables
and invalidate the cache, so an insert is never based on tables older than the last
invalidation (inserts and invalidations reach the datapath thread through one FIFO).

What invalidates what (tables.py has the flow-mod rules: an add invalidates only the
lower-or-equal-priority entries it overlaps and its table's miss; modify, delete and
timeouts the entries' own ids): a group-mod the flows using the group; port-mod,
a link change and set-config's invalid-TTL flag the whole cache.

(Over 500 lines: the threads above share the tables' lock and the datapath, and how
each takes them is the agent's whole correctness; OpenFlow's encoding is in wire.py,
the tables' rules in tables.py, connection limits in limits.py.)
"""
import collections
import logging
import queue
import socket
import ssl
import struct
import threading
import time

from ryu.ofproto import ofproto_v1_3 as ofp

from kp_proto import experimenter as kpexp
from kp_proto import lb as kplb

from . import datapath as dpimpl
from . import limits
from . import megaflow
from . import tls as kptls
from . import wire
from .actions import Context, compile_actions
from .errors import OFError
from .groups import GroupTable
from .lb_messages import LbMessages
from .match import FIELDS, SETTABLE
from .pipeline import Pipeline
from .ports import SUPPORTED_CONFIG, Port, PortSet, read_link
from .tables import FlowTables

LOG = logging.getLogger("kp_switch.agent")

N_TABLES = 8
N_BUFFERS = 256
BUFFER_LIFETIME = 5.0
TICK = 1.0
ECHO_IDLE = 5.0
DEAD_IDLE = 15.0
SEND_QUEUE = 4096
READ_CHUNK = limits.READ_CHUNK
WRITE_BATCH = 1 << 16  # queued messages joined into one send up to this many bytes
CAPABILITIES = ofp.OFPC_FLOW_STATS | ofp.OFPC_TABLE_STATS | ofp.OFPC_PORT_STATS | ofp.OFPC_GROUP_STATS
SLAVE_DENIED = {ofp.OFPT_PACKET_OUT, ofp.OFPT_FLOW_MOD, ofp.OFPT_GROUP_MOD, ofp.OFPT_PORT_MOD,
                ofp.OFPT_TABLE_MOD, ofp.OFPT_METER_MOD}
OFPC_INVALID_TTL_TO_CONTROLLER = 1 << 2  # ofp_config_flags; not in Ryu's ofproto_v1_3
OFPTC_DEPRECATED_MASK = 3                # ofp_table_config
# ofp_async_config masks: (master/equal, slave) for packet-in, port-status, flow-removed.
DEFAULT_ASYNC = ((1 << ofp.OFPR_NO_MATCH) | (1 << ofp.OFPR_ACTION) | (1 << ofp.OFPR_INVALID_TTL), 0,
                 0x7, 0x7,
                 0xF, 0)
INSTRUCTIONS = (ofp.OFPIT_GOTO_TABLE, ofp.OFPIT_WRITE_METADATA, ofp.OFPIT_WRITE_ACTIONS,
                ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_CLEAR_ACTIONS)
ACTION_TYPES = (ofp.OFPAT_OUTPUT, ofp.OFPAT_PUSH_VLAN, ofp.OFPAT_POP_VLAN, ofp.OFPAT_DEC_NW_TTL,
                ofp.OFPAT_GROUP, ofp.OFPAT_SET_FIELD)
ACTIONS_BITMAP = ((1 << ofp.OFPAT_OUTPUT) | (1 << ofp.OFPAT_GROUP) | (1 << ofp.OFPAT_SET_FIELD) |
                  (1 << ofp.OFPAT_PUSH_VLAN) | (1 << ofp.OFPAT_POP_VLAN) | (1 << ofp.OFPAT_DEC_NW_TTL))


def parse_target(spec, passive):
    """'tcp:HOST:PORT' / 'ssl:HOST:PORT' / 'ptcp:PORT[:IP]' -> (host, port)."""
    parts = spec.split(":")
    if passive:
        if parts[0] != "ptcp" or len(parts) not in (2, 3):
            raise ValueError("listen address must be ptcp:PORT[:IP], not %r" % spec)
        return (parts[2] if len(parts) == 3 else "127.0.0.1", int(parts[1]))
    if parts[0] not in ("tcp", "ssl") or len(parts) not in (2, 3):
        raise ValueError("controller must be tcp:HOST[:PORT] or ssl:HOST[:PORT], not %r" % spec)
    return (parts[1], int(parts[2]) if len(parts) == 3 else 6653)


class Connection:
    """One OpenFlow channel (to a controller, or a management client)."""

    def __init__(self, agent, sock, peer, passive, rate=None):
        """`rate`: messages a second its reader handles (limits: MGMT_RATE for a
        management connection, CONTROLLER_RATE for a controller)."""
        self.agent = agent
        self.sock = sock
        self.peer = peer
        self.passive = passive
        if rate is None:
            rate = limits.MGMT_RATE if passive else limits.CONTROLLER_RATE
        self.bucket = limits.TokenBucket(rate, rate, time.monotonic())
        self.throttled = 0  # messages whose reading waited for the bucket
        self.opened = time.monotonic()
        self.negotiated = False
        self.role = ofp.OFPCR_ROLE_EQUAL
        self.async_masks = DEFAULT_ASYNC
        # Management connections get no async messages until they ask (set-config or
        # set-async), like Open vSwitch's service connections.
        self.async_enabled = not passive
        self.last_rx = time.monotonic()
        self.echo_sent = 0.0
        self.dropped = 0
        self.closed = threading.Event()
        self.outq = queue.Queue(SEND_QUEUE)
        self.writer = threading.Thread(target=self._write_loop, name="kp-of-tx", daemon=True)

    def __repr__(self):
        return "<%s %s:%s>" % ("mgmt" if self.passive else "controller", self.peer[0], self.peer[1])

    # -- output
    def send(self, data, async_=False):
        if self.closed.is_set():
            return
        try:
            if async_:
                self.outq.put_nowait(data)
            else:
                self.outq.put(data, timeout=5)
        except queue.Full:
            self.dropped += 1
            if not async_:
                self.close()

    def _write_loop(self):
        # Everything queued meanwhile goes out in one send: a burst of packet-ins or
        # replies costs one system call (and one GIL round trip), not one per message.
        outq = self.outq
        try:
            while not self.closed.is_set():
                try:
                    data = outq.get(timeout=0.5)
                except queue.Empty:
                    continue
                if data is None:
                    break
                batch = [data]
                size = len(data)
                stop = False
                while size < WRITE_BATCH:
                    try:
                        more = outq.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                    size += len(more)
                self.sock.sendall(batch[0] if len(batch) == 1 else b"".join(batch))
                if stop:
                    break
        except OSError as e:
            LOG.info("%r: send failed: %s", self, e)
        finally:
            self.close()

    def close(self):
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.outq.put_nowait(None)
        except queue.Full:
            pass

    # -- input
    def run(self):
        """Serve the channel until it closes (blocking).  Reads what the socket has (up
        to READ_CHUNK) and handles every whole message in it before reading again."""
        self.writer.start()
        self.send(wire.hello())
        buf = b""
        header = wire.HEADER
        try:
            while not self.closed.is_set():
                chunk = self.sock.recv(READ_CHUNK)
                if not chunk:
                    break
                buf = buf + chunk if buf else chunk
                off, n = 0, len(buf)
                bad = False
                while n - off >= 8 and not self.closed.is_set():
                    version, type_, length, xid = header.unpack_from(buf, off)
                    if length < 8:
                        self.send(wire.error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN,
                                             buf[off:off + 8]))
                        bad = True
                        break
                    if n - off < length:
                        break
                    data = buf[off:off + length] if (off or length != n) else buf
                    off += length
                    if self._pace():
                        break
                    self.last_rx = time.monotonic()
                    self.echo_sent = 0.0
                    self.agent.handle(self, data)
                if bad:  # no way to find the next message: send the error, then close
                    try:
                        self.outq.put(None, timeout=2)  # the writer stops after the error
                    except queue.Full:
                        pass
                    self.writer.join(2)
                    break
                if off:
                    buf = buf[off:]
        except OSError as e:
            if not self.closed.is_set():
                LOG.info("%r: receive failed: %s", self, e)
        finally:
            self.close()
            self.writer.join(2)
            try:
                self.sock.close()
            except OSError:
                pass

    def _pace(self):
        """Wait until the bucket lets the next message be handled (reading nothing
        meanwhile, so TCP pushes back on the peer); True if the connection closed."""
        wait = self.bucket.take(time.monotonic())
        if wait <= 0:
            return False
        if not self.throttled:
            LOG.warning("%r: over %.0f messages a second: reading it more slowly", self,
                        self.bucket.rate)
        self.throttled += 1
        return self.closed.wait(wait)

    def wants(self, kind, reason):
        """Should this connection get an async message (kind: 0 packet-in, 1 port-status,
        2 flow-removed) with this reason?"""
        if not (self.negotiated and self.async_enabled) or self.closed.is_set():
            return False
        slave = self.role == ofp.OFPCR_ROLE_SLAVE
        mask = self.async_masks[kind * 2 + (1 if slave else 0)]
        return bool(mask & (1 << reason))


class Agent:
    def __init__(self, dp, ports, dpid=1, n_tables=N_TABLES, n_buffers=N_BUFFERS,
                 clock=time.monotonic, link_reader=read_link, tls_context=None,
                 node_announcement="", max_flows=100000,
                 max_mgmt_connections=limits.MAX_MGMT_CONNECTIONS, mgmt_rate=limits.MGMT_RATE):
        """`dp`: a fast path Datapath; `ports`: [(port_no, ifname)]; `tls_context`: the
        ssl.SSLContext of ssl: controllers (tls.client_context); `node_announcement`:
        appended to the DESC reply's dp_desc (kp_proto.node_announcement); `max_flows`:
        entries per table (an add beyond them: OFPFMFC_TABLE_FULL); `max_mgmt_connections`,
        `mgmt_rate`: management connections at once, and messages a second each (limits)."""
        self.dp = dp
        self.tls_context = tls_context
        self.dpid = dpid
        self.node_announcement = node_announcement
        self.clock = clock
        self.link_reader = link_reader
        self.n_buffers = n_buffers
        self.lock = threading.RLock()
        self.lb = LbMessages(dp)
        now = clock()
        plist = []
        for port_no, ifname in ports:
            hw, up, speed = link_reader(ifname)
            plist.append(Port(port_no, ifname, hw, up, speed, now))
        self.ports = PortSet(plist)
        self.tables = FlowTables(n_tables, max_flows, cache=dp, max_flow_ids=dpimpl.MAX_FLOW_IDS)
        self.groups = GroupTable()
        self.pipeline = Pipeline(self.tables, self.groups, self.ports)
        self.buffers = collections.OrderedDict()  # buffer_id -> (in_port, packet, time)
        self._next_buffer = 0
        self.config_flags = 0
        self.miss_send_len = 128  # OFP_DEFAULT_MISS_SEND_LEN
        self.generation_id = None
        self.connections = set()
        self.stopping = threading.Event()
        self.threads = []
        self.listen_socks = []
        self.packet_ins_dropped = 0
        self.max_mgmt_connections = max_mgmt_connections
        self.mgmt_rate = mgmt_rate
        self.mgmt_connections = 0   # open now, over every --listen port
        self.mgmt_refused = 0       # accepted beyond the limit and closed
        self.handlers = {
            ofp.OFPT_ECHO_REQUEST: self.on_echo_request,
            ofp.OFPT_ECHO_REPLY: lambda c, m: None,
            ofp.OFPT_ERROR: self.on_error,
            ofp.OFPT_FEATURES_REQUEST: self.on_features,
            ofp.OFPT_GET_CONFIG_REQUEST: self.on_get_config,
            ofp.OFPT_SET_CONFIG: self.on_set_config,
            ofp.OFPT_PACKET_OUT: self.on_packet_out,
            ofp.OFPT_FLOW_MOD: self.on_flow_mod,
            ofp.OFPT_GROUP_MOD: self.on_group_mod,
            ofp.OFPT_PORT_MOD: self.on_port_mod,
            ofp.OFPT_TABLE_MOD: self.on_table_mod,
            ofp.OFPT_MULTIPART_REQUEST: self.on_multipart,
            ofp.OFPT_BARRIER_REQUEST: lambda c, m: c.send(wire.barrier_reply(m.xid)),
            ofp.OFPT_QUEUE_GET_CONFIG_REQUEST: self.on_queue_get_config,
            ofp.OFPT_ROLE_REQUEST: self.on_role_request,
            ofp.OFPT_GET_ASYNC_REQUEST: lambda c, m: c.send(wire.get_async_reply(m.xid, c.async_masks)),
            ofp.OFPT_SET_ASYNC: self.on_set_async,
            ofp.OFPT_EXPERIMENTER: self.on_experimenter,
        }

    # -- lifecycle -------------------------------------------------------------------

    def _thread(self, target, name, *args):
        t = threading.Thread(target=target, name=name, args=args, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def start(self, controllers=(), listens=()):
        self.dp.start()
        for spec in listens:
            host, port = parse_target(spec, True)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(16)
            s.settimeout(0.5)
            self.listen_socks.append(s)
            self._thread(self._accept_loop, "kp-of-listen", s)
        for spec in controllers:
            target, tls = parse_target(spec, False), spec.startswith("ssl:")
            if tls and self.tls_context is None:
                raise ValueError("%s needs --private-key, --certificate and --ca-cert" % spec)
            self._thread(self._connect_loop, "kp-of-connect", target, tls)
        self._thread(self._slow_path_loop, "kp-slow-path")
        self._thread(self._tick_loop, "kp-tick")

    def stop(self):
        self.stopping.set()
        for s in self.listen_socks:
            try:
                s.close()
            except OSError:
                pass
        for c in list(self.connections):
            c.close()
        for t in self.threads:
            t.join(3)
        self.dp.stop()

    def _accept_loop(self, lsock):
        while not self.stopping.is_set():
            try:
                s, peer = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self.lock:
                full = self.mgmt_connections >= self.max_mgmt_connections
                if full:
                    self.mgmt_refused += 1
                else:
                    self.mgmt_connections += 1
            if full:
                if self.mgmt_refused % limits.LOG_EVERY == 1:
                    LOG.warning("management connection from %s:%d refused: %d open already "
                                "(%d refused so far)", peer[0], peer[1],
                                self.max_mgmt_connections, self.mgmt_refused)
                s.close()
                continue
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve_mgmt, args=(s, peer), name="kp-of-mgmt",
                             daemon=True).start()

    def _serve_mgmt(self, sock, peer):
        try:
            self._serve(sock, peer, True)
        finally:
            with self.lock:
                self.mgmt_connections -= 1

    def _connect_loop(self, target, tls=False):
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                s = socket.create_connection(target, timeout=5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if tls:
                    try:
                        s = kptls.connect(s, self.tls_context)  # handshake in the 5 s
                    except OSError:
                        s.close()
                        raise
            except OSError as e:
                (LOG.warning if isinstance(e, ssl.SSLError) else LOG.debug)("controller %s:%d: %s; retry in %.0fs", target[0], target[1], e, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 8.0)
                continue
            s.settimeout(None)
            LOG.info("connected to controller %s:%d%s", target[0], target[1], " (TLS)" if tls else "")
            started = time.monotonic()
            self._serve(s, target, False)
            LOG.info("controller %s:%d went away; keeping %d flows", target[0], target[1],
                     sum(len(t) for t in self.tables.tables))
            if time.monotonic() - started > 10:
                backoff = 1.0
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, 8.0)

    def _serve(self, sock, peer, passive):
        conn = Connection(self, sock, peer, passive, self.mgmt_rate if passive else None)
        with self.lock:
            self.connections.add(conn)
        try:
            conn.run()
        finally:
            with self.lock:
                self.connections.discard(conn)

    # -- message dispatch ------------------------------------------------------------

    def handle(self, conn, data):
        version, type_, length, xid = wire.HEADER.unpack_from(data)
        if type_ == ofp.OFPT_HELLO:
            self.on_hello(conn, version, data)
            return
        if not conn.negotiated:
            if type_ == ofp.OFPT_ERROR:
                return
            conn.send(wire.error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM, data))
            return
        if version != wire.VERSION:
            conn.send(wire.error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_VERSION, data))
            return
        handler = self.handlers.get(type_)
        if handler is None:
            conn.send(wire.error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE, data))
            return
        if type_ in SLAVE_DENIED and conn.role == ofp.OFPCR_ROLE_SLAVE:
            conn.send(wire.error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE, data))
            return
        try:
            m = wire.decode(data)
            handler(conn, m)
        except OFError as e:
            LOG.info("%r: refused type %d xid %d: %s", conn, type_, xid, e)
            conn.send(wire.error(xid, e.type, e.code, data))
        except Exception:
            LOG.exception("%r: failed to handle message type %d", conn, type_)
            conn.send(wire.error(xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, data))

    def on_hello(self, conn, version, data):
        theirs = wire.hello_version_bitmap(data)
        ok = (theirs >> wire.VERSION) & 1 if theirs is not None else version >= wire.VERSION
        if not ok:
            LOG.warning("%r: no common OpenFlow version (they speak %#x)", conn, version)
            conn.send(wire.error(struct.unpack_from("!I", data, 4)[0], ofp.OFPET_HELLO_FAILED,
                                 ofp.OFPHFC_INCOMPATIBLE, b"kp-switch speaks OpenFlow 1.3 only"))
            threading.Timer(0.2, conn.close).start()
            return
        conn.negotiated = True

    def on_echo_request(self, conn, m):
        conn.send(wire.echo_reply(m.xid, m.body))

    def on_error(self, conn, m):
        LOG.warning("%r sent an error: %s", conn, m.body[:4].hex())

    def on_features(self, conn, m):
        conn.send(wire.features_reply(m.xid, self.dpid, self.n_buffers, len(self.tables.tables),
                                      CAPABILITIES))

    def on_get_config(self, conn, m):
        conn.send(wire.get_config_reply(m.xid, self.config_flags, self.miss_send_len))

    def on_set_config(self, conn, m):
        if m.flags & ofp.OFPC_FRAG_MASK != ofp.OFPC_FRAG_NORMAL or \
                m.flags & ~(ofp.OFPC_FRAG_MASK | OFPC_INVALID_TTL_TO_CONTROLLER):
            raise OFError(ofp.OFPET_SWITCH_CONFIG_FAILED, ofp.OFPSCFC_BAD_FLAGS, "flags %#x" % m.flags)
        if m.miss_send_len > ofp.OFPCML_MAX and m.miss_send_len != ofp.OFPCML_NO_BUFFER:
            raise OFError(ofp.OFPET_SWITCH_CONFIG_FAILED, ofp.OFPSCFC_BAD_LEN)
        with self.lock:
            if (m.flags ^ self.config_flags) & OFPC_INVALID_TTL_TO_CONTROLLER:
                self.dp.invalidate_all()  # caching of dec_ttl results depends on it
            self.config_flags = m.flags
            self.miss_send_len = m.miss_send_len
        conn.async_enabled = True

    def on_set_async(self, conn, m):
        conn.async_masks = tuple(m.masks)
        conn.async_enabled = True

    def on_role_request(self, conn, m):
        role = m.role
        if role not in (ofp.OFPCR_ROLE_NOCHANGE, ofp.OFPCR_ROLE_EQUAL, ofp.OFPCR_ROLE_MASTER,
                        ofp.OFPCR_ROLE_SLAVE):
            raise OFError(ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_BAD_ROLE)
        with self.lock:
            if role in (ofp.OFPCR_ROLE_MASTER, ofp.OFPCR_ROLE_SLAVE):
                gen = m.generation_id
                if self.generation_id is not None:
                    diff = (gen - self.generation_id) & 0xFFFFFFFFFFFFFFFF
                    if diff >= 1 << 63:
                        raise OFError(ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE)
                self.generation_id = gen
            if role == ofp.OFPCR_ROLE_MASTER:
                for c in self.connections:
                    if c is not conn and c.role == ofp.OFPCR_ROLE_MASTER:
                        c.role = ofp.OFPCR_ROLE_SLAVE
            if role != ofp.OFPCR_ROLE_NOCHANGE:
                conn.role = role
            gen = self.generation_id if self.generation_id is not None else 0
        conn.send(wire.role_reply(m.xid, conn.role, gen))

    def on_queue_get_config(self, conn, m):
        if m.port != ofp.OFPP_ANY and m.port not in self.ports:
            raise OFError(ofp.OFPET_QUEUE_OP_FAILED, ofp.OFPQOFC_BAD_PORT)
        conn.send(wire.queue_get_config_reply(m.xid, m.port))  # kp-switch has no queues

    def on_table_mod(self, conn, m):
        if m.table_id != ofp.OFPTT_ALL and m.table_id >= len(self.tables.tables):
            raise OFError(ofp.OFPET_TABLE_MOD_FAILED, ofp.OFPTMFC_BAD_TABLE)
        if m.config & ~OFPTC_DEPRECATED_MASK:
            raise OFError(ofp.OFPET_TABLE_MOD_FAILED, ofp.OFPTMFC_BAD_CONFIG)
        # OpenFlow 1.3 table config bits are all deprecated: nothing to change.

    def on_experimenter(self, conn, m):
        if m.experimenter != kpexp.KP_EXPERIMENTER_ID:
            raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXPERIMENTER)
        if m.exp_type == kpexp.KP_SET_BUCKETS:
            try:
                n = kpexp.decode_set_buckets(m.body)
                self.dp.set_buckets(n)
            except ValueError as e:
                raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, str(e))
            LOG.info("cache resized to %d buckets", n)
        elif m.exp_type == kpexp.KP_CACHE_STATS_REQUEST:
            conn.send(wire.experimenter(m.xid, kpexp.KP_EXPERIMENTER_ID, kpexp.KP_CACHE_STATS_REPLY,
                                        kpexp.encode_cache_stats(self.dp.stats())))
        elif m.exp_type in kplb.MESSAGE_TYPES:
            try:
                with self.lock:
                    reply = self.lb.handle(m.exp_type, m.body)
            except ValueError as e:
                raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, str(e))
            if reply is not None:
                conn.send(wire.experimenter(m.xid, kpexp.KP_EXPERIMENTER_ID,
                                            m.exp_type + 1, reply))
        else:
            raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXP_TYPE)

    # -- tables, groups, ports -------------------------------------------------------

    def context(self, packet_out=False):
        return Context(lambda p: p in self.ports, lambda g: g in self.groups,
                       len(self.tables.tables), packet_out)

    def on_flow_mod(self, conn, m):
        fm = m.msg
        with self.lock:
            now = self.clock()
            removed = self.tables.flow_mod(fm, self.context(), now)
            self._send_flow_removed(removed, now)
            if fm.buffer_id != ofp.OFP_NO_BUFFER and fm.command in (
                    ofp.OFPFC_ADD, ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
                buf = self.buffers.pop(fm.buffer_id, None)
                if buf is None:
                    raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BUFFER_UNKNOWN)
                in_port, packet, _ = buf
                self._packet_out(in_port, packet, [("output", ofp.OFPP_TABLE, 0)], now)

    def on_group_mod(self, conn, m):
        gm = m.msg
        with self.lock:
            now = self.clock()
            affected = self.groups.dependents([gm.group_id]) if gm.command == ofp.OFPGC_MODIFY else set()
            changed = self.groups.group_mod(gm, self.context(), now)
            if gm.command == ofp.OFPGC_DELETE:
                removed = []
                for gid in changed:
                    removed += self.tables.remove_using_group(gid)
                self._send_flow_removed(removed, now)
            else:
                for gid in affected:
                    for e in self.tables.uses_group(gid):
                        self.dp.invalidate_flow(e.id)

    def on_port_mod(self, conn, m):
        with self.lock:
            port = self.ports.get(m.port_no)
            if port is None:
                raise OFError(ofp.OFPET_PORT_MOD_FAILED, ofp.OFPPMFC_BAD_PORT)
            if m.hw_addr.lower() != port.hw_addr.lower():
                raise OFError(ofp.OFPET_PORT_MOD_FAILED, ofp.OFPPMFC_BAD_HW_ADDR)
            if m.mask & ~SUPPORTED_CONFIG:
                raise OFError(ofp.OFPET_PORT_MOD_FAILED, ofp.OFPPMFC_BAD_CONFIG,
                              "config bits %#x" % (m.mask & ~SUPPORTED_CONFIG))
            if m.advertise:
                raise OFError(ofp.OFPET_PORT_MOD_FAILED, ofp.OFPPMFC_BAD_ADVERTISE)
            new = (port.config & ~m.mask) | (m.config & m.mask)
            if new != port.config:
                port.config = new
                self.dp.set_port_state(port.port_no, not new & ofp.OFPPC_PORT_DOWN)
                self.dp.invalidate_all()
                self._async(1, ofp.OFPPR_MODIFY, wire.port_status(ofp.OFPPR_MODIFY, port))

    # -- packets ---------------------------------------------------------------------

    def _buffer(self, in_port, packet, now):
        bid = self._next_buffer
        self._next_buffer = (self._next_buffer + 1) & 0x7FFFFFFF
        self.buffers[bid] = (in_port, packet, now)
        while len(self.buffers) > self.n_buffers:
            self.buffers.popitem(last=False)
        return bid

    def _packet_in_msg(self, packet, pi, now):
        """The OFPT_PACKET_IN bytes for a pipeline PacketIn request (lock held)."""
        data = dpimpl.rewrite(packet, pi.actions_before, pi.in_port) if pi.actions_before else packet
        max_len = pi.max_len
        if max_len == ofp.OFPCML_NO_BUFFER or not self.n_buffers:
            bid, sent = ofp.OFP_NO_BUFFER, data
        else:
            bid, sent = self._buffer(pi.in_port, data, now), data[:max_len]
        return wire.packet_in(bid, len(data), pi.reason, pi.table_id, pi.cookie,
                              wire.packet_in_match(pi.in_port, pi.metadata), sent)

    def _has_receiver(self, kind, reason):
        return any(c.wants(kind, reason) for c in self.connections)

    def _async(self, kind, reason, msg):
        for c in list(self.connections):
            if c.wants(kind, reason):
                c.send(msg, async_=True)

    def _send_packet_ins(self, packet, pins, now):
        for pi in pins:
            if not self.ports.packet_in_allowed(pi.in_port):
                continue
            if not self._has_receiver(0, pi.reason):
                self.packet_ins_dropped += 1
                continue
            self._async(0, pi.reason, self._packet_in_msg(packet, pi, now))

    def _send_flow_removed(self, removed, now):
        for r in removed:
            if r.entry.flags & ofp.OFPFF_SEND_FLOW_REM:
                self._async(2, r.reason, wire.flow_removed(r.entry, r.reason, now))

    def _execute(self, in_port, packet, res, thread=0):
        """thread: the datapath thread whose miss this is (a kp_lb in the actions makes
        its session in that thread's table); packet-outs go as thread 0's."""
        extra = (thread,) if thread else ()   # fake datapaths take 3 arguments
        try:
            if res.actions:
                self.dp.execute(in_port, packet, res.actions, *extra)
            for copy in res.copies:
                self.dp.execute(in_port, packet, copy, *extra)
        except (ValueError, OSError) as e:
            LOG.warning("execute failed on %r: %s", res.actions, e)

    def _packet_out(self, in_port, packet, actions, now):
        key = dpimpl.parse(packet, in_port) or {}
        res = self.pipeline.packet_out(in_port, key, actions, len(packet), now)
        self._execute(in_port, packet, res)
        self._send_packet_ins(packet, res.packet_ins, now)

    def on_packet_out(self, conn, m):
        in_port = m.in_port
        if in_port not in self.ports and in_port not in (ofp.OFPP_CONTROLLER, ofp.OFPP_ANY):
            raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_PORT, "in_port %#x" % in_port)
        with self.lock:
            actions = compile_actions(m.actions, self.context(packet_out=True))
            if m.buffer_id != ofp.OFP_NO_BUFFER:
                buf = self.buffers.pop(m.buffer_id, None)
                if buf is None:
                    raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BUFFER_UNKNOWN)
                packet = buf[1]
            else:
                packet = m.packet
            self._packet_out(in_port, packet, actions, self.clock())

    def _slow_path_loop(self):
        while not self.stopping.is_set():
            try:
                misses = self.dp.next_misses(100, 64)
            except Exception:
                LOG.exception("next_misses failed")
                self.stopping.wait(0.1)
                continue
            for miss in misses:
                # (in_port, packet, key, blob, the thread that missed); fakes give no thread
                in_port, packet, key, blob = miss[:4]
                thread = miss[4] if len(miss) > 4 else 0
                if key is None:
                    continue
                try:
                    self.slow_path(in_port, packet, key, blob, thread)
                except Exception:
                    LOG.exception("slow path failed for %r", key)

    def slow_path(self, in_port, packet, key, blob, thread=0):
        """One cache miss: tables -> execute -> cache insert -> packet-ins.  thread: the
        datapath thread that missed (its session table takes a kp_lb's session)."""
        with self.lock:
            now = self.clock()
            res = self.pipeline.run(in_port, key, len(packet), now)
            has_dec_ttl = any(a[0] == "dec_ttl" for a in res.actions)
            if has_dec_ttl and self.config_flags & OFPC_INVALID_TTL_TO_CONTROLLER:
                res.cacheable = False
                if _ttl(packet) is not None and _ttl(packet) <= 1:
                    from .pipeline import PacketIn
                    res.packet_ins.append(PacketIn(ofp.OFPR_INVALID_TTL, 0xFF, 0xFFFFFFFFFFFFFFFF,
                                                   self.miss_send_len, in_port, 0, []))
            self._execute(in_port, packet, res, thread)
            if res.cacheable:
                mask = None
                if res.megaflow is not None:
                    try:
                        mask = megaflow.mask_blob(res.megaflow)
                    except ValueError as e:  # cannot happen for a pipeline's mask
                        LOG.warning("no megaflow for %r: %s", res.megaflow, e)
                try:
                    self.dp.cache_insert(blob, res.actions, res.cache_ids, mask)
                except ValueError as e:
                    LOG.debug("not cached: %s", e)
            if res.packet_ins:
                self._send_packet_ins(packet, res.packet_ins, now)

    # -- housekeeping ----------------------------------------------------------------

    def _tick_loop(self):
        while not self.stopping.wait(TICK):
            try:
                self.tick()
            except Exception:
                LOG.exception("housekeeping failed")

    def tick(self):
        now = self.clock()
        with self.lock:
            removed = self.tables.expire(now)
            self._send_flow_removed(removed, now)
            for bid in [b for b, v in self.buffers.items() if now - v[2] > BUFFER_LIFETIME]:
                del self.buffers[bid]
            changed = False
            for port in self.ports:
                _hw, up, _speed = self.link_reader(port.name)
                if up != port.link_up:
                    port.link_up = up
                    changed = True
                    LOG.info("port %d (%s) link %s", port.port_no, port.name, "up" if up else "down")
                    self._async(1, ofp.OFPPR_MODIFY, wire.port_status(ofp.OFPPR_MODIFY, port))
            if changed:
                self.dp.invalidate_all()  # liveness of fast-failover / select buckets
            conns = list(self.connections)
        mono = time.monotonic()
        for c in conns:
            if not c.negotiated:
                if mono - c.opened > limits.HELLO_TIMEOUT:
                    LOG.warning("%r: no hello in %.0fs, disconnecting", c, limits.HELLO_TIMEOUT)
                    c.close()
                continue
            echo_idle, dead_idle = ((limits.MGMT_ECHO_IDLE, limits.MGMT_DEAD_IDLE) if c.passive
                                    else (ECHO_IDLE, DEAD_IDLE))
            idle = mono - c.last_rx
            if idle > dead_idle:
                LOG.warning("%r: no answer for %.0fs, disconnecting", c, idle)
                c.close()
            elif idle > echo_idle and not c.echo_sent:
                c.echo_sent = mono
                c.send(wire.echo_request(0), async_=True)

    # -- multipart -------------------------------------------------------------------

    def on_multipart(self, conn, m):
        t = m.mp_type
        now = self.clock()
        items = None
        with self.lock:
            if t == ofp.OFPMP_DESC:
                items = [wire.desc_bytes("kp", "kp-switch userspace datapath (%s fast path)" % dpimpl.NAME,
                                         "kp-switch 0.1", "None",
                                         " ".join(filter(None, ("dpid %016x" % self.dpid,
                                                                self.node_announcement))))]
            elif t == ofp.OFPMP_FLOW:
                entries = self.tables.stats(m.table_id, m.match, m.out_port, m.out_group,
                                            m.cookie, m.cookie_mask)
                items = [wire.flow_stats_bytes(e, now) for e in entries]
            elif t == ofp.OFPMP_AGGREGATE:
                entries = self.tables.stats(m.table_id, m.match, m.out_port, m.out_group,
                                            m.cookie, m.cookie_mask)
                items = [wire.aggregate_bytes(sum(e.packet_count for e in entries),
                                              sum(e.byte_count for e in entries), len(entries))]
            elif t == ofp.OFPMP_TABLE:
                items = [wire.table_stats_bytes(*row) for row in self.tables.table_stats()]
            elif t == ofp.OFPMP_PORT_STATS:
                if m.port_no != ofp.OFPP_ANY and m.port_no not in self.ports:
                    raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_PORT)
                counters = self.dp.stats().get("ports", {})
                items = []
                for p in self.ports:
                    if m.port_no in (ofp.OFPP_ANY, p.port_no):
                        d = max(0.0, now - p.added)
                        items.append(wire.port_stats_bytes(p.port_no, counters.get(p.port_no, {}),
                                                           int(d), int((d - int(d)) * 1e9)))
            elif t == ofp.OFPMP_PORT_DESC:
                items = [wire.port_bytes(p) for p in self.ports]
            elif t == ofp.OFPMP_GROUP:
                if m.group_id != ofp.OFPG_ALL and m.group_id not in self.groups:
                    raise OFError(ofp.OFPET_GROUP_MOD_FAILED, ofp.OFPGMFC_UNKNOWN_GROUP)
                items = [wire.group_stats_bytes(g, len(self.tables.uses_group(g.group_id)), now)
                         for g in sorted(self.groups.groups.values(), key=lambda g: g.group_id)
                         if m.group_id in (ofp.OFPG_ALL, g.group_id)]
            elif t == ofp.OFPMP_GROUP_DESC:
                items = [wire.group_desc_bytes(g)
                         for g in sorted(self.groups.groups.values(), key=lambda g: g.group_id)]
            elif t == ofp.OFPMP_GROUP_FEATURES:
                items = [wire.group_features_bytes(self.groups.max_groups, ACTIONS_BITMAP)]
            elif t == ofp.OFPMP_QUEUE:
                if m.port_no != ofp.OFPP_ANY and m.port_no not in self.ports:
                    raise OFError(ofp.OFPET_QUEUE_OP_FAILED, ofp.OFPQOFC_BAD_PORT)
                if m.queue_id != ofp.OFPQ_ALL:
                    raise OFError(ofp.OFPET_QUEUE_OP_FAILED, ofp.OFPQOFC_BAD_QUEUE)
                items = []  # kp-switch has no queues
            elif t == ofp.OFPMP_TABLE_FEATURES:
                if m.body:  # setting table features: kp-switch's pipeline is fixed
                    raise OFError(ofp.OFPET_TABLE_FEATURES_FAILED, ofp.OFPTFFC_EPERM)
                items = [wire.table_features_bytes(t.table_id, len(self.tables.tables), t.max_entries,
                                                   {n: f[2] for n, f in FIELDS.items()}, sorted(SETTABLE),
                                                   INSTRUCTIONS, ACTION_TYPES)
                         for t in self.tables.tables]
            elif t == ofp.OFPMP_EXPERIMENTER:
                raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXPERIMENTER)
            else:  # meters
                raise OFError(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_MULTIPART, "multipart %d" % t)
        for msg in wire.multipart_replies(m.xid, t, items):
            conn.send(msg)


def _ttl(packet):
    """The IPv4 TTL / IPv6 hop limit of an Ethernet frame, or None."""
    off = 12
    while len(packet) >= off + 2 and packet[off:off + 2] in (b"\x81\x00", b"\x88\xa8"):
        off += 4
    if len(packet) < off + 2:
        return None
    et = packet[off:off + 2]
    if et == b"\x08\x00" and len(packet) >= off + 2 + 9:
        return packet[off + 2 + 8]
    if et == b"\x86\xdd" and len(packet) >= off + 2 + 8:
        return packet[off + 2 + 7]
    return None
