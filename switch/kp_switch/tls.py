"""TLS for kp-switch's controller connections (`--controller ssl:HOST:PORT`).

A `Connection` (agent.py) reads its socket in one thread and writes it in another.  An
SSL socket must not be used by two threads at once (OpenSSL's SSL objects are not
thread-safe, and a read can need a write: alerts, TLS 1.3 key updates), so one pump
thread owns the TLS socket and relays plain bytes to one end of a socketpair; the
Connection gets the other end and uses it as it would the TCP connection.

Trust is the CA's: the switch presents its certificate (--certificate, --private-key)
and accepts only a controller whose certificate the CA (--ca-cert) signed.  Controllers
are named by address, so the certificate's host name is not checked (as Open vSwitch).
"""
import select
import socket
import ssl
import threading

RELAY_LIMIT = 1 << 20  # bytes held each way before the pump stops reading that side
_CHUNK = 1 << 14       # one TLS record's worth: the unit a blocked TLS write is retried with


def client_context(certificate: str, private_key: str, ca_cert: str) -> ssl.SSLContext:
    """The context of a switch that proves itself with `certificate` and trusts the
    controllers `ca_cert` signed (TLS 1.2 or later).  OSError / ssl.SSLError when a
    file cannot be read."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(certificate, private_key)
    ctx.load_verify_locations(ca_cert)
    return ctx


def connect(sock: socket.socket, ctx: ssl.SSLContext) -> socket.socket:
    """Handshake over the connected `sock` (its timeout applies) and return a plain
    socket relayed to the TLS one by a pump thread.  ssl.SSLError (an OSError) when the
    handshake fails."""
    tls = ctx.wrap_socket(sock, server_side=False)
    return relay(tls)


def relay(tls: ssl.SSLSocket) -> socket.socket:
    """A plain socket whose bytes a pump thread carries to and from `tls` (handshaken)."""
    mine, theirs = socket.socketpair()
    threading.Thread(target=_pump, args=(tls, mine), name="kp-of-tls", daemon=True).start()
    return theirs


def _pump(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    tls.setblocking(False)
    plain.setblocking(False)
    to_plain, to_tls = bytearray(), bytearray()
    retry = b""  # a TLS write OpenSSL asked to repeat (it must get the same bytes)
    tls_eof = plain_eof = False
    try:
        while True:
            progressed = False
            if not tls_eof and len(to_plain) < RELAY_LIMIT:
                try:
                    data = tls.recv(_CHUNK)
                    progressed = True
                    if data:
                        to_plain += data
                    else:
                        tls_eof = True
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            if to_plain:
                try:
                    del to_plain[:plain.send(to_plain)]
                    progressed = True
                except BlockingIOError:
                    pass
            if not plain_eof and len(to_tls) < RELAY_LIMIT:
                try:
                    data = plain.recv(_CHUNK)
                    progressed = True
                    if data:
                        to_tls += data
                    else:
                        plain_eof = True
                except BlockingIOError:
                    pass
            if retry or to_tls:
                chunk = retry or bytes(to_tls[:_CHUNK])
                if not retry:
                    del to_tls[:len(chunk)]
                try:
                    sent = tls.send(chunk)
                    retry = chunk[sent:]
                    progressed = True
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    retry = chunk
            if (tls_eof and not to_plain) or (plain_eof and not to_tls and not retry):
                return
            if not progressed:
                readers = [s for s, more in ((tls, not tls_eof and len(to_plain) < RELAY_LIMIT),
                                             (plain, not plain_eof and len(to_tls) < RELAY_LIMIT))
                           if more]
                writers = ([plain] if to_plain else []) + ([tls] if retry or to_tls else [])
                select.select(readers, writers, [], 1.0)
    except OSError:  # ssl.SSLError included: the channel is gone either way
        pass
    finally:
        for s in (plain, tls):
            try:
                s.close()
            except OSError:
                pass
