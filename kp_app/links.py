"""Link discovery between switches: kp's signed probes, and how long a link lives.

Every PROBE_INTERVAL seconds (and when a switch or port comes) kp sends a probe out of
each port of each switch (kp_app.frames.link_probe). A probe that comes back in at
another switch's port says the two ports face each other: a fabric link. Probes are
signed with a secret of this controller alone (os.urandom at start, never sent nor
stored) and carry the time they were sent, so a host cannot make kp take its port for
a link: a forged probe fails its tag, one captured and sent again later is too old
(PROBE_MAX_AGE), one sent back into the port it came out of is a loop, not a link.
(What is not stopped: two colluding hosts relaying a fresh probe between their ports
within PROBE_MAX_AGE.) A link not confirmed by a probe for LINK_TIMEOUT is dropped.
"""
import logging
import os
from typing import Dict, Optional, Tuple

from kp_app import frames
from kp_app.hosts import REFUSAL_LOG_SECONDS    # (one rate for every refusal logged)

LOG = logging.getLogger("kp_app")

PROBE_INTERVAL = 10.0           # s between two rounds of probes (--kp-probe-interval)
MIN_PROBE_INTERVAL = 0.5        # s: the fastest --kp-probe-interval takes
# A probe older than one interval (or from the future) is refused; a link no probe
# confirmed for 3.5 intervals (three rounds lost) goes.
PROBE_MAX_AGE = PROBE_INTERVAL
LINK_TIMEOUT = 3.5 * PROBE_INTERVAL
SECRET_BYTES = 32

Port = Tuple[int, int]      # (dpid, port)


class LinkProbes:
    """Makes and checks this controller's probes; remembers when each link was last
    confirmed. `refused` counts the probes refused (forged, stale, looped)."""

    def __init__(self, secret: Optional[bytes] = None, interval: float = PROBE_INTERVAL) -> None:
        """`interval`: seconds between two rounds of probes; a probe older than that is
        refused, and a link unconfirmed for 3.5 of them goes."""
        if not interval >= MIN_PROBE_INTERVAL:
            raise ValueError(f"the probe interval must be at least {MIN_PROBE_INTERVAL} s")
        self.interval = float(interval)
        self.max_age = self.interval * (PROBE_MAX_AGE / PROBE_INTERVAL)
        self.link_timeout = self.interval * (LINK_TIMEOUT / PROBE_INTERVAL)
        self._secret = secret if secret is not None else os.urandom(SECRET_BYTES)
        self.confirmed: Dict[Port, float] = {}
        self.refused = 0
        self._logged: Tuple[float, int] = (float("-inf"), 0)    # (when, `refused` then)

    def probe(self, src_mac: str, dpid: int, port: int, now: float) -> bytes:
        return frames.link_probe(src_mac, dpid, port, self._secret, now)

    def sender(self, raw: bytes, receiver: Port, now: float) -> Optional[Port]:
        """The (dpid, port) a probe received at `receiver` was sent from, if this
        controller sent it lately and it is not a loop; else None (counted)."""
        parsed = frames.parse_link_probe(raw, self._secret)
        why = ("forged or altered" if parsed is None
               else "stale" if not -1.0 <= now - parsed[2] <= self.max_age
               else "sent back where it came from" if parsed[:2] == receiver else None)
        if why is None:
            return parsed[:2]
        self.refused += 1
        last, refused_then = self._logged
        if now - last >= REFUSAL_LOG_SECONDS:   # one line per REFUSAL_LOG_SECONDS
            LOG.warning("switch %016x: refused a link probe in at port %d: %s (%d refused "
                        "since the last such line)", receiver[0], receiver[1], why,
                        self.refused - refused_then)
            self._logged = (now, self.refused)
        return None

    def confirm(self, a: Port, b: Port, now: float) -> None:
        self.confirmed[a] = self.confirmed[b] = now

    def alive(self, links: Dict[Port, Port], now: float) -> Dict[Port, Port]:
        """Of `links` (both ways), those confirmed within the link timeout."""
        kept = {a: b for a, b in links.items()
                if now - self.confirmed.get(a, float("-inf")) < self.link_timeout}
        self.confirmed = {p: t for p, t in self.confirmed.items() if p in kept}
        return kept
