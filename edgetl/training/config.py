"""TrainConfig: every option of `edgetl train`, validated once, at the boundary."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgetl.errors import UsageError

ON_BAD_IMAGE = ("skip", "fail")
CLASS_WEIGHTS = ("none", "balanced")
FEATURE_CACHE = ("auto", "on", "off")
DEFAULT_BACKBONE = "efficientnet_lite0"  # ImageNet weights installed with edgetl: transfer works offline
INHERITED = ("backbone", "alpha", "image_size")  # what --weights RUN passes on unless given
# The head alone on a frozen pretrained backbone (Adam, on the images as they are, usually cached features,
# with the probe's L2: constraints.add_probe_penalty): at 1e-2 it needed about 2,000 steps to match
# scikit-learn's LogisticRegression on the same features (digits, 30 images per class, EfficientNet-Lite0:
# 0.84 after 500 steps, 0.86 after 2,000, the probe 0.87); 1e-3 needed far more. Steps on cached
# features cost about a millisecond.
HEAD_LEARNING_RATE = 1e-2
OTHER_HEAD_LEARNING_RATE = 1e-3  # mlp, attention, prototype: the rate they were built and tested at
HEAD_STEPS = 2000  # default --epochs with pretrained weights: enough epochs for this many optimizer steps ...
SCRATCH_STEPS = 500  # ... from scratch (every step trains the whole network on images) ...
MIN_EPOCHS = 5  # ... and at least this many
# From scratch the whole network trains: 1e-3 reached 0.73 and 3e-3 0.91 validation accuracy on the digits
# (MobileNetV2 alpha 0.35, 64 px, 8 epochs, 1,397 training images; benchmarks/imagenet_transfer.py data).
SCRATCH_LEARNING_RATE = 3e-3
# Default --fine-tune-epochs with pretrained weights (0 from scratch): enough epochs for FINE_TUNE_STEPS optimizer
# steps, at least FINE_TUNE_EPOCHS. Five epochs of 100 images are 20 steps: the digits at 10 per class ended
# fine-tuning still climbing at 0.76; 300 steps reached 0.93 (the head 0.75, scikit-learn's probe 0.735).
FINE_TUNE_STEPS = 300
FINE_TUNE_EPOCHS = 5
# Fine-tuning after the head: every backbone layer (BatchNorm frozen) at 3e-4, on the images as they are.
# Measured on benchmarks/imagenet_transfer.py's data (EfficientNet-Lite0 ImageNet, 96 px, 5 epochs; the head alone
# 0.855 on the digits at 30 images per class): the top 20 layers at 1e-4 never passed the head (0.835), all layers
# at 1e-4 reached 0.88 and at 3e-4 0.925. Augmented, the same runs fell to 0.45 (top 20) and 0.12 (all layers,
# chance): rotated and zoomed digits are far from the images the head was fitted on, and its loss starts near 6.
# On photo crops (textures) no fine-tuning beat the head, augmented or not, and the best epoch kept the head.
FINE_TUNE_LAYERS = "all"
FINE_TUNE_LEARNING_RATE = 3e-4


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: Path
    output: Path
    backbone: str = DEFAULT_BACKBONE
    alpha: float = 1.0
    weights: str = "imagenet"  # "imagenet" | "none" | a weights file | a previous run directory
    image_size: int | None = None  # None: the backbone's default
    epochs: int | None = None  # None: default_epochs(training images), resolved when the data is known
    fine_tune_epochs: int | None = None  # None: default_fine_tune_epochs(training images); 0 from scratch
    fine_tune_layers: int | str = FINE_TUNE_LAYERS  # count of backbone layers from the top, or "all"
    batch_size: int = 32
    val_split: float = 0.2
    val_dir: Path | None = None
    seed: int = 0
    # None: on from scratch (the whole network learns its invariances), off when fine-tuning pretrained weights
    # (see FINE_TUNE_LEARNING_RATE). Only phases that train backbone layers augment; the head sees images as they are.
    augment: bool | None = None
    flip: bool = True
    on_bad_image: str = "skip"
    class_weights: str = "none"  # "balanced": weight the loss by inverse class frequency
    allow_outside_root: bool = False  # CSV paths may lead outside the CSV's folder
    trust_model: bool = False  # --weights .keras files may run their own code (Lambda layers)
    distribute: str = "none"  # "mirrored" | "multi-worker": see edgetl/training/distribute.py
    mixed_precision: bool = False  # mixed_float16 compute on a GPU; the run is saved in float32
    learning_rate: float | None = None  # None: first_learning_rate (by head; SCRATCH_LEARNING_RATE from scratch)
    fine_tune_learning_rate: float = FINE_TUNE_LEARNING_RATE
    head: str = "linear"  # "mlp" | "attention" | "prototype" | "siamese": see edgetl/network/heads.py
    tasks: tuple[str, ...] | None = None  # multi-task: CSV label columns, one head each (edgetl/training/multitask.py)
    task_weights: tuple[float, ...] | None = None  # per-task loss weights, in tasks order (default 1 each)
    regularizer: str = "none"  # "l2" | "l2sp": see edgetl/training/constraints.py
    regularizer_strength: float = 1e-3
    clipnorm: float | None = None  # global gradient-norm clip
    layer_lr_decay: float | None = None  # per-layer learning-rate decay from head to stem, in (0, 1]
    dropout: float = 0.2
    feature_cache: str = "auto"  # the frozen-backbone phase on cached backbone features: auto = whenever it can
    overwrite: bool = False

    @classmethod
    def create(cls, **options: Any) -> "TrainConfig":
        """Build from loosely typed input (CLI or Python API), collecting every problem first."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown train option(s): {', '.join(unknown)}")
        for key in ("data", "output", "val_dir"):
            if options.get(key) is not None:
                options[key] = Path(options[key])
        options = _with_inherited(options)
        if isinstance(options.get("fine_tune_layers"), str) and options["fine_tune_layers"] != "all":
            try:
                options["fine_tune_layers"] = int(options["fine_tune_layers"])
            except ValueError:
                raise UsageError("--fine-tune-layers: expected a number of layers or 'all'") from None
        from edgetl.training.multitask import normalize_options

        config = cls(**normalize_options(options))
        if config.fine_tune_epochs is None and config.weights == "none":
            config = dataclasses.replace(config, fine_tune_epochs=0)
        if config.learning_rate is None:
            config = dataclasses.replace(config, learning_rate=config.first_learning_rate)
        if config.augment is None:
            config = dataclasses.replace(config, augment=config.weights == "none")
        problems = config.problems()
        if problems:
            raise UsageError("; ".join(problems))
        return config

    def problems(self) -> list[str]:
        from edgetl.backbones import BACKBONES

        found = []
        if self.backbone not in BACKBONES:
            found.append(f"--backbone: unknown {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if not 0 < self.alpha <= 2:
            found.append(f"--alpha: {self.alpha} is outside (0, 2]")
        elif self.backbone in BACKBONES and self.weights == "imagenet" and \
                self.alpha not in BACKBONES[self.backbone].imagenet_alphas:
            allowed = ", ".join(str(a) for a in BACKBONES[self.backbone].imagenet_alphas)
            found.append(f"--alpha: ImageNet weights for {self.backbone} exist for alpha {allowed}; "
                         f"pick one of those or use --weights none")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            found.append(f"--image-size: {self.image_size} is outside 32..1024")
        for name, value, low in (("--epochs", self.epochs, 0), ("--fine-tune-epochs", self.fine_tune_epochs, 0),
                                 ("--batch-size", self.batch_size, 1)):
            if value is not None and value < low:
                found.append(f"{name}: must be >= {low}, got {value}")
        if self.epochs == 0 and self.fine_tune_epochs == 0:
            found.append("--epochs and --fine-tune-epochs are both 0: nothing would be trained")
        if isinstance(self.fine_tune_layers, int) and self.fine_tune_layers < 1:
            found.append("--fine-tune-layers: must be >= 1 or 'all'")
        if self.val_dir is None and not 0 < self.val_split < 1:
            found.append(f"--val-split: must be between 0 and 1 (exclusive), got {self.val_split}")
        if self.on_bad_image not in ON_BAD_IMAGE:
            found.append(f"--on-bad-image: must be one of {', '.join(ON_BAD_IMAGE)}")
        if self.class_weights not in CLASS_WEIGHTS:
            found.append(f"--class-weights: must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weights!r}")
        for name, value in (("learning_rate", self.first_learning_rate),
                            ("fine_tune_learning_rate", self.fine_tune_learning_rate)):
            if not value > 0:
                found.append(f"{name}: must be > 0")
        if not 0 <= self.dropout < 1:
            found.append("dropout: must be in [0, 1)")
        found += self._constraint_problems()
        found += self._distribute_problems()
        from edgetl.training.multitask import config_problems

        found += config_problems(self)
        return found

    def _distribute_problems(self) -> list[str]:
        from edgetl.training import distribute

        found = distribute.problems(self.distribute)
        if self.distribute != "none" and self.feature_cache == "on":
            found.append(f"--feature-cache on: not with --distribute {self.distribute} (every worker would need "
                         f"the same cache); use --feature-cache auto or off")
        return found

    def _constraint_problems(self) -> list[str]:
        from edgetl.network.heads import HEADS
        from edgetl.training.constraints import REGULARIZERS

        found = []
        if self.head not in HEADS:
            found.append(f"--head: must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.head == "siamese" and self.class_weights != "none":
            found.append("--class-weights: not used by --head siamese, which trains on pairs of images drawn "
                         "balanced (half same class, half different); leave it out")
        if self.head == "siamese" and self.distribute != "none":
            found.append(f"--distribute {self.distribute}: not supported with --head siamese yet (its pairs are "
                         f"drawn in one process); train it with --distribute none")
        if self.regularizer not in REGULARIZERS:
            found.append(f"--regularizer: must be one of {', '.join(REGULARIZERS)}, got {self.regularizer!r}")
        elif self.regularizer == "l2sp" and self.weights == "none":
            found.append("--regularizer l2sp pulls towards the starting weights: it needs --weights "
                         "imagenet, a weights file or a run, not none (use l2)")
        if not self.regularizer_strength > 0:
            found.append("--regularizer-strength: must be > 0")
        if self.clipnorm is not None and not self.clipnorm > 0:
            found.append("--clipnorm: must be > 0")
        if self.layer_lr_decay is not None and not 0 < self.layer_lr_decay <= 1:
            found.append("--layer-lr-decay: must be in (0, 1]")
        if self.feature_cache not in FEATURE_CACHE:
            found.append(f"--feature-cache: must be one of {', '.join(FEATURE_CACHE)}, got {self.feature_cache!r}")
        elif self.feature_cache == "on" and self.weights == "none":
            found.append("--feature-cache on: with --weights none the whole network trains, so backbone features "
                         "change every step and cannot be cached; use --feature-cache auto or off")
        elif self.feature_cache == "on" and self.epochs == 0:
            found.append("--feature-cache on: caches the frozen-backbone phase, but --epochs is 0")
        return found

    @property
    def uses_feature_cache(self) -> bool:
        return self.feature_cache != "off" and self.epochs != 0 and self.distribute == "none" \
            and not self.tasks and self.weights != "none"  # one label per image; a backbone that stays frozen

    def default_epochs(self, train_images: int) -> int:
        """--epochs when not given: HEAD_STEPS optimizer steps (SCRATCH_STEPS from scratch), at least
        MIN_EPOCHS epochs. A few images get many short epochs (100 images at batch 32, from scratch: 125),
        a large set MIN_EPOCHS."""
        steps_per_epoch = max(1, -(-train_images // self.batch_size))
        steps = SCRATCH_STEPS if self.weights == "none" else HEAD_STEPS
        return max(MIN_EPOCHS, -(-steps // steps_per_epoch))

    def default_fine_tune_epochs(self, train_images: int) -> int:
        """--fine-tune-epochs when not given (pretrained weights): FINE_TUNE_STEPS optimizer steps, at least
        FINE_TUNE_EPOCHS epochs (100 images at batch 32: 75 epochs of 4 steps; 10,000 images: 5)."""
        steps_per_epoch = max(1, -(-train_images // self.batch_size))
        return max(FINE_TUNE_EPOCHS, -(-FINE_TUNE_STEPS // steps_per_epoch))

    @property
    def first_learning_rate(self) -> float:
        """The first phase's rate: --learning-rate, else the default for what that phase trains."""
        if self.learning_rate is not None:
            return self.learning_rate
        if self.weights == "none":
            return SCRATCH_LEARNING_RATE
        return HEAD_LEARNING_RATE if self.head == "linear" else OTHER_HEAD_LEARNING_RATE

    @property
    def resolved_image_size(self) -> int:
        from edgetl.backbones import get_backbone

        return self.image_size or get_backbone(self.backbone).default_image_size

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("data", "output", "val_dir"):  # absolute, so later stages work from any directory
            out[key] = None if out[key] is None else str(Path(out[key]).resolve())
        out["image_size"] = self.resolved_image_size
        return out


def _with_inherited(options: dict[str, Any]) -> dict[str, Any]:
    """Chained transfer (--weights RUN): the backbone, alpha and image size of that run, for the ones not
    given; None (not given) elsewhere becomes the default. A differing --backbone/--alpha is refused later,
    when the run's weights are loaded (trainer.py), with both values named."""
    import json

    from edgetl.artifacts.manifest import MANIFEST_NAME

    given = {key: value for key, value in options.items() if not (key in INHERITED and value is None)}
    weights = options.get("weights")
    manifest = Path(weights) / MANIFEST_NAME if isinstance(weights, (str, Path)) and \
        weights not in ("imagenet", "none") else None
    if manifest is None or not manifest.is_file():
        return given
    try:
        backbone = json.loads(manifest.read_text(encoding="utf-8")).get("backbone", {})
    except (OSError, ValueError, AttributeError):
        backbone = None
    if not isinstance(backbone, dict):
        return given  # the full check, with its message, comes when the run is loaded
    inherited = {"backbone": backbone.get("name"), "alpha": backbone.get("alpha"),
                 "image_size": backbone.get("image_size")}
    return {key: value for key, value in inherited.items() if value is not None} | given
