"""Compiling and validating OpenFlow instructions and actions (Ryu objects in, plain
tuples out).

Pipeline actions, before the pipeline resolves ports and groups:

    ("output", port, max_len)   port may be reserved (IN_PORT, FLOOD, ALL, CONTROLLER,
                                TABLE in packet-out only)
    ("group", group_id)
    ("set_field", name, value)  value as parse() prints it (str for addresses)
    ("push_vlan", ethertype) / ("pop_vlan",) / ("dec_ttl",)
    ("kp_lb", vip_id)           kp's in-switch load balancer (kp_proto.lb): only at the
                                end of apply-actions, with no goto and no write-actions
                                (it ends the packet's way through the tables)

What kp-switch does not support is refused with the error the spec prescribes.
"""
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from kp_proto import lb as kplb
from kp_proto.experimenter import KP_EXPERIMENTER_ID

from .errors import OFError
from .match import FIELDS, SETTABLE, Match, to_int, to_user

OUTPUT_RESERVED_OK = {ofp.OFPP_IN_PORT, ofp.OFPP_FLOOD, ofp.OFPP_ALL, ofp.OFPP_CONTROLLER}

# Action-set order (OpenFlow 1.3 section 5.10) for what kp supports.
ACTION_SET_ORDER = ("pop_vlan", "push_vlan", "dec_ttl", "set_field", "group", "output")


class Context:
    """What validation needs to know about the switch."""

    def __init__(self, port_exists, group_exists, n_tables, packet_out=False):
        self.port_exists = port_exists
        self.group_exists = group_exists
        self.n_tables = n_tables
        self.packet_out = packet_out


def _bad_action(code, text=""):
    return OFError(ofp.OFPET_BAD_ACTION, code, text)


# (name, value as Ryu gives it) -> the value as the pipeline and fast path take it, for
# the set-field values seen lately (a controller sends the same few again and again).
_set_field_values = {}
_SET_FIELD_VALUES_MAX = 4096


def _set_field_value(name, value):
    """A set-field's value checked and in parse()'s form; raises OFError."""
    try:
        v = to_int(name, value)
    except (ValueError, TypeError):
        raise _bad_action(ofp.OFPBAC_BAD_SET_ARGUMENT, "set_field %s" % name)
    bits = FIELDS[name][1]
    if v >> bits or (name == "vlan_vid" and not v & ofp.OFPVID_PRESENT):
        raise _bad_action(ofp.OFPBAC_BAD_SET_ARGUMENT, "set_field %s=%r" % (name, value))
    user = to_user(name, v)
    try:
        if len(_set_field_values) >= _SET_FIELD_VALUES_MAX:
            _set_field_values.clear()
        _set_field_values[(name, value)] = user
    except TypeError:
        pass
    return user


def compile_actions(actions, ctx, match=None):
    """Ryu OFPAction* list -> pipeline action tuples; raises OFError."""
    out = []
    for a in actions:
        if isinstance(a, parser.OFPActionOutput):
            port = a.port
            if port == ofp.OFPP_TABLE:
                if not ctx.packet_out:
                    raise _bad_action(ofp.OFPBAC_BAD_OUT_PORT, "OFPP_TABLE only in packet-out")
            elif port not in OUTPUT_RESERVED_OK and not ctx.port_exists(port):
                raise _bad_action(ofp.OFPBAC_BAD_OUT_PORT, "port %#x" % port)
            out.append(("output", port, a.max_len))
        elif isinstance(a, parser.OFPActionGroup):
            if a.group_id > ofp.OFPG_MAX or not ctx.group_exists(a.group_id):
                raise _bad_action(ofp.OFPBAC_BAD_OUT_GROUP, "group %d" % a.group_id)
            out.append(("group", a.group_id))
        elif isinstance(a, parser.OFPActionSetField):
            name = a.key
            if name not in SETTABLE:
                raise _bad_action(ofp.OFPBAC_BAD_SET_TYPE, "set_field %s" % name)
            try:
                user = _set_field_values.get((name, a.value))
            except TypeError:  # an unhashable value: converted (and refused) below
                user = None
            if user is None:
                user = _set_field_value(name, a.value)
            if match is not None and name != "vlan_vid" and name != "vlan_pcp":
                try:
                    match.check_prereqs(extra=(name,))
                except OFError:
                    raise _bad_action(ofp.OFPBAC_MATCH_INCONSISTENT, "set_field %s" % name)
            out.append(("set_field", name, user))
        elif isinstance(a, parser.OFPActionPushVlan):
            if a.ethertype not in (0x8100, 0x88A8):
                raise _bad_action(ofp.OFPBAC_BAD_ARGUMENT, "push_vlan %#x" % a.ethertype)
            out.append(("push_vlan", a.ethertype))
        elif isinstance(a, parser.OFPActionPopVlan):
            out.append(("pop_vlan",))
        elif isinstance(a, parser.OFPActionDecNwTtl):
            out.append(("dec_ttl",))
        elif isinstance(a, parser.OFPActionExperimenter):
            if getattr(a, "experimenter", None) != KP_EXPERIMENTER_ID:
                raise _bad_action(ofp.OFPBAC_BAD_EXPERIMENTER, "experimenter action")
            try:
                vip_id = kplb.decode_lb_action(bytes(getattr(a, "data", b"")))
            except ValueError as e:
                raise _bad_action(ofp.OFPBAC_BAD_EXP_TYPE, str(e))
            out.append(("kp_lb", vip_id))
        else:
            raise _bad_action(ofp.OFPBAC_BAD_TYPE, type(a).__name__)
    return out


class Instructions:
    """A flow entry's compiled instructions (and the Ryu objects, for flow stats)."""

    __slots__ = ("apply", "clear", "write", "metadata", "goto", "raw")

    def __init__(self, apply=None, clear=False, write=None, metadata=None, goto=None, raw=()):
        self.apply = apply
        self.clear = clear
        self.write = write
        self.metadata = metadata
        self.goto = goto
        self.raw = list(raw)

    def groups(self):
        return {a[1] for lst in (self.apply or (), self.write or ()) for a in lst if a[0] == "group"}

    def outputs_to(self, port):
        """Does an output action send to `port` (out_port filter)?"""
        return any(a[0] == "output" and a[1] == port
                   for lst in (self.apply or (), self.write or ()) for a in lst)


def compile_instructions(instructions, ctx, table_id, match):
    """Ryu OFPInstruction* list -> Instructions; raises OFError."""
    ins = Instructions(raw=instructions)
    seen = set()
    for i in instructions:
        t = getattr(i, "type", None)
        if t in seen:
            raise OFError(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNSUP_INST, "duplicate instruction %s" % t)
        seen.add(t)
        if isinstance(i, parser.OFPInstructionGotoTable):
            if i.table_id <= table_id or i.table_id >= ctx.n_tables:
                raise OFError(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_TABLE_ID, "goto %d" % i.table_id)
            ins.goto = i.table_id
        elif isinstance(i, parser.OFPInstructionWriteMetadata):
            ins.metadata = (i.metadata & i.metadata_mask, i.metadata_mask)
        elif isinstance(i, parser.OFPInstructionActions):
            if i.type == ofp.OFPIT_APPLY_ACTIONS:
                ins.apply = compile_actions(i.actions, ctx, match)
            elif i.type == ofp.OFPIT_WRITE_ACTIONS:
                acts = compile_actions(i.actions, ctx, match)
                ins.write = acts
            elif i.type == ofp.OFPIT_CLEAR_ACTIONS:
                if i.actions:
                    raise OFError(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_LEN, "clear-actions with actions")
                ins.clear = True
            else:
                raise OFError(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNKNOWN_INST, str(i.type))
        else:
            raise OFError(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNSUP_INST, type(i).__name__)
    _check_kp_lb(ins)
    return ins


def _check_kp_lb(ins):
    """kp_lb hands the packet to the switch's load balancer, which runs it through the
    tables again: nothing may follow it."""
    if any(a[0] == "kp_lb" for a in ins.write or ()):
        raise _bad_action(ofp.OFPBAC_BAD_ARGUMENT, "kp_lb in write-actions")
    apply = ins.apply or ()
    at = [i for i, a in enumerate(apply) if a[0] == "kp_lb"]
    if at and (at != [len(apply) - 1] or ins.goto is not None or ins.write):
        raise _bad_action(ofp.OFPBAC_BAD_ARGUMENT,
                          "kp_lb must end the flow's instructions (last action, no goto)")


def action_set_key(action):
    """The slot an action occupies in the action set (one action per slot)."""
    if action[0] == "set_field":
        return ("set_field", action[1])
    return action[0]


def write_to_action_set(action_set, actions):
    for a in actions:
        action_set[action_set_key(a)] = a


def action_set_in_order(action_set):
    """The action set's actions in the order the spec executes them."""
    out = []
    for kind in ACTION_SET_ORDER:
        if kind == "set_field":
            out.extend(a for k, a in action_set.items() if isinstance(k, tuple))
        elif kind in action_set:
            out.append(action_set[kind])
    if "group" in action_set:  # a group in the action set overrides the output
        out = [a for a in out if a[0] != "output"]
    return out


__all__ = ["Context", "Instructions", "compile_actions", "compile_instructions", "Match",
           "write_to_action_set", "action_set_in_order"]
