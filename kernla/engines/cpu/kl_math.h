// kl_math.h -- inline, vectorisable math for kernla's generated CPU kernels.
//
// This text is pasted verbatim into every generated translation unit, so it includes no
// project file; it needs C++17 (hex float literals) or GNU C++. Everything is `static inline`
// and branch-free, so that gcc >= 12 vectorises loops calling these functions (clang not
// checked) under `#pragma omp simd` at -O3 without -ffast-math (which drops inf/NaN semantics).
//
// kl_exp / kl_log are own polynomial implementations (minimax coefficients fitted for this
// file by a Remez exchange). Error bounds over the whole range, subnormal inputs and results
// included: float <= 2 ulp, double <= 4 ulp (measured: exp 0.88 / 0.90 ulp, log 0.87 / 0.85
// ulp with FMA hardware; about 1.2 ulp without). IEEE special values:
//   exp(-inf)=0, exp(+inf)=+inf, exp(nan)=nan, overflow -> +inf, underflow -> 0
//   log(+-0)=-inf, log(x<0)=nan, log(+inf)=+inf, log(nan)=nan
// kl_exp(float) costs ~20 vector instructions (16 lanes on AVX-512), 11 of them FMA/MUL.
// The other kl_* functions are thin wrappers over <cmath>; without -ffast-math gcc does not
// vectorise loops that call std::sin/cos/asin/acos/atan/atan2/pow (they stay correct, just
// scalar).
#ifndef KERNLA_KL_MATH_H
#define KERNLA_KL_MATH_H

#include <cmath>
#include <cstdint>

// Fused multiply-add where the hardware has it; plain a*b+c otherwise (a software fma
// would be a slow library call). The algorithms below are accurate either way.
#if defined(__FP_FAST_FMAF) || defined(__FMA__) || defined(__aarch64__)
#define KL_FMAF(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define KL_FMAF(a, b, c) ((a) * (b) + (c))
#endif
#if defined(__FP_FAST_FMA) || defined(__FMA__) || defined(__aarch64__)
#define KL_FMA(a, b, c) __builtin_fma((a), (b), (c))
#else
#define KL_FMA(a, b, c) ((a) * (b) + (c))
#endif

static inline uint32_t kl_bits_(float x) { uint32_t u; __builtin_memcpy(&u, &x, sizeof u); return u; }
static inline float kl_float_(uint32_t u) { float x; __builtin_memcpy(&x, &u, sizeof x); return x; }
static inline uint64_t kl_bits_(double x) { uint64_t u; __builtin_memcpy(&u, &x, sizeof u); return u; }
static inline double kl_double_(uint64_t u) { double x; __builtin_memcpy(&x, &u, sizeof x); return x; }

// ---------------------------------------------------------------------------------------
// exp(x) = 2^n * e^r,  n = round(x / ln2),  r = x - n ln2 in [-ln2/2, ln2/2].
// e^r = 1 + r + r^2 q(r) (minimax). 2^n is applied as two factors 2^n1 * 2^n2
// (n1 = floor(n/2)), both normal numbers, so results that overflow or are subnormal come out
// right with a single rounding. x is clamped first so the exponent arithmetic stays in range;
// the clamps are integer min on the bit pattern (one cheap op each, no compare + blend):
// unsigned order on negative floats, signed order on positive ones. They map NaN to a bound,
// so NaN is put back by one select at the end.
// ---------------------------------------------------------------------------------------
static inline float kl_exp(float x) {
    uint32_t u = kl_bits_(x);
    u = (u < 0xC2D00000u) ? u : 0xC2D00000u;                             // x < -104 -> -104
    u = (uint32_t)(((int32_t)u < 0x42B20000) ? (int32_t)u : 0x42B20000);  // x > 89   -> 89
    const float xc = kl_float_(u);  // exp(-104) < 2^-150 rounds to 0, exp(89) overflows
    // kd = n + 1.5*2^23 + 254: its low mantissa bits hold v = n + 254 in [104, 382]
    const float shift = 0x1.8p23f + 254.0f;
    const float kd = KL_FMAF(xc, 0x1.715476p+0f, shift);
    const float n = kd - shift;
    float r = KL_FMAF(n, -0x1.62e4p-1f, xc);     // n * ln2_hi is exact (15-bit ln2_hi)
    r = KL_FMAF(n, -0x1.7f7d1cp-20f, r);         // ln2_lo
    float p = 0x1.6a2352p-10f;
    p = KL_FMAF(p, r, 0x1.123a6cp-7f);
    p = KL_FMAF(p, r, 0x1.5558f4p-5f);
    p = KL_FMAF(p, r, 0x1.55549p-3f);
    p = KL_FMAF(p, r, 0x1.fffffcp-2f);
    p = KL_FMAF(p, r, 1.0f);
    p = KL_FMAF(p, r, 1.0f);
    // bits(kd) = 0x4B400000 + v; the constant part vanishes in the shifts below
    const uint32_t kb = kl_bits_(kd);
    const uint32_t s1 = (kb >> 1) << 23;   // 2^(floor(n/2)):  exponent field floor(v/2)
    const uint32_t s2 = (kb << 23) - s1;   // 2^(ceil(n/2)):   exponent field v - floor(v/2)
    const float y = (p * kl_float_(s1)) * kl_float_(s2);
    return (x != x) ? x : y;
}

static inline double kl_exp(double x) {
    uint64_t u = kl_bits_(x);
    u = (u < 0xC087500000000000ull) ? u : 0xC087500000000000ull;   // x < -746 -> -746
    u = (uint64_t)(((int64_t)u < (int64_t)0x4086300000000000ll)
                       ? (int64_t)u : (int64_t)0x4086300000000000ll);  // x > 710 -> 710
    const double xc = kl_double_(u);  // exp(-746) < 2^-1075 rounds to 0, exp(710) overflows
    const double shift = 0x1.8p52 + 2046.0;  // low bits of kd: v = n + 2046 in [970, 3070]
    const double kd = KL_FMA(xc, 0x1.71547652b82fep+0, shift);
    const double n = kd - shift;
    double r = KL_FMA(n, -0x1.62e42feep-1, xc);         // 32-bit ln2_hi: n * ln2_hi exact
    r = KL_FMA(n, -0x1.a39ef35793c76p-33, r);            // ln2_lo
    double p = 0x1.af63a06ec766ep-26;
    p = KL_FMA(p, r, 0x1.28b4706afed1bp-22);
    p = KL_FMA(p, r, 0x1.71ddf6757d7e1p-19);
    p = KL_FMA(p, r, 0x1.a019934df6373p-16);
    p = KL_FMA(p, r, 0x1.a01a01b02246cp-13);
    p = KL_FMA(p, r, 0x1.6c16c18625d6ap-10);
    p = KL_FMA(p, r, 0x1.111111110f7d5p-7);
    p = KL_FMA(p, r, 0x1.555555555034dp-5);
    p = KL_FMA(p, r, 0x1.5555555555558p-3);
    p = KL_FMA(p, r, 0x1.0000000000009p-1);
    p = KL_FMA(p, r, 1.0);
    p = KL_FMA(p, r, 1.0);
    const uint64_t kb = kl_bits_(kd);        // 0x4338000000000000 + v
    const uint64_t s1 = (kb >> 1) << 52;     // 2^(floor(n/2))
    const uint64_t s2 = (kb << 52) - s1;     // 2^(ceil(n/2))
    const double y = (p * kl_double_(s1)) * kl_double_(s2);
    return (x != x) ? x : y;
}

// ---------------------------------------------------------------------------------------
// log(x) = e ln2 + log(m),  x = 2^e m,  m in [sqrt(1/2), sqrt(2)),  f = m - 1 (exact).
// float : log(1+f) = f + f^2 Q(f)                               (minimax Q, degree 8)
// double: s = f/(2+f), log(1+f) = f - h + s (h + z U(z)), h = f^2/2, z = s^2  (minimax U)
// e * ln2_hi is exact (short ln2_hi), so the only roundings after the polynomial are f + lo
// and the final sum.
// Subnormal inputs are scaled by 2^24 (float) / 2^54 (double) first.
// ---------------------------------------------------------------------------------------
static inline float kl_log(float x) {
    const bool sub = x < 0x1p-126f;
    const float xs = sub ? x * 0x1p24f : x;
    const float eadj = sub ? -24.0f - 127.0f : -127.0f;
    const uint32_t t = kl_bits_(xs) + 0x004AFB0Du;        // + bits(1.0) - bits(sqrt(1/2))
    const float e = (float)(int32_t)(t >> 23) + eadj;
    const float f = kl_float_((t & 0x007FFFFFu) + 0x3F3504F3u) - 1.0f;
    float q = -0x1.382fdep-4f;
    q = KL_FMAF(q, f, 0x1.085e66p-3f);
    q = KL_FMAF(q, f, -0x1.0f4232p-3f);
    q = KL_FMAF(q, f, 0x1.226f16p-3f);
    q = KL_FMAF(q, f, -0x1.5425fp-3f);
    q = KL_FMAF(q, f, 0x1.99a406p-3f);
    q = KL_FMAF(q, f, -0x1.00042ep-2f);
    q = KL_FMAF(q, f, 0x1.55555p-2f);
    q = KL_FMAF(q, f, -0x1.fffff8p-2f);
    const float lo = KL_FMAF(f * f, q, e * 0x1.7f7d1cp-20f);
    float y = KL_FMAF(e, 0x1.62e4p-1f, f + lo);  // e * ln2_hi is exact
    y = (xs < __builtin_inff()) ? y : xs;                          // +inf -> +inf, nan -> nan
    y = (x > 0.0f) ? y : ((x == 0.0f) ? -__builtin_inff() : __builtin_nanf(""));
    return y;
}

static inline double kl_log(double x) {
    const bool sub = x < 0x1p-1022;
    const double xs = sub ? x * 0x1p54 : x;
    const double eadj = sub ? -54.0 : 0.0;
    const uint64_t t = kl_bits_(xs) + 0x00095F619980C433ull;  // + bits(1.0) - bits(sqrt(1/2))
    // exponent via the 2^52 trick (portable vector int64 -> double)
    const double e = (kl_double_((t >> 52) | 0x4330000000000000ull) - (0x1p52 + 1023.0)) + eadj;
    const double f = kl_double_((t & 0x000FFFFFFFFFFFFFull) + 0x3FE6A09E667F3BCDull) - 1.0;
    const double s = f / (2.0 + f);
    const double z = s * s;
    double u = 0x1.2f133c00e8fd4p-3;
    u = KL_FMA(u, z, 0x1.39a0702024cb5p-3);
    u = KL_FMA(u, z, 0x1.74664adcbd307p-3);
    u = KL_FMA(u, z, 0x1.c71c51d37c1e2p-3);
    u = KL_FMA(u, z, 0x1.249249422dc01p-2);
    u = KL_FMA(u, z, 0x1.999999997f9ddp-2);
    u = KL_FMA(u, z, 0x1.5555555555593p-1);
    const double h = 0.5 * f * f;
    const double lo = KL_FMA(s, KL_FMA(z, u, h), KL_FMA(e, 0x1.a39ef35793c76p-33, -h));
    double y = KL_FMA(e, 0x1.62e42feep-1, f + lo);  // e * ln2_hi is exact
    y = (xs < __builtin_inf()) ? y : xs;
    y = (x > 0.0) ? y : ((x == 0.0) ? -__builtin_inf() : __builtin_nan(""));
    return y;
}

// ---------------------------------------------------------------------------------------
// thin wrappers
// ---------------------------------------------------------------------------------------
static inline float kl_sqrt(float x) { return std::sqrt(x); }
static inline double kl_sqrt(double x) { return std::sqrt(x); }
// 1/sqrt(x), with 0 at 0 (as KeOps' Rsqrt)
static inline float kl_rsqrt(float x) { return (x == 0.0f) ? 0.0f : 1.0f / std::sqrt(x); }
static inline double kl_rsqrt(double x) { return (x == 0.0) ? 0.0 : 1.0 / std::sqrt(x); }
static inline float kl_sin(float x) { return std::sin(x); }
static inline double kl_sin(double x) { return std::sin(x); }
static inline float kl_cos(float x) { return std::cos(x); }
static inline double kl_cos(double x) { return std::cos(x); }
static inline float kl_asin(float x) { return std::asin(x); }
static inline double kl_asin(double x) { return std::asin(x); }
static inline float kl_acos(float x) { return std::acos(x); }
static inline double kl_acos(double x) { return std::acos(x); }
static inline float kl_atan(float x) { return std::atan(x); }
static inline double kl_atan(double x) { return std::atan(x); }
static inline float kl_atan2(float y, float x) { return std::atan2(y, x); }
static inline double kl_atan2(double y, double x) { return std::atan2(y, x); }
static inline float kl_pow(float x, float y) { return std::pow(x, y); }
static inline double kl_pow(double x, double y) { return std::pow(x, y); }
static inline float kl_floor(float x) { return std::floor(x); }
static inline double kl_floor(double x) { return std::floor(x); }
static inline float kl_abs(float x) { return std::fabs(x); }
static inline double kl_abs(double x) { return std::fabs(x); }
// min/max propagate NaN from either argument
static inline float kl_min(float a, float b) { return (a < b || a != a) ? a : b; }
static inline double kl_min(double a, double b) { return (a < b || a != a) ? a : b; }
static inline float kl_max(float a, float b) { return (a > b || a != a) ? a : b; }
static inline double kl_max(double a, double b) { return (a > b || a != a) ? a : b; }
// -1, 0 or +1 (0 at +-0; NaN stays NaN)
static inline float kl_sign(float x) { return (x > 0.0f) ? 1.0f : ((x < 0.0f) ? -1.0f : x * 0.0f); }
static inline double kl_sign(double x) { return (x > 0.0) ? 1.0 : ((x < 0.0) ? -1.0 : x * 0.0); }
// x^n for integer n. Branch-free square-and-multiply over the bits of |n| < 64, which folds
// to a few multiplies when n is a compile-time constant (and stays vectorisable when it is
// not); |n| >= 64 goes to std::pow.
static inline float kl_powi(float x, int n) {
    const unsigned m = (n < 0) ? 0u - (unsigned)n : (unsigned)n;
    if (m >= 64u) return std::pow(x, (float)n);
    float r = (m & 1u) ? x : 1.0f;
    float b = x * x;
    r = (m & 2u) ? r * b : r;  b = b * b;
    r = (m & 4u) ? r * b : r;  b = b * b;
    r = (m & 8u) ? r * b : r;  b = b * b;
    r = (m & 16u) ? r * b : r; b = b * b;
    r = (m & 32u) ? r * b : r;
    return (n < 0) ? 1.0f / r : r;
}
static inline double kl_powi(double x, int n) {
    const unsigned m = (n < 0) ? 0u - (unsigned)n : (unsigned)n;
    if (m >= 64u) return std::pow(x, (double)n);
    double r = (m & 1u) ? x : 1.0;
    double b = x * x;
    r = (m & 2u) ? r * b : r;  b = b * b;
    r = (m & 4u) ? r * b : r;  b = b * b;
    r = (m & 8u) ? r * b : r;  b = b * b;
    r = (m & 16u) ? r * b : r; b = b * b;
    r = (m & 32u) ? r * b : r;
    return (n < 0) ? 1.0 / r : r;
}

// round(x, d): x rounded to d decimals, halves away from zero (as kernla's Round operation).
// 10^d is taken in double (exact for |d| <= 22, so correctly rounded in T), as in the CUDA prelude;
// d is a literal in generated code, so it folds to a constant.
static inline float kl_round(float x, int d) {
    const float scale = (float)kl_powi(10.0, d), y = x * scale;
    const float r = (y < 0.0f ? -std::floor(-y + 0.5f) : std::floor(y + 0.5f)) / scale;
    // an overflowing 10^d or x 10^d leaves x (already round); an underflowing 10^d gives 0
    return (scale == 0.0f) ? x * 0.0f : (std::fabs(y) < HUGE_VALF && scale < HUGE_VALF) ? r : x;
}
static inline double kl_round(double x, int d) {
    const double scale = kl_powi(10.0, d), y = x * scale;
    const double r = (y < 0.0 ? -std::floor(-y + 0.5) : std::floor(y + 0.5)) / scale;
    return (scale == 0.0) ? x * 0.0 : (std::fabs(y) < HUGE_VAL && scale < HUGE_VAL) ? r : x;
}

#endif  // KERNLA_KL_MATH_H
