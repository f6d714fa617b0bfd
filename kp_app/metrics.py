"""kp_app's Prometheus metrics: kube-proxy's names where kube-proxy has the figure, kp's
own (prefix kp_) for the rest. Read at each scrape from the controller's state, nothing
kept here: a prometheus_client collector over KubeProxy and its SyncRecord.

kube-proxy's (pkg/proxy/metrics), with the same meaning:
- kubeproxy_sync_proxy_rules_duration_seconds: each sync (an applied change of
  configuration, kp_app.sync_record), from its start to its switch messages handed to
  the switch connections.
- kubeproxy_sync_proxy_rules_last_timestamp_seconds, ..._last_queued_timestamp_seconds.
- kubeproxy_network_programming_duration_seconds: from the time the cluster changed a
  Service's endpoints (the EndpointSlice's last-change-trigger-time annotation) to the
  end of the sync that programmed it; only observed for objects that carry the annotation.
- kubeproxy_sync_proxy_rules_{service,endpoint}_changes_{total,pending}: Kubernetes
  Services whose VIPs, and whose endpoints, a sync changed, and those queued for one.
- kubeproxy_proxy_{healthz,livez}_total{code}: answers of /healthz and /livez.

kp's own, per VIP ({vip, protocol, service}) and per pod ({vip, pod}): new sessions,
packets, bytes, active sessions, untracked (table full), and the refusals (no pod, no
local pod, filtered); per switch ({dpid}): packet-ins, kp-switch's flow cache and
megaflow counters, and in lb mode its own session table (sessions, capacity, made,
untracked, dropped), which come from the switch; and what the switch refused
(kp_switch_refused{dpid, kind}, kp_switch_vips_refused{dpid}: kp_app.refusals); and
second connections that claimed a switch's datapath id (kp_dpid_claims_refused,
kp_dpid_takeovers: kp_app.dpid_claims).
"""
from typing import Dict, Iterator, Tuple

from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)

from kp_app.sync_record import Histogram

# kp-switch's cache counters (kp_proto.experimenter.CACHE_STATS_FIELDS): the gauges;
# the others count up.
CACHE_GAUGES = ("entries", "buckets", "mf_entries", "mf_subtables")
# kp-switch's session table in lb mode (kp_proto.lb's KP_LB_STATS_REPLY totals)
LB_GAUGES = {"sessions": "kp_switch_sessions", "capacity": "kp_switch_session_capacity"}
LB_COUNTERS = {"created": "kp_switch_sessions_created", "untracked": "kp_switch_untracked",
               "dropped": "kp_switch_dropped"}
VIP_COUNTERS = {"new_sessions": "new sessions", "packets": "packets", "bytes": "bytes",
                "untracked": "new sessions that found the session table full and went on "
                             "untracked (relayed by the controller, or kp-switch's untracked)",
                "table_full": "new sessions that found the table full (the untracked, and "
                              "those dropped beyond them)",
                "no_pod": "new sessions refused: no pod",
                "filtered": "new sessions refused: outside loadBalancerSourceRanges",
                "no_local_pod": "new sessions refused: no local pod (traffic policy Local)",
                "refused": "messages of the VIP's programming (its flows, its table, its "
                           "sessions' flows) that a switch refused (kp_app.refusals)"}
POD_COUNTERS = ("new_sessions", "packets", "bytes")


def _histogram(name: str, documentation: str, histogram: Histogram) -> Metric:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], histogram.buckets(), histogram.sum)
    return family


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> Metric:
    return CounterMetricFamily(name, documentation, value=value)


class KpCollector:
    """`describe`/`collect` for prometheus_client's registry, over `service`: a KubeProxy,
    or the Ryu app's LiveService, whose counters() asks the switches first."""

    def __init__(self, service) -> None:
        self._service = service

    def describe(self) -> list:
        return []       # collected fresh at each scrape: nothing to check up front

    def collect(self) -> Iterator[Metric]:
        yield from self._sync_metrics()
        yield from self._health_metrics()
        counters = self._service.counters()       # (refreshed from the switches)
        yield _gauge("kp_sessions", "Sessions now, those the controller tracks and those "
                     "kp-switch keeps itself", self._service.session_count())
        yield from self._vip_metrics(counters["vips"])
        yield from self._switch_metrics(counters["switches"])
        yield from self._channel_metrics(self._service.channel_status())
        claims = self._service.claims.status()
        yield _counter("kp_dpid_claims_refused", "Connections closed for claiming the "
                       "datapath id of a live switch (kp_app.dpid_claims)", claims["refused"])
        yield _counter("kp_dpid_takeovers", "Datapath ids a new connection took over from "
                       "a dead (or, with --kp-dpid-takeover, any) one", claims["taken_over"])
        shown = self._service.host_status()      # (not show(): counters() above did that work)
        refused = CounterMetricFamily(
            "kp_host_claims_refused", "ARP, ND and sources claiming an address or MAC bound "
            "to another port, or kp's own, and hosts not learned for want of room "
            "(kp_app.hosts)", labels=["dpid"])
        learned = GaugeMetricFamily("kp_hosts", "Hosts learned behind the switch's ports",
                                    labels=["dpid"])
        for dpid, hosts in shown["hosts"].items():
            refused.add_metric([dpid], hosts["claims_refused"])
            learned.add_metric([dpid], hosts["learned"])
        yield refused
        yield learned
        yield _counter("kp_link_probes_refused", "Link probes refused: forged, altered, "
                       "stale, or back into the port they left (kp_app.links)",
                       shown["link_probes_refused"])

    def _sync_metrics(self) -> Iterator[Metric]:
        r = self._service.syncs
        yield _histogram("kubeproxy_sync_proxy_rules_duration_seconds",
                         "SyncProxyRules latency in seconds", r.duration)
        yield _gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                     "The last time proxy rules were successfully synced",
                     r.last_synced or 0)
        yield _gauge("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                     "The last time a sync of proxy rules was queued", r.last_queued or 0)
        yield _histogram("kubeproxy_network_programming_duration_seconds",
                         "In Cluster Network Programming Latency in seconds", r.programming)
        yield _gauge("kubeproxy_sync_proxy_rules_endpoint_changes_pending",
                     "Pending proxy rules Endpoint changes", r.endpoint_changes_pending)
        yield _counter("kubeproxy_sync_proxy_rules_endpoint_changes",
                       "Cumulative proxy rules Endpoint changes", r.endpoint_changes_total)
        yield _gauge("kubeproxy_sync_proxy_rules_service_changes_pending",
                     "Pending proxy rules Service changes", r.service_changes_pending)
        yield _counter("kubeproxy_sync_proxy_rules_service_changes",
                       "Cumulative proxy rules Service changes", r.service_changes_total)
        yield _counter("kp_syncs", "Changes of configuration applied", r.syncs)
        yield _counter("kp_syncs_refused",
                       "Changes of configuration refused (bad input; nothing changed)",
                       r.refused)

    def _health_metrics(self) -> Iterator[Metric]:
        for path, name in (("/healthz", "healthz"), ("/livez", "livez")):
            family = CounterMetricFamily(f"kubeproxy_proxy_{name}",
                                         f"Cumulative proxy {name} HTTP status", labels=["code"])
            for code in (200, 503):
                family.add_metric([str(code)], self._service.syncs.health_answers.get((path, code), 0))
            yield family

    def _vip_metrics(self, vips: list) -> Iterator[Metric]:
        vip_labels = ["vip", "protocol", "service"]
        families = {key: CounterMetricFamily(f"kp_vip_{key}", f"Per VIP: {text}",
                                             labels=vip_labels)
                    for key, text in VIP_COUNTERS.items()}
        active = GaugeMetricFamily("kp_vip_active_sessions", "Per VIP: sessions now",
                                   labels=vip_labels)
        pod_families = {key: CounterMetricFamily(f"kp_pod_{key}", f"Per pod: {key}",
                                                 labels=["vip", "pod"])
                        for key in POD_COUNTERS}
        pod_active = GaugeMetricFamily("kp_pod_active_sessions", "Per pod: sessions now",
                                       labels=["vip", "pod"])
        services = {(str(v.prefix), v.port): v.service
                    for v in self._service.model.vips.values()}
        for vip in vips:
            label = f"{vip['prefix']} port {vip['port']}"
            values = [label, vip["protocol"], services.get((vip["prefix"], vip["port"])) or ""]
            for key, family in families.items():
                family.add_metric(values, vip[key])
            active.add_metric(values, vip["active_sessions"])
            for pod in vip["pods"]:
                for key, family in pod_families.items():
                    family.add_metric([label, pod["address"]], pod[key])
                pod_active.add_metric([label, pod["address"]], pod["active_sessions"])
        yield from families.values()
        yield active
        yield from pod_families.values()
        yield pod_active

    def _switch_metrics(self, switches: Dict[str, dict]) -> Iterator[Metric]:
        families: Dict[str, Metric] = {}

        def add(name: str, kind, documentation: str, dpid: str, value) -> None:
            if name not in families:
                families[name] = kind(name, documentation, labels=["dpid"])
            families[name].add_metric([dpid], value)

        for dpid, figures in switches.items():
            add("kp_switch_packet_ins", CounterMetricFamily,
                "Packet-ins from the switch", dpid, figures.get("packet_ins", 0))
            add("kp_switch_service_packet_ins", CounterMetricFamily,
                "Packet-ins of service traffic (sessions made by the controller)", dpid,
                figures.get("service_packet_ins", 0))
            for key, value in figures.items():
                if key.startswith("lb_"):
                    key = key[3:]
                    if key in LB_GAUGES:
                        add(LB_GAUGES[key], GaugeMetricFamily,
                            f"kp-switch's own session table: {key}", dpid, value)
                    elif key in LB_COUNTERS:
                        add(LB_COUNTERS[key], CounterMetricFamily,
                            f"kp-switch's own session table: {key}", dpid, value)
                elif key not in ("packet_ins", "service_packet_ins"):
                    gauge = key in CACHE_GAUGES
                    add(f"kp_switch_cache_{key}", GaugeMetricFamily if gauge
                        else CounterMetricFamily, f"kp-switch's flow cache: {key}", dpid, value)
        yield from families.values()


    def _channel_metrics(self, channels: Dict[str, dict]) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "kp_switch_refused", "Messages the switch refused with an OFPT_ERROR, by what "
            "they were: a session's flow, a VIP's programming, the switch's own",
            labels=["dpid", "kind"])
        vips = GaugeMetricFamily("kp_switch_vips_refused",
                                 "VIPs the switch refused some programming of, retrying "
                                 "or given up (see the VIP's programming in REST)",
                                 labels=["dpid"])
        for dpid, status in channels.items():
            for kind, count in status["refused"].items():
                refused.add_metric([dpid, kind], count)
            vips.add_metric([dpid], len(status["vips_refused"]))
        yield refused
        yield vips


def registry(service) -> CollectorRegistry:
    """A registry of kp's metrics alone (not the Python process's default ones)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(KpCollector(service))
    return reg


def text(service, accept: str = "") -> Tuple[bytes, str]:
    """(body, content type) of a scrape, in the format `accept` asks for (Prometheus'
    text format by default, OpenMetrics when asked)."""
    encoder, content_type = exposition.choose_encoder(accept)
    return encoder(registry(service)), content_type
