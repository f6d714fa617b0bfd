"""kp-switch's --node-ip/--node-ip6: a bad address is refused before anything starts.
(That a good one reaches kp_app in the DESC reply is shown end to end by
tests/integration/test_mn_pingall.py.)"""
import pytest

from kp_switch.main import main


@pytest.mark.parametrize("args, says", [
    (["--node-ip", "10.0.1.1"], "no /prefix length"),
    (["--node-ip", "fd00::1/64"], "is IPv6, not IPv4"),
    (["--node-ip6", "10.0.1.1/24"], "is IPv4, not IPv6"),
    (["--node-ip", "10.0.1.300/24"], "not an address"),
])
def test_a_bad_node_address_is_refused(args, says, capsys):
    assert main(args + ["lo"]) == 2
    err = capsys.readouterr().err
    assert "kp-switch: --node-ip/--node-ip6:" in err and says in err, err
