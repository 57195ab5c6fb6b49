"""The siamese head (`--head siamese`): Koch, Zemel and Salakhutdinov's twin network for one-shot verification.

Two images go through the same layers (shared weights, so one embedding model), the scorer says "same
class" with sigmoid(w . |a - b| + bias), and the loss is binary cross-entropy on balanced pairs: every
training image is the first image of one pair per epoch, its partner from its own class half the time and
from a random other class otherwise, drawn anew every epoch. Validation pairs are drawn once (seeded) and
their accuracy picks the best epoch, as validation accuracy does for the other heads.

The run's model is the prototype head's (edgetl/network/heads.py): the embedding, then the cosine to each
class's mean training embedding. So export, compression, bench, `edgetl enroll` and the bundles treat a
siamese run like a prototype run, and the run classifies too. The twin and its scorer exist only while
training; afterwards the scorer is refitted (logistic regression on |a - b| of training pairs) to the
embedding of the best epoch, which is the one kept, and stored in the manifest (`similarity.scorer`).

The head phase runs on cached backbone features like the other heads' (pairs of cached rows).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from edgetl.data.pipeline import augmentation_layers, load_resized, path_tensor
from edgetl.network.heads import EMBEDDING_LAYER, HEAD_PREFIX
from edgetl.network.similarity import COSINE, DEFAULT_FAR, Scorer, calibrate_pairs, sample_pairs, unknown_rejection
from edgetl.progress import say
from edgetl.tf_env import keras, tf
from edgetl.training.phases import PhaseData

SCORE_LAYER = f"{HEAD_PREFIX}siamese_score"
PAIR_LOSS = "binary_crossentropy"


class PairSampler:
    """Balanced pairs of indices into a labelled set: (first, second, 1.0 if same class else 0.0)."""

    def __init__(self, labels: Sequence[int]) -> None:
        self.labels = np.asarray(labels, np.int64)
        self.members = {int(c): np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}
        self.classes = np.array(sorted(self.members))

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        first = rng.permutation(len(self.labels))
        wants_same = rng.random(len(first)) < 0.5
        second, same = np.empty_like(first), np.zeros(len(first), np.float32)
        for row, (anchor, want) in enumerate(zip(first, wants_same)):
            own = self.labels[anchor]
            mates = self.members[int(own)]
            if want and len(mates) > 1:
                partner = mates[rng.integers(len(mates) - 1)]
                second[row] = partner if partner != anchor else mates[-1]
                same[row] = 1.0
            else:
                others = self.classes[self.classes != own]
                if not len(others):  # one class: nothing to contrast with (training needs 2 classes anyway)
                    second[row], same[row] = anchor, 1.0
                    continue
                pool = self.members[int(others[rng.integers(len(others))])]
                second[row] = pool[rng.integers(len(pool))]
        return first.astype(np.int32), second.astype(np.int32), same


def pair_dataset(fetch: Callable[[Any], Any], labels: Sequence[int], batch_size: int, seed: int, fresh: bool,
                 after_batch: Callable[[Any], Any] | None = None) -> Any:
    """Batches of ((first, second), same). `fetch` maps an index tensor to one input (an image or a feature
    row); `fresh`: new pairs every epoch (training), else one seeded draw (validation)."""
    t = tf()
    sampler, count = PairSampler(labels), len(labels)
    if fresh:
        rng = np.random.default_rng(seed)  # advances every epoch: the generator is re-run per epoch

        def generate() -> Any:
            yield from zip(*sampler.draw(rng))

        signature = (t.TensorSpec((), t.int32), t.TensorSpec((), t.int32), t.TensorSpec((), t.float32))
        ds = t.data.Dataset.from_generator(generate, output_signature=signature)
        ds = ds.apply(t.data.experimental.assert_cardinality(count))
    else:
        ds = t.data.Dataset.from_tensor_slices(sampler.draw(np.random.default_rng(seed + 1)))
    ds = ds.map(lambda a, b, same: ((fetch(a), fetch(b)), same), num_parallel_calls=t.data.AUTOTUNE)
    ds = ds.batch(batch_size)
    if after_batch is not None:
        ds = ds.map(lambda pair, same: ((after_batch(pair[0]), after_batch(pair[1])), same),
                    num_parallel_calls=t.data.AUTOTUNE)
    return ds.prefetch(t.data.AUTOTUNE)


def image_pairs(paths: Sequence[str], labels: Sequence[int], *, image_size: int, batch_size: int, preprocessing: Any,
                seed: int, fresh: bool, augment: bool = False, flip: bool = True) -> Any:
    t = tf()
    files = path_tensor(paths)
    mean, std = t.constant(preprocessing.mean, t.float32), t.constant(preprocessing.std, t.float32)
    augmenter = augmentation_layers(seed, flip) if augment else None

    def finish(images: Any) -> Any:
        if augmenter is not None:
            images = t.clip_by_value(augmenter(images, training=True), 0.0, 255.0)
        return (images - mean) / std

    return pair_dataset(lambda i: load_resized(files[i], image_size), labels, batch_size, seed, fresh, finish)


def feature_pairs(features: np.ndarray, labels: Sequence[int], batch_size: int, seed: int, fresh: bool) -> Any:
    table = tf().constant(np.asarray(features, np.float32))
    return pair_dataset(lambda i: tf().gather(table, i), labels, batch_size, seed, fresh)


def twin(model: Any, cut: Any = None, scorer: Any = None) -> Any:
    """The training model: both inputs through the shared embedding layers of `model` (from its input, or
    from `cut`, a cached-feature tensor), |a - b|, then the Dense sigmoid scorer (`scorer`: an existing
    one, so fine-tuning goes on with the head phase's)."""
    k = keras()
    embedder = k.Model(model.input if cut is None else cut, model.get_layer(EMBEDDING_LAYER).output,
                       name="siamese_embedding")
    shape = tuple(embedder.input.shape[1:])
    first, second = k.Input(shape, name="first"), k.Input(shape, name="second")
    difference = k.layers.Subtract(name=f"{HEAD_PREFIX}siamese_difference")([embedder(first), embedder(second)])
    distance = k.layers.Lambda(lambda x: tf().abs(x), name=f"{HEAD_PREFIX}siamese_l1")(difference)
    # A unit-length difference spreads over the dimensions (~1/sqrt(d) each): times sqrt(d) the scorer starts
    # on inputs near 1, as Dense's initialization expects; at 1x its logits stayed near 0 for hundreds of steps.
    distance = k.layers.Rescaling(float(np.sqrt(distance.shape[-1])), name=f"{HEAD_PREFIX}siamese_scale")(distance)
    scorer = scorer or k.layers.Dense(1, activation="sigmoid", name=SCORE_LAYER)
    return k.Model([first, second], scorer(distance), name="siamese_twin")


def scorer_layer(trained: Any) -> Any:
    """The twin's scorer, or None when `trained` is not a twin (the head phase did not run here)."""
    return next((layer for layer in trained.layers if layer.name == SCORE_LAYER), None)


def as_pairs(data: PhaseData, train: Any, val: Any) -> PhaseData:
    return dataclasses.replace(data, train=train, val=val, class_weight=None, loss=PAIR_LOSS)


def fit_scorer(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> Scorer:
    """Koch's scorer refitted to the final embedding: logistic regression on |a - b| of training pairs,
    same and different weighted equally."""
    from sklearn.linear_model import LogisticRegression

    same, different = sample_pairs(labels, seed)
    pairs = np.concatenate([same, different])
    features = np.abs(embeddings[pairs[:, 0]] - embeddings[pairs[:, 1]])
    target = np.concatenate([np.ones(len(same)), np.zeros(len(different))])
    fitted = LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000).fit(features, target)
    return Scorer("weighted_l1", tuple(float(w) for w in fitted.coef_[0]), float(fitted.intercept_[0]))


def similarity_section(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                         prototypes: np.ndarray, head: str, far: float = DEFAULT_FAR) -> dict[str, Any]:
    """The run's `similarity` section: its scorer (refitted on training pairs for siamese), the threshold
    calibrated on validation pairs, and the unknown-class threshold on the best cosine to the prototypes."""
    scorer = fit_scorer(*train) if head == "siamese" else COSINE
    pairs = calibrate_pairs(*val, scorer, far)
    unknown = unknown_rejection(*val, prototypes, far)
    say(f"verification: ROC AUC {pairs['roc_auc']:.4f}, EER {pairs['eer']:.4f}; at FAR {far:g} the threshold "
        f"{pairs['threshold']:.4f} accepts {pairs['tar']:.1%} of same-class validation pairs; unknown below "
        f"cosine {unknown['threshold']:.4f} keeps {unknown['known_accepted']:.1%} of known images, set with the run's "
        f"own classes as the unknowns: a class it never saw scores closer; calibrate with a folder of other things "
        f"too (edgetl calibrate RUN --data DIR)")
    return {"scorer": scorer.to_json(), "pairs": pairs, "unknown": unknown, "calibrated_on": "validation split"}
