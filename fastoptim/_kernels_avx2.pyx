# The kernels compiled with -mavx2 -mfma; imported only on CPUs that have both.
include "_kernels.pxi"
