"""The op layer: the compiled library ``torch.ops.entclust`` (loaded here), its fake kernels and
autograd formulas (:mod:`.fused`), the input checks every public function uses (:mod:`.checks`)
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
    LOSS_OPS,
    REDUCTIONS,
    certificate,
    collision_cross_entropy,
    em_cce,
    em_rce,
    em_rce_rows,
    linear_rce,
    pgd_cce,
    project_simplex,
    reverse_cross_entropy,
)

__all__ = [
    "available_cpu_capabilities", "build_info", "check_device", "compiled_with_cuda", "cpu_capability", "cpu_model",
    "has_kernels", "set_cpu_capability", "use_cpu_capability", "LOSS_OPS", "REDUCTIONS", "certificate", "collision_cross_entropy",
    "em_cce", "em_rce", "em_rce_rows", "linear_rce", "pgd_cce", "project_simplex", "reverse_cross_entropy",
]
