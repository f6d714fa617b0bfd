"""Which connection speaks for a datapath id (kp_app.dpid_claims), with plain objects
for connections and the clock passed in."""
from kp_app.dpid_claims import ACCEPT, PROBE, PROBE_SECONDS, REFUSE, TAKEOVER, DpidClaims


def test_the_first_keeps_its_id_when_it_answers_the_echo():
    claims, first, second = DpidClaims(), object(), object()
    assert claims.claim(7, first, 0.0) == ACCEPT
    assert claims.claim(7, first, 0.0) == ACCEPT        # (itself again: no change)
    assert claims.claim(7, second, 1.0) == PROBE
    assert claims.owner(7) is first and claims.held(7) is second
    assert claims.answered(7, second) is None           # only the owner's answer counts
    assert claims.answered(7, first) is second          # to close
    assert claims.owner(7) is first and claims.held(7) is None
    assert claims.status() == {"refused": 1, "taken_over": 0, "held": [], "takeover": False}
    assert claims.expired(100.0) == []


def test_a_silent_first_is_taken_for_dead_after_the_probe():
    claims, first, second = DpidClaims(), object(), object()
    claims.claim(7, first, 0.0)
    claims.claim(7, second, 1.0)
    assert claims.expired(1.0 + PROBE_SECONDS - 0.1) == []
    assert claims.expired(1.0 + PROBE_SECONDS) == [(7, first, second)]
    assert claims.owner(7) is second and claims.status()["taken_over"] == 1
    assert claims.gone(7, first) is None                # its close changes nothing now
    assert claims.owner(7) is second


def test_a_third_claimant_is_refused_and_a_closing_first_hands_over_at_once():
    claims, first, second, third = DpidClaims(), object(), object(), object()
    claims.claim(7, first, 0.0)
    claims.claim(7, second, 0.0)
    assert claims.claim(7, third, 0.0) == REFUSE
    assert claims.gone(7, first) is second
    assert claims.owner(7) is second and claims.held(7) is None
    assert claims.gone(7, second) is None and claims.owner(7) is None
    assert claims.claim(7, third, 5.0) == ACCEPT


def test_a_held_newcomer_that_goes_is_forgotten():
    claims, first, second = DpidClaims(), object(), object()
    claims.claim(7, first, 0.0)
    claims.claim(7, second, 0.0)
    assert claims.gone(7, second) is None
    assert claims.held(7) is None and claims.owner(7) is first
    assert claims.expired(100.0) == []


def test_takeover_allowed_replaces_at_once():
    claims, first, second = DpidClaims(takeover=True), object(), object()
    claims.claim(7, first, 0.0)
    assert claims.claim(7, second, 0.0) == TAKEOVER
    assert claims.owner(7) is second and claims.status()["taken_over"] == 1
