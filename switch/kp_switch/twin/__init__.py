"""The Python twin of kp-switch's C fast path, one module per C file it mirrors; its API
is kp_switch.fastpath_ref (see there)."""
