"""Weight clustering (TFMOT): each kernel's values snapped to `clusters` shared centroids."""

from __future__ import annotations

from typing import Any

from edgetl.tf_env import keras

CLUSTERABLE = ("Conv2D", "DepthwiseConv2D", "Dense")


def apply(model: Any, clusters: int = 16) -> Any:
    """Wrap only Conv2D/DepthwiseConv2D/Dense layers, k-means++ initialised centroids."""
    import tensorflow_model_optimization as tfmot

    clustering = tfmot.clustering.keras
    init = clustering.CentroidInitialization.KMEANS_PLUS_PLUS

    def wrap(layer: Any) -> Any:
        if type(layer).__name__ in CLUSTERABLE:
            return clustering.cluster_weights(layer, number_of_clusters=clusters, cluster_centroids_init=init)
        return layer  # reused as is: same object, same weights (as in the TFMOT guides)

    return keras().models.clone_model(model, clone_function=wrap)


def strip(model: Any) -> Any:
    import tensorflow_model_optimization as tfmot

    return tfmot.clustering.keras.strip_clustering(model)
