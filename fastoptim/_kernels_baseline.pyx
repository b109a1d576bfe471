# The kernels for any CPU of the target architecture (SSE2 on x86-64).
include "_kernels.pxi"
