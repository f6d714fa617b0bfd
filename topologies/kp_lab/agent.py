#!/usr/bin/env python3
"""Traffic endpoints run inside Mininet hosts (standard library only, bounded in time).

Servers (listen on [::], dual stack; print one JSON line {"ready": ...} once bound):
    agent.py http-server --port 80 --name p1      GET -> {"name", "peer", "peer_port", "path"}
    agent.py tcp-server  --port 5000 --name p1    each line -> {"name", "peer", "peer_port", "seq"}
    agent.py udp-server  --port 5001 --name p1    each datagram -> {"name", "peer", "peer_port", "payload"}
Clients (print one JSON line per reply, then {"done": true, ...}):
    agent.py http-get URL [--timeout 3]
    agent.py tcp-session ADDR PORT [--count 5] [--interval 1] [--timeout 2] [--src-port N]
    agent.py udp-request ADDR PORT [--count 1] [--interval 0] [--timeout 2] [--src-port N]
    agent.py tcp-connects ADDR PORT [--seconds 10] [--rate 0] [--timeout 2]
        a new connection per request (connect, one line, its reply, close) for
        --seconds, at --rate a second (0: one after the other, as fast as they go);
        prints {"done": true, "ok": N, "failed": N, "errors": [...], "names": {...}}
    agent.py udp-flood ADDR PORT [--rate 10000] [--seconds 3] [--first-port 10000]
        one datagram per new source port (a new 5-tuple each), IPv4, at a steady rate;
        prints {"done": true, "sent": N, "seconds": S}
Every server exits after --lifetime seconds (default 900) even if nobody stops it.

Nothing here looks a name up: addresses are numeric, the HTTP server does not ask for its
own name (http.server's server_bind would call getfqdn, which waits for the resolver:
seconds, or a failed start, where the resolver cannot be reached), and the HTTP client
goes to the address in the URL, never through a proxy from the environment.
"""
import argparse
import http.server
import json
import socket
import socketserver
import sys
import threading
import time
import urllib.error
import urllib.request


def emit(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def peer_of(addr):
    host = addr[0]
    if host.startswith('::ffff:') and '.' in host:
        host = host[7:]
    return host, addr[1]


def dual_stack_socket(kind):
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return sock


def reply_for(name, addr, **extra):
    peer, peer_port = peer_of(addr)
    body = {'name': name, 'peer': peer, 'peer_port': peer_port}
    body.update(extra)
    return body


# --------------------------------------------------------------------------- servers

class DualStackHTTPServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        """socketserver's bind, then the numeric address as the server's name, where
        http.server's own server_bind would look the name up (getfqdn)."""
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port


def http_server(args):
    name = args.name

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.0'

        def do_GET(self):
            body = json.dumps(reply_for(name, self.client_address, path=self.path)).encode()
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = DualStackHTTPServer(('::', args.port), Handler)
    emit({'ready': True, 'kind': 'http', 'port': args.port, 'name': name})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(args.lifetime)


class TCPHandler(socketserver.StreamRequestHandler):
    def handle(self):
        self.connection.settimeout(self.server.idle)
        try:
            for line in self.rfile:
                seq = line.decode(errors='replace').strip()
                out = reply_for(self.server.name, self.client_address, seq=seq)
                self.wfile.write((json.dumps(out) + '\n').encode())
        except OSError:
            pass


class DualStackTCPServer(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def tcp_server(args):
    server = DualStackTCPServer(('::', args.port), TCPHandler)
    server.name, server.idle = args.name, 120
    emit({'ready': True, 'kind': 'tcp', 'port': args.port, 'name': args.name})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(args.lifetime)


def udp_server(args):
    sock = dual_stack_socket(socket.SOCK_DGRAM)
    sock.bind(('::', args.port))
    emit({'ready': True, 'kind': 'udp', 'port': args.port, 'name': args.name})
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data, addr = sock.recvfrom(65535)
        except socket.timeout:
            continue
        out = reply_for(args.name, addr, payload=data.decode(errors='replace'))
        sock.sendto(json.dumps(out).encode(), addr)


# --------------------------------------------------------------------------- clients

# Straight to the URL's address: no http_proxy from the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def http_get(args):
    started = time.monotonic()
    try:
        with DIRECT.open(args.url, timeout=args.timeout) as r:
            raw = r.read().decode(errors='replace')
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read().decode(errors='replace'), e.code
    except Exception as e:  # noqa: BLE001 - every failure is a result here
        emit({'done': True, 'ok': False, 'error': '%s: %s' % (type(e).__name__, e)})
        return
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw
    emit({'done': True, 'ok': 200 <= status < 300, 'status': status, 'body': body,
          'seconds': round(time.monotonic() - started, 4)})


def family_of(addr):
    return socket.AF_INET6 if ':' in addr else socket.AF_INET


def tcp_session(args):
    """One connection; a numbered line every `interval`; collect who answered each."""
    replies, error = [], None
    sock = socket.socket(family_of(args.addr), socket.SOCK_STREAM)
    sock.settimeout(args.timeout)
    try:
        if args.src_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(('', args.src_port))
        sock.connect((args.addr, args.port))
        local = sock.getsockname()
        f = sock.makefile('rb')
        for seq in range(args.count):
            if seq:
                time.sleep(args.interval)
            sock.sendall(('%d\n' % seq).encode())
            line = f.readline()
            if not line:
                error = 'connection closed after %d replies' % seq
                break
            reply = json.loads(line)
            emit(reply)
            replies.append(reply)
        emit({'done': True, 'ok': error is None and len(replies) == args.count,
              'replies': len(replies), 'local_port': local[1], 'error': error})
    except (OSError, ValueError) as e:
        emit({'done': True, 'ok': False, 'replies': len(replies),
              'error': '%s: %s' % (type(e).__name__, e)})
    finally:
        sock.close()


def tcp_connects(args):
    """New TCP connections, one request each (a real handshake every time), until
    --seconds have passed: how many were answered, how many failed and why (the first
    few), and who answered."""
    ok = failed = 0
    errors, names = [], {}
    start = time.monotonic()
    while time.monotonic() - start < args.seconds:
        if args.rate:
            due = start + (ok + failed) / args.rate
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
        sock = socket.socket(family_of(args.addr), socket.SOCK_STREAM)
        sock.settimeout(args.timeout)
        try:
            sock.connect((args.addr, args.port))
            sock.sendall(b'0\n')
            line = sock.makefile('rb').readline()
            name = json.loads(line)['name']
            names[name] = names.get(name, 0) + 1
            ok += 1
        except (OSError, ValueError, KeyError) as e:
            failed += 1
            if len(errors) < 10:
                errors.append('%.3f s: %s: %s' % (time.monotonic() - start, type(e).__name__, e))
        finally:
            sock.close()
    emit({'done': True, 'ok': failed == 0, 'answered': ok, 'failed': failed,
          'seconds': time.monotonic() - start, 'errors': errors, 'names': names})


def udp_request(args):
    sock = socket.socket(family_of(args.addr), socket.SOCK_DGRAM)
    sock.settimeout(args.timeout)
    answered = 0
    try:
        if args.src_port:
            sock.bind(('', args.src_port))
        for seq in range(args.count):
            if seq:
                time.sleep(args.interval)
            sock.sendto(('%s %d' % (args.payload, seq)).encode(), (args.addr, args.port))
            try:
                data, addr = sock.recvfrom(65535)
            except socket.timeout:
                emit({'seq': seq, 'timeout': True})
                continue
            reply = json.loads(data)
            reply['from'] = peer_of(addr)[0]
            reply['from_port'] = addr[1]
            emit(reply)
            answered += 1
        emit({'done': True, 'ok': answered == args.count, 'replies': answered,
              'local_port': sock.getsockname()[1]})
    except (OSError, ValueError) as e:
        emit({'done': True, 'ok': False, 'replies': answered,
              'error': '%s: %s' % (type(e).__name__, e)})
    finally:
        sock.close()


def udp_flood(args):
    """New 5-tuples at a steady rate: a raw socket (the kernel adds the IP header) so that
    each datagram can have its own source port; UDP checksum 0 (none, allowed on IPv4)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    payload = b'flood'
    sent, start = 0, time.monotonic()
    total = int(args.rate * args.seconds)
    try:
        while sent < total:
            due = start + sent / args.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            sport = args.first_port + sent % (65536 - args.first_port)
            header = sport.to_bytes(2, 'big') + args.port.to_bytes(2, 'big') + \
                (8 + len(payload)).to_bytes(2, 'big') + b'\0\0'
            try:
                sock.sendto(header + payload, (args.addr, 0))
            except OSError:
                pass        # a full socket buffer: that datagram is lost, as on a wire
            sent += 1
        emit({'done': True, 'ok': True, 'sent': sent, 'seconds': time.monotonic() - start})
    finally:
        sock.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    for kind, fn in (('http-server', http_server), ('tcp-server', tcp_server),
                     ('udp-server', udp_server)):
        p = sub.add_parser(kind)
        p.add_argument('--port', type=int, required=True)
        p.add_argument('--name', required=True)
        p.add_argument('--lifetime', type=float, default=900)
        p.set_defaults(fn=fn)
    p = sub.add_parser('http-get')
    p.add_argument('url')
    p.add_argument('--timeout', type=float, default=3)
    p.set_defaults(fn=http_get)
    for kind, fn, count in (('tcp-session', tcp_session, 5), ('udp-request', udp_request, 1)):
        p = sub.add_parser(kind)
        p.add_argument('addr')
        p.add_argument('port', type=int)
        p.add_argument('--count', type=int, default=count)
        p.add_argument('--interval', type=float, default=1.0 if count > 1 else 0.0)
        p.add_argument('--timeout', type=float, default=2)
        p.add_argument('--src-port', type=int, default=0)
        p.add_argument('--payload', default='ping')
        p.set_defaults(fn=fn)
    p = sub.add_parser('tcp-connects')
    p.add_argument('addr')
    p.add_argument('port', type=int)
    p.add_argument('--seconds', type=float, default=10)
    p.add_argument('--rate', type=float, default=0)
    p.add_argument('--timeout', type=float, default=2)
    p.set_defaults(fn=tcp_connects)
    p = sub.add_parser('udp-flood')
    p.add_argument('addr')
    p.add_argument('port', type=int)
    p.add_argument('--rate', type=float, default=10000)
    p.add_argument('--seconds', type=float, default=3)
    p.add_argument('--first-port', type=int, default=10000)
    p.set_defaults(fn=udp_flood)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == '__main__':
    main()
