"""Look at the machine code of the per-ISA row kernels, not only at their timing: for every
capability namespace (cap_default, cap_avx2, cap_avx512) of the built extension, count the
instructions on 128/256/512-bit registers and list the functions called, per kernel. A kernel
whose exp/log stayed scalar shows calls to expf/logf or no wide registers.

    python benchmarks/isa_codegen.py            # needs objdump (binutils)
"""
from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys

import entclust._C as C

KERNELS = ("rce_rows<true, true", "cce_rows<true, true", "em_rce_rows<float", "em_rce_rows<double",
           "em_cce_rows<double")


def main() -> int:
    if shutil.which("objdump") is None:
        print("objdump not found (install binutils)", file=sys.stderr)
        return 2
    text = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", C.__file__],
                          capture_output=True, text=True, check=True).stdout
    stats = collections.defaultdict(lambda: collections.Counter())
    calls = collections.defaultdict(set)
    current = None
    for line in text.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if head:
            name = head.group(1)
            cap = re.search(r"entclust::cpu::(cap_\w+)::", name)
            kernel = next((k for k in KERNELS if k in name), None)
            current = (cap.group(1), kernel) if cap and kernel else None
            continue
        if current is None or "\t" not in line:
            continue
        stats[current]["instructions"] += 1
        for reg in ("xmm", "ymm", "zmm"):
            if f"%{reg}" in line:
                stats[current][reg] += 1
        call = re.search(r"call\s+\S+\s+<(.*)>", line)
        if call:
            calls[current].add(call.group(1).split("(")[0].split("@")[0][:60])
    print("| capability | kernel | instructions | xmm | ymm | zmm | calls |")
    print("|---|---|---|---|---|---|---|")
    for (cap, kernel), c in sorted(stats.items()):
        print(f"| {cap} | {kernel}…> | {c['instructions']} | {c['xmm']} | {c['ymm']} | {c['zmm']} "
              f"| {', '.join(sorted(calls[(cap, kernel)])) or '—'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
