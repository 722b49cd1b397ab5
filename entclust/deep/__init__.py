"""Deep self-labeled clustering (issue 12): networks trained end to end on images or vectors.

:class:`DeepEntropyClustering` (scikit-learn style), :class:`SelfLabelingTrainer` (for your own
model), the seeds' networks (:class:`VGG4`, :class:`MLP`, :class:`ClusterHeads`,
:class:`ClusteringNet`) and batched, seeded augmentations (:class:`Augment`, presets)."""
from .augment import PRESETS, Augment, get_augment, preset_for
from .estimator import DeepEntropyClustering
from .models import MLP, VGG4, ClusterHeads, ClusteringNet, default_network, vgg4_layout
from .trainer import SelfLabelingTrainer

__all__ = ["Augment", "PRESETS", "get_augment", "preset_for", "DeepEntropyClustering", "MLP", "VGG4", "ClusterHeads",
           "ClusteringNet", "default_network", "vgg4_layout", "SelfLabelingTrainer"]
