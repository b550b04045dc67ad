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
// Block-sparse variant (ranges): block x computes the rows [kl_blocks[3x+1], kl_blocks[3x+2]) of row range
// r = kl_blocks[3x] over its column ranges kl_cols[2s..2s+1] for s in [kl_slices[r-1], kl_slices[r])
// (kl_slices[-1] read as 0), one after the other; gridDim.y is 1. A dense kernel has one column
// segment: its j split.
// Tile path (the GRAM slot filled): every thread helps to compute the block's Gram tile of one inner product
// (tiles.cu), and reads its row of it in place of that inner product.
extern "C" __global__ void __launch_bounds__(KL_BLOCK)
@NAME@(const kl_i64 nx, const kl_i64 ny, const kl_i64 width, const kl_i64 jper,
@ARGS@
       double* __restrict__ kl_scratch@RANGE_ARGS@)
{
@SHARED@
    // this thread's rows: kl_i0 + r * KL_BLOCK < kl_iend, r < @ROWS@ (kl_iiR: the same, or row kl_ii0 past the end);
    // its column segments: [kl_s0, kl_s1)
@BLOCK_ROWS@
    const bool kl_active = kl_i0 < kl_iend;
    const int kl_c0 = (int)blockIdx.z * @CW@;
    (void)width; (void)kl_c0; (void)jper;
@PRELOAD@
@DECL@
@INIT@
    for (kl_i64 kl_seg = kl_s0; kl_seg < kl_s1; kl_seg++) {
@SEGMENT@
    for (kl_i64 kl_j0 = kl_jb; kl_j0 < kl_je; kl_j0 += @TJ@) {
        const int kl_cnt = (int)((kl_je - kl_j0 < @TJ@) ? (kl_je - kl_j0) : @TJ@);
@TILE@
@GRAM@
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
