// kernla CUDA prelude: types, conversions and the kl_* maths functions used by generated code.
//
// Self-contained on purpose: it includes no header, so the same text compiles under NVRTC (through
// CuPy, with no standard library) and under nvcc. The generator puts one of
//   #define KL_DTYPE_F16 | KL_DTYPE_F32 | KL_DTYPE_F64
// (and KL_BLOCK, KL_MBLOCK) in front of it.
//
// Types
//   TIO   the type of the arrays in global memory: unsigned short (IEEE half bits), float, double
//   T     the type formulas are evaluated in: float for float16 and float32 data, double for float64
//   TACC  sums that outlive one j tile (double); sums within one tile use KL_TACC_IN (float for
//         float16/float32 data, so the inner loop never converts to double)
//   KL_INF  T infinity;  kl_i64 the index type (int64_t is #defined to it for the shared snippets)
//
// Numerics. CuPy compiles with -ftz=true, so float results below 2^-126 flush to zero, as in any
// float32 CUDA code built that way; double arithmetic is unaffected. kl_exp(float) is exp2f (one
// MUFU.EX2 under -ftz=true, 2 ulp) of x * log2(e): relative error about 2^-22 plus |x| * 2^-24 from
// rounding the product, which is the conditioning of exp itself; exp(-inf) = 0, exp(+inf) = inf,
// exp(NaN) = NaN, overflow gives inf.
// The generated code calls kl_exp2f on arguments it pre-scaled by log2(e) (folded into a constant or
// parameter factor when the formula has one), which saves the multiplication. Every other float
// function is CUDA's accurate single-precision one (not the __fast intrinsics).

#if defined(KL_DTYPE_F64)
typedef double T;
typedef double TIO;
#define KL_TACC_IN double
#define KL_INF (__longlong_as_double(0x7ff0000000000000LL))
#elif defined(KL_DTYPE_F32)
typedef float T;
typedef float TIO;
#define KL_TACC_IN float
#define KL_INF (__int_as_float(0x7f800000))
#elif defined(KL_DTYPE_F16)
typedef float T;
typedef unsigned short TIO;  // raw IEEE binary16 bits: no cuda_fp16.h needed
#define KL_TACC_IN float
#define KL_INF (__int_as_float(0x7f800000))
#else
#error "define KL_DTYPE_F16, KL_DTYPE_F32 or KL_DTYPE_F64"
#endif

typedef double TACC;
typedef long long kl_i64;
#undef int64_t
#define int64_t kl_i64

#define KL_LOG2E 1.4426950408889634

// ---------------------------------------------------------------------------------------------
// global memory <-> T
// ---------------------------------------------------------------------------------------------
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ float kl_h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short kl_f2h(float f) {  // round to nearest even
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#else  // host compilation of the same text (kernla's CPU emulation test of these kernels)
__device__ __forceinline__ float kl_h2f(unsigned short h) {
    _Float16 v;
    __builtin_memcpy(&v, &h, 2);
    return (float)v;
}
__device__ __forceinline__ unsigned short kl_f2h(float f) {
    const _Float16 v = (_Float16)f;
    unsigned short h;
    __builtin_memcpy(&h, &v, 2);
    return h;
}
#endif
__device__ __forceinline__ float kl_ld(const float* p) { return *p; }
__device__ __forceinline__ double kl_ld(const double* p) { return *p; }
__device__ __forceinline__ float kl_ld(const unsigned short* p) { return kl_h2f(*p); }
#if defined(KL_DTYPE_F16)
__device__ __forceinline__ TIO kl_cv(float x) { return kl_f2h(x); }
#else
__device__ __forceinline__ TIO kl_cv(T x) { return x; }
#endif

// ---------------------------------------------------------------------------------------------
// maths: float and double overloads
// ---------------------------------------------------------------------------------------------
// 2^x: exp2f, which under -ftz=true is the single instruction MUFU.EX2 (2 ulp)
__device__ __forceinline__ float kl_exp2f(float x) { return exp2f(x); }
__device__ __forceinline__ double kl_exp2f(double x) { return exp2(x); }
__device__ __forceinline__ float kl_exp(float x) { return kl_exp2f(x * (float)KL_LOG2E); }
__device__ __forceinline__ double kl_exp(double x) { return exp(x); }
__device__ __forceinline__ float kl_log(float x) { return logf(x); }
__device__ __forceinline__ double kl_log(double x) { return log(x); }
__device__ __forceinline__ float kl_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double kl_sqrt(double x) { return sqrt(x); }
// 1/sqrt(x) with 0 at 0 (KeOps' Rsqrt)
__device__ __forceinline__ float kl_rsqrt(float x) { return x == 0.0f ? 0.0f : rsqrtf(x); }
__device__ __forceinline__ double kl_rsqrt(double x) { return x == 0.0 ? 0.0 : rsqrt(x); }
__device__ __forceinline__ float kl_sin(float x) { return sinf(x); }
__device__ __forceinline__ double kl_sin(double x) { return sin(x); }
__device__ __forceinline__ float kl_cos(float x) { return cosf(x); }
__device__ __forceinline__ double kl_cos(double x) { return cos(x); }
__device__ __forceinline__ float kl_asin(float x) { return asinf(x); }
__device__ __forceinline__ double kl_asin(double x) { return asin(x); }
__device__ __forceinline__ float kl_acos(float x) { return acosf(x); }
__device__ __forceinline__ double kl_acos(double x) { return acos(x); }
__device__ __forceinline__ float kl_atan(float x) { return atanf(x); }
__device__ __forceinline__ double kl_atan(double x) { return atan(x); }
__device__ __forceinline__ float kl_atan2(float y, float x) { return atan2f(y, x); }
__device__ __forceinline__ double kl_atan2(double y, double x) { return atan2(y, x); }
__device__ __forceinline__ float kl_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double kl_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float kl_floor(float x) { return floorf(x); }
__device__ __forceinline__ double kl_floor(double x) { return floor(x); }
__device__ __forceinline__ float kl_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double kl_abs(double x) { return fabs(x); }
// min / max propagate a NaN from either argument
__device__ __forceinline__ float kl_min(float a, float b) { return (a < b || a != a) ? a : b; }
__device__ __forceinline__ double kl_min(double a, double b) { return (a < b || a != a) ? a : b; }
__device__ __forceinline__ float kl_max(float a, float b) { return (a > b || a != a) ? a : b; }
__device__ __forceinline__ double kl_max(double a, double b) { return (a > b || a != a) ? a : b; }
// -1, 0 or +1 (0 at +-0, NaN stays NaN)
__device__ __forceinline__ float kl_sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x * 0.0f); }
__device__ __forceinline__ double kl_sign(double x) { return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : x * 0.0); }
// x^n for an integer n (a literal in generated code, so the loop unrolls to a few multiplies)
__device__ __forceinline__ float kl_powi(float x, int n) {
    unsigned m = n < 0 ? 0u - (unsigned)n : (unsigned)n;
    if (m >= 64u) return powf(x, (float)n);
    float r = 1.0f, b = x;
#pragma unroll
    for (int k = 0; k < 6; k++) {
        if (m & 1u) r *= b;
        m >>= 1;
        if (m) b *= b;
    }
    return n < 0 ? 1.0f / r : r;
}
__device__ __forceinline__ double kl_powi(double x, int n) {
    unsigned m = n < 0 ? 0u - (unsigned)n : (unsigned)n;
    if (m >= 64u) return pow(x, (double)n);
    double r = 1.0, b = x;
#pragma unroll
    for (int k = 0; k < 6; k++) {
        if (m & 1u) r *= b;
        m >>= 1;
        if (m) b *= b;
    }
    return n < 0 ? 1.0 / r : r;
}
// round half away from zero at d decimals: sign(y) * floor(|y| + 1/2) with y = x * 10^d, then / 10^d;
// 10^d is kl_powi in double (exact for |d| <= 22, so correctly rounded in T), as in the CPU kl_math.h
// an overflowing 10^d or x 10^d leaves x (already round); an underflowing 10^d gives 0,
// as kernla's Round in NumPy and on the CPU
__device__ __forceinline__ float kl_round(float x, int d) {
    const float s = (float)kl_powi(10.0, d);
    const float y = x * s;
    const float r = kl_sign(y) * floorf(fabsf(y) + 0.5f) / s;
    return (s == 0.0f) ? x * 0.0f : (isfinite(y) && isfinite(s)) ? r : x;
}
__device__ __forceinline__ double kl_round(double x, int d) {
    const double s = kl_powi(10.0, d);
    const double y = x * s;
    const double r = kl_sign(y) * floor(fabs(y) + 0.5) / s;
    return (s == 0.0) ? x * 0.0 : (isfinite(y) && isfinite(s)) ? r : x;
}
