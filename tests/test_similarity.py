"""edgetl.network.similarity (scorers, pair metrics, thresholds, unknown rejection), the siamese head's pair
sampler and the few-shot episodes: numbers checked against brute force or against what they must be."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.network.similarity import (COSINE, Scorer, calibrate_pairs, equal_error_rate, normalized, operating_point,
                                       roc_auc, sample_pairs, threshold_at_far, unknown_rejection)


def test_roc_auc_is_the_share_of_correctly_ordered_pairs_ties_half() -> None:
    rng = np.random.default_rng(0)
    genuine = rng.integers(0, 20, 60).astype(np.float32)  # integers: many ties
    impostor = rng.integers(0, 14, 80).astype(np.float32)
    brute = np.mean([(g > i) + 0.5 * (g == i) for g in genuine for i in impostor])
    assert roc_auc(genuine, impostor) == pytest.approx(brute)
    assert roc_auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert roc_auc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0


@pytest.mark.parametrize("far", [0.0, 0.01, 0.1, 0.5])
def test_threshold_at_far_is_the_smallest_that_keeps_false_accepts_within_far(far: float) -> None:
    impostor = np.random.default_rng(1).normal(size=1000).astype(np.float32)
    impostor[:50] = impostor[0]  # a tie block must not push the measured FAR over the target
    threshold = threshold_at_far(impostor, far)
    assert np.mean(impostor >= threshold) <= far
    below = np.sort(impostor[impostor < threshold])
    if len(below):  # any lower threshold at an impostor score accepts more than far
        assert np.mean(impostor >= below[-1]) > far


def test_equal_error_rate_of_separated_and_of_identical_scores() -> None:
    rng = np.random.default_rng(2)
    assert equal_error_rate(rng.uniform(2, 3, 200), rng.uniform(0, 1, 200)) == 0.0
    same = rng.normal(size=4000)
    assert equal_error_rate(same[:2000], same[2000:]) == pytest.approx(0.5, abs=0.03)


def test_operating_point_reports_what_the_threshold_gives_and_warns_on_few_pairs() -> None:
    rng = np.random.default_rng(3)
    genuine, impostor = rng.normal(2, 1, 500), rng.normal(0, 1, 5000)
    point = operating_point(genuine, impostor, 0.01)
    assert point["far"] == pytest.approx(np.mean(impostor >= point["threshold"]), abs=1e-5) and point["far"] <= 0.01
    assert point["tar"] == pytest.approx(np.mean(genuine >= point["threshold"]), abs=1e-5)
    assert 0.2 < point["tar"] < 0.6 and "warning" not in point  # normal(2) vs normal(0) at 1 % FAR: TAR ~0.37
    assert "fewer than 10" in operating_point(genuine, impostor[:50], 0.01)["warning"]


def test_sample_pairs_lists_every_pair_once_or_a_sample() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    same, different = sample_pairs(labels)
    assert len(same) == 1 + 3 and len(different) == 15 - 4
    assert all(labels[a] == labels[b] and a < b for a, b in same)
    assert all(labels[a] != labels[b] for a, b in different)
    same, different = sample_pairs(np.repeat(np.arange(10), 30), max_pairs=100)
    assert len(same) == 100 and len(different) == 100 and len({tuple(p) for p in different}) == 100


def test_scorers_cosine_and_kochs_weighted_l1() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    np.testing.assert_allclose(COSINE.score(a, b), np.sum(normalized(a) * normalized(b), axis=1), rtol=1e-5)
    weights = tuple(rng.normal(size=8))
    koch = Scorer("weighted_l1", weights, 0.5)
    by_hand = 1 / (1 + np.exp(-(np.abs(normalized(a) - normalized(b)) @ np.asarray(weights) + 0.5)))
    np.testing.assert_allclose(koch.score(a, b), by_hand, rtol=1e-5)
    assert Scorer.from_json(koch.to_json()).score(a, b) == pytest.approx(koch.score(a, b), rel=1e-5)
    assert koch.matrix(a, b).shape == (5, 5) and koch.matrix(a, b)[2, 3] == pytest.approx(koch.score(a[2], b[3]))


def _clusters(classes: int, per_class: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = normalized(rng.normal(size=(classes, 32)))
    labels = np.repeat(np.arange(classes), per_class)
    return normalized(centres[labels] + spread * rng.normal(size=(len(labels), 32))), labels


def test_calibration_on_clustered_embeddings_separates_same_from_different() -> None:
    embeddings, labels = _clusters(6, 20, 0.08, 5)
    doc = calibrate_pairs(embeddings, labels, COSINE, 0.01)
    assert doc["roc_auc"] > 0.99 and doc["eer"] < 0.02 and doc["tar"] > 0.9
    shuffled = calibrate_pairs(embeddings, np.random.default_rng(0).permutation(labels), COSINE, 0.01)
    assert 0.4 < shuffled["roc_auc"] < 0.6  # labels that mean nothing: chance


def test_unknown_rejection_keeps_known_images_and_rejects_left_out_classes() -> None:
    embeddings, labels = _clusters(5, 30, 0.1, 6)
    prototypes = np.stack([normalized(embeddings[labels == c].mean(axis=0)) for c in range(5)])
    doc = unknown_rejection(embeddings, labels, prototypes, 0.05)
    assert doc["unknown_accepted"] <= 0.05 and doc["known_accepted"] > 0.9 and doc["known_correct"] > 0.9
    # An image of a class that is not enrolled, scored against the four others, falls below the threshold.
    new, _ = _clusters(1, 50, 0.1, 7)
    assert np.mean((new @ prototypes.T).max(axis=1) < doc["threshold"]) > 0.7


def test_unknown_rejection_on_real_unknowns_where_leaving_a_trained_class_out_is_optimistic() -> None:
    """Two classes a model learned to push apart (opposite directions) and a class it never saw, between them
    but nearer class 0: with the known classes as each other's unknowns the threshold lets the new class in;
    set on images of the new class, it keeps the known images and rejects it."""
    rng = np.random.default_rng(0)

    def around(direction: list[float], n: int) -> np.ndarray:
        return normalized(np.asarray(direction) + rng.normal(0, 0.05, size=(n, 3)))

    embeddings = np.concatenate([around([1, 0, 0], 40), around([-1, 0, 0], 40)])
    labels = np.repeat([0, 1], 40)
    prototypes = np.stack([normalized(embeddings[labels == c].mean(axis=0)) for c in (0, 1)])
    unseen = around([0.7, 0.7, 0], 400)
    left_out = unknown_rejection(embeddings, labels, prototypes, 0.05)
    honest = unknown_rejection(embeddings, labels, prototypes, 0.05, unknown=unseen[:200])
    best = (unseen[200:] @ prototypes.T).max(axis=1)  # new images of the unseen class
    assert np.mean(best >= left_out["threshold"]) == 1.0 and left_out["unknowns"].startswith("the run's own")
    assert np.mean(best >= honest["threshold"]) <= 0.1 and honest["known_accepted"] == 1.0  # 0.05 + sampling
    assert honest["unknown_accepted"] <= 0.05 and honest["unknowns"] == "200 images of classes the run does not know"


def test_pair_sampler_draws_balanced_consistent_fresh_pairs() -> None:
    from edgetl.training.siamese import PairSampler

    labels = np.repeat(np.arange(4), [3, 10, 1, 6])
    sampler = PairSampler(labels)
    rng = np.random.default_rng(0)
    first, second, same = sampler.draw(rng)
    assert sorted(first) == list(range(len(labels)))  # every image leads one pair per epoch
    assert np.all((labels[first] == labels[second]) == (same == 1.0))
    assert not np.any(first == second)
    draws = [sampler.draw(rng)[2].mean() for _ in range(50)]
    assert 0.4 < np.mean(draws) < 0.55  # about half same (the single-image class never is)
    assert not np.array_equal(sampler.draw(rng)[1], sampler.draw(rng)[1])  # new partners every epoch


def test_episodes_on_separated_and_on_meaningless_embeddings() -> None:
    from edgetl.runner.episodes import draw_episodes, episode_accuracies

    embeddings, labels = _clusters(8, 12, 0.05, 8)
    plan = draw_episodes(labels, list(range(8)), 5, 1, 5, 100, 0)
    assert len(plan) == 100 and all(len(s) == 5 and all(len(x) == 1 for x in s) for s, _ in plan)
    assert all(set(np.concatenate(s)).isdisjoint(np.concatenate(q)) for s, q in plan)
    assert episode_accuracies(embeddings, plan, COSINE).mean() == 1.0
    noise = normalized(np.random.default_rng(9).normal(size=embeddings.shape))
    assert 0.1 < episode_accuracies(noise, plan, COSINE).mean() < 0.3  # chance is 1/5
