"""Selective pseudo-label clustering (Wang et al. 2023, "Mahon & Lukasiewicz 2021") in the methods' registry: the
estimator itself is :class:`entclust.deep.SelectivePseudoLabelClustering` (autoencoders trained
end to end live beside the other network-trained methods)."""
from ...deep.spc import SelectivePseudoLabelClustering
from ..registry import EstimatorMethod, register


@register("spc")
class SPCMethod(EstimatorMethod):
    """Selective pseudo-label clustering (Mahon & Lukasiewicz 2021): an autoencoder ensemble trained on the points
    every member agrees on."""

    # every parameter of the estimator but those the harness sets itself, at the estimator's defaults
    defaults = {key: value for key, value in SelectivePseudoLabelClustering().get_params().items()
                if key not in ("n_clusters", "standardize", "checkpoint", "device", "random_state", "verbose")}

    def make(self, n_clusters, *, random_state=None, standardize="auto", **params):
        return SelectivePseudoLabelClustering(n_clusters, standardize=standardize, random_state=random_state,
                                              **{**self.defaults, **params})
