"""The datapath: ports (AF_PACKET), the miss queue for the slow path, the cache in front
and the packets executed: the twin of csrc/datapath.c and port_afpacket.c.

Part of the Python twin of the C fast path (kp_switch.fastpath_ref is its API).
"""
from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from kp_proto.lb import MAX_VIPS as LB_MAX_VIPS
from ..lb_ref import LoadBalancer

from .flow_key import (ETH_P_8021Q, FRAG, FRAG_LATER, F_ICMPV4, F_ICMPV6, F_IPV4, F_IPV6,
                       F_LB_LOOPBACK, KEY_SIZE, MAX_FLOW_IDS, MISS_QUEUE_LEN, Miss, SEG_MIN_SIZE)
from .csum import complete_partial_checksum
from .parse import _Parsed, _key_dict, _parse
from .actions import (_frag_key, _lb_flags, _lb_icmp_translate, _lb_key, _lb_rewrite, _run,
                      compile_actions)
from .flow_cache import FlowCache, _check_ids, _is_pow2, _mf_mask
from .segment import segment_tcp, segment_udp


SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4 = 1, 4, 5
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
SEG_ANY_MTU = 65535      # segment_tcp's mtu when only the sender's segment size limits
_VNET = struct.Struct("=BBHHHH")     # flags, gso_type, hdr_len, gso_size, csum_start/offset
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_ALL = 3
_AUX = struct.Struct("=IIIHHHH")


def _now_ms() -> int:
    return (time.monotonic_ns() // 1_000_000) & 0xFFFFFFFF


class _Port:
    def __init__(self, port_no: int, ifname: str) -> None:
        self.port_no, self.ifname = port_no, ifname
        self.up = True
        # As the C port: received frames come after a virtio-net header (a UDP GSO
        # frame's segment size), so sending takes a second socket, which needs none.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            try:
                self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                self.vnet = True
            except OSError:
                self.vnet = False
            self.sock.bind((ifname, ETH_P_ALL))
            self.sock.setblocking(False)
            self.tx.bind((ifname, 0))
            self.tx.setblocking(False)
        except OSError:
            self.sock.close()
            self.tx.close()
            raise
        self.mtu = _mtu(ifname)
        self.st = dict(rx_packets=0, rx_bytes=0, rx_dropped=0, rx_errors=0, tx_packets=0,
                       tx_bytes=0, tx_dropped=0, tx_errors=0)


def _mtu(ifname: str) -> int:
    try:
        with open("/sys/class/net/%s/mtu" % ifname) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1500


class Datapath:
    """The fast path's API (FASTPATH.md) on plain AF_PACKET sockets and a Python thread."""

    def __init__(self, ports: List[Tuple[int, str]], buckets: int = 1024,
                 port_io: str = "afpacket", threads: int = 1) -> None:
        if threads != 1:
            raise ValueError("%r datapath threads: the Python twin has 1" % (threads,))
        if port_io not in ("afpacket", "afxdp"):
            raise ValueError("port_io must be 'afpacket' or 'afxdp', not %r" % (port_io,))
        if port_io == "afxdp":
            raise OSError(errno.EOPNOTSUPP, "the Python twin has AF_PACKET ports only")
        if not _is_pow2(buckets):
            raise ValueError("buckets must be a power of 2 (1 .. 2^20): %r" % (buckets,))
        self._ports: Dict[int, _Port] = {}
        try:
            for port_no, ifname in ports:
                if not isinstance(port_no, int) or not 0 < port_no < 0xFFFFFF00 \
                        or port_no in self._ports:
                    raise ValueError("bad or duplicate port number %r" % (port_no,))
                self._ports[port_no] = _Port(port_no, ifname)
        except BaseException:
            self._close()
            raise
        self._lock = threading.Lock()
        self._cache = FlowCache(buckets)
        self._lb = LoadBalancer()
        self._counters: Dict[int, List[int]] = {}
        self._misses: List[Miss] = []
        self._miss_cv = threading.Condition(threading.Lock())
        self._st = dict(parse_errors=0, malformed=0, refused=0, miss_queue_drops=0)
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()

    def _close(self) -> None:
        for p in self._ports.values():
            p.sock.close()
            p.tx.close()

    def __del__(self) -> None:
        try:
            self.stop()
            self._close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        except Exception:
            pass

    # -- thread
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="kp-datapath-ref",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        t = self._thread
        if t is None:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        t.join()
        self._thread = None
        while select.select([self._wake_r], [], [], 0)[0]:
            os.read(self._wake_r, 64)

    def _loop(self) -> None:
        poller = select.poll()
        by_fd = {}
        for p in self._ports.values():
            poller.register(p.sock.fileno(), select.POLLIN)
            by_fd[p.sock.fileno()] = p
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop.is_set():
            for fd, _ in poller.poll(100):
                port = by_fd.get(fd)
                if port is None:
                    continue
                for _ in range(64):
                    try:
                        data, anc, _flags, _addr = port.sock.recvmsg(
                            262144, socket.CMSG_SPACE(_AUX.size))
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        port.st["rx_errors"] += 1
                        break
                    self._receive(port, data, anc)

    def _receive(self, port: _Port, data: bytes, anc: list) -> None:
        status = gso_size = tcp_gso_size = 0
        cs_start = cs_off = -1
        if port.vnet:
            if len(data) < _VNET.size:
                port.st["rx_errors"] += 1
                return
            vflags, gso_type, _h, size, cs_s, cs_o = _VNET.unpack_from(data)
            if vflags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                cs_start, cs_off = cs_s, cs_o
            if gso_type & 0x7F == VIRTIO_NET_HDR_GSO_UDP_L4:
                gso_size = size
            elif gso_type & 0x7F in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
                tcp_gso_size = size
            data = data[_VNET.size:]
        for level, kind, cdata in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= _AUX.size:
                status, _l, _s, _m, _n, tci, tpid = _AUX.unpack_from(cdata)
                if status & TP_STATUS_VLAN_VALID and len(data) >= 12:
                    if not status & TP_STATUS_VLAN_TPID_VALID:
                        tpid = ETH_P_8021Q
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                    if cs_start >= 0:
                        cs_start += 4       # the sender counted without the tag
        if not port.up:
            port.st["rx_dropped"] += 1
            return
        if 0 < (gso_size or tcp_gso_size) < SEG_MIN_SIZE:     # refused, not cut
            port.st["rx_errors"] += 1
            return
        datagrams = segment_udp(data, gso_size) if gso_size else [data]
        if len(datagrams) > 1:      # each one complete: its checksums are computed
            status &= ~TP_STATUS_CSUMNOTREADY
        for frame in datagrams:
            self._switch(port, frame, status, tcp_gso_size,
                         (cs_start, cs_off) if len(datagrams) == 1 else (-1, -1))

    def _switch(self, port: _Port, data: bytes, status: int, seg_size: int = 0,
                csum: Tuple[int, int] = (-1, -1)) -> None:
        port.st["rx_packets"] += 1
        port.st["rx_bytes"] += len(data)
        p = _parse(data, port.port_no)
        with self._lock:
            if p is None:
                self._st["parse_errors"] += 1
                return
            if p.error:
                self._st["malformed"] += 1
            if p.refused:       # never forwarded by its outer fields (csrc/parse.h)
                self._st["refused"] += 1
                return
        if status & TP_STATUS_CSUMNOTREADY:
            done = complete_partial_checksum(data, *csum)
            if done is None:
                port.st["rx_errors"] += 1
                return
            data = done
            p = _parse(data, port.port_no)
        with self._lock:
            # A session's packets are translated before the tables see them (lb_ref);
            # a later fragment as its first was, an ICMP error about one back.
            buf = bytearray(data)
            loop = False
            if p.frag & FRAG_LATER:
                fr = self._lb.fragment(_frag_key(data, p))
                if fr is not None:
                    self._lb.count(fr[2], len(data))
                    _lb_rewrite(buf, p, fr[0] and (fr[0][0], None),
                                fr[1] and (fr[1][0], None))
            elif p.present & (F_ICMPV4 | F_ICMPV6):
                _lb_icmp_translate(buf, p, self._lb)
            else:
                e = self._lb.translate(_lb_key(p), _lb_flags(p, data))
                if e is not None:
                    self._lb.count(e.vip_id, len(data))
                    dst = (e.new_dst, e.new_dport) if e.new_dst else None
                    src = (e.new_src, e.new_sport) if e.new_src else None
                    if p.frag:
                        self._lb.remember_fragment(_frag_key(data, p), dst, src, e.vip_id)
                    _lb_rewrite(buf, p, dst, src)
                    loop = bool(e.new_dst and e.new_src)
            if buf != data:
                data = bytes(buf)
                p = _parse(data, port.port_no)
                if p is not None and loop:
                    p.present |= F_LB_LOOPBACK
        self._lookup_and_run(port, data, p, seg_size, 0)

    def _lookup_and_run(self, port: _Port, data: bytes, p: "_Parsed", seg_size: int,
                        depth: int) -> None:
        with self._lock:
            blob = p.blob()
            hit = self._cache.lookup(blob, _now_ms())
            if hit is not None:
                now_ns = time.monotonic_ns()
                for i in hit[1]:
                    c = self._counters.setdefault(i, [0, 0, 0])
                    c[0] += 1
                    c[1] += len(data)
                    c[2] = now_ns
        if hit is not None:
            hook = self._lb_hook(port.port_no, seg_size, depth, port)
            self._transmit(_run(bytearray(data), port.port_no, hit[0], hook), seg_size)
            return
        # The slow path sends frames on cut only to fit the MTU: a TCP super-frame goes
        # to it as the sender's segments instead (the last may differ in flags).
        segments = segment_tcp(data, SEG_ANY_MTU, seg_size) if seg_size else [data]
        for frame in segments:
            self._push_miss(port.port_no, frame, p if len(segments) == 1 else None)

    def _push_miss(self, in_port: int, frame: bytes, p: Optional["_Parsed"]) -> None:
        if p is None:
            p = _parse(frame, in_port)
        with self._miss_cv:
            if len(self._misses) >= MISS_QUEUE_LEN:
                self._st["miss_queue_drops"] += 1
                return
            self._misses.append((in_port, frame, _key_dict(p), p.blob(), 0))
            self._miss_cv.notify()

    def _lb_hook(self, in_port: int, seg_size: int, depth: int, port: Optional[_Port]):
        """kp_lb: translate, then the tables again (once); from execute(), the second
        pass is the slow path's (a miss), as the C datapath does."""
        def hook(buf: bytearray, vip_id: int) -> List[Tuple[int, bytes]]:
            p = _parse(bytes(buf), in_port)
            with self._lock:
                if depth or p is None:
                    self._lb.c["dropped"] += 1
                    return []
                v6 = bool(p.present & F_IPV6)
                if not p.present & (F_IPV4 | F_IPV6):
                    self._lb.c["dropped"] += 1
                    return []
                tr = self._lb.select(vip_id, _lb_key(p), 6 if v6 else 4, p.ip_proto,
                                     _lb_flags(p, buf), p.blob(), len(buf))
                if tr is not None and p.frag == FRAG:
                    self._lb.remember_fragment(_frag_key(bytes(buf), p), tr[0], tr[1], vip_id)
            if tr is None:
                return []
            _lb_rewrite(buf, p, tr[0], tr[1])
            frame = bytes(buf)
            q = _parse(frame, in_port)
            if q is not None and tr[0] and tr[1]:
                q.present |= F_LB_LOOPBACK
            if port is None:
                self._push_miss(in_port, frame, q)
            else:
                self._lookup_and_run(port, frame, q, seg_size, depth + 1)
            return []
        return hook

    def _transmit(self, outs: List[Tuple[int, bytes]], seg_size: int = 0) -> None:
        for port_no, frame in outs:
            port = self._ports.get(port_no)
            if port is None:
                continue
            if not port.up:
                port.st["tx_dropped"] += 1
                continue
            for seg in segment_tcp(frame, port.mtu, seg_size):
                try:
                    port.tx.send(seg)
                    port.st["tx_packets"] += 1
                    port.st["tx_bytes"] += len(seg)
                except BlockingIOError:
                    port.st["tx_dropped"] += 1
                except OSError:
                    port.st["tx_errors"] += 1

    # -- the agent's API
    def next_misses(self, timeout_ms: int, max_count: int = 64) -> List[Miss]:
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000.0
        with self._miss_cv:
            while not self._misses:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._miss_cv.wait(left)
            out = self._misses[:max_count]
            del self._misses[:max_count]
            return out

    def execute(self, in_port: int, packet: bytes, actions: list, thread: int = 0) -> None:
        if thread != 0:
            raise ValueError("no datapath thread %r (of 1)" % (thread,))
        prog = compile_actions(actions)
        self._transmit(_run(bytearray(packet), in_port, prog,
                            self._lb_hook(in_port, 0, 0, None)))

    def cache_insert(self, key_blob: bytes, actions: list, flow_ids: List[int],
                     mask_blob: Optional[bytes] = None) -> None:
        prog = tuple(compile_actions(actions))
        if len(key_blob) != KEY_SIZE:
            raise ValueError("key_blob must be %d bytes" % KEY_SIZE)
        _check_ids(flow_ids)
        mask = None if mask_blob is None else _mf_mask(mask_blob)
        with self._lock:
            self._cache.insert(bytes(key_blob), prog, flow_ids, _now_ms(), mask)

    def invalidate_flow(self, flow_id: int) -> None:
        with self._lock:
            self._cache.invalidate_flow(flow_id)

    def invalidate_all(self) -> None:
        with self._lock:
            self._cache.invalidate_all()

    def flow_counters(self, flow_ids: List[int]) -> List[Tuple[int, int, int]]:
        out = []
        with self._lock:
            for i in flow_ids:
                if not isinstance(i, int) or not 0 <= i < MAX_FLOW_IDS:
                    raise ValueError("flow id out of range: %r" % (i,))
                c = self._counters.get(i, (0, 0, 0))
                out.append((c[0], c[1], c[2]))
        return out

    def set_buckets(self, n: int) -> None:
        if not _is_pow2(n):
            raise ValueError("buckets must be a power of 2 (1 .. 2^20): %r" % (n,))
        with self._lock:
            old = self._cache.st
            self._cache = FlowCache(n)
            for k in ("hits", "misses", "inserts", "insert_failures", "evictions",
                      "expired", "invalidated", "mf_hits", "mf_inserts",
                      "mf_insert_failures"):
                self._cache.st[k] = old[k]      # counters stay monotonic across resizes

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            d: Dict[str, Any] = self._cache.stats()
            d.update(self._st)
            d["threads"] = 1
            d["ports"] = {n: dict(p.st) for n, p in self._ports.items()}
        return d

    # -- the load balancer (csrc/lb.h; the twin is lb_ref.LoadBalancer)
    def lb_configure(self, buckets: int, timeouts: Tuple[int, int, int, int],
                     hairpin4: Optional[bytes] = None, hairpin6: Optional[bytes] = None
                     ) -> None:
        with self._lock:
            self._lb.configure(buckets, tuple(timeouts), hairpin4, hairpin6)

    def lb_set_vip(self, vip_id: int, version: int, basis: int, table: bytes,
                   pods: bytes) -> None:
        with self._lock:
            self._lb.set_vip(vip_id, version, basis, bytes(table), bytes(pods))

    def lb_delete_vip(self, vip_id: int) -> None:
        with self._lock:
            self._lb.delete_vip(vip_id)

    def lb_flush(self, vip_id: int, pod: Optional[bytes] = None, version: int = 0,
                 port: int = 0) -> int:
        with self._lock:
            return self._lb.flush(vip_id, pod, version, port)

    def lb_set_hash_key(self, k0: int, k1: int) -> None:
        pass        # the twin's table is a dict: nothing to key

    def lb_stats(self, first_vip_id: int = 0, most: int = LB_MAX_VIPS) -> Dict[str, Any]:
        with self._lock:
            return self._lb.stats(first_vip_id, most)

    def lb_sessions(self, max_count: int = 1000) -> List[tuple]:
        with self._lock:
            return self._lb.sessions(max_count)

    def port_io(self) -> Dict[int, str]:
        return {no: "afpacket" for no in self._ports}

    def set_port_state(self, port_no: int, up: bool) -> None:
        port = self._ports.get(port_no)
        if port is None:
            raise ValueError("no port %r" % (port_no,))
        port.up = bool(up)
