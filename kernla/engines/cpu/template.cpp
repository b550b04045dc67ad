// kernla CPU reduction kernel, generated from kernla/engines/cpu/template.cpp.
// Slots (a NAME between two @) are filled by kernla/engines/cpu/source.py: the formula body comes from the
// shared C generator (kernla/formula/codegen.py), the accumulator from kernla/reductions.py.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <vector>
#include <omp.h>

@MATH@

typedef @T@ T;
typedef @TACC@ TACC;
@TILES@
// kernla: end of the prelude (compiler.py precompiles the text above once; it depends on T only)
#define KL_INF std::numeric_limits<T>::infinity()
#define MODE_@MODE@ 1
static const bool IS_PRODUCT = @IS_PRODUCT@;

static const int64_t TJ = @TJ@;    // columns per tile
static const int64_t IB = @IB@;    // rows per block
static const int64_t SUB = 256;    // columns per sub-tile of a many-column kernel product
static const int64_t LDK = SUB + 8;  // row stride of k on a sub-tile (not a multiple of 4 KiB: no L1 set conflicts)
static const int WIDTH = @WIDTH@;  // formula components per pair
static const int NSITES = @NSITES@;  // inner products computed by matrix-multiply tiles (kl_tiles.h)
static const int GEMM_ARG = @GEMM_ARG@;  // args[GEMM_ARG]: BLAS's ?gemm for the tiles and wide products, or null
static const int64_t LDG = TJ + 2 * KL_NR;  // row stride of one block of inner products
// scratch per thread: the formula on one tile, or k on one sub-tile for every row of a block; then B's
// panel and the C tile of a many-column product; then the inner products of the block for each site
static const int64_t BUF_F = std::max<int64_t>((WIDTH > 0 ? WIDTH : 1) * TJ, IS_PRODUCT ? IB * LDK : 0);
static const int64_t BUF_P = IS_PRODUCT ? IB * SUB + (SUB + IB) * KL_NR : 0;  // k packed, B's panel, C
static const int64_t BUF_G = BUF_F + BUF_P;            // the blocks of inner products, NSITES * IB * LDG
static const int64_t BUF_A = BUF_G + NSITES * IB * LDG;  // each site's rows of the block, packed
static const int64_t BUF = BUF_A + IB * @TILE_DIMS@;

struct Acc { @ACC_DECL@ };

static inline void acc_init(Acc& A) {
@ACC_INIT@
}
static inline void acc_merge(Acc& A, const Acc& B) {
@ACC_MERGE@
}
static inline void acc_final(const Acc& A, T* of, int64_t* oi) {
@ACC_FINAL@
}

#if MODE_PRODUCT
typedef TACC Slot;  // E running sums per row
#else
typedef Acc Slot;
#endif

// Fold columns [jbeg, jend) into the accumulators of rows [ibeg, iend).
static void run_block(const void** args, int64_t ny, int64_t E, int64_t ibeg, int64_t iend,
                      int64_t jbeg, int64_t jend, Slot* slots, T* buf) {
@UNPACK@
    const kl_gemm_t gemm = (kl_gemm_t)args[GEMM_ARG];
    (void)gemm;
#if MODE_PRODUCT
    const T* __restrict bmat = @B_PTR@;
    for (int64_t r = 0; r < (iend - ibeg) * E; r++) slots[r] = TACC(0);
#else
    for (int64_t i = ibeg; i < iend; i++) acc_init(slots[i - ibeg]);
#endif
@TILE_PACK@
    for (int64_t j0 = jbeg; j0 < jend; j0 += TJ) {
        const int64_t tj = std::min(TJ, jend - j0);
@TILE_FILL@
#if MODE_PRODUCT
        if (E > 1) {
            // several columns: k for all rows of the block on a sub-tile (kept in L2), then the
            // matrix product of that (rows x sub-tile) block by B's rows (B is (ny, E) row-major)
            for (int64_t sub0 = 0; sub0 < tj; sub0 += SUB) {
                const int64_t ts = std::min(SUB, tj - sub0);
                for (int64_t i = ibeg; i < iend; i++) {
@PRELOAD@
                    T* __restrict kb = buf + (i - ibeg) * LDK;
#pragma omp simd
                    for (int64_t jj = 0; jj < ts; jj++) {
                        const int64_t j = j0 + sub0 + jj;
@BODY@
                        kb[jj] = @STORE_K@;
                    }
                }
                T* kp = buf + BUF_F;
                if (gemm) {  // BLAS on the block (kp: float32's C, a sub-tile's columns at a time)
                    kl_product_blas(gemm, ibeg, iend, ts, buf, LDK, bmat + (j0 + sub0) * E, E, kp, SUB, slots);
                    continue;
                }
                kl_product_tile(ibeg, iend, ts, buf, LDK, bmat + (j0 + sub0) * E, E, kp, kp + IB * SUB,
                                      kp + IB * SUB + SUB * KL_NR, slots);
            }
            continue;
        }
#endif
        for (int64_t i = ibeg; i < iend; i++) {
@PRELOAD@
#if MODE_PRODUCT
            TACC* acc = slots + (i - ibeg) * E;
            if (E == 1) {  // one column: k_ij b_j folds inside the vector loop
                T s0 = T(0);
#pragma omp simd reduction(+ : s0)
                for (int64_t jj = 0; jj < tj; jj++) {
                    const int64_t j = j0 + jj;
@BODY@
                    s0 += @STORE_K@ * bmat[j];
                }
                acc[0] += TACC(s0);
                continue;
            }
#elif MODE_SUM
            // sums fold inside the vector loop
            Acc& A = slots[i - ibeg];
            @SUM_INIT@
#pragma omp simd reduction(+ : @SUM_VARS@)
            for (int64_t jj = 0; jj < tj; jj++) {
                const int64_t j = j0 + jj;
@BODY@
@SUM_ADD@
            }
@SUM_STORE@
#else
            Acc& A = slots[i - ibeg];
#endif
#if !MODE_SUM && !MODE_PRODUCT
            // every other case: the formula on this tile into buf (component c at buf + c * TJ),
            // then the reduction folds buf
#pragma omp simd
            for (int64_t jj = 0; jj < tj; jj++) {
                const int64_t j = j0 + jj;
@BODY@
@STORE@
            }
#if MODE_LSE
            Acc B;
            for (int c = 0; c < WIDTH; c++) {
                const T* __restrict v = buf + c * TJ;
                T mt = -KL_INF;
#pragma omp simd reduction(max : mt)
                for (int64_t jj = 0; jj < tj; jj++) mt = v[jj] > mt ? v[jj] : mt;
                // exp(v - mt), with exp(inf - inf) = 1 and exp(-inf - -inf) = 0 (see reductions.py)
                T s = T(0);
#pragma omp simd reduction(+ : s)
                for (int64_t jj = 0; jj < tj; jj++)
                    s += (v[jj] == mt) ? (v[jj] > -KL_INF ? T(1) : T(0)) : kl_exp(v[jj] - mt);
                mt = (s != s) ? T(0) : mt;  // a NaN value: keep it visible to the merge
                B.acc_m[c] = TACC(mt);
                B.acc_s[c] = TACC(s);
            }
            acc_merge(A, B);
#else
            for (int64_t jj = 0; jj < tj; jj++) {
@FOLD@
            }
#endif
#endif
        }
    }
}

static inline void finish_row(const Slot* slot, int64_t E, int64_t i, T* out_f, int64_t* out_i) {
#if MODE_PRODUCT
    for (int64_t e = 0; e < E; e++) out_f[i * E + e] = T(slot[e]);
#else
    acc_final(*slot, out_f + i * @OUT_WF@, out_i + i * @OUT_WI@);
#endif
}

// Reduce over j for rows 0..nx-1. args[p]: i-variables (nx, D), j-variables transposed (D, ny) but the B
// of a kernel product (ny, E), parameters (D,); after the variables, four arrays per tile site (see
// tiles.py). E: run-time width of the kernel product (1 otherwise).
// Returns 0, or 1 when memory ran out.
extern "C" int kl_reduce(int64_t nx, int64_t ny, const void** args, T* out_f, int64_t* out_i,
                         int64_t E, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    const int64_t slot_width = IS_PRODUCT ? E : 1;
    const int64_t nib = (nx + IB - 1) / IB;
    const int64_t ntiles = (ny + TJ - 1) / TJ;
    // few row blocks: also split the columns, and merge the partial accumulators in j order
    int64_t splits = 1;
    if (nib < 4 * nthreads) splits = std::max<int64_t>(1, std::min(ntiles, (4 * nthreads + nib - 1) / nib));
    const int64_t jchunk = ((ntiles + splits - 1) / splits) * TJ;
    splits = (ny + jchunk - 1) / jchunk;
    std::vector<Slot> parts, local;
    std::vector<T> bufs;
    try {
        if (splits > 1) parts.resize((size_t)(splits * nx * slot_width));
        local.resize((size_t)(nthreads * IB * slot_width));
        bufs.resize((size_t)(nthreads * BUF));
    } catch (const std::bad_alloc&) {
        return 1;
    }
    const int64_t ntasks = nib * splits;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t task = 0; task < ntasks; task++) {
        const int t = omp_get_thread_num();
        const int64_t ib = task / splits, s = task % splits;
        const int64_t ibeg = ib * IB, iend = std::min(nx, ibeg + IB);
        const int64_t jbeg = s * jchunk, jend = std::min(ny, jbeg + jchunk);
        Slot* slots = splits > 1 ? &parts[(size_t)((s * nx + ibeg) * slot_width)]
                                 : &local[(size_t)(t * IB * slot_width)];
        run_block(args, ny, E, ibeg, iend, jbeg, jend, slots, &bufs[(size_t)(t * BUF)]);
        if (splits == 1)
            for (int64_t i = ibeg; i < iend; i++) finish_row(slots + (i - ibeg) * slot_width, E, i, out_f, out_i);
    }
    if (splits > 1) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
        for (int64_t i = 0; i < nx; i++) {
            Slot* first = &parts[(size_t)(i * slot_width)];
            for (int64_t s = 1; s < splits; s++) {
                const Slot* other = &parts[(size_t)((s * nx + i) * slot_width)];
#if MODE_PRODUCT
                for (int64_t e = 0; e < E; e++) first[e] += other[e];
#else
                acc_merge(*first, *other);
#endif
            }
            finish_row(first, E, i, out_f, out_i);
        }
    }
    return 0;
}
