"""The op layer: the compiled library ``torch.ops.entclust`` (loaded here), its fake kernels and
autograd formulas (:mod:`.fused`, :mod:`.loss_autograd`), the input checks every public function uses (:mod:`.checks`)
and what the build contains (:mod:`.build`). Nothing here imports the layers above."""
from .build import (
    available_cpu_capabilities,
    build_info,
    check_device,
    compiled_with_cuda,
    cpu_capability,
    cpu_model,
    has_kernels,
    set_cpu_capability,
    use_cpu_capability,
)
from .fused import (
    argmax_rows,
    certificate_kernel,
    collision_cross_entropy_kernel,
    duality_gap_kernel,
    em_cce_kernel,
    em_rce_kernel,
    em_rce_rows_kernel,
    kmeans_plusplus_kernel,
    linear_rce_kernel,
    linear_top_entries_kernel,
    pgd_cce_kernel,
    prediction_fairness_kernel,
    project_simplex_kernel,
    reverse_cross_entropy_kernel,
    sinkhorn_kernel,
    softmax_double,
    sparse_centre_sums_kernel,
    sparse_em_rows_kernel,
    top_entries_kernel,
)
from .loss_autograd import LOSS_OPS, REDUCTIONS

__all__ = [
    "argmax_rows", "available_cpu_capabilities", "build_info", "check_device", "compiled_with_cuda", "cpu_capability", "cpu_model",
    "has_kernels", "set_cpu_capability", "use_cpu_capability", "LOSS_OPS", "REDUCTIONS",
    "certificate_kernel", "collision_cross_entropy_kernel", "duality_gap_kernel", "em_cce_kernel", "em_rce_kernel", "em_rce_rows_kernel",
    "kmeans_plusplus_kernel", "linear_rce_kernel", "linear_top_entries_kernel", "pgd_cce_kernel", "prediction_fairness_kernel", "project_simplex_kernel", "reverse_cross_entropy_kernel",
    "sinkhorn_kernel", "softmax_double", "sparse_centre_sums_kernel", "sparse_em_rows_kernel", "top_entries_kernel",
]

# The raw ops were named as the checked public functions (entclust.ops.em_rce, positional and
# unchecked, beside entclust.em_rce); the old names work for one more release, with a DeprecationWarning.
_RENAMED = {name: f"{name}_kernel" for name in ("certificate", "collision_cross_entropy", "em_cce", "em_rce", "em_rce_rows",
                                                "linear_rce", "pgd_cce", "project_simplex", "reverse_cross_entropy")}


def __getattr__(name: str):
    if name in _RENAMED:
        import warnings

        warnings.warn(f"entclust.ops.{name} is deprecated and will be removed in the next release: the raw op is now "
                      f"entclust.ops.{_RENAMED[name]}", DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
