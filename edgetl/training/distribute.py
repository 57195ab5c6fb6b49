"""Distributed training: `--distribute none | mirrored | multi-worker` (tf.distribute).

- `none` (default): one process, TensorFlow's default device placement (a visible GPU is used).
- `mirrored`: one process, one replica per local GPU (tf.distribute.MirroredStrategy). Without a GPU
  the CPU is split into CPU_REPLICAS logical devices (2): the same code path as several GPUs (batch
  split across replicas, gradients all-reduced), not a speed-up, since the devices share the cores.
  Logical devices can only be made before TensorFlow initializes its devices; a process where that
  already happened (a notebook that ran TensorFlow first) trains on the devices it has, and says so.
- `multi-worker`: one process per machine (MultiWorkerMirroredStrategy), configured by the standard
  `TF_CONFIG` environment variable, checked first (edgetl/training/tf_config.py) for a clear exit-2 message. Every worker runs
  the same command; worker 0 (or the `chief` task) is the chief.

`--batch-size` is the global batch: each step consumes that many images in all, split evenly over the
replicas, so the learning rate is not scaled (the rule applied is "none"). Datasets are sharded with
tf.data's AutoShardPolicy.DATA: every worker reads the same path list in the same seeded order and
keeps its share of each global batch, so the global batches are the ones a single process would see
(the cost: each worker decodes the images that the others keep).

Only the chief writes: its run directory and its epoch checkpoint (edgetl/artifacts/resume.py). The other
workers run the same code, whose reads of the model's variables are collective operations in
TensorFlow, but write into a temporary directory that is deleted at the end (the TensorFlow pattern).
They read the chief's checkpoint, so resuming is symmetric: when a worker dies, the others stop with
an error (TensorFlow cannot let one worker rejoin a running MultiWorkerMirroredStrategy cluster);
re-run the same command on every worker and all of them continue from the chief's last epoch.
That is what tf_keras' BackupAndRestore callback does too (its backup directory must be storage every
worker reads); edgetl keeps its own checkpoint because it also holds the best epoch's weights and the
history, and spans both training phases. So `-o RUN`'s parent must be the same path on every worker,
on a shared file system, for a restart to resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgetl.errors import ResourceError, UsageError
from edgetl.training.tf_config import TF_CONFIG, Cluster, parse_tf_config

STRATEGIES = ("none", "mirrored", "multi-worker")
CPU_REPLICAS = 2  # logical CPU devices for `mirrored` without a GPU
LR_SCALING = "none: --batch-size is the global batch, so the step size per image is unchanged"

class WorkerLostError(ResourceError):
    """A peer of a multi-worker cluster became unreachable (killed, crashed, network down)."""


def problems(strategy: str, environ: Any = None) -> list[str]:
    """For TrainConfig/CompressOptions.problems(): the option, and TF_CONFIG for multi-worker."""
    if strategy not in STRATEGIES:
        return [f"--distribute: must be one of {', '.join(STRATEGIES)}, got {strategy!r}"]
    if strategy == "multi-worker":
        try:
            parse_tf_config((os.environ if environ is None else environ).get(TF_CONFIG))
        except UsageError as exc:
            return [str(exc)]
    return []


def is_chief(strategy: str) -> bool:
    """Whether this process writes (everything but a non-chief multi-worker process); no TensorFlow."""
    return strategy != "multi-worker" or parse_tf_config(os.environ.get(TF_CONFIG)).is_chief


@dataclasses.dataclass
class Distribution:
    """The strategy in use and the facts the manifest records. `strategy` is None for `none`."""

    name: str = "none"
    strategy: Any = None
    replicas: int = 1
    workers: int = 1
    is_chief: bool = True
    cluster: Cluster | None = None
    devices: tuple[str, ...] = ()
    note: str | None = None

    def scope(self) -> Any:
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def check_batch(self, global_batch: int) -> None:
        if global_batch % self.replicas:
            low = global_batch - global_batch % self.replicas or self.replicas
            raise UsageError(f"--batch-size {global_batch} is the global batch; it must divide evenly among the "
                             f"{self.replicas} replicas (e.g. {low} or {low + self.replicas})")

    def shard(self, dataset: Any) -> Any:
        """Set the AutoShardPolicy on a dataset (unchanged without a strategy)."""
        if self.strategy is None:
            return dataset
        from edgetl.tf_env import tf

        t = tf()
        options = t.data.Options()
        options.experimental_distribute.auto_shard_policy = t.data.experimental.AutoShardPolicy.DATA
        return dataset.with_options(options)

    def section(self, global_batch: int) -> dict[str, Any]:
        """The manifest's `distribute` section."""
        doc: dict[str, Any] = {
            "strategy": self.name, "replicas": self.replicas, "workers": self.workers,
            "devices": list(self.devices), "global_batch": global_batch,
            "per_replica_batch": global_batch // self.replicas, "learning_rate_scaling": LR_SCALING,
            "auto_shard_policy": "DATA" if self.strategy is not None else None,
        }
        if self.cluster is not None:
            doc["task"] = {"type": self.cluster.task_type, "index": self.cluster.task_index,
                           "chief": self.is_chief}
        if self.note:
            doc["note"] = self.note
        return doc

    def identity(self, identity: dict[str, Any], train: Any, val: Any) -> dict[str, Any]:
        """A checkpoint identity every worker computes alike from its own copy of the data: where the images
        live (--data, --val-dir) and their modification times differ between machines, so the splits and the
        images' content stand for them (read once per worker, for a multi-worker run only)."""
        if self.cluster is None:
            return identity
        options = {k: v for k, v in identity["options"].items() if k not in ("data", "val_dir")}
        content = hashlib.sha256((train.content_digest() + val.content_digest()).encode()).hexdigest()
        return identity | {"options": options, "data_stamp": "content:" + content}

    def checkpoint_store(self, directory: Path, identity: dict[str, Any]) -> Any:
        from edgetl.artifacts.resume import CheckpointStore

        return CheckpointStore(directory, identity) if self.is_chief else ReadOnlyCheckpointStore(directory, identity)

    def check_agreement(self, identity: dict[str, Any], epoch: int) -> None:
        """Every worker must run the same training from the same checkpoint, or none: each field of the
        identity is compared by a collective all-gather of its digest right after the checkpoint is loaded,
        and the fields that differ are gathered again as text, so the refusal names them with each worker's value."""
        if self.cluster is None or self.workers < 2:
            return
        fields = agreement_fields(identity, epoch)
        names = list(fields)
        digests = self._gather([float(int(hashlib.sha256(v.encode()).hexdigest()[:4], 16)) for v in fields.values()])
        differing = [i for i in range(len(names)) if len({row[i] for row in digests}) > 1]
        if not differing:
            return
        width = 60
        texts = [fields[names[i]].encode()[:width].ljust(width, b"\0") for i in differing]
        gathered = self._gather([float(b) for text in texts for b in text])
        described = []
        for n, i in enumerate(differing):
            values = [bytes(int(b) for b in row[n * width:(n + 1) * width]).rstrip(b"\0").decode(errors="replace")
                      for row in gathered]
            described.append(f"{names[i]} ({'; '.join(f'worker {w}: {v}' for w, v in enumerate(values))})")
        raise UsageError(f"--distribute multi-worker: the workers disagree about {', '.join(described)}. Run the "
                         "same command on every worker (the images may live at another path on each), with -o on "
                         "storage every worker reads")

    def _gather(self, values: list[float]) -> list[list[float]]:
        """Each worker's `values` (exact in float32: integers below 2**24), in worker order."""
        from edgetl.tf_env import tf

        t = tf()
        gathered = self.strategy.gather(self.strategy.run(lambda: t.constant([values], t.float32)), axis=0).numpy()
        per_worker = self.replicas // self.workers
        return [[float(v) for v in gathered[w * per_worker]] for w in range(self.workers)]

    def lost_worker(self, exc: BaseException) -> WorkerLostError | None:
        """The error to raise when TensorFlow reports that a peer is gone, or None for other errors."""
        if self.cluster is None:
            return None
        from edgetl.tf_env import tf

        errors = tf().errors
        if not isinstance(exc, (errors.UnavailableError, errors.DeadlineExceededError, errors.CancelledError,
                                errors.AbortedError, errors.FailedPreconditionError, errors.InternalError)):
            return None
        first = (str(getattr(exc, "message", exc)).strip().splitlines() or [""])[0][:300]
        return WorkerLostError(
            f"--distribute multi-worker: lost contact with another worker ({type(exc).__name__}: {first}). "
            f"The run was not written. Re-run the same command on every worker: training resumes from the chief's "
            f"last completed epoch")


def agreement_fields(identity: dict[str, Any], epoch: int) -> dict[str, str]:
    """What every worker must agree on, by the name a user knows it by, as short text."""
    fields = {("-o" if name == "output" else "--" + name.replace("_", "-")): json.dumps(value, default=str)
              for name, value in sorted(identity["options"].items())}
    fields["the starting weights"] = json.dumps(identity["source"], sort_keys=True, default=str)
    fields["the training split"] = "sha256 " + identity["train_fingerprint"][:12]
    fields["the validation split"] = "sha256 " + identity["val_fingerprint"][:12]
    fields["the images' content"] = identity["data_stamp"][:20]
    fields["the checkpoint to resume from"] = f"epoch {epoch}" if epoch else "none found"
    return fields


SINGLE_PROCESS = Distribution()  # `--distribute none`: no strategy, this process writes


class ReadOnlyCheckpointStore:
    """A non-chief worker's view of the chief's checkpoint: it loads it, never writes or removes it."""

    def __init__(self, directory: Path, identity: dict[str, Any]) -> None:
        from edgetl.artifacts.resume import CheckpointStore

        self._store = CheckpointStore(directory, identity)
        self.directory, self.key = directory, self._store.key

    def load(self) -> Any:
        from edgetl.artifacts.resume import STATE_FILE

        try:
            state = json.loads((self.directory / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if state.get("key") != self.key:
            return None  # the chief decides (and says) that it is stale
        self._store._discard = lambda why: None  # never remove the chief's files
        return self._store.load()

    def save(self, checkpoint: Any) -> None:
        pass

    def clear(self) -> None:
        pass


def setup(strategy: str, global_batch: int | None = None, mixed_precision: bool = False) -> Distribution:
    """Create the strategy. Call it before anything else touches TensorFlow in this process:
    logical CPU devices and the multi-worker collectives must be configured before TF initializes."""
    if strategy not in STRATEGIES:
        raise UsageError(f"--distribute: must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    cluster = parse_tf_config(os.environ.get(TF_CONFIG)) if strategy == "multi-worker" else None
    if mixed_precision:
        _check_gpu_for_mixed_precision()
    if strategy == "none":
        dist = Distribution()
    elif strategy == "mirrored":
        dist = _mirrored()
    else:
        dist = _multi_worker(cluster)
    if global_batch is not None:
        dist.check_batch(global_batch)
    return dist


def _gpus() -> list[Any]:
    from edgetl.tf_env import tf

    return tf().config.list_physical_devices("GPU")


def _mirrored() -> Distribution:
    from edgetl.tf_env import tf

    t = tf()
    gpus = _gpus()
    if gpus:
        strategy = t.distribute.MirroredStrategy()
        note = None
    else:
        cpu = t.config.list_physical_devices("CPU")[0]
        note = None
        try:
            t.config.set_logical_device_configuration(cpu, [t.config.LogicalDeviceConfiguration()] * CPU_REPLICAS)
        except RuntimeError:  # TensorFlow already initialized its devices in this process
            pass
        cpus = [d.name for d in t.config.list_logical_devices("CPU")][:CPU_REPLICAS]
        if len(cpus) < CPU_REPLICAS:
            note = (f"no GPU, and TensorFlow was initialized before edgetl could split the CPU into "
                    f"{CPU_REPLICAS} logical devices: {len(cpus)} replica")
            from edgetl.progress import say

            say(f"warning: --distribute mirrored: {note}")
        strategy = t.distribute.MirroredStrategy(devices=cpus)
    return Distribution("mirrored", strategy, int(strategy.num_replicas_in_sync), 1, True, None,
                        tuple(strategy.extended.worker_devices), note)


def _multi_worker(cluster: Cluster) -> Distribution:
    from edgetl.tf_env import tf

    t = tf()
    options = t.distribute.experimental.CommunicationOptions(
        implementation=t.distribute.experimental.CommunicationImplementation.AUTO)
    try:
        strategy = t.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as exc:  # "Collective ops must be configured at program startup"
        raise UsageError(f"--distribute multi-worker: TensorFlow was already initialized in this process "
                         f"({exc}); start a fresh process for each worker") from None
    return Distribution("multi-worker", strategy, int(strategy.num_replicas_in_sync), cluster.workers,
                        cluster.is_chief, cluster, tuple(strategy.extended.worker_devices))


def _check_gpu_for_mixed_precision() -> None:
    if not _gpus():
        raise UsageError("--mixed-precision: TensorFlow sees no GPU; float16 compute is for GPUs (on a CPU it "
                         "is slower than float32); train without it")


@contextlib.contextmanager
def worker_output(output: Path, dist: Distribution) -> Iterator[Path]:
    """Where this process writes: `output` for the chief, else a temporary directory deleted afterwards."""
    if dist.is_chief:
        yield output
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"edgetl-worker{dist.cluster.task_index}-"))
    try:
        yield scratch / output.name
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def worker_run(run: Path, dist: Distribution) -> Iterator[Path]:
    """The run `edgetl compress` works on: `run` for the chief, else a temporary copy (all of it, artifacts
    included, so every worker reuses and rebuilds the same candidates) deleted afterwards."""
    if dist.is_chief:
        yield run
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"edgetl-worker{dist.cluster.task_index}-"))
    try:
        copy = scratch / run.name
        shutil.copytree(run, copy, symlinks=True, ignore=shutil.ignore_patterns(".*"))
        yield copy
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def mixed_precision_policy(enabled: bool) -> Iterator[None]:
    """The global Keras policy mixed_float16 inside the block (float32 weights, float16 compute)."""
    if not enabled:
        yield
        return
    from edgetl.tf_env import keras

    mp = keras().mixed_precision
    previous = mp.global_policy()
    mp.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        mp.set_global_policy(previous)


def float32_copy(model: Any) -> Any:
    """A copy of a mixed-precision model computing in float32 (what export and runtimes expect), same weights."""
    from edgetl.tf_env import keras

    k = keras()

    def retype(node: Any) -> Any:
        if isinstance(node, dict):
            out = {key: retype(value) for key, value in node.items()}
            if isinstance(out.get("dtype"), dict) and out["dtype"].get("class_name") in ("Policy", "DTypePolicy"):
                out["dtype"] = "float32"
            return out
        if isinstance(node, list):
            return [retype(v) for v in node]
        return node

    import edgetl.backbones.layers  # noqa: F401  (registers edgetl's layers for deserialization)

    config = retype(model.get_config())
    previous = k.mixed_precision.global_policy()
    k.mixed_precision.set_global_policy("float32")
    try:
        copy = model.__class__.from_config(config)
    finally:
        k.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy
