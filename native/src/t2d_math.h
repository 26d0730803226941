// Per-element and per-tensor math shared by the CPU and CUDA paths. Internal header.
#ifndef T2D_MATH_H
#define T2D_MATH_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "text2data.h"

#if defined(__CUDACC__)
#define T2D_HD __host__ __device__ __forceinline__
#else
#define T2D_HD inline
#endif

// alpha * (g_value - g_constraint). Where finite operands overflow it (alpha 1e308), it is held at +-DBL_MAX:
// min() with beta * n and relu() then give the lam the infinity gives (the reference's, the plain engine's), where
// an infinity would be refused as a non-finite loss; a non-finite g_value stays non-finite, and is refused.
T2D_HD double t2d_excess(double alpha, double g_value, double g_constraint) {
    double e = alpha * (g_value - g_constraint);
    if (isinf(e) && isfinite(g_value) && isfinite(g_constraint) && isfinite(alpha)) e = e > 0 ? DBL_MAX : -DBL_MAX;
    return e;
}

// lam from the tensor's reductions. excess = alpha * (g_value - g_constraint).
// minimum/relu propagate NaN like torch.minimum / torch.relu.
T2D_HD double t2d_lambda(double n, double dot, double excess, double beta) {
    double bn = beta * n;
    double phi = (excess != excess || excess < bn) ? excess : bn;
    double x = (phi - dot) / (1e-8 + n);
    return (x > 0.0 || x != x) ? x : 0.0;
}

// Whether a dtype code is a half type (bfloat16, float16): a fused step takes a check pass for those.
T2D_HD bool t2d_is_half(int32_t dtype) { return dtype == T2D_BFLOAT16 || dtype == T2D_FLOAT16; }

// Whether a fused step has a half-precision row.
inline bool t2d_has_half(const t2d_param* params, int32_t count) {
    for (int32_t i = 0; i < count; i++)
        if (t2d_is_half(params[i].dtype)) return true;
    return false;
}

// The per-element functors: accumulate (n, dot) and update g += lam * c.
template <typename Acc>
struct T2dReduceOp {
    T2D_HD static void apply(Acc& n, Acc& dot, Acc g, Acc c) {
        n += c * c;
        dot += g * c;
    }
};

template <typename V>
struct T2dUpdateOp {
    T2D_HD static V apply(V g, V c, V lam) { return g + lam * c; }
};

// Portable half-precision conversions (host side; CUDA uses its intrinsics).
static inline float t2d_bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t t2d_float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                          // round to nearest even
    return (uint16_t)(u >> 16);
}

static inline float t2d_f16_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { // subnormal: normalise
            int e = -1;
            do { e++; man <<= 1; } while ((man & 0x400u) == 0);
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t t2d_float_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);   // NaN
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // overflow (rounds to inf) or inf
    if (a < 0x38800000u) {                                     // subnormal or zero in half
        if (a < 0x33000000u) return (uint16_t)sign;            // rounds to zero
        uint32_t man = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(a >> 23);                      // 14..24
        uint32_t res = man >> (shift - 0 + 0);
        // value = man * 2^(e-150); half subnormal unit = 2^-24 -> shift = 126 - e_biased
        uint32_t rem = man & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (res & 1u))) res++;
        return (uint16_t)(sign | res);
    }
    // normal: rebias exponent, round mantissa to 10 bits (nearest even)
    uint32_t res = ((a >> 13) - ((127u - 15u) << 10));
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (res & 1u))) res++;
    return (uint16_t)(sign | res);
}

#endif
