"""Weight clustering (TFMOT): each kernel's values snapped to `clusters` shared centroids.

`preserve_sparsity` keeps the zeros of a pruned model zero (sparsity-preserving clustering), so
prune then cluster keeps both savings. Depthwise kernels are not clustered: TFMOT's registry lists
no clusterable weight for DepthwiseConv2D (they hold ~3 % of a MobileNet's weights).
"""

from __future__ import annotations

from typing import Any

from edgetl.compression import kernels
from edgetl.tf_env import keras

CLUSTERABLE = ("Conv2D", "Dense")


def apply(model: Any, clusters: int = 16, preserve_sparsity: bool = False) -> Any:
    """Wrap only Conv2D/Dense layers, k-means++ initialised centroids."""
    import tensorflow_model_optimization as tfmot

    clustering = tfmot.clustering.keras
    init = clustering.CentroidInitialization.KMEANS_PLUS_PLUS

    def wrap(layer: Any) -> Any:
        if type(layer).__name__ in CLUSTERABLE:
            return clustering.cluster_weights(layer, number_of_clusters=clusters, cluster_centroids_init=init,
                                              preserve_sparsity=preserve_sparsity)
        return layer  # reused as is: same object, same weights (as in the TFMOT guides)

    return keras().models.clone_model(model, clone_function=wrap)


def strip(model: Any) -> Any:
    import tensorflow_model_optimization as tfmot

    return tfmot.clustering.keras.strip_clustering(model)


def max_unique_values(model: Any, kinds: tuple[str, ...] = CLUSTERABLE) -> int:
    """The largest number of distinct values in any kernel of `kinds` layers."""
    import numpy as np

    return max((len(np.unique(kernel)) for kernel in kernels(model, kinds)), default=0)

