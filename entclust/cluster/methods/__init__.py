"""The built-in clustering methods, one file each; importing this package registers them all
(:mod:`entclust.cluster.registry`). Adding a method is a one-file change: a new module here
with a registered :class:`~entclust.cluster.registry.HeadMethod` or
:class:`~entclust.cluster.registry.EstimatorMethod`."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
