"""Kubernetes Services applied to the controller (KubeProxy's part that `ku apply`, the
REST API and the cluster watch use), in steps.

A whole document is checked first, on a scratch model (kp_app.service_sync.plan): a bad
one raises and changes nothing. The changes it needs are then made a bounded number at a
time (APPLY_STEP): `apply_services_steps` is a generator that yields its progress after
each step, so that an apply of 10,000 Services lets the controller's loop answer its
switches (OpenFlow echo, packet-ins) between steps instead of holding it for seconds
(kp_app.ryu_shim runs it as a job: kp_app.apply_jobs). Whoever drives it keeps other
changes out until it is done (the shim's change lock): a step never meets a model the
plan was not tried on. `apply_kubernetes` and `apply_services` run it to its end.
"""
from typing import Dict, List, Optional, Sequence, Tuple

from kp_app import frames, kubernetes, pipeline, service_sync
from kp_app.apply_jobs import Steps
from kp_app.errors import InvalidInput, KpError, NotFound
from kp_app.sync_record import synced

APPLY_STEP = 250        # VIP changes made between two yields of an apply


def run_steps(steps: Steps) -> dict:
    """Drive an apply's steps to the end; its report."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def service_summary(before: set, desired: Dict[str, list], pruned: Sequence[str],
                    changes: List[service_sync.VipChange]) -> Dict[str, int]:
    """How many Services the apply created, changed, left unchanged and pruned (a
    Service is changed when any of its VIPs is made, replaced, updated or deleted)."""
    touched = {c.service for c in changes if c.action != "unchanged"}
    summary = {"created": 0, "changed": 0, "unchanged": 0, "pruned": len(pruned)}
    gone = set(pruned)
    for name in desired:
        if name in gone:
            continue
        if name not in before:
            summary["created"] += 1
        elif name in touched:
            summary["changed"] += 1
        else:
            summary["unchanged"] += 1
    return summary


class KubernetesServices:
    """KubeProxy's Kubernetes Services (mixed into kp_app.kubeproxy.KubeProxy, whose
    model, nodes and VIP/pod programming it uses)."""

    def apply_kubernetes(self, document, prune: bool = False) -> dict:
        """Services with their Endpoints or EndpointSlices (objects as the Kubernetes API
        gives them) -> each Service's VIPs made, replaced, or given their new pods.
        `prune`: the document is every Service there is (a whole `kubectl get` of the
        cluster): the applied Services it does not have go, with their VIPs. The big
        tables it needs may be built ahead (`kubernetes_tables`, the model's store)."""
        return run_steps(self.apply_kubernetes_steps(document, prune))

    def apply_kubernetes_steps(self, document, prune: bool = False) -> Steps:
        """apply_kubernetes in steps (see the module's doc): the document is read and its
        plan checked at the first next(), which raises if it is bad."""
        outer = self.syncs.in_sync()
        try:
            with self.syncs.step():
                if not isinstance(prune, bool):
                    raise InvalidInput(f"{prune!r} is not true or false", "prune")
                objs = kubernetes.objects(document)
                desired = kubernetes.desired_services(objs)
                health_ports = kubernetes.health_check_ports(objs)
                triggers = kubernetes.change_trigger_times(objs)
                pruned = sorted(self.model.services - set(desired)) if prune else []
        except KpError:
            if not outer:
                self.syncs.steps_refused()
            raise
        return (yield from self.apply_services_steps(desired, pruned, health_ports,
                                                     triggers))

    def apply_kubernetes_job(self, document, prune: bool = False) -> dict:
        """apply_kubernetes as a job (kp_app.apply_jobs, `self.jobs`): with no loop to
        go back to it runs to its end at once (kp_app.ryu_shim's runs between the
        controller's other work)."""
        return self.jobs.start(self.apply_kubernetes_steps(document, prune),
                               lambda report: None).to_dict()

    def job(self, job_id: int) -> dict:
        """An apply job's progress, and its report once it is done."""
        return self.jobs.get(job_id).to_dict()

    def apply_services(self, desired: Dict[str, list], pruned: Sequence[str] = ()) -> dict:
        """Each Service of `desired` ('namespace/name' -> its kubernetes.ServiceVips; []
        to have none) brought to those VIPs through the checked plan, and the `pruned`
        Services forgotten with their VIPs: all of it, or (InvalidInput, Conflict)
        nothing. apply_kubernetes and the cluster watch (kp_app.cluster_sync) end here."""
        return run_steps(self.apply_services_steps(desired, pruned))

    def apply_services_steps(self, desired: Dict[str, list],
                             pruned: Sequence[str] = (),
                             health_ports: Optional[Dict[str, int]] = None,
                             triggers: Optional[Dict[str, float]] = None) -> Steps:
        """apply_services in steps. `health_ports`: the Services' healthCheckNodePorts
        (None: as they are); `triggers`: when their endpoints changed in the cluster
        (kp_app.kubernetes.change_trigger_times). It is one sync (kp_app.sync_record) of
        its own, unless it runs inside one."""
        outer = self.syncs.in_sync()
        began = self.syncs.steps_begin()
        try:
            with self.syncs.step():
                desired = dict(desired)
                pruned = sorted(pruned)
                desired.update({name: [] for name in pruned})     # keep no VIP of theirs
                plan = service_sync.plan(self.model, desired)
                ports = dict(self.model.health_check_ports) if health_ports is None \
                    else health_ports
                # (what changes is read off the model as it is, counted once it is made)
                services, endpoints = service_sync.changed_services(self.model, plan,
                                                                    desired, ports)
        except KpError:
            if not outer:
                self.syncs.steps_refused()
            raise
        before = set(self.model.services)
        work = ([(self._apply_delete, c) for c in plan.deletes]
                + [(self._apply_make, c) for c in plan.makes]
                + [(self._apply_update, c) for c in plan.updates if c.action != "unchanged"])
        yield (0, len(work))
        for first in range(0, len(work), APPLY_STEP):
            with self.syncs.step():
                for make_change, change in work[first:first + APPLY_STEP]:
                    make_change(change)
            if first + APPLY_STEP < len(work):
                yield (first + APPLY_STEP, len(work))
        self.model.services.update(desired)
        self.model.services.difference_update(pruned)
        if health_ports is not None:
            for name in desired:
                self.model.health_check_ports.pop(name, None)
            self.model.health_check_ports.update(health_ports)
        times = [(triggers or {})[name] for name in sorted(endpoints)
                 if name in (triggers or {})]
        self.syncs.changes(len(services), len(endpoints), times)
        if not outer:
            self.syncs.steps_end(began, times)
        changes = plan.changes()
        return {"services": sorted(set(desired) - set(pruned)), "pruned": pruned,
                "summary": service_summary(before, desired, pruned, changes),
                "vips": [{"service": c.service, "vip": c.label, "action": c.action,
                          "pods_added": list(c.add), "pods_removed": list(c.remove)}
                         for c in changes]}

    def _apply_delete(self, change: service_sync.VipChange) -> None:
        self.del_vip(change.prefix, change.port)

    def _apply_update(self, change: service_sync.VipChange) -> None:
        vip = self.model.find_vip(change.prefix, change.port)
        self.model.set_policies(vip, **change.spec.policies())
        self._sync_compiled(vip)
        if change.add or change.remove:
            self._change_pods(vip, change.add, change.remove, end_udp=True)

    def _apply_make(self, change: service_sync.VipChange) -> None:
        """A planned VIP made whole, with its pods (its table the one the plan built,
        found in the model's store), and programmed in one go (as add_vip then add_pods
        would, without programming the VIP pod-less first)."""
        spec = change.spec
        vip = self.model.add_vip(spec.prefix, spec.port, spec.target_port, spec.node_port,
                                 spec.protocol, None, service_sync.new_len_for(len(spec.pods)),
                                 list(spec.external_ips), change.service, **spec.policies())
        added = []
        if spec.pods:
            added = self.model.add_pods(vip, list(spec.pods))
        self._broadcast(lambda n: n.vip_programming(vip) + n.pod_programming(
            vip, added, probe=False))

    def kubernetes_tables(self, document) -> List[Tuple[list, int]]:
        """(pods, new_len) of the tables applying `document` would build ([] if it would
        fail: apply_kubernetes says why)."""
        try:
            desired = kubernetes.desired_services(kubernetes.objects(document))
            return service_sync.tables_to_build(self.model,
                                                service_sync.changes(self.model, desired))
        except KpError:
            return []

    def _change_pods(self, vip, add, remove, end_udp: bool = False) -> None:
        """Pods in and out of a VIP in one change (one new table); the removed drain.
        `end_udp`: the removed pods' UDP sessions end now, as kube-proxy clears their
        conntrack entries when an endpoint goes: UDP has no end of its own, and its
        clients would go on sending to a pod that may be gone until they were idle."""
        added, removed = self.model.change_pods(vip, list(add), list(remove))
        if added:
            self._broadcast(lambda n: n.pod_programming(vip, added))
        self._sync_compiled(vip)
        if end_udp and removed and frames.UDP in vip.ip_protos:
            self._broadcast(lambda n: n.conntrack_flushes(vip, removed, (frames.UDP,)))
        if end_udp and removed:
            gone = set(removed)
            for node in self.nodes.values():
                msgs = []
                for session in node.sessions_of(vip.id):
                    if session.pod in gone and session.forward.proto == frames.UDP:
                        msgs += pipeline.session_deletes(session)
                        node.end_session(session)
                if msgs:
                    self._send(node.dpid, msgs)
        if removed:
            self._forget_drained_pods()

    @synced
    def delete_kubernetes(self, document) -> dict:
        """The Services named in `document` (other kinds are ignored) and their VIPs."""
        names = kubernetes.service_names(kubernetes.objects(document))
        unknown = [n for n in names if n not in self.model.services]
        if unknown:
            raise NotFound(f"no Service {', '.join(unknown)} was applied")
        deleted = []
        for vip in [v for v in self.model.vips.values() if v.service in names]:
            self.del_vip(str(vip.prefix), vip.port)
            deleted.append({"service": vip.service, "vip": vip.label(), "action": "deleted"})
        self.model.services.difference_update(names)
        for name in names:
            self.model.health_check_ports.pop(name, None)
        self.syncs.changes(services=len(names))
        return {"services": names, "vips": deleted}

    def kubernetes_services(self) -> List[dict]:
        owned: Dict[str, List[str]] = {name: [] for name in sorted(self.model.services)}
        for vip in self.model.vips.values():
            if vip.service in owned:
                owned[vip.service].append(vip.label())
        return [{"service": name, "vips": vips} for name, vips in owned.items()]
