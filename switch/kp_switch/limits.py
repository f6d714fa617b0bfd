"""What one OpenFlow connection may cost kp-switch, and the token bucket that paces it.

Whoever reaches a `--listen` port (or answers at a `--controller` address) gets a
reader and a writer thread and the agent's lock for each message. So:

- a message is at most 64 KiB (OpenFlow's 16-bit length); a connection buffers at most
  one partial message and one read (READ_CHUNK) beyond it;
- at most MAX_MGMT_CONNECTIONS management connections at once over all `--listen`
  ports; one more is accepted and closed at once, with a log line (the first, then one
  in LOG_EVERY) and a count;
- a connection that has not said HELLO within HELLO_TIMEOUT is closed; a management
  connection silent for MGMT_DEAD_IDLE (echo requests sent after MGMT_ECHO_IDLE go
  unanswered) is closed, as the controller's is after 15 s;
- each connection's messages are paced by a token bucket (MGMT_RATE a second for
  management connections, CONTROLLER_RATE for a controller, each with a second's worth
  of burst). Beyond it the connection's reader waits before it handles the next
  message and reads no more meanwhile: TCP pushes back on the sender, and nothing it
  sent is dropped or half-applied. This is Open vSwitch's answer too (ofproto/
  connmgr.c): it handles at most 50 messages of a connection per main-loop pass and
  stops reading one while 100 of its replies wait unsent, rather than closing it.
"""
READ_CHUNK = 1 << 16            # bytes read from a channel at a time
MAX_MGMT_CONNECTIONS = 16
LOG_EVERY = 100
HELLO_TIMEOUT = 10.0
MGMT_ECHO_IDLE = 30.0
MGMT_DEAD_IDLE = 60.0
MGMT_RATE = 5000                # messages a second, per management connection
# Above anything kp_app sends (its flow-mods decode at some 20-50 us each, so the
# decoder binds first); a bound, not a brake.
CONTROLLER_RATE = 100000


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; the clock is passed in."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a rate > 0 and a burst >= 1")
        self.rate, self.burst = float(rate), float(burst)
        self.tokens, self.stamp = float(burst), now

    def take(self, now: float, n: int = 1) -> float:
        """Take n tokens; how long to wait before using them (0.0: no wait). The debt
        counts at once: a caller that waits the answer out is exactly on the rate."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
