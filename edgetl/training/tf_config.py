"""The `TF_CONFIG` environment variable of `--distribute multi-worker`, checked in pure Python.

MultiWorkerMirroredStrategy reads it too, but a mistake there surfaces late and as a TensorFlow
traceback; here it is one exit-2 line naming what is wrong, before TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from edgetl.errors import UsageError

TF_CONFIG = "TF_CONFIG"
WORKER_JOBS = ("chief", "worker")  # MultiWorkerMirroredStrategy's task types
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


@dataclasses.dataclass(frozen=True)
class Cluster:
    """What TF_CONFIG says, validated: the worker addresses and this process's task."""

    jobs: dict[str, tuple[str, ...]]
    task_type: str
    task_index: int

    @property
    def workers(self) -> int:
        return sum(len(self.jobs.get(job, ())) for job in WORKER_JOBS)

    @property
    def is_chief(self) -> bool:
        if "chief" in self.jobs:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def address(self) -> str:
        return self.jobs[self.task_type][self.task_index]


def parse_tf_config(text: str | None) -> Cluster:
    """TF_CONFIG's JSON as MultiWorkerMirroredStrategy needs it; UsageError naming what is wrong."""
    where = f"--distribute multi-worker: the {TF_CONFIG} environment variable"
    if text is None or not text.strip():
        raise UsageError(f"{where} is not set; set it on every worker, e.g. {TF_CONFIG}='{TF_CONFIG_EXAMPLE}' "
                         f"(the same cluster everywhere, this worker's task index)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where} is not valid JSON ({exc}); expected e.g. {TF_CONFIG_EXAMPLE}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cluster"), dict) or not isinstance(doc.get("task"), dict):
        raise UsageError(f"{where} needs a 'cluster' object and a 'task' object, e.g. {TF_CONFIG_EXAMPLE}")
    jobs: dict[str, tuple[str, ...]] = {}
    problems = []
    for job, addresses in doc["cluster"].items():
        if job not in WORKER_JOBS:
            problems.append(f"cluster job {job!r} is not used by MultiWorkerMirroredStrategy (only chief and worker; "
                            f"'ps' and 'evaluator' belong to other strategies)")
            continue
        if not isinstance(addresses, list) or not addresses:
            problems.append(f"cluster.{job} must be a non-empty list of 'host:port' strings")
            continue
        for address in addresses:
            if not _valid_address(address):
                problems.append(f"cluster.{job}: {address!r} is not 'host:port' with a port in 1..65535")
        jobs[job] = tuple(str(a) for a in addresses)
    if not jobs and not problems:
        problems.append("cluster has no 'worker' list")
    if len(jobs.get("chief", ())) > 1:
        problems.append("cluster.chief must list exactly one address")
    every = [a for addresses in jobs.values() for a in addresses]
    duplicates = sorted({a for a in every if every.count(a) > 1})
    if duplicates:
        problems.append(f"address(es) listed twice: {', '.join(duplicates)}")
    task = doc["task"]
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in WORKER_JOBS:
        problems.append(f"task.type must be 'worker' or 'chief', got {task_type!r}")
    elif task_type not in jobs:
        problems.append(f"task.type {task_type!r} has no list in cluster")
    elif not isinstance(task_index, int) or isinstance(task_index, bool) or \
            not 0 <= task_index < len(jobs[task_type]):
        problems.append(f"task.index {task_index!r} is not an index into cluster.{task_type} "
                        f"(0..{len(jobs[task_type]) - 1})")
    if problems:
        raise UsageError(f"{where} is invalid: " + "; ".join(problems))
    return Cluster(jobs, task_type, task_index)


def _valid_address(address: Any) -> bool:
    if not isinstance(address, str) or ":" not in address:
        return False
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535
