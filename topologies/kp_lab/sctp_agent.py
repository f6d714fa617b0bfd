#!/usr/bin/env python3
"""SCTP endpoints from crafted packets, for hosts whose kernel has no SCTP sockets.

The kernels kp is tested on here have no SCTP module (socket(..., IPPROTO_SCTP) is
EPROTONOSUPPORT), so this plays both ends of an association over raw IP sockets
(protocol 132: the kernel delivers the packets to raw sockets and adds the IP header on
send). It speaks what a data plane must get right, not all of RFC 9260:

    client  INIT (tag 0, its initiate tag)        ->  server
            INIT ACK (the client's tag, a state cookie naming the server and the peer
                     it saw)                      <-
            DATA (the server's tag) x count       ->
            DATA (the reply: name, peer, payload) <-
            ABORT                                 ->

Both ends check every CRC32c with their own bitwise CRC (a packet with a wrong one is
dropped, as a real stack drops it, and counted) and the ports.

    sctp_agent.py server --port 38412 --name p1 [--lifetime 900]
        prints {"ready": true} once bound, then serves until its lifetime ends
    sctp_agent.py request ADDR PORT --src-port N [--count 3] [--timeout 2]
        prints one JSON line per reply ({"name", "peer", "peer_port", "from", "from_port",
        "chunk"}), then {"done": true, "ok": ..., "bad_crc": n, "unreachable": [...]}
        (the ICMP destination unreachable messages that quoted one of its packets: what
        a refused association gets, as kube-proxy's REJECT sends)

Standard library only (it runs under Debian's /usr/bin/python3 inside Mininet hosts).
"""
import argparse
import json
import os
import select
import socket
import struct
import sys
import time

SCTP = 132
DATA, INIT, INIT_ACK, ABORT = 0, 1, 2, 6
STATE_COOKIE = 7


def emit(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def crc32c(data):
    c = 0xFFFFFFFF
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 * (c & 1))
    return c ^ 0xFFFFFFFF


def chunk(ctype, value=b'', flags=0):
    body = struct.pack('!BBH', ctype, flags, 4 + len(value)) + value
    return body + b'\0' * (-len(body) % 4)


def packet(sport, dport, vtag, chunks):
    head = struct.pack('!HHI', sport, dport, vtag)
    crc = crc32c(head + b'\0\0\0\0' + chunks)
    return head + crc.to_bytes(4, 'little') + chunks


def parse(sctp):
    """(sport, dport, vtag, crc_ok, [(type, flags, value)]) or None."""
    if len(sctp) < 12:
        return None
    sport, dport, vtag = struct.unpack_from('!HHI', sctp)
    ok = crc32c(sctp[:8] + b'\0\0\0\0' + sctp[12:]) == int.from_bytes(sctp[8:12], 'little')
    chunks, off = [], 12
    while len(sctp) - off >= 4:
        ctype, flags, clen = struct.unpack_from('!BBH', sctp, off)
        if clen < 4 or off + clen > len(sctp):
            break
        chunks.append((ctype, flags, sctp[off + 4:off + clen]))
        off += (clen + 3) & ~3
    return sport, dport, vtag, ok, chunks


def family_of(addr):
    return socket.AF_INET6 if ':' in addr else socket.AF_INET


def raw_socket(family):
    return socket.socket(family, socket.SOCK_RAW, SCTP)


def receive(sock, family, deadline):
    """(source address, SCTP bytes) of the next packet, or None at the deadline. IPv4 raw
    sockets hand over the IP header too; IPv6 ones do not."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return None
        data, addr = sock.recvfrom(65535)
        if family == socket.AF_INET:
            data = data[(data[0] & 0x0F) * 4:]
        return addr[0], data


def data_chunk(payload, tsn):
    return chunk(DATA, struct.pack('!IHHI', tsn, 0, 0, 0) + payload, flags=3)


def server(args):
    socks = [raw_socket(socket.AF_INET), raw_socket(socket.AF_INET6)]
    emit({'ready': True, 'kind': 'sctp', 'port': args.port, 'name': args.name})
    tags = {}       # (peer, peer port) -> the peer's initiate tag
    my_tag = int.from_bytes(os.urandom(4), 'big') | 1
    bad = 0
    stop = time.monotonic() + args.lifetime
    while time.monotonic() < stop:
        ready = select.select(socks, [], [], 1.0)[0]
        for sock in ready:
            data, addr = sock.recvfrom(65535)
            if sock.family == socket.AF_INET:
                data = data[(data[0] & 0x0F) * 4:]
            got = parse(data)
            if got is None or got[1] != args.port:
                continue
            sport, _, vtag, ok, chunks = got
            if not ok:
                bad += 1
                continue
            peer = addr[0]
            for ctype, _, value in chunks:
                if ctype == INIT and vtag == 0 and len(value) >= 16:
                    tags[(peer, sport)] = struct.unpack_from('!I', value)[0]
                    cookie = json.dumps({'name': args.name, 'peer': peer,
                                         'peer_port': sport, 'bad_crc': bad}).encode()
                    param = struct.pack('!HH', STATE_COOKIE, 4 + len(cookie)) + cookie
                    param += b'\0' * (-len(param) % 4)
                    body = struct.pack('!IIHHI', my_tag, 65536, 10, 10, 1) + param
                    sock.sendto(packet(args.port, sport, tags[(peer, sport)],
                                       chunk(INIT_ACK, body)), (peer, 0))
                elif ctype == DATA and vtag == my_tag and (peer, sport) in tags:
                    reply = json.dumps({'name': args.name, 'peer': peer, 'peer_port': sport,
                                        'payload': value[12:].decode(errors='replace'),
                                        'bad_crc': bad}).encode()
                    sock.sendto(packet(args.port, sport, tags[(peer, sport)],
                                       data_chunk(reply, 1)), (peer, 0))
                elif ctype == ABORT:
                    tags.pop((peer, sport), None)


def icmp_socket(family):
    if family == socket.AF_INET:
        return socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    return socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)


def unreachable_for(data, family, src_port):
    """[type, code] of an ICMP destination unreachable quoting an SCTP packet from
    src_port, else None."""
    if family == socket.AF_INET:
        data = data[(data[0] & 0x0F) * 4:]
        if len(data) < 8 + 20 or data[0] != 3:
            return None
        quoted = data[8:]
        ihl = (quoted[0] & 0x0F) * 4
        proto, l4 = quoted[9], quoted[ihl:]
    else:
        if len(data) < 8 + 40 or data[0] != 1:
            return None
        quoted = data[8:]
        proto, l4 = quoted[6], quoted[40:]
    if proto != SCTP or len(l4) < 2 or struct.unpack_from('!H', l4)[0] != src_port:
        return None
    return [data[0], data[1]]


def request(args):
    family = family_of(args.addr)
    sock = raw_socket(family)
    icmp = icmp_socket(family)
    my_tag = int.from_bytes(os.urandom(4), 'big') | 1
    bad, replies, unreachable = 0, 0, []

    def answer(want):
        """The first packet of chunk type `want` from the VIP's port to ours."""
        nonlocal bad
        deadline = time.monotonic() + args.timeout
        while True:
            left = deadline - time.monotonic()
            ready = select.select([sock, icmp], [], [], max(0, left))[0] if left > 0 else []
            if icmp in ready:
                refused = unreachable_for(icmp.recv(65535), family, args.src_port)
                if refused:
                    unreachable.append(refused)
            if sock not in ready:
                if left <= 0:
                    return None
                continue
            got = receive(sock, family, deadline)
            if got is None:
                return None
            src, data = got
            p = parse(data)
            if p is None or p[1] != args.src_port:
                continue
            if not p[3]:
                bad += 1
                continue
            for ctype, _, value in p[4]:
                if ctype == want and p[2] == my_tag:
                    return src, p[0], value

    def send(vtag, chunks):
        sock.sendto(packet(args.src_port, args.port, vtag, chunks), (args.addr, 0))

    try:
        send(0, chunk(INIT, struct.pack('!IIHHI', my_tag, 65536, 10, 10, 1)))
        got = answer(INIT_ACK)
        if got is None:
            emit({'done': True, 'ok': False, 'replies': 0, 'bad_crc': bad,
                  'unreachable': unreachable, 'error': 'no INIT ACK'})
            return
        src, sport, value = got
        peer_tag = struct.unpack_from('!I', value)[0]
        cookie = value[20:20 + struct.unpack_from('!H', value, 18)[0] - 4]
        emit(dict(json.loads(cookie), chunk='INIT ACK', **{'from': src, 'from_port': sport}))
        for seq in range(args.count):
            send(peer_tag, data_chunk(('ping %d' % seq).encode(), seq + 1))
            got = answer(DATA)
            if got is None:
                emit({'seq': seq, 'timeout': True})
                continue
            src, sport, value = got
            emit(dict(json.loads(value[12:]), chunk='DATA', **{'from': src, 'from_port': sport}))
            replies += 1
        send(peer_tag, chunk(ABORT))
        emit({'done': True, 'ok': replies == args.count, 'replies': replies, 'bad_crc': bad,
              'unreachable': unreachable})
    except (OSError, ValueError) as e:
        emit({'done': True, 'ok': False, 'replies': replies, 'bad_crc': bad,
              'error': '%s: %s' % (type(e).__name__, e)})
    finally:
        sock.close()
        icmp.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('server')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--name', required=True)
    p.add_argument('--lifetime', type=float, default=900)
    p.set_defaults(fn=server)
    p = sub.add_parser('request')
    p.add_argument('addr')
    p.add_argument('port', type=int)
    p.add_argument('--src-port', type=int, required=True)
    p.add_argument('--count', type=int, default=3)
    p.add_argument('--timeout', type=float, default=2)
    p.set_defaults(fn=request)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == '__main__':
    main()
