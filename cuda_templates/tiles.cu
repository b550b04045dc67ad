// kernla CUDA matrix-multiply tiles (after the prelude): a block's register-blocked product of two
// shared-memory tiles, the Gram tile of one inner product, and nothing else.
//
// Thread layout of a (KL_BLOCK rows x TJ columns) tile, TJ = RM * RN: thread t owns the rows
// rg + RS * r (r < RM) and the columns cg * RN + c (c < RN), rg = t % RS, cg = t / RS, RS = KL_BLOCK / RM.
// The lanes of a warp share cg (one broadcast read of the B operand) and read consecutive rows of the A
// operand (its row stride 1 or TJ + 1 words: no bank conflict either way).

// C[r][c] += sum_{k < kc} A[(rg + RS r) * ra + k * ka] * B[k * ldb + cg * RN + c]
template <int RM, int RN>
__device__ __forceinline__ void kl_block_mma(T (&C)[RM][RN], const T* A, int ra, int ka, const T* B, int ldb, int kc) {
    const int RS = KL_BLOCK / RM, rg = (int)threadIdx.x % RS, cg = (int)threadIdx.x / RS;
    for (int k = 0; k < kc; k++) {
        T a[RM], b[RN];
#pragma unroll
        for (int r = 0; r < RM; r++) a[r] = A[(rg + RS * r) * ra + k * ka];
#pragma unroll
        for (int c = 0; c < RN; c++) b[c] = B[k * ldb + cg * RN + c];
#pragma unroll
        for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < RN; c++) C[r][c] = a[r] * b[c] + C[r][c];
    }
}

// stage components [k0, k0 + KC) of the block's rows (xs: KC x (KL_BLOCK + 1), k-major) and of the tile's TJ
// columns (ys: KC x TJ); rows from iend on, columns from cnt on and components from D on read as 0
template <int KC>
__device__ __forceinline__ void kl_stage_chunk(const T* __restrict__ a, const T* __restrict__ b, kl_i64 D, kl_i64 ib,
                                               kl_i64 iend, kl_i64 j0, int cnt, kl_i64 k0, int TJ, T* xs, T* ys) {
    const int LX = KL_BLOCK + 1;
    for (int e = threadIdx.x; e < KL_BLOCK * KC; e += KL_BLOCK) {
        const int r = e / KC, k = e - r * KC;
        xs[k * LX + r] = (ib + r < iend && k0 + k < D) ? a[(ib + r) * D + k0 + k] : T(0);
    }
    for (int e = threadIdx.x; e < TJ * KC; e += KL_BLOCK) {
        const int c = e / KC, k = e - c * KC;
        ys[k * TJ + c] = (c < cnt && k0 + k < D) ? b[(j0 + c) * D + k0 + k] : T(0);
    }
}

// the Gram tile's entry (row, col) from the inner product v: v itself, or with norms (na not null) the squared
// distance max(na + nb - 2 v, 0) (NaN kept; 0 outside the block's rows and the tile's columns)
__device__ __forceinline__ T kl_gram_value(T v, const T* na, const T* nb, kl_i64 ib, kl_i64 iend, kl_i64 j0, int cnt,
                                           int row, int col) {
    if (na == nullptr) return v;
    const T d = (ib + row < iend && col < cnt) ? na[ib + row] + nb[j0 + col] - T(2) * v : T(0);
    return d < T(0) ? T(0) : d;
}

// G[r * (TJ + 1) + c] = <a_{ib + r}, b_{j0 + c}> for r < KL_BLOCK, c < TJ, or, with norms (na, nb not null), the
// squared distance max(na + nb - 2 <a, b>, 0) (NaN kept); rows from iend on and columns from cnt on are 0.
// a is (nx, D), b (ny, D), row-major, in T. Every thread of the block calls it (barriers inside, one at the end):
// KC components of the block's rows and of the tile's columns are staged at a time in xs (KC x (KL_BLOCK + 1))
// and ys (KC x TJ).
template <int RM, int RN, int KC>
__device__ void kl_gram_tile(const T* __restrict__ a, const T* __restrict__ b, const T* na, const T* nb, kl_i64 D,
                             kl_i64 ib, kl_i64 iend, kl_i64 j0, int cnt, T* xs, T* ys, T* G) {
    const int TJ = RM * RN, RS = KL_BLOCK / RM, LX = KL_BLOCK + 1;
    T acc[RM][RN];
#pragma unroll
    for (int r = 0; r < RM; r++)
#pragma unroll
        for (int c = 0; c < RN; c++) acc[r][c] = T(0);
    for (kl_i64 k0 = 0; k0 < D; k0 += KC) {
        if (k0 > 0) __syncthreads();  // the last chunk is consumed
        kl_stage_chunk<KC>(a, b, D, ib, iend, j0, cnt, k0, TJ, xs, ys);
        __syncthreads();
        kl_block_mma<RM, RN>(acc, xs, 1, LX, ys, TJ, KC);
    }
    const int rg = (int)threadIdx.x % RS, cg = (int)threadIdx.x / RS;
#pragma unroll
    for (int r = 0; r < RM; r++)
#pragma unroll
        for (int c = 0; c < RN; c++)
            G[(rg + RS * r) * (TJ + 1) + cg * RN + c] =
                kl_gram_value(acc[r][c], na, nb, ib, iend, j0, cnt, rg + RS * r, cg * RN + c);
    __syncthreads();
}

#if defined(KL_DTYPE_F32)
// ---------------------------------------------------------------------------------------------
// TF32 tensor cores (opt-in, float32 data): the Gram tile of kl_gram_tile<8, 4, 8> by mma.sync m16n8k8.
// Warp w computes rows 32 w .. 32 w + 31 (two m16 tiles) x the 32 columns (four n8 tiles). Lane l = 4 g + t
// holds, per (m tile mt, n tile nt), the accumulators of rows 32 w + 16 mt + g (+ 8) and columns 8 nt + 2 t (+ 1)
// (PTX ISA, "Matrix fragments for mma.m16n8k8" with .tf32). The operands are rounded to TF32 (10-bit mantissa,
// round to nearest, ties away), products and sums are float32.
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ unsigned kl_tf32(float x) {
#if defined(__CUDA_ARCH__)
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#else  // the emulator: the same rounding on the bits (finite values)
    unsigned u;
    __builtin_memcpy(&u, &x, 4);
    return (u + 0x1000u) & 0xFFFFE000u;
#endif
}

#if !defined(__CUDA_ARCH__)
__device__ __forceinline__ float kl_tf32_value(unsigned u) {
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
#endif

// C[mt][nt][e] += the warp's (32 x 32) block of A (rows from xs, k-major, rows LX apart) times B (ys, TJ = 32
// columns), over kc (a multiple of 8) components
__device__ __forceinline__ void kl_warp_mma_tf32(float (&C)[2][4][4], const float* xs, int LX, const float* ys,
                                                 int kc) {
    const int lane = (int)threadIdx.x % 32, w = (int)threadIdx.x / 32, g = lane / 4, t = lane % 4;
    for (int k8 = 0; k8 < kc; k8 += 8) {
#if defined(__CUDA_ARCH__)
        unsigned a[2][4], b[4][2];
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            const int r = 32 * w + 16 * mt + g;
            a[mt][0] = kl_tf32(xs[(k8 + t) * LX + r]);
            a[mt][1] = kl_tf32(xs[(k8 + t) * LX + r + 8]);
            a[mt][2] = kl_tf32(xs[(k8 + t + 4) * LX + r]);
            a[mt][3] = kl_tf32(xs[(k8 + t + 4) * LX + r + 8]);
        }
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            b[nt][0] = kl_tf32(ys[(k8 + t) * 32 + 8 * nt + g]);
            b[nt][1] = kl_tf32(ys[(k8 + t + 4) * 32 + 8 * nt + g]);
        }
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
                asm volatile(
                    "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                    "{%8, %9}, {%0, %1, %2, %3};"
                    : "+f"(C[mt][nt][0]), "+f"(C[mt][nt][1]), "+f"(C[mt][nt][2]), "+f"(C[mt][nt][3])
                    : "r"(a[mt][0]), "r"(a[mt][1]), "r"(a[mt][2]), "r"(a[mt][3]), "r"(b[nt][0]), "r"(b[nt][1]));
#else  // the emulator: each lane computes its own accumulators from the same rounded operands
        for (int mt = 0; mt < 2; mt++)
            for (int nt = 0; nt < 4; nt++)
                for (int e = 0; e < 4; e++) {
                    const int r = 32 * w + 16 * mt + g + 8 * (e / 2), c = 8 * nt + 2 * t + e % 2;
                    float s = 0.0f;
                    for (int k = k8; k < k8 + 8; k++)
                        s += kl_tf32_value(kl_tf32(xs[k * LX + r])) * kl_tf32_value(kl_tf32(ys[k * 32 + c]));
                    C[mt][nt][e] += s;
                }
#endif
    }
}

// kl_gram_tile<8, 4, 8> (same arguments, same G) with the products on TF32 tensor cores
__device__ void kl_gram_tile_tf32(const float* __restrict__ a, const float* __restrict__ b, const float* na,
                                  const float* nb, kl_i64 D, kl_i64 ib, kl_i64 iend, kl_i64 j0, int cnt, float* xs,
                                  float* ys, float* G) {
    const int TJ = 32, KC = 8, LX = KL_BLOCK + 1;
    float acc[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][nt][e] = 0.0f;
    for (kl_i64 k0 = 0; k0 < D; k0 += KC) {
        if (k0 > 0) __syncthreads();  // the last chunk is consumed
        kl_stage_chunk<KC>(a, b, D, ib, iend, j0, cnt, k0, TJ, xs, ys);
        __syncthreads();
        kl_warp_mma_tf32(acc, xs, LX, ys, KC);
    }
    const int lane = (int)threadIdx.x % 32, w = (int)threadIdx.x / 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int row = 32 * w + 16 * mt + g + 8 * (e / 2), col = 8 * nt + 2 * t + e % 2;
                G[row * (TJ + 1) + col] = kl_gram_value(acc[mt][nt][e], na, nb, ib, iend, j0, cnt, row, col);
            }
    __syncthreads();
}
#endif
