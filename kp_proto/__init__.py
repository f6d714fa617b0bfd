"""What kp_app and kp-switch must agree on, defined once and imported by both sides.

Nothing here imports Ryu, the switch or the controller: these are contracts (a hash both
data planes compute, limits both sides check), not code of either side.
"""
