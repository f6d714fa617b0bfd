"""Human-readable text for the API's JSON answers (what `ku` prints without --json).

Every function takes answers shaped as in docs/service-api.md and returns text; they
read keys with .get() where the API may add fields later, so an older ku still prints
what it knows.
"""
from typing import Any, Dict, Iterable, List, Sequence

# The VIP counters, in the order the seed's `show ku` lists them.
VIP_COUNTERS = ("new_sessions", "active_sessions", "packets", "bytes", "no_pod",
                "untracked", "table_full")
POD_COUNTERS = ("new_sessions", "active_sessions", "packets", "bytes")
SESSION_COLUMNS = (("dpid", "DPID"), ("protocol", "PROTO"), ("client", "CLIENT"),
                   ("vip", "VIP"), ("pod", "POD"), ("age", "AGE_S"), ("idle", "IDLE_S"),
                   ("state", "STATE"), ("packets", "PACKETS"), ("bytes", "BYTES"),
                   ("tracked", "TRACKED"))


def cell(value: Any) -> str:
    if value is None or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(".", "", 1).isdigit()


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "") -> List[str]:
    """Aligned columns, numbers to the right; the lines, header first."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str], header: bool = False) -> str:
        parts = []
        for i, (text, width) in enumerate(zip(values, widths)):
            right = not header and i > 0 and _numeric(text)
            parts.append(text.rjust(width) if right else text.ljust(width))
        return (indent + "  ".join(parts)).rstrip()

    return [line(headers, header=True)] + [line(r) for r in cells]


def _counter_row(values: Dict[str, Any], names: Sequence[str]) -> List[Any]:
    return [values.get(name) for name in names]


# -- conf ---------------------------------------------------------------------------------


def _or(seconds, default: str) -> str:
    return f"{seconds} s" if seconds else default


def conf(answer: Dict[str, Any]) -> str:
    lines = [f"buckets   {answer.get('buckets')}",
             f"timeout   {answer.get('timeout')} s",
             f"  udp_timeout     {_or(answer.get('udp_timeout'), 'as timeout')}",
             f"  tcp_close_wait  {_or(answer.get('tcp_close_wait'), '120 s, at most timeout')}",
             f"node_ip   {cell(answer.get('node_ip'))}",
             f"node_ip6  {cell(answer.get('node_ip6'))}"]
    nodes = answer.get("nodes") or {}
    if nodes:
        lines.append("")
        lines += table(["DPID", "NODE_IP", "NODE_IP6", "ANNOUNCED"],
                       [[dpid, n.get("node_ip"), n.get("node_ip6"),
                         ",".join(n.get("announced") or []) or "-"]
                        for dpid, n in sorted(nodes.items(), key=lambda kv: int(kv[0]))])
    return "\n".join(lines)


# -- VIPs and pods ------------------------------------------------------------------------


def _pod_label(pod: Dict[str, Any]) -> str:
    state = pod.get("state", "active")
    return pod["address"] if state == "active" else f"{pod['address']} ({state})"


def vips(answer: List[Dict[str, Any]], verbose: bool = False) -> str:
    """The VIP table; under each VIP its external IPs and pods (with counters if verbose)."""
    if not answer:
        return "no VIPs"
    headers = ["PREFIX", "PORT", "PROTO", "TARGET", "NODE_PORT", "NAT", "NEW_LEN", "PODS",
               "SESSIONS", "NEW", "PACKETS", "BYTES"]
    rows = []
    for vip in answer:
        counters = vip.get("counters") or {}
        active = [p for p in vip.get("pods", []) if p.get("state", "active") == "active"]
        rows.append([vip["prefix"], vip["port"], vip.get("protocol"), vip.get("target_port"),
                     vip.get("node_port"), vip.get("nat"), vip.get("new_len"), len(active),
                     counters.get("active_sessions"), counters.get("new_sessions"),
                     counters.get("packets"), counters.get("bytes")])
    header, *vip_lines = table(headers, rows)
    lines = [header]
    for vip, vip_line in zip(answer, vip_lines):
        lines.append(vip_line)
        if vip.get("service"):
            lines.append(f"  service: {vip['service']}")
        if vip.get("affinity_timeout"):
            lines.append(f"  affinity: client IP, {vip['affinity_timeout']} s")
        if vip.get("external_policy") == "local":
            lines.append("  external_policy: local (node port and external IPs: this "
                         "node's pods only)")
        if vip.get("internal_policy") == "local":
            lines.append("  internal_policy: local (ClusterIP: this node's pods only)")
        if vip.get("external_ips"):
            lines.append(f"  external_ips: {', '.join(vip['external_ips'])}")
        if vip.get("source_ranges"):
            lines.append(f"  source_ranges: {', '.join(vip['source_ranges'])}")
        for dpid, state in sorted((vip.get("programming") or {}).items()):
            if state.get("state") in ("retrying", "refused"):     # (kp_app.refusals)
                lines.append(f"  {state['state']} by switch {dpid}: {state.get('error')} "
                             f"({state.get('retries')} retries, "
                             f"{state.get('retries_left')} left)")
        pods = vip.get("pods", [])
        if verbose:
            counters = vip.get("counters") or {}
            lines.append("  " + "  ".join(f"{name} {cell(counters.get(name))}"
                                          for name in ("no_pod", "untracked", "table_full",
                                                       "no_local_pod", "filtered")))
            if pods:
                lines += table(["POD", "STATE", "ENTRIES", "SESSIONS", "NEW", "PACKETS",
                                "BYTES"],
                               [[p["address"], p.get("state"), p.get("table_entries"),
                                 p.get("active_sessions"), p.get("new_sessions"),
                                 p.get("packets"), p.get("bytes")]
                                for p in pods], indent="  ")
            else:
                lines.append("  no pods")
        else:
            lines.append("  pods: " + (", ".join(_pod_label(p) for p in pods) or "-"))
    return "\n".join(lines)


def vip(answer: Dict[str, Any]) -> str:
    return vips([answer])


def deleted(subject: str) -> str:
    return f"deleted {subject}"


# -- Kubernetes Services ------------------------------------------------------------------


def applied(answer: Dict[str, Any]) -> str:
    """What `ku apply -f` / `ku delete -f` did: a line per VIP, kubectl-like."""
    rows = [[v.get("service"), v.get("vip"), v.get("action"),
             " ".join([f"+{a}" for a in v.get("pods_added", [])]
                      + [f"-{a}" for a in v.get("pods_removed", [])])]
            for v in answer.get("vips", [])]
    with_vips = {v.get("service") for v in answer.get("vips", [])}
    rows += [[name, None, "no VIPs (headless, ExternalName or no ports)", ""]
             for name in answer.get("services", []) if name not in with_vips]
    rows += [[name, None, "pruned", ""] for name in answer.get("pruned", [])
             if name not in with_vips]
    summary = answer.get("summary")
    total = ("%d Services: %s" % (sum(summary.values()), ", ".join(
        "%d %s" % (summary.get(k, 0), k) for k in ("created", "changed", "unchanged", "pruned")))
        if summary else None)
    if not rows:
        return total or "no Services"
    return "\n".join(table(["SERVICE", "VIP", "ACTION", "PODS"], rows)
                     + ([total] if total else []))


def services(answer: List[Dict[str, Any]]) -> str:
    if not answer:
        return "no Services applied"
    return "\n".join(table(["SERVICE", "VIPS"], [[s.get("service"), s.get("vips")]
                                                 for s in answer]))


# -- SNAT interfaces, sessions ------------------------------------------------------------


def interfaces(answer: Dict[str, List[str]]) -> str:
    rows = [[nat, name] for nat in sorted(answer) for name in answer[nat]]
    if not rows:
        return "no SNAT interfaces"
    return "\n".join(table(["NAT", "INTERFACE"], rows))


def sessions(answer: Dict[str, Any]) -> str:
    listed = answer.get("sessions", [])
    count = answer.get("count", len(listed))
    title = f"{count} session{'' if count == 1 else 's'}"
    if answer.get("untracked"):
        title += f", {answer['untracked']} untracked (over the table's capacity)"
    if len(listed) < count:
        title += f" (showing {len(listed)})"
    if not listed:
        return title
    # Only the columns the API gives (a newer API may add some, an older one lack some).
    columns = [(key, title) for key, title in SESSION_COLUMNS
               if any(key in s for s in listed)]
    rows = [[s.get(key) for key, _ in columns] for s in listed]
    return "\n".join([title] + table([t for _, t in columns], rows))


# -- counters -----------------------------------------------------------------------------


def _switch_lines(switches: Dict[str, Dict[str, Any]]) -> List[str]:
    """The switches' flow-cache figures, one row per switch that reports any."""
    reporting = {dpid: figures for dpid, figures in switches.items() if figures}
    if not reporting:
        return []
    names: List[str] = []
    for figures in reporting.values():
        names += [n for n in figures if n not in names]
    rows = [[dpid] + [figures.get(n) for n in names]
            for dpid, figures in sorted(reporting.items(), key=lambda kv: str(kv[0]))]
    return ["switch caches:"] + table(["DPID"] + [n.upper() for n in names], rows)


def counters(answer: Dict[str, Any]) -> str:
    entries = answer.get("vips", [])
    lines: List[str] = []
    if entries:
        rows = []
        for entry in entries:
            rows.append([entry["prefix"], entry.get("port"), entry.get("protocol")]
                        + _counter_row(entry, VIP_COUNTERS))
            for pod in entry.get("pods", []):
                rows.append(["  pod " + pod["address"], "", ""]
                            + _counter_row(pod, POD_COUNTERS) + ["", "", ""])
        lines += table(["VIP", "PORT", "PROTO"] + [n.upper() for n in VIP_COUNTERS], rows)
    else:
        lines.append("no VIPs")
    switch_lines = _switch_lines(answer.get("switches") or {})
    if switch_lines:
        lines += [""] + switch_lines
    return "\n".join(lines)


# -- show ---------------------------------------------------------------------------------


def _with_mode(dpid: Any, modes: Dict[str, str]) -> str:
    """A switch, and where it makes new sessions ("1 (ct)")."""
    mode = modes.get(str(dpid))
    return f"{dpid} ({mode})" if mode else str(dpid)


def _refusal_lines(channels: Dict[str, Dict[str, Any]]) -> List[str]:
    """A line per switch that refused messages: how many of each kind, the last one."""
    lines = []
    for dpid, status in sorted(channels.items()):
        counts = status.get("refused") or {}
        last = status.get("last_refused")
        if sum(counts.values()) and last:
            lines.append(f"switch {dpid} refused: " + ", ".join(
                f"{n} {kind}" for kind, n in counts.items() if n)
                + f"; last: {last.get('error')}, {last.get('message')}")
    return lines


def show(answers: Dict[str, Any]) -> str:
    """`ku show`: conf, totals, SNAT interfaces, the VIPs with pods and counters, and the
    switches' cache figures (answers of GET /v1/show, /v1/vips, /v1/counters)."""
    summary = answers["show"]
    conf_ = summary.get("conf", {})
    switches = summary.get("switches", [])
    ifaces = summary.get("interfaces", {})
    lines = [
        f"conf: buckets {conf_.get('buckets')}, timeout {conf_.get('timeout')} s, "
        f"node_ip {cell(conf_.get('node_ip'))}, node_ip6 {cell(conf_.get('node_ip6'))}",
        f"{summary.get('vips', 0)} VIPs, {summary.get('pods', 0)} pods, "
        f"{summary.get('sessions', 0)} sessions; switches: "
        f"{', '.join(_with_mode(s, summary.get('modes') or {}) for s in switches) or 'none connected'}",
        "SNAT interfaces: " + ("; ".join(f"{nat} {', '.join(names) or '-'}"
                                          for nat, names in sorted(ifaces.items())) or "-"),
        *_refusal_lines(summary.get("channels") or {}),
        "",
        vips(answers["vips"]),
    ]
    switch_lines = _switch_lines((answers.get("counters") or {}).get("switches") or {})
    if switch_lines:
        lines += [""] + switch_lines
    return "\n".join(lines)
