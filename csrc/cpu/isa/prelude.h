// Included first by every translation unit that compiles isa/row_kernels.h: the standard
// headers that code uses, so that they are parsed *before* the ISA target pragma. Only C-level
// functions and constants of these are used inside: no standard template is instantiated
// under a target (its out-of-line copy could be the one the linker keeps for every caller,
// and run an instruction the CPU lacks).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>  // (every intrinsic is declared whatever the target; a function uses only its own ISA's)
#endif

#include "kernel_table.h"
