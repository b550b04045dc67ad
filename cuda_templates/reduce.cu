// kernla tiled reduction kernel @NAME@ (each thread owns @ROWS@ output row(s), j tiles in shared
// memory, accumulators in registers).
//
// Grid: x = blocks of KL_BLOCK * @ROWS@ rows (a thread's rows are KL_BLOCK apart);
//       y = j splits (split-j scheme; 1 for the 1-D scheme);
//       z = column chunks of a kernel product of run-time width (1 otherwise).
// Every thread of a block helps to stage each j tile, including threads whose rows are past nx:
// they compute nothing and write nothing. A thread whose first row is valid computes all its
// rows (reading row 0 in place of rows past nx) and writes only the valid ones. The
// __syncthreads() calls are outside any thread-dependent branch. Row, column and element
// offsets are 64-bit.
// With gridDim.y == 1 the kernel finalises and writes the outputs; otherwise it writes its
// partial accumulators to kl_scratch (layout [word][split][row], 8 bytes a word) for the merge
// kernel. Sums over one tile run in KL_TACC_IN and are folded into the TACC accumulator after
// the tile ("two-level" accumulation).
extern "C" __global__ void __launch_bounds__(KL_BLOCK)
@NAME@(const kl_i64 nx, const kl_i64 ny, const kl_i64 width, const kl_i64 jper,
@ARGS@
       double* __restrict__ kl_scratch)
{
@SHARED@
    // this thread's rows: kl_i0 + r * KL_BLOCK, r < @ROWS@ (kl_iiR: the same, or row 0 past nx)
    const kl_i64 kl_i0 = (kl_i64)blockIdx.x * (KL_BLOCK * @ROWS@) + threadIdx.x;
    const bool kl_active = kl_i0 < nx;
    const kl_i64 kl_jb = (kl_i64)blockIdx.y * jper;
    const kl_i64 kl_je = (ny - kl_jb < jper) ? ny : kl_jb + jper;
    const int kl_c0 = (int)blockIdx.z * @CW@;
    (void)width; (void)kl_c0;
@PRELOAD@
@DECL@
@INIT@
    for (kl_i64 kl_j0 = kl_jb; kl_j0 < kl_je; kl_j0 += @TJ@) {
        const int kl_cnt = (int)((kl_je - kl_j0 < @TJ@) ? (kl_je - kl_j0) : @TJ@);
@TILE@
        __syncthreads();
        if (kl_active) {
@TILE_BEGIN@
#pragma unroll @UNROLL@
            for (int kl_jj = 0; kl_jj < kl_cnt; kl_jj++) {
                const kl_i64 j = kl_j0 + kl_jj;
                (void)j;
@ROW@
@BODY@
@UPDATE@
            }
@TILE_END@
        }
        __syncthreads();
    }
    if (!kl_active) return;
    if (gridDim.y == 1) {
@FINAL@
    } else {
        const kl_i64 kl_stride = (kl_i64)gridDim.y * nx;
        double* kl_st = kl_scratch + (kl_i64)blockIdx.z * @WORDS@ * kl_stride;
@SAVE@
    }
}
