"""Clustering with networks trained end to end on images or vectors.

:class:`DeepEntropyClustering` (scikit-learn style), :class:`SelfLabelingTrainer` (for your own
model), the papers' networks (:class:`VGG4`, :class:`MLP`, :class:`ClusterHeads`,
:class:`ClusteringNet`), batched, seeded augmentations (:class:`Augment`, presets), and
selective pseudo-label clustering (:class:`SelectivePseudoLabelClustering`, an autoencoder
ensemble)."""
from .augment import PRESETS, Augment, get_augment, preset_for
from .estimator import DeepEntropyClustering
from .models import MLP, VGG4, ClusterHeads, ClusteringNet, default_network, vgg4_layout
from .spc import SelectivePseudoLabelClustering
from .trainer import SelfLabelingTrainer

__all__ = ["Augment", "PRESETS", "get_augment", "preset_for", "DeepEntropyClustering", "MLP", "VGG4", "ClusterHeads",
           "ClusteringNet", "default_network", "vgg4_layout", "SelfLabelingTrainer", "SelectivePseudoLabelClustering"]
