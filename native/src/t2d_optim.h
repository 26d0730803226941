// The optimizer updates of the fused step, per element, shared by the CPU and CUDA paths. Internal header.
//
// Each optimizer is one functor over the math type M (double for float64 tensors, float otherwise) with
// the same call: op(p, g, s0, s1, s2) updates the parameter p and up to three state values in place
// from the (projected) gradient g. The operation order mirrors libtorch's C++ optimizers
// (torch/csrc/api/src/optim/{adam,adamw,sgd}.cpp): the scalars are computed in double on the host side
// of the math, as libtorch computes them, and cast to M where libtorch passes them to a tensor op.
#ifndef T2D_OPTIM_H
#define T2D_OPTIM_H

#include <math.h>
#include <stdint.h>

#include "t2d_math.h"
#include "text2data.h"

// The per-element functions must inline into the loops (or these do not vectorise on the host).
#if defined(__CUDACC__)
#define T2D_HD_ELEM __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define T2D_HD_ELEM inline __attribute__((always_inline))
#else
#define T2D_HD_ELEM inline
#endif

#if defined(__CUDA_ARCH__)
// libtorch's CUDA kernels round as follows, and the device code below does the same, so that the fused optimizer
// follows libtorch's on a GPU as it does on the CPU: x.add_(y, alpha), addcmul and addcdiv are one fused multiply-add
// each (ATen's a + alpha * b, a + alpha * (b * c), a + alpha * (b / c), contracted by nvcc), and a division by a
// host scalar is a multiplication by its reciprocal computed in the math type (div_true_kernel_cuda). Separate
// libtorch kernels round between them: t2d_mul_rn keeps nvcc from fusing a product into the next addition.
__device__ __forceinline__ float t2d_mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double t2d_mul_rn(double a, double b) { return __dmul_rn(a, b); }
#else
template <typename M>
inline M t2d_mul_rn(M a, M b) { return a * b; }  // the host keeps the CPU order as written
#endif

// Adam and AdamW (decoupled). s0 = exp_avg, s1 = exp_avg_sq, s2 = max_exp_avg_sq (amsgrad).
template <typename M>
struct T2dAdamOp {
    M beta1, one_minus_beta1, beta2, one_minus_beta2, sqrt_bc2, inv_sqrt_bc2, eps, neg_step_size, weight_decay, decay;
    bool decoupled, amsgrad;

    // step: the step number being taken (the count after this step), >= 1.
    T2D_HD static T2dAdamOp make(const t2d_optimizer& o, int64_t step) {
        T2dAdamOp op;
        double bc1 = 1 - pow(o.beta1, (double)step);
        double bc2 = 1 - pow(o.beta2, (double)step);
        op.beta1 = (M)o.beta1;
        op.one_minus_beta1 = (M)(1 - o.beta1);
        op.beta2 = (M)o.beta2;
        op.one_minus_beta2 = (M)(1 - o.beta2);
        op.sqrt_bc2 = (M)sqrt(bc2);
        op.inv_sqrt_bc2 = (M)1 / op.sqrt_bc2;  // libtorch's CUDA division by the scalar sqrt(bc2)
        op.eps = (M)o.eps;
        op.neg_step_size = (M)(-(o.lr / bc1));
        op.decoupled = o.kind == T2D_ADAMW;
        op.weight_decay = (M)o.weight_decay;
        op.decay = (M)(1 - o.lr * o.weight_decay);
        op.amsgrad = (o.flags & T2D_AMSGRAD) != 0;
        return op;
    }

    // Every choice is a select of values computed on both sides (no branch), so that the loops vectorise; the
    // values selected are those of libtorch's branches.
    T2D_HD_ELEM void operator()(M& p, M g, M& m, M& v, M& vmax) const {
        const bool l2 = !decoupled && weight_decay != 0, decay_p = decoupled && weight_decay != 0;
        M pd = p * decay;                                         // AdamW: p.mul_(1 - lr * weight_decay)
        p = decay_p ? pd : p;
#if defined(__CUDA_ARCH__)  // libtorch's CUDA rounding (above)
        M gd = fma(weight_decay, p, g);                           // Adam: grad.add(p, weight_decay)
        g = l2 ? gd : g;
        m = fma(one_minus_beta1, g, m * beta1);                   // exp_avg.mul_(beta1).add_(grad, 1 - beta1)
        v = fma(one_minus_beta2, g * g, v * beta2);               // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
        M vm = (vmax > v || vmax != vmax) ? vmax : v;             // max_out(max_exp_avg_sq, exp_avg_sq, ...)
        vmax = amsgrad ? vm : vmax;
        M second = amsgrad ? vm : v;
        M denom = t2d_mul_rn(sqrt(second), inv_sqrt_bc2) + eps;   // (sqrt() / sqrt(bc2)).add_(eps)
        p = fma(neg_step_size, m / denom, p);                     // p.addcdiv_(exp_avg, denom, -step_size)
#else                       // libtorch's CPU kernels: no fused multiply-add, a true division
        M gd = g + weight_decay * p;                              // Adam: grad.add(p, weight_decay)
        g = l2 ? gd : g;
        m = m * beta1;                                            // exp_avg.mul_(beta1)
        m = m + one_minus_beta1 * g;                              //        .add_(grad, 1 - beta1)
        v = v * beta2;                                            // exp_avg_sq.mul_(beta2)
        v = v + one_minus_beta2 * g * g;                          //           .addcmul_(grad, grad, 1 - beta2)
        M vm = (vmax > v || vmax != vmax) ? vmax : v;             // max_out(max_exp_avg_sq, exp_avg_sq, ...)
        vmax = amsgrad ? vm : vmax;
        M second = amsgrad ? vm : v;
        M denom = sqrt(second) / sqrt_bc2 + eps;                  // (sqrt() / sqrt(bc2)).add_(eps)
        p = p + neg_step_size * m / denom;                        // p.addcdiv_(exp_avg, denom, -step_size)
#endif
    }
};

// SGD. s0 = momentum buffer (when momentum != 0).
template <typename M>
struct T2dSgdOp {
    M weight_decay, momentum, one_minus_dampening, neg_lr;
    bool has_momentum, nesterov, first;

    T2D_HD static T2dSgdOp make(const t2d_optimizer& o, int64_t step) {
        T2dSgdOp op;
        op.weight_decay = (M)o.weight_decay;
        op.momentum = (M)o.momentum;
        op.one_minus_dampening = (M)(1 - o.dampening);
        op.neg_lr = (M)(-1 * o.lr);
        op.has_momentum = o.momentum != 0;
        op.nesterov = (o.flags & T2D_NESTEROV) != 0;
        op.first = step == 1;  // libtorch: no state yet, the buffer is a clone of d_p
        return op;
    }

    T2D_HD_ELEM void operator()(M& p, M g, M& buf, M&, M&) const {  // selects, not branches: see T2dAdamOp
        M dw = g + weight_decay * p;                              // d_p.add(p, weight_decay)
        M d = weight_decay != 0 ? dw : g;
        M next = t2d_mul_rn(buf, momentum);  // buf.mul_(momentum); on CUDA its own kernel, not fused into the add
        next = next + one_minus_dampening * d;                    //    .add_(d_p, 1 - dampening)
        next = first ? d : next;                                  // the first step: torch::clone(d_p)
        buf = has_momentum ? next : buf;
        M nest = d + momentum * next;                             // d_p.add(buf, momentum)
        M dm = nesterov ? nest : next;
        d = has_momentum ? dm : d;
        p = p + neg_lr * d;                                       // p.add_(d_p, -lr)
    }
};

// One element i of the fused step, on either path. S is the storage type: T and the math type M, ld/st
// (convert, rounding to nearest even), bad (1 if a stored value is not finite) and proj (g + lam*c, each
// operation rounded on its own). Write: store the projected gradient (Proj), the parameter and the NS state
// values; else store nothing and return 1 if one of them would not be finite.
template <typename S, typename Op, int NS, bool Proj, bool Write>
T2D_HD_ELEM uint32_t t2d_step_elem(const Op& op, typename S::T* p, typename S::T* g, const typename S::T* c,
                              typename S::T* s0, typename S::T* s1, typename S::T* s2, int64_t i, typename S::M lam) {
    using T = typename S::T;
    using M = typename S::M;
    T gs = g[i];
    if (Proj) gs = S::st(S::proj(S::ld(gs), S::ld(c[i]), lam));
    M pi = S::ld(p[i]);
    M a = NS > 0 ? S::ld(s0[i]) : M(0), b = NS > 1 ? S::ld(s1[i]) : M(0), d = NS > 2 ? S::ld(s2[i]) : M(0);
    op(pi, S::ld(gs), a, b, d);
    if (Write) {
        if (Proj) g[i] = gs;
        p[i] = S::st(pi);
        if (NS > 0) s0[i] = S::st(a);
        if (NS > 1) s1[i] = S::st(b);
        if (NS > 2) s2[i] = S::st(d);
        return 0;
    }
    return (uint32_t)S::bad(gs) | (uint32_t)S::bad(S::st(pi)) | (NS > 0 ? (uint32_t)S::bad(S::st(a)) : 0u)
           | (NS > 1 ? (uint32_t)S::bad(S::st(b)) : 0u) | (NS > 2 ? (uint32_t)S::bad(S::st(d)) : 0u);
}

// Why a tensor's fused step must be refused, from its reductions (n = <c,c>, dot = <g,c>; for a tensor that is
// not projected n = 0 and dot is NaN when its gradient is not finite), and, when it is projected, the loss's
// excess alpha * (g_value - g_constraint) and its lam: 0 if it may go on, else a T2D_NONFINITE_* reason. The one
// rule of both paths: an infinite g_value refuses the step even where lam comes out finite.
T2D_HD int t2d_step_reason(bool projected, double n, double dot, double excess, double lam) {
    if (!isfinite(n)) return T2D_NONFINITE_CONSTRAINT;
    if (!isfinite(dot)) return T2D_NONFINITE_GRAD;
    if (projected && !(isfinite(excess) && isfinite(lam))) return T2D_NONFINITE_LOSS;
    return 0;
}

// How many state buffers an optimizer uses (0..3): exp_avg, exp_avg_sq, max_exp_avg_sq in that order.
T2D_HD int t2d_state_count(const t2d_optimizer& o) {
    if (o.kind == T2D_SGD) return o.momentum != 0 ? 1 : 0;
    return (o.flags & T2D_AMSGRAD) ? 3 : 2;
}

#endif
