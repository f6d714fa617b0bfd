"""./run bench's table, verdicts and summary (bench/run.py), and the flow cache's memory
per flow from the compiler's structure sizes."""
import json

from harness import (ENGINE_TITLES, GEN_CPU, GOALS, SWITCH_CPU, log, median, sh)


def cache_memory(exe, kp_stats, buckets):
    sizes = json.loads(sh(exe["cache_sizes"], capture=True))
    slot = sizes["bucket"] / sizes["ways"] + sizes["entry"]
    table = buckets * (sizes["bucket"] + sizes["ways"] * sizes["entry"])
    fixed = (sizes["flow_cache"] + (sizes["prog_pool"] + 1) * sizes["prog_slot"]
             + sizes["max_flow_ids"] * sizes.get("flow_inval", 4)
             + (sizes.get("addr_pool", -1) + 1) * (sizes.get("addr_slot", 0) + 8)
             + sizes.get("megaflows", 0))
    out = {"sizes": sizes, "bytes_per_cached_flow": slot,
           "bucket_share_per_flow": sizes["bucket"] / sizes["ways"],
           "entry_per_flow": sizes["entry"],
           "megaflow_bytes_per_flow": sizes.get("mf_bytes_per_flow"),
           "table_bytes": table, "fixed_bytes": fixed, "buckets": buckets}
    if kp_stats and kp_stats.get("entries"):
        out["entries_live"] = kp_stats["entries"]
        out["allocated_per_live_flow"] = (table + fixed) / kp_stats["entries"]
    return out


# --------------------------------------------------------------------------- report

def verdict(ok):
    return "PASS" if ok else "MISS"


def report(args, pps, sessions, mem, cpu_note, newflows=None):
    summary = {"goals": GOALS, "pps": {}, "checks": []}
    log("\n" + "=" * 78)
    log("Packets per second, 64-byte UDP, kube-proxy DNAT flow (switch side on core %d, "
        "generator on core %d)" % (SWITCH_CPU, GEN_CPU))
    log("medians of %d rounds x %.1f s; each value: pps at the sink.  kp-xdp: kp-switch on "
        "AF_XDP ports (%s), kp-afpkt: on AF_PACKET; ovs-afpkt / ovs-xdp: Open vSwitch "
        "userspace (netdev) on AF_PACKET / AF_XDP ports; kernel: the kernel's forwarding "
        "with iptables DNAT + conntrack; bare: AF_PACKET rx -> tx, no lookup"
        % (args.rounds, args.seconds, pps.kp_port_io.get("kp", "?") if pps else "?"))
    pair = (("kp", "kernel"), ("kp", "ovs-xdp"), ("kp", "ovs"), ("kp", "bare"),
            ("kp", "kp-afp"))
    goal_of = {"kernel": "kp_over_kernel", "ovs-xdp": "kp_over_ovs_xdp", "ovs": "kp_over_ovs",
               "bare": "kp_over_bare"}
    if pps:
        for layout, by_flows in pps.results.items():
            log("\nreceive layout %s: the kernel's receive work for port 1 on core %d%s"
                % (layout, SWITCH_CPU if layout == "rx-switch-core" else GEN_CPU,
                   " (RPS; AF_XDP's receive runs in the veth's NAPI before RPS, on the "
                   "generator's core either way)" if layout == "rx-switch-core" else ""))
            have = pps.engines
            pair_here = [(a, b) for a, b in pair if a in have and b in have]
            log("%-7s " % "flows" + " ".join("%10s" % ENGINE_TITLES[e] for e in have) +
                "  " + " ".join("%9s" % ("kp/" + ENGINE_TITLES[b]) for _, b in pair_here))
            summary["pps"][layout] = {}
            for flows, by in by_flows.items():
                m = {e: median(v) for e, v in by.items()}
                ratios = {b: (m[a] / m[b] if m[b] else float("nan")) for a, b in pair_here}
                log("%-7d " % flows + " ".join("%10.0f" % m[e] for e in have) + "  " +
                    " ".join("%9.2f" % ratios[b] for _, b in pair_here))
                n = min(len(v) for v in by.values())
                paired = {b: median([by["kp"][i] / by[b][i] for i in range(n) if by[b][i]])
                          for _, b in pair_here}
                summary["pps"][layout][str(flows)] = {
                    "median_pps": m, "runs_pps": by,
                    "kp_over": ratios, "paired_kp_over": paired}
                for b, g in goal_of.items():
                    if b not in ratios:
                        continue
                    summary["checks"].append({
                        "goal": "kp >= %.1fx %s, %d flows, %s" % (GOALS[g], ENGINE_TITLES[b],
                                                                 flows, layout),
                        "value": ratios[b], "pass": ratios[b] >= GOALS[g]})
            log("  paired per round (kp/peer within a round, median): " + "; ".join(
                "%s flows: %s" % (f, ", ".join("%s %.2f" % (ENGINE_TITLES[b], v)
                                              for b, v in d["paired_kp_over"].items()))
                for f, d in summary["pps"][layout].items()))
            log("CPU time per forwarded packet (ns; the switch process's user + system; "
                "kernel: softirq time of all cores; ovs-xdp: its PMD thread polls)")
            summary.setdefault("cpu_ns_per_packet", {})[layout] = {}
            for flows, by in pps.cpu_ns[layout].items():
                c = {e: median(v) for e, v in by.items()}
                log("%-7d " % flows + " ".join("%10.0f" % c[e] for e in have))
                summary["cpu_ns_per_packet"][layout][str(flows)] = {"median": c, "runs": by}
        summary["kp_port_io"] = pps.kp_port_io
        summary["pps_runs"] = pps.details
    if sessions and sessions.results:
        log("\nNew sessions per second (first packet of each new UDP flow counted at the "
            "pod): kp = kp_app + kp-switch making the sessions in its C data path (lb), "
            "kp-pi = kp_app + kp-switch in packet-in mode, ovs = kp_app + Open vSwitch "
            "making the sessions (ct), ovs-pi = kp_app + Open vSwitch in packet-in mode, "
            "kernel = the kernel's forwarding with kube-proxy's iptables DNAT + conntrack")
        log("%-10s %12s %10s %10s %16s %12s" % ("engine", "sessions/s", "delivered", "offered",
                                                 "controller CPU", "switch CPU"))
        sm = {}

        def cpu(runs, key):
            values = [d[key] for d in runs if d[key] is not None]
            return "%13.0f µs" % median(values) if values else "%16s" % "-"
        for e, runs in sessions.results.items():
            sm[e] = median([d["sessions_per_s"] for d in runs])
            log("%-10s %12.0f %10d %10d %s %s" % (
                e, sm[e], median([d["delivered"] for d in runs]), runs[0]["offered"],
                cpu(runs, "controller_cpu_us"), cpu(runs, "switch_cpu_us")[3:]))
        log("(CPU: user + system time per session that reached the pod; the kernel's is "
            "softirq time of the senders, not counted)")
        ratios = {"%s/%s" % (a, b): sm[a] / sm[b] for a, b in (
            ("kp", "ovs"), ("kp", "kernel"), ("ovs", "kernel"), ("kp", "kp-pi"),
            ("ovs", "ovs-pi"))
            if sm.get(a) is not None and sm.get(b)}
        log("  ".join("%s: %.2f" % kv for kv in ratios.items()))
        summary["sessions"] = {"median_sessions_per_s": sm, "runs": sessions.results,
                               "ratios": ratios,
                               "kp_over_ovs": ratios.get("kp/ovs")}
    if newflows and newflows.details:
        nm = {e: median(v) for e, v in newflows.results.items() if v}
        log("\nNew flows per second through a static DNAT flow (one frame per new UDP "
            "5-tuple, offered at %d/s)" % args.newflow_rate)
        for e, v in sorted(nm.items()):
            log("  %-10s %10.0f new flows/s   (runs: %s)"
                % (e, v, ", ".join("%.0f" % x for x in newflows.results[e])))
        if nm.get("ovs"):
            log("  kp/ovs: %.2f" % (nm["kp"] / nm["ovs"]))
        summary["new_flows"] = {"median_new_flows_per_s": nm, "runs": newflows.details,
                                "kp_over_ovs": nm["kp"] / nm["ovs"] if nm.get("ovs") else None}
    log("\nkp-switch flow cache memory (switch/csrc/flow_cache.h, sizes from the compiler)")
    s = mem["sizes"]
    log("  bucket %d B / %d ways = %.0f B per slot in the bucket line, + out-of-line entry "
        "%d B (key %d B, flow ids)" % (s["bucket"], s["ways"], mem["bucket_share_per_flow"],
                                       s["entry"], s["key"]))
    log("  = %.0f bytes per cached flow (goal <= %d); table of %d buckets: %.1f MiB, "
        "fixed part (program and IPv6 address pools, invalidation epochs, megaflow "
        "tier of %d x %d B): %.1f MiB"
        % (mem["bytes_per_cached_flow"], GOALS["cache_bytes_per_flow"], mem["buckets"],
           mem["table_bytes"] / 2**20, s.get("mf_entries", 0), s.get("mf_bytes_per_flow", 0),
           mem["fixed_bytes"] / 2**20))
    if "allocated_per_live_flow" in mem:
        log("  with %d live entries: %.0f bytes allocated per live flow"
            % (mem["entries_live"], mem["allocated_per_live_flow"]))
    summary["cache_memory"] = mem
    summary["checks"].append({"goal": "cache bytes per flow <= %d" % GOALS["cache_bytes_per_flow"],
                              "value": mem["bytes_per_cached_flow"],
                              "pass": mem["bytes_per_cached_flow"] <= GOALS["cache_bytes_per_flow"]})
    log("\n" + "-" * 78 + "\nSUMMARY")
    for layout, by_flows in summary["pps"].items():
        for flows, v in by_flows.items():
            log("  %-14s %5s flows: kp %.0f pps | " % (layout, flows, v["median_pps"]["kp"]) +
                " | ".join("kp/%s %.2f" % (ENGINE_TITLES[b], r) for b, r in v["kp_over"].items()))
    if "new_flows" in summary:
        nm = summary["new_flows"]["median_new_flows_per_s"]
        log("  new flows/s through a static flow: kp %.0f, ovs %.0f"
            % (nm.get("kp", 0), nm.get("ovs", 0)))
    if "sessions" in summary:
        sm = summary["sessions"]["median_sessions_per_s"]
        log("  new sessions/s: " + ", ".join("%s %.0f" % kv for kv in sm.items()))
    for c in summary["checks"]:
        log("  %s  %-32s %.2f" % (verdict(c["pass"]), c["goal"], c["value"]))
    log("  (verdicts on the ratio of medians)")
    if cpu_note:
        log("  note: " + cpu_note)
    log("-" * 78)
    return summary


# --------------------------------------------------------------------------- main
