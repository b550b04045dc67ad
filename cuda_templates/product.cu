// kernla kernel product by matrix-multiply tiles @NAME@: out_i = sum_j k_ij B_j for @TJ@ columns of B per
// blockIdx.z, the block's KL_BLOCK rows at a time.
//
// Per j tile of @TJ@ columns: each thread computes k for its own row (KL_BLOCK x @TJ@ values, in kl_k, rows
// @TJ@ + 1 apart; the Gram tile of the formula's inner product first, in the same array, when the GRAM slot is
// filled), the block stages the B tile (@TJ@ x @TJ@), and the product of the two is added to a register block
// of @RM@ x @RN@ outputs per thread (tiles.cu): in T within the tile, then in TACC. Grid, rows, column segments,
// split-j scratch (layout [column][split][row], read by the merge kernel of a Sum of @TJ@ columns) and the
// block-sparse variant are those of reduce.cu.
extern "C" __global__ void __launch_bounds__(KL_BLOCK)
@NAME@(const kl_i64 nx, const kl_i64 ny, const kl_i64 width, const kl_i64 jper,
@ARGS@
       double* __restrict__ kl_scratch@RANGE_ARGS@)
{
@SHARED@
    __shared__ __align__(16) T kl_k[KL_BLOCK * (@TJ@ + 1)];
    __shared__ __align__(16) T kl_bt[@TJ@ * @TJ@];
@BLOCK_ROWS@
    const bool kl_active = kl_i0 < kl_iend;
    const kl_i64 kl_ib = kl_i0 - threadIdx.x;
    const int kl_c0 = (int)blockIdx.z * @TJ@;
    const kl_i64 kl_ii0 = kl_active ? kl_i0 : 0;
    (void)jper; (void)kl_ii0;
@PRELOAD@
    TACC kl_acc[@RM@][@RN@];
    for (int r = 0; r < @RM@; r++)
        for (int c = 0; c < @RN@; c++) kl_acc[r][c] = TACC(0);
    T* kl_g = kl_k;
    (void)kl_g;
    for (kl_i64 kl_seg = kl_s0; kl_seg < kl_s1; kl_seg++) {
@SEGMENT@
    for (kl_i64 kl_j0 = kl_jb; kl_j0 < kl_je; kl_j0 += @TJ@) {
        const int kl_cnt = (int)((kl_je - kl_j0 < @TJ@) ? (kl_je - kl_j0) : @TJ@);
@TILE@
@GRAM@
        for (int kl_e = threadIdx.x; kl_e < @TJ@ * @TJ@; kl_e += KL_BLOCK) {
            const int kl_r = kl_e / @TJ@, kl_c = kl_e - kl_r * @TJ@;
            kl_bt[kl_e] = (kl_r < kl_cnt && kl_c0 + kl_c < width) ? kl_ld(a@BPOS@ + (kl_j0 + kl_r) * width + kl_c0 + kl_c)
                                                                  : T(0);
        }
        __syncthreads();
        {
            T* kl_krow = kl_k + threadIdx.x * (@TJ@ + 1);
            int kl_jj = 0;
            if (kl_active) {
#pragma unroll @UNROLL@
                for (; kl_jj < kl_cnt; kl_jj++) {
                    const kl_i64 j = kl_j0 + kl_jj;
                    (void)j;
@ROW@
@BODY@
                    kl_krow[kl_jj] = @KVALUE@;
                }
            }
            for (; kl_jj < @TJ@; kl_jj++) kl_krow[kl_jj] = T(0);
        }
        __syncthreads();
        {
            T kl_t[@RM@][@RN@];
            for (int r = 0; r < @RM@; r++)
                for (int c = 0; c < @RN@; c++) kl_t[r][c] = T(0);
            kl_block_mma<@RM@, @RN@>(kl_t, kl_k, @TJ@ + 1, 1, kl_bt, @TJ@, @TJ@);
            for (int r = 0; r < @RM@; r++)
                for (int c = 0; c < @RN@; c++) kl_acc[r][c] += TACC(kl_t[r][c]);
        }
        __syncthreads();
    }
    }
    const int kl_rs = KL_BLOCK / @RM@, kl_rg = (int)threadIdx.x % kl_rs, kl_cg = (int)threadIdx.x / kl_rs;
    const kl_i64 kl_stride = (kl_i64)gridDim.y * nx;
    double* kl_st = kl_scratch + (kl_i64)blockIdx.z * @TJ@ * kl_stride;
    for (int r = 0; r < @RM@; r++) {
        const kl_i64 i = kl_ib + kl_rg + kl_rs * r;
        if (i >= kl_iend) continue;
        for (int c = 0; c < @RN@; c++) {
            const int kl_c = kl_cg * @RN@ + c;
            if (kl_c0 + kl_c >= width) continue;
            if (gridDim.y == 1) kl_out0[i * width + kl_c0 + kl_c] = kl_cv(T(kl_acc[r][c]));
            else kl_st[kl_c * kl_stride + (kl_i64)blockIdx.y * nx + i] = (double)kl_acc[r][c];
        }
    }
}
