// kernla split-j merge kernel @NAME@: one thread per row folds the partial accumulators of the
// gridDim.y j splits of @MAIN@ (read from kl_scratch, split 0 first, so ties keep the smaller
// index) with the reduction's merge snippet, then finalises and writes the outputs.
extern "C" __global__ void __launch_bounds__(KL_MBLOCK)
@NAME@(const kl_i64 nx, const kl_i64 splits, const kl_i64 width,
@ARGS@
       const double* __restrict__ kl_scratch)
{
    const kl_i64 i = (kl_i64)blockIdx.x * KL_MBLOCK + threadIdx.x;
    if (i >= nx) return;
    const int kl_c0 = (int)blockIdx.z * @CW@;
    (void)width; (void)kl_c0;
    const kl_i64 kl_stride = splits * nx;
    const double* kl_st = kl_scratch + (kl_i64)blockIdx.z * @WORDS@ * kl_stride;
@DECL@
@INIT@
    for (kl_i64 kl_s = 0; kl_s < splits; kl_s++) {
        const kl_i64 kl_slot = kl_s * nx + i;
@QDECL@
@QLOAD@
@MERGE@
    }
@FINAL@
}
