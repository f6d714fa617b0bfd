"""The Ryu application: a thin shim between Ryu's events and KubeProxy.

Each handler hands the event to KubeProxy (which reads the clock it was given), and
KubeProxy's messages go out encoded by ofmsg, one buffer per batch.
REST reads that show counters first refresh them from the switches (a flow-stats and
cache-stats round trip, and kp-switch's session counters in lb mode, bounded in time); a
pod change whose new-connection table is big
has it built in a thread first, so that the controller goes on meanwhile.

(Over 500 lines: every Ryu event kp_app handles, each a few lines into KubeProxy, and
the locks REST takes around them; connections by datapath id are in ryu_connections.)
"""
import logging
import os
import time
from typing import Optional

from eventlet import tpool

from ryu import cfg
from ryu.app.wsgi import WSGIApplication
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER
from ryu.controller.handler import set_ev_cls
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3

from kp_app import (config_file, links, ofmsg, operate_http, pipeline, refusals, ryu_config,
                    state_file)
from kp_app.apply_jobs import ApplyJobs
from kp_app.ryu_connections import SwitchConnections
from kp_app.errors import KpError
from kp_app.kubeproxy import KubeProxy
from kp_app.maglev import build_tables
from kp_app.node import MODE_CT, MODE_LB, MODE_PACKET_IN
from kp_proto import lb as kplb

LOG = logging.getLogger("kp_app")
STATS_WAIT_SECONDS = 1.0
RETRY_TICK = 0.5              # seconds between looks for refused programming to retry


class LiveService:
    """The service interface the REST API gets: KubeProxy, with the read methods that
    show counters refreshed from the switches first, and the pod changes that need a big
    new-connection table built off the event loop."""

    # What changes the configuration: one at a time (an apply job holds the lock through
    # all of its steps, so that nothing changes the model under the plan it tried).
    LOCKED = frozenset(state_file.CHANGES) | {"apply_services", "cluster_node"}

    def __init__(self, kubeproxy: KubeProxy, refresh, state_path: Optional[str] = None) -> None:
        self._kp = kubeproxy
        self._refresh = refresh
        self._state_path = state_path
        self._changing = hub.BoundedSemaphore(1)
        self.jobs = ApplyJobs(hub.spawn, lambda: hub.sleep(0))

    def __getattr__(self, name):
        attribute = getattr(self._kp, name)
        if name in self.LOCKED:
            return self._locked(attribute, save=name in state_file.CHANGES)
        return attribute

    def _locked(self, change, save: bool):
        def changed(*args, **kwargs):
            with self._changing, self._kp.syncs.syncing():   # (the save is part of it)
                answer = change(*args, **kwargs)
                if save:
                    self.save_state()
            return answer
        return changed

    def save_state(self) -> None:
        if self._state_path:
            state_file.save(self._state_path, state_file.dump(self._kp))

    def add_pods(self, prefix, port, addresses) -> dict:
        with self._changing, self._kp.syncs.syncing():  # (the build is part of it)
            self._build_table_aside(prefix, port, addresses, remove=False)
            answer = self._kp.add_pods(prefix, port, addresses)
            self.save_state()
        return answer

    def del_pods(self, prefix, port, addresses, flush=False) -> dict:
        with self._changing, self._kp.syncs.syncing():  # (the build is part of it)
            self._build_table_aside(prefix, port, addresses, remove=True)
            answer = self._kp.del_pods(prefix, port, addresses, flush)
            self.save_state()
        return answer

    def _build_table_aside(self, prefix, port, addresses, remove: bool) -> None:
        """Build the change's table in a thread of its own while the controller goes on
        (a 2**20 table takes seconds of Python); the change then finds it in the store."""
        plan = self._kp.table_plan(prefix, port, addresses, remove)
        if plan is not None:
            self._kp.model.tables.build_ahead([plan], _build_in_thread)

    def apply_kubernetes(self, document, prune=False) -> dict:
        """As add_pods: the big tables the apply will need are built in a thread first;
        then its steps, with the controller's loop let in between."""
        steps = self._apply_steps(document, prune)
        try:
            while True:
                try:
                    next(steps)
                except StopIteration as end:
                    self.save_state()
                    return end.value
                hub.sleep(0)
        finally:
            self._changing.release()

    def apply_kubernetes_job(self, document, prune=False) -> dict:
        """apply_kubernetes as a job (kp_app.apply_jobs): its first answer is its
        progress; it holds the change lock until it ends."""
        return self.jobs.start(self._apply_steps(document, prune), self._applied).to_dict()

    def _apply_steps(self, document, prune):
        """The apply's steps, with the change lock taken (the caller releases it)."""
        self._changing.acquire()
        try:
            self._kp.model.tables.build_ahead(self._kp.kubernetes_tables(document),
                                              _build_in_thread)
            return self._kp.apply_kubernetes_steps(document, prune)
        except BaseException:
            self._changing.release()
            raise

    def _applied(self, report) -> None:
        """An apply job ended (report None: it failed, nothing to save)."""
        try:
            if report is not None:
                self.save_state()
        finally:
            self._changing.release()

    def job(self, job_id: int) -> dict:
        return self.jobs.get(job_id).to_dict()

    def counters(self) -> dict:
        self._refresh()
        return self._kp.counters()

    def vips(self) -> list:
        self._refresh()
        return self._kp.vips()

    def vip(self, prefix, port=None) -> dict:
        self._refresh()
        return self._kp.vip(prefix, port)

    def sessions(self, limit=100, prefix=None, port=None) -> dict:
        self._refresh()
        return self._kp.sessions(limit, prefix, port)


def _restore(kubeproxy: KubeProxy, path: str) -> None:
    """The configuration of the state file, tried on a scratch controller first: a file
    that does not check out stops the start, with the field and the reason."""
    try:
        data = state_file.load(path)
        state_file.restore(KubeProxy(lambda dpid, msgs: None), data)
    except (OSError, ValueError, KpError) as e:
        field = getattr(e, "field", None)
        raise SystemExit(f"kp_app: state file {path}: " + (f"{field}: " if field else "")
                         + str(e)) from None
    state_file.restore(kubeproxy, data)
    LOG.info("configuration restored from %s: %d VIPs", path, len(kubeproxy.model.vips))


def _build_in_thread(wanted) -> list:
    """Tables built in a thread while the controller's loop goes on (TableStore's build)."""
    return tpool.execute(build_tables, wanted)


def _next_xid(datapath) -> int:
    """The next transaction id, from the counter Ryu's own send_msg uses."""
    datapath.xid = (datapath.xid + 1) & datapath.ofproto.MAX_XID
    return datapath.xid


def _name(port) -> str:
    return port.name.decode() if isinstance(port.name, bytes) else port.name


def _text(value) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip("\0 ")


def session_mode(option: str, manufacturer: str, kp_switch: bool = False) -> str:
    """--kp-mode, or for "auto" what the switch can do: kp-switch makes sessions in its
    own data path, Open vSwitch (manufacturer "Nicira, Inc.") with its conntrack, others
    send packet-ins."""
    if option != "auto":
        return option
    if kp_switch:
        return MODE_LB
    return MODE_CT if manufacturer.startswith("Nicira") else MODE_PACKET_IN


def _live(ofp, port) -> bool:
    return not (port.state & ofp.OFPPS_LINK_DOWN or port.config & ofp.OFPPC_PORT_DOWN)


class KpRyuApp(SwitchConnections, app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.datapaths = {}
        self.kp_switches = set()
        self.kubeproxy = KubeProxy(self._send)
        # (the option exists when kp_ryu_compat registered it: always under ryu-manager)
        self.kubeproxy.claims.takeover = bool(getattr(cfg.CONF, "kp_dpid_takeover", False))
        self.kubeproxy.probes = links.LinkProbes(
            interval=getattr(cfg.CONF, "kp_probe_interval", links.PROBE_INTERVAL))
        self._probes = {}       # dpid -> xid of the echo that asks its owner if it lives
        # The configuration file first: it may name the state file and the addresses.
        self.config = ryu_config.load(cfg.CONF)
        state_path = getattr(cfg.CONF, "kp_state_file", None)
        if state_path and os.path.exists(state_path):
            _restore(self.kubeproxy, state_path)
        self.service = LiveService(self.kubeproxy, self.refresh_stats, state_path)
        if self.config is not None:
            self._apply_config(self.config)
        self.operate = self._operate_listeners()
        # dpid -> (event, the replies still awaited: "flows", "cache", "lb")
        self._stats_pending = {}
        self._flow_stats_parts = {}
        # dpid -> (totals, VIP records) of a KP_LB_STATS_REPLY being paged through
        self._lb_stats_parts = {}
        # (dpid, xid of its flow-stats request) -> (mode, the kp flows it holds): a switch
        # between its description and its programming
        self._connecting = {}
        self._early_port_names = {}
        from kp_app import rest
        rest.register(kwargs["wsgi"], self.service)
        self.cluster = self._cluster_watch()    # None without a cluster
        self.threads.append(hub.spawn(self._retry_loop))
        self.threads.append(hub.spawn(self._probe_periodically))

    def _probe_periodically(self) -> None:
        """Every probe interval (--kp-probe-interval): link probes again, links and host bindings
        aged (KubeProxy.periodic). A failure is logged and the next round still comes."""
        while True:
            hub.sleep(self.kubeproxy.probes.interval)
            try:
                self.kubeproxy.periodic()
            except Exception:   # (the hub would end this thread silently)
                LOG.exception("kp_app: the periodic link probe failed")

    def _cluster_watch(self):
        """The watch of the cluster (kp_app.kube_watch) when there is one: green threads
        of Ryu's hub; its `status` (kp_app.cluster_sync.SyncStatus) is for metrics."""
        from kp_app.cluster_sync import ClusterSync, in_cluster
        kubeconfig = getattr(cfg.CONF, "kubeconfig", None)
        if not kubeconfig and not in_cluster():
            return None         # (and the client is not even imported)
        from kp_app import kube_watch
        try:
            api = kube_watch.api_client(kubeconfig)
        except Exception as error:      # the client's own errors: a bad file, no context
            raise SystemExit(f"kp_app: --kubeconfig: {error}") from None
        if api is None:
            return None
        # (through the service: its changes take the change lock, as REST's do)
        sync = ClusterSync(self.service, getattr(cfg.CONF, "kp_node_name", None),
                           build=_build_in_thread)
        watch = kube_watch.ClusterWatch(
            api, sync, spawn=hub.spawn, sleep=hub.sleep,
            sync_period=getattr(cfg.CONF, "kp_sync_period", 30.0),
            on_synced=lambda result: self.service.save_state())
        watch.start()
        LOG.info("kp_app: watching the cluster's Services, EndpointSlices and Nodes")
        return watch

    def _apply_config(self, config) -> None:
        """What the file sets in the model (after the state file: the file is what the
        operator set for this start), and the health timeout (kube-proxy's: 2 x
        syncPeriod)."""
        if config.conf:
            try:
                self.service.set_conf(**config.conf)
            except KpError as error:
                raise SystemExit(f"kp_app: configuration file: {error}") from None
        if config.sync_period is not None:
            self.kubeproxy.syncs.health_timeout = 2 * config.sync_period

    def _operate_listeners(self) -> operate_http.OperateListeners:
        healthz = ryu_config.bind_address(cfg.CONF, "healthz_bind_address",
                                          config_file.DEFAULT_HEALTHZ_PORT)
        metrics_address = ryu_config.bind_address(cfg.CONF, "metrics_bind_address",
                                                  config_file.DEFAULT_METRICS_PORT)
        hosts = (self.config.health_check_hosts if self.config else ()) or \
            (healthz[0] if healthz else "127.0.0.1",)
        return operate_http.OperateListeners(self.kubeproxy, self.service, healthz,
                                             metrics_address, hosts)

    # -- sending ---------------------------------------------------------------------

    def _send(self, dpid: int, messages: list) -> None:
        datapath = self.datapaths.get(dpid)
        if datapath is None:
            return
        sent = []
        data = ofmsg.encode_batch(messages, lambda: _next_xid(datapath),
                                  dpid in self.kp_switches, sent, refusals.wants_barrier(messages))
        if data:
            self.kubeproxy.channel(dpid).sent(sent)
            datapath.send(data)

    def _retry_loop(self) -> None:
        """What the switches refused, sent again when its retry is due (kp_app.refusals);
        and the probes of datapath ids claimed twice that went unanswered."""
        while True:
            hub.sleep(RETRY_TICK)
            try:
                self.kubeproxy.retry_refused()
                self._probes_expired()
            except Exception:       # (the loop must go on: log it, never die silently)
                LOG.exception("retrying refused programming failed")

    def refresh_stats(self) -> None:
        """Ask every switch for kp's flow stats (and kp-switch for its cache's, and in lb
        mode its sessions'); wait a bounded time."""
        events = []
        for dpid, datapath in list(self.datapaths.items()):
            event = hub.Event()
            awaited = {"flows"}
            msgs = [pipeline.FlowStatsRequest(), pipeline.CacheStatsRequest()]
            if dpid in self.kp_switches:
                awaited.add("cache")
                node = self.kubeproxy.nodes.get(dpid)
                if node is not None and node.mode == MODE_LB:
                    awaited |= {"lb", "lb_sessions"}
                    self._lb_stats_parts[dpid] = None
                    msgs += [pipeline.LbStatsRequest(),
                             pipeline.LbSessionsRequest(kplb.MAX_SESSIONS_LISTED)]
            self._stats_pending[dpid] = (event, awaited)
            self._flow_stats_parts[dpid] = []
            events.append(event)
            self._send(dpid, msgs)
        deadline = time.monotonic() + STATS_WAIT_SECONDS
        for event in events:
            event.wait(timeout=max(0.0, deadline - time.monotonic()))

    # -- switch life (connections by datapath id: kp_app.ryu_connections) ----------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _features(self, ev) -> None:
        datapath = ev.msg.datapath
        parser = datapath.ofproto_parser
        datapath.send_msg(parser.OFPSetConfig(datapath, 0, datapath.ofproto.OFPCML_NO_BUFFER))

    @set_ev_cls(ofp_event.EventOFPDescStatsReply, MAIN_DISPATCHER)
    def _desc(self, ev) -> None:
        if not self._current(ev.msg.datapath):
            return
        body = ev.msg.body
        fields = [x if isinstance(x, bytes) else str(x).encode() for x in (
            body.mfr_desc, body.hw_desc, body.sw_desc, body.dp_desc)]
        dpid = ev.msg.datapath.id
        if b"kp-switch" in b" ".join(fields).lower():
            self.kp_switches.add(dpid)
        self.kubeproxy.switch_described(dpid, fields[3])     # its node addresses
        # (the option exists when kp_ryu_compat registered it: always under ryu-manager)
        mode = session_mode(getattr(cfg.CONF, "kp_mode", "auto"), _text(body.mfr_desc),
                            dpid in self.kp_switches)
        LOG.info("switch %016x: %s, new sessions made in %s mode", dpid,
                 _text(body.sw_desc) or "no description", mode)
        if mode == MODE_LB and dpid not in self.kp_switches:
            LOG.warning("switch %016x is not kp-switch: it is sent no VIP table, and "
                        "drops or refuses what its flows give kp_lb", dpid)
        # What the switch holds already (it may have kept kp's flows through a controller
        # restart): programmed once that is known, see Node.full_programming.
        datapath = ev.msg.datapath
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        request = parser.OFPFlowStatsRequest(
            datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
            pipeline.COOKIE_TAG << 56, pipeline.MASK_TAG, parser.OFPMatch())
        datapath.set_xid(request)
        self._connecting[(dpid, request.xid)] = (mode, [])
        datapath.send_msg(request)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def _port_desc(self, ev) -> None:
        if not self._current(ev.msg.datapath):
            return
        ofp = ev.msg.datapath.ofproto
        dpid = ev.msg.datapath.id
        names = {p.port_no: _name(p) for p in ev.msg.body if _live(ofp, p)}
        if any(d == dpid for d, _ in self._connecting):
            self._early_port_names[dpid] = names     # for when it is programmed
        else:
            self.kubeproxy.port_names(dpid, names)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev) -> None:
        msg = ev.msg
        if not self._current(msg.datapath):
            return
        ofp, desc = msg.datapath.ofproto, msg.desc
        self.kubeproxy.port_status(msg.datapath.id, desc.port_no, _name(desc),
                                   _live(ofp, desc), deleted=msg.reason == ofp.OFPPR_DELETE)

    # -- packets and flows ---------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev) -> None:
        msg = ev.msg
        if not self._current(msg.datapath):
            return
        self.kubeproxy.packet_in(msg.datapath.id, msg.match["in_port"], bytes(msg.data))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _flow_removed(self, ev) -> None:
        msg = ev.msg
        if not self._current(msg.datapath):
            return
        self.kubeproxy.flow_removed(msg.datapath.id, msg.cookie, ofmsg.match_dict(msg.match),
                                    msg.packet_count, msg.byte_count)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats_reply(self, ev) -> None:
        if not self._current(ev.msg.datapath):
            return
        dpid = ev.msg.datapath.id
        connecting = self._connecting.get((dpid, ev.msg.xid))
        if connecting is not None:
            connecting[1].extend(ofmsg.flow_from_stats(s) for s in ev.msg.body)
            if not ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
                mode, held = self._connecting.pop((dpid, ev.msg.xid))
                self.kubeproxy.switch_connected(dpid, mode=mode, held=held)
                names = self._early_port_names.pop(dpid, None)
                if names is not None:
                    self.kubeproxy.port_names(dpid, names)
            return
        collected = self._flow_stats_parts.setdefault(dpid, [])
        collected += [(s.cookie, ofmsg.match_dict(s.match), s.packet_count, s.byte_count)
                      for s in ev.msg.body]
        if not ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            self.kubeproxy.flow_stats(dpid, self._flow_stats_parts.pop(dpid, []))
            self._stats_done(dpid, "flows")

    @set_ev_cls(ofp_event.EventOFPExperimenter, MAIN_DISPATCHER)
    def _experimenter(self, ev) -> None:
        msg = ev.msg
        if msg.experimenter != ofmsg.KP_EXPERIMENTER or not self._current(msg.datapath):
            return
        if msg.exp_type == ofmsg.KP_CACHE_STATS_REPLY:
            self.kubeproxy.cache_stats(msg.datapath.id, ofmsg.decode_cache_stats(msg.data))
            self._stats_done(msg.datapath.id, "cache")
        elif msg.exp_type == kplb.KP_LB_STATS_REPLY:
            self._lb_stats_reply(msg.datapath.id, bytes(msg.data))
        elif msg.exp_type == kplb.KP_LB_SESSIONS_REPLY:
            try:
                sessions = kplb.decode_sessions_reply(bytes(msg.data))
            except ValueError as e:
                LOG.warning("switch %016x: %s", msg.datapath.id, e)
                sessions = []
            self.kubeproxy.lb_sessions(msg.datapath.id, sessions)
            self._stats_done(msg.datapath.id, "lb_sessions")

    def _lb_stats_reply(self, dpid: int, data: bytes) -> None:
        """One page of kp-switch's session counters: ask for the next, or hand them all
        to the node once the switch says there are no more."""
        if dpid not in self._lb_stats_parts:
            return      # not asked for (or the switch went away meanwhile)
        page = ofmsg.decode_lb_stats(data)
        if page is None:
            LOG.warning("switch %016x: a KP_LB_STATS_REPLY that does not decode", dpid)
            del self._lb_stats_parts[dpid]
            self._stats_done(dpid, "lb")
            return
        totals, page_records, next_vip_id = page
        before = self._lb_stats_parts[dpid]
        records = (before[1] if before else []) + page_records
        if next_vip_id and page_records:    # (a page of none would be asked for again)
            self._lb_stats_parts[dpid] = (totals, records)
            self._send(dpid, [pipeline.LbStatsRequest(next_vip_id)])
            return
        del self._lb_stats_parts[dpid]
        self.kubeproxy.lb_stats(dpid, totals, records)
        self._stats_done(dpid, "lb")

    def _stats_done(self, dpid: int, what: str) -> None:
        pending = self._stats_pending.get(dpid)
        if pending is None:
            return
        event, awaited = pending
        awaited.discard(what)
        if not awaited:
            del self._stats_pending[dpid]
            event.set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev) -> None:
        msg = ev.msg
        dpid = msg.datapath.id
        if dpid is None or self.datapaths.get(dpid) is not msg.datapath:
            LOG.warning("switch %s error type=%d code=%d", dpid, msg.type, msg.code)
            return
        self.kubeproxy.switch_refused(dpid, msg.xid, error_text(msg.type, msg.code))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev) -> None:
        if self._current(ev.msg.datapath):
            self.kubeproxy.barrier_reply(ev.msg.datapath.id, ev.msg.xid)


def error_text(type_: int, code: int) -> str:
    """An OFPT_ERROR's type and code by their names in the spec ("FLOW_MOD_FAILED
    TABLE_FULL"), numbers for those Ryu does not know."""
    def name(text: str, number: int, prefix: str) -> str:
        text = text.split("(")[0]
        return text.split("_", 1)[1] if text.startswith(prefix) else str(number)
    try:
        kind = name(ofproto_v1_3.ofp_error_type_to_str(type_), type_, "OFPET_")
        what = name(ofproto_v1_3.ofp_error_code_to_str(type_, code), code, "OFP")
    except (KeyError, ValueError, AttributeError):
        return f"type {type_} code {code}"
    return f"{kind} {what}"
