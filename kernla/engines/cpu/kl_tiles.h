// kernla CPU matrix-multiply tiles (included by template.cpp after the typedefs of T and TACC).
// One register-blocked micro-kernel, C (MR x NR) = A (MR x K, row stride lda) . B (K x NR, row stride ldb),
// NR = two 32-byte vectors; kl_gram fills a (rows x tile) block of inner products from B packed in
// panels of NR columns; kl_product_tile adds a (rows x ts) block of k times B (ts x E) to E sums per row.
// kl_gram_blas and kl_product_blas do the same by BLAS's ?gemm.
//
// None of these routines depends on the formula. With gcc, compiler.py compiles them once per prelude
// into an object every kernel links (KL_PRELUDE_OBJECT: that object's build; KL_PRELUDE_LINKED: a kernel
// that links it and sees the declarations only); compiled any other way, each kernel has its own copy.
#include <cstring>

static const int KL_VW = 32 / (int)sizeof(T);  // lanes of one vector
static const int KL_NR = 2 * KL_VW;            // columns of one panel
#if defined(__AVX512VL__)
static const int KL_MR = 12;  // rows of one micro-kernel call: 24 accumulators of the 32 vector registers
#else
static const int KL_MR = 6;  // rows of one micro-kernel call: 12 accumulators of the 16 vector registers
#endif

#if defined(KL_PRELUDE_OBJECT) || defined(KL_PRELUDE_LINKED)
#define KL_TILE_FN __attribute__((visibility("hidden")))  // one copy in the kernel's library, bound directly
#else
#define KL_TILE_FN static
#endif

// BLAS's ?gemm (Fortran, column-major), handed to the kernel at run time (tiles.py: scipy's cython_blas)
typedef void (*kl_gemm_t)(const char*, const char*, const int*, const int*, const int*, const T*, const T*,
                          const int*, const T*, const int*, const T*, T*, const int*);

// g[(i - ibeg) * ldg + c] = <a_i, b_j> for j = j0 - (j0 % KL_NR) + c, columns covering [j0, j0 + tj):
// ap rows [ibeg, iend) of a packed (kl_pack_rows), bp packed (panels, D, KL_NR). With na/nb (squared
// norms), the squared distance max(na_i + nb_j - 2 <a_i, b_j>, 0) instead (NaN kept).
KL_TILE_FN void kl_gram(int64_t D, const T* ap, const T* bp, const T* na, const T* nb, int64_t ibeg, int64_t iend,
                        int64_t j0, int64_t tj, T* g, int64_t ldg);
// kl_gram's block by BLAS: a (nx, D) and b (ny, D) row-major, g written from g + j0 % KL_NR as kl_gram does
KL_TILE_FN void kl_gram_blas(kl_gemm_t gemm, int64_t D, const T* a, const T* b, const T* na, const T* nb,
                             int64_t ibeg, int64_t iend, int64_t j0, int64_t tj, T* g, int64_t ldg);
// rows [0, rows) of A (K columns, row stride lda) packed in chunks of the micro-kernel's rows into out
KL_TILE_FN void kl_pack_rows(int64_t rows, int64_t K, const T* __restrict A, int64_t lda, T* __restrict out);
// acc[(i - ibeg) * E + e] += sum_jj k[(i - ibeg) * ldk + jj] * b[jj * E + e] by BLAS: straight into acc when
// it has T's precision, else through ctile (rows x sube) columns at a time
KL_TILE_FN void kl_product_blas(kl_gemm_t gemm, int64_t ibeg, int64_t iend, int64_t ts, const T* k, int64_t ldk,
                                const T* b, int64_t E, T* ctile, int64_t sube, TACC* acc);
// acc[(i - ibeg) * E + e] += sum_jj k[(i - ibeg) * ldk + jj] * b[jj * E + e] for e < E, jj < ts: k's block
// packed (kp, rows x ts), B's columns through a zero-padded panel (pack, ts x KL_NR), C in ctile (rows x KL_NR).
KL_TILE_FN void kl_product_tile(int64_t ibeg, int64_t iend, int64_t ts, const T* k, int64_t ldk, const T* b,
                                int64_t E, T* kp, T* pack, T* ctile, TACC* acc);

#if !defined(KL_PRELUDE_LINKED)
typedef T kl_vec __attribute__((vector_size(32)));

static inline kl_vec kl_vload(const T* p) {
    kl_vec v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

static const int64_t KL_KC = 128;  // terms per pass: a chunk of A and a panel's slice stay in L1 together

// C = A.B, or C += A.B with add; A packed k-major (A[k * MR + r]), one stream for the micro-kernel
template <int MR>
static inline void kl_micro(int64_t K, const T* __restrict A, const T* __restrict B, int64_t ldb, T* __restrict C,
                            int64_t ldc, bool add) {
    kl_vec c[MR][2] = {};
    for (int64_t k = 0; k < K; k++) {
        const kl_vec b0 = kl_vload(B + k * ldb), b1 = kl_vload(B + k * ldb + KL_VW);
        for (int r = 0; r < MR; r++) {
            // a scalar times a vector: every lane, a broadcast operand (no intrinsics needed); a * b + c is
            // one fused multiply-add where the target has them (gcc contracts it, -ffp-contract=fast)
            const T a = A[k * MR + r];
            c[r][0] = a * b0 + c[r][0];
            c[r][1] = a * b1 + c[r][1];
        }
    }
    for (int r = 0; r < MR; r++) {
        if (add) {
            c[r][0] += kl_vload(C + r * ldc);
            c[r][1] += kl_vload(C + r * ldc + KL_VW);
        }
        std::memcpy(C + r * ldc, &c[r][0], sizeof(kl_vec));
        std::memcpy(C + r * ldc + KL_VW, &c[r][1], sizeof(kl_vec));
    }
}

// Row chunks of the micro-kernel: KL_MR rows while they last, then 6, then the rest; chunk (r, m) of a
// packed block of K columns starts at r * K, element (r + i, k) at r * K + k * m + i.
template <typename F>
static inline void kl_chunks(int64_t rows, F&& f) {
    int64_t r = 0;
    for (; r + KL_MR <= rows; r += KL_MR) f(r, KL_MR);
    if (KL_MR > 6 && rows - r >= 6) {
        f(r, 6);
        r += 6;
    }
    if (r < rows) f(r, (int)(rows - r));
}

KL_TILE_FN void kl_pack_rows(int64_t rows, int64_t K, const T* __restrict A, int64_t lda, T* __restrict out) {
    kl_chunks(rows, [&](int64_t r, int m) {
        T* __restrict o = out + r * K;
        for (int64_t k = 0; k < K; k++)
            for (int i = 0; i < m; i++) o[k * m + i] = A[(r + i) * lda + k];
    });
}

// C rows [0, rows) (+)= columns [k0, k0 + kc) of the packed block Ap (K columns) times one panel B
static inline void kl_micro_rows(int64_t rows, int64_t K, int64_t k0, int64_t kc, const T* Ap, const T* B,
                                 int64_t ldb, T* C, int64_t ldc, bool add) {
    kl_chunks(rows, [&](int64_t r, int m) {
        const T* a = Ap + r * K + k0 * m;
        T* c = C + r * ldc;
        if (m == KL_MR) return kl_micro<KL_MR>(kc, a, B, ldb, c, ldc, add);
        switch (m) {  // kl_chunks makes no other sizes
            case 6: kl_micro<6>(kc, a, B, ldb, c, ldc, add); break;
            case 5: kl_micro<5>(kc, a, B, ldb, c, ldc, add); break;
            case 4: kl_micro<4>(kc, a, B, ldb, c, ldc, add); break;
            case 3: kl_micro<3>(kc, a, B, ldb, c, ldc, add); break;
            case 2: kl_micro<2>(kc, a, B, ldb, c, ldc, add); break;
            default: kl_micro<1>(kc, a, B, ldb, c, ldc, add); break;
        }
    });
}

// g[(i - ibeg) * ldg + jj] = max(na_i + nb_j - 2 g, 0) for j = j0 + jj < j0 + tj (NaN kept); nothing without na
static inline void kl_distances(const T* na, const T* nb, int64_t ibeg, int64_t iend, int64_t j0, int64_t tj, T* g,
                                int64_t ldg) {
    if (na == nullptr) return;
    for (int64_t i = ibeg; i < iend; i++) {
        T* __restrict gr = g + (i - ibeg) * ldg;
        const T nai = na[i];
        const T* __restrict nbj = nb + j0;
#pragma omp simd
        for (int64_t jj = 0; jj < tj; jj++) {
            const T d = nai + nbj[jj] - T(2) * gr[jj];
            gr[jj] = d < T(0) ? T(0) : d;
        }
    }
}

KL_TILE_FN void kl_gram(int64_t D, const T* ap, const T* bp, const T* na, const T* nb, int64_t ibeg, int64_t iend,
                        int64_t j0, int64_t tj, T* g, int64_t ldg) {
    const int64_t p0 = j0 / KL_NR, p1 = (j0 + tj + KL_NR - 1) / KL_NR;
    for (int64_t k0 = 0; k0 < D; k0 += KL_KC) {
        const int64_t kc = std::min<int64_t>(KL_KC, D - k0);
        for (int64_t p = p0; p < p1; p++)
            kl_micro_rows(iend - ibeg, D, k0, kc, ap, bp + (p * D + k0) * KL_NR, KL_NR, g + (p - p0) * KL_NR, ldg,
                          k0 > 0);
    }
    kl_distances(na, nb, ibeg, iend, j0, tj, g + j0 % KL_NR, ldg);
}

// C (m x n, row-major, row stride ldc) = alpha A (m x k, row stride lda) . op(B) (+ beta C), op(B) = B (k x n,
// row stride ldb) or, with bt, B' for B (n x k, row stride ldb). Row-major C is column-major C', C' = op(B)' A'.
static inline void kl_gemm_rm(kl_gemm_t gemm, bool bt, int64_t m, int64_t n, int64_t k, const T* A, int64_t lda,
                              const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
    const int im = (int)m, in = (int)n, ik = (int)k, ila = (int)lda, ilb = (int)ldb, ilc = (int)ldc;
    const T one = T(1);
    gemm(bt ? "T" : "N", "N", &in, &im, &ik, &one, B, &ilb, A, &ila, &beta, C, &ilc);
}

KL_TILE_FN void kl_gram_blas(kl_gemm_t gemm, int64_t D, const T* a, const T* b, const T* na, const T* nb,
                             int64_t ibeg, int64_t iend, int64_t j0, int64_t tj, T* g, int64_t ldg) {
    if (iend <= ibeg || tj <= 0) return;
    kl_gemm_rm(gemm, true, iend - ibeg, tj, D, a + ibeg * D, D, b + j0 * D, D, T(0), g + j0 % KL_NR, ldg);
    kl_distances(na, nb, ibeg, iend, j0, tj, g + j0 % KL_NR, ldg);
}

KL_TILE_FN void kl_product_blas(kl_gemm_t gemm, int64_t ibeg, int64_t iend, int64_t ts, const T* k, int64_t ldk,
                                const T* b, int64_t E, T* ctile, int64_t sube, TACC* acc) {
    const int64_t rows = iend - ibeg;
    if (rows <= 0 || ts <= 0) return;
    if constexpr (sizeof(TACC) == sizeof(T)) {
        (void)ctile;
        (void)sube;
        kl_gemm_rm(gemm, false, rows, E, ts, k, ldk, b, E, T(1), (T*)acc, E);
    } else {
        for (int64_t e0 = 0; e0 < E; e0 += sube) {
            const int64_t ne = std::min(sube, E - e0);
            kl_gemm_rm(gemm, false, rows, ne, ts, k, ldk, b + e0, E, T(0), ctile, ne);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t c = 0; c < ne; c++) acc[r * E + e0 + c] += TACC(ctile[r * ne + c]);
        }
    }
}

KL_TILE_FN void kl_product_tile(int64_t ibeg, int64_t iend, int64_t ts, const T* k, int64_t ldk, const T* b,
                                int64_t E, T* kp, T* pack, T* ctile, TACC* acc) {
    const int64_t rows = iend - ibeg;
    kl_pack_rows(rows, ts, k, ldk, kp);
    for (int64_t e0 = 0; e0 < E; e0 += KL_NR) {
        const int64_t ne = std::min<int64_t>(KL_NR, E - e0);
        for (int64_t jj = 0; jj < ts; jj++) {
            T* __restrict row = pack + jj * KL_NR;
            const T* __restrict src = b + jj * E + e0;
            for (int c = 0; c < KL_NR; c++) row[c] = c < ne ? src[c] : T(0);
        }
        for (int64_t k0 = 0; k0 < ts; k0 += KL_KC)
            kl_micro_rows(rows, ts, k0, std::min<int64_t>(KL_KC, ts - k0), kp, pack + k0 * KL_NR, KL_NR, ctile, KL_NR,
                          k0 > 0);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < ne; c++) acc[r * E + e0 + c] += TACC(ctile[r * KL_NR + c]);
    }
}
#endif  // !KL_PRELUDE_LINKED
