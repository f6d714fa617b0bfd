"""Applies that outlive their request: `POST /v1/kubernetes/apply?wait=false` answers
202 with a job at once, and `GET /v1/jobs/<id>` follows it to its report (`ku apply -f`
does this, with a progress line), so that a client's timeout never reads as the failure
of work that goes on and succeeds.

A job drives the steps of kp_app.service_apply: their first step (the whole document
read and its plan checked) runs in the request, which gets the error of a bad document
as ever; the rest runs in `spawn`, with `pause` between steps (Ryu's hub: the
controller's loop answers its switches meanwhile). Only the last MAX_JOBS jobs are kept.
"""
import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generator, Optional, Tuple

from kp_app.errors import KpError, NotFound

LOG = logging.getLogger("kp_app.jobs")
MAX_JOBS = 32
RUNNING, DONE, FAILED = "running", "done", "failed"
Progress = Tuple[int, int]          # (changes made, changes in all)
Steps = Generator[Progress, None, dict]     # its value: the apply's report


def run_now(function: Callable, *args) -> None:
    """A `spawn` for a controller with no loop to go back to: the job runs at once."""
    function(*args)


@dataclass
class Job:
    id: int
    state: str
    done: int
    total: int
    started: float
    finished: Optional[float] = None
    result: Optional[dict] = None
    error: Optional[dict] = None

    def to_dict(self) -> dict:
        out = {"job": self.id, "state": self.state, "done": self.done, "total": self.total,
               "started": self.started, "finished": self.finished}
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class ApplyJobs:
    def __init__(self, spawn: Callable, pause: Callable[[], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._spawn, self._pause, self._clock = spawn, pause, clock
        self._jobs: "OrderedDict[int, Job]" = OrderedDict()
        self._ids = itertools.count(1)

    def start(self, steps: Steps, finished: Callable[[Optional[dict]], None]) -> Job:
        """Run `steps` as a job. Its first step runs now and raises what a bad document
        raises (then there is no job). `finished(report or None)` is called once it
        ends, either way (None: it failed)."""
        try:
            done, total = next(steps)
        except BaseException:
            finished(None)
            raise
        job = Job(next(self._ids), RUNNING, done, total, self._clock())
        self._jobs[job.id] = job
        while len(self._jobs) > MAX_JOBS:
            oldest = next(iter(self._jobs))
            if self._jobs[oldest].state == RUNNING:
                break
            del self._jobs[oldest]
        self._spawn(self._run, job, steps, finished)
        return job

    def _run(self, job: Job, steps: Steps, finished: Callable[[Optional[dict]], None]) -> None:
        report = None
        try:
            while True:
                self._pause()
                try:
                    job.done, job.total = next(steps)
                except StopIteration as end:
                    report = job.result = end.value
                    job.done, job.state = job.total, DONE
                    return
        except KpError as e:     # the plan was tried: a change between steps is a bug
            LOG.error("apply job %d failed: %s", job.id, e)
            job.state, job.error = FAILED, {"error": str(e), "field": getattr(e, "field", None)}
        except Exception as e:
            LOG.exception("apply job %d failed", job.id)
            job.state, job.error = FAILED, {"error": f"internal error: {e}", "field": None}
        finally:
            job.finished = self._clock()
            finished(report)

    def get(self, job_id: int) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id} (only the last {MAX_JOBS} are kept)")
        return job
