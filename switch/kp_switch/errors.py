"""The OpenFlow error a request is refused with.

Table, group and pipeline logic raise `OFError(type, code)` with the spec's constants
(`ryu.ofproto.ofproto_v1_3.OFPET_*` and codes); the agent turns it into an
OFPT_ERROR message carrying the start of the offending request.
"""


class OFError(Exception):
    def __init__(self, type_, code, text=""):
        super().__init__("OpenFlow error type=%d code=%d%s" % (type_, code, (": " + text) if text else ""))
        self.type = type_
        self.code = code
        self.text = text
