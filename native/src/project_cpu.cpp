// CPU path of the fused constrained step: a small persistent thread pool, chunked reductions
// (fixed chunk size, so results are independent of the thread count), AVX2+FMA kernels chosen at
// run time with portable fallbacks. No OpenMP: libtorch brings its own runtime.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#if defined(__linux__)
#include <sched.h>
#endif
#define T2D_X86 1
#endif

#include "common.h"
#include "t2d_math.h"
#include "t2d_optim.h"

namespace t2d {
namespace {

// Elements per reduction chunk. Every tensor is reduced chunk by chunk and the chunk sums are added in
// order, on every path, so the result does not depend on threads.
constexpr int64_t kChunk = 1 << 16;
// Below this many elements in total, the whole step runs on the calling thread.
constexpr int64_t kParallelMin = 1 << 18;

struct Sums {
    double n = 0.0, dot = 0.0;
};

// ---------------------------------------------------------------- scalar (portable) kernels
template <typename T>
struct Elem;
template <>
struct Elem<float> {
    static double get(const float* p, int64_t i) { return p[i]; }
};
template <>
struct Elem<double> {
    static double get(const double* p, int64_t i) { return p[i]; }
};

Sums reduce_f32_generic(const float* g, const float* c, int64_t len) {
    double n[4] = {0, 0, 0, 0}, d[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= len; i += 4)
        for (int k = 0; k < 4; k++) T2dReduceOp<double>::apply(n[k], d[k], g[i + k], c[i + k]);
    for (; i < len; i++) T2dReduceOp<double>::apply(n[0], d[0], g[i], c[i]);
    return Sums{(n[0] + n[1]) + (n[2] + n[3]), (d[0] + d[1]) + (d[2] + d[3])};
}
Sums reduce_f64_generic(const double* g, const double* c, int64_t len) {
    double n[4] = {0, 0, 0, 0}, d[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= len; i += 4)
        for (int k = 0; k < 4; k++) T2dReduceOp<double>::apply(n[k], d[k], g[i + k], c[i + k]);
    for (; i < len; i++) T2dReduceOp<double>::apply(n[0], d[0], g[i], c[i]);
    return Sums{(n[0] + n[1]) + (n[2] + n[3]), (d[0] + d[1]) + (d[2] + d[3])};
}
void update_f32_generic(float* g, const float* c, int64_t len, float lam) {
    for (int64_t i = 0; i < len; i++) g[i] = T2dUpdateOp<float>::apply(g[i], c[i], lam);
}
void update_f64_generic(double* g, const double* c, int64_t len, double lam) {
    for (int64_t i = 0; i < len; i++) g[i] = T2dUpdateOp<double>::apply(g[i], c[i], lam);
}

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
struct HalfKernels {
    static Sums reduce(const uint16_t* g, const uint16_t* c, int64_t len) {
        double n[4] = {0, 0, 0, 0}, d[4] = {0, 0, 0, 0};
        int64_t i = 0;
        for (; i + 4 <= len; i += 4)
            for (int k = 0; k < 4; k++) T2dReduceOp<double>::apply(n[k], d[k], ToF(g[i + k]), ToF(c[i + k]));
        for (; i < len; i++) T2dReduceOp<double>::apply(n[0], d[0], ToF(g[i]), ToF(c[i]));
        return Sums{(n[0] + n[1]) + (n[2] + n[3]), (d[0] + d[1]) + (d[2] + d[3])};
    }
    static void update(uint16_t* g, const uint16_t* c, int64_t len, float lam) {
        for (int64_t i = 0; i < len; i++) g[i] = FromF(T2dUpdateOp<float>::apply(ToF(g[i]), ToF(c[i]), lam));
    }
};
using Bf16 = HalfKernels<t2d_bf16_to_float, t2d_float_to_bf16>;
using F16 = HalfKernels<t2d_f16_to_float, t2d_float_to_f16>;

// ---------------------------------------------------------------- AVX2 + FMA kernels
#if defined(T2D_X86)
// 16 consecutive elements of p as four vectors of doubles (float widened exactly).
__attribute__((target("avx2,fma"))) inline void load16(const float* p, __m256d v[4]) {
    __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    v[0] = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
    v[1] = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    v[2] = _mm256_cvtps_pd(_mm256_castps256_ps128(b));
    v[3] = _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1));
}
__attribute__((target("avx2,fma"))) inline void load16(const double* p, __m256d v[4]) {
    for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_pd(p + 4 * k);
}
// (|c|^2, <g, c>) in double: four pairs of vector accumulators over blocks of 16, summed in a fixed order, then the
// tail element by element.
template <typename T>
__attribute__((target("avx2,fma"))) Sums reduce_avx2(const T* g, const T* c, int64_t len) {
    __m256d n[4], d[4];
    for (int k = 0; k < 4; k++) n[k] = d[k] = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
        __m256d gv[4], cv[4];
        load16(g + i, gv);
        load16(c + i, cv);
        for (int k = 0; k < 4; k++) {
            n[k] = _mm256_fmadd_pd(cv[k], cv[k], n[k]);
            d[k] = _mm256_fmadd_pd(gv[k], cv[k], d[k]);
        }
    }
    __m256d nt = _mm256_add_pd(_mm256_add_pd(n[0], n[1]), _mm256_add_pd(n[2], n[3]));
    __m256d dt = _mm256_add_pd(_mm256_add_pd(d[0], d[1]), _mm256_add_pd(d[2], d[3]));
    alignas(32) double nn[4], dd[4];
    _mm256_store_pd(nn, nt);
    _mm256_store_pd(dd, dt);
    Sums s{(nn[0] + nn[1]) + (nn[2] + nn[3]), (dd[0] + dd[1]) + (dd[2] + dd[3])};
    for (; i < len; i++) T2dReduceOp<double>::apply(s.n, s.dot, g[i], c[i]);
    return s;
}
// The update is a plain loop; compiled for AVX2 the compiler vectorises it (no reduction involved).
// No FMA contraction here, so the result equals the scalar path exactly.
__attribute__((target("avx2"))) void update_f32_avx2(float* __restrict g, const float* __restrict c, int64_t len, float lam) {
    for (int64_t i = 0; i < len; i++) g[i] = T2dUpdateOp<float>::apply(g[i], c[i], lam);
}
__attribute__((target("avx2"))) void update_f64_avx2(double* __restrict g, const double* __restrict c, int64_t len, double lam) {
    for (int64_t i = 0; i < len; i++) g[i] = T2dUpdateOp<double>::apply(g[i], c[i], lam);
}
#endif

struct Kernels {
    Sums (*reduce_f32)(const float*, const float*, int64_t);
    Sums (*reduce_f64)(const double*, const double*, int64_t);
    void (*update_f32)(float*, const float*, int64_t, float);
    void (*update_f64)(double*, const double*, int64_t, double);
};

Kernels pick_kernels() {
    Kernels k{reduce_f32_generic, reduce_f64_generic, update_f32_generic, update_f64_generic};
#if defined(T2D_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        k = Kernels{reduce_avx2<float>, reduce_avx2<double>, update_f32_avx2, update_f64_avx2};
#endif
    return k;
}

const Kernels& kernels() {
    static const Kernels k = pick_kernels();
    return k;
}

// ---------------------------------------------------------------- per-range dispatch on dtype
Sums reduce_range(const t2d_tensor& t, int64_t begin, int64_t len) {
    const Kernels& k = kernels();
    switch (t.dtype) {
        case T2D_FLOAT32: return k.reduce_f32((const float*)t.grad + begin, (const float*)t.constraint + begin, len);
        case T2D_FLOAT64: return k.reduce_f64((const double*)t.grad + begin, (const double*)t.constraint + begin, len);
        case T2D_BFLOAT16: return Bf16::reduce((const uint16_t*)t.grad + begin, (const uint16_t*)t.constraint + begin, len);
        default: return F16::reduce((const uint16_t*)t.grad + begin, (const uint16_t*)t.constraint + begin, len);
    }
}

void update_range(const t2d_tensor& t, int64_t begin, int64_t len, double lam) {
    const Kernels& k = kernels();
    switch (t.dtype) {
        case T2D_FLOAT32: k.update_f32((float*)t.grad + begin, (const float*)t.constraint + begin, len, (float)lam); break;
        case T2D_FLOAT64: k.update_f64((double*)t.grad + begin, (const double*)t.constraint + begin, len, lam); break;
        case T2D_BFLOAT16: Bf16::update((uint16_t*)t.grad + begin, (const uint16_t*)t.constraint + begin, len, (float)lam); break;
        default: F16::update((uint16_t*)t.grad + begin, (const uint16_t*)t.constraint + begin, len, (float)lam); break;
    }
}

inline int64_t num_chunks(int64_t numel) { return (numel + kChunk - 1) / kChunk; }

// 0 if n and dot are finite (or not checked), 1 if n (the constraint gradient) is not, 2 if dot is not.
inline uint8_t nonfinite_kind(bool check, const Sums& s) {
    if (!check) return 0;
    if (!std::isfinite(s.n)) return 1;
    if (!std::isfinite(s.dot)) return 2;
    return 0;
}

// Whole tensor on one thread: chunked reduction (same order as the parallel path), then update while hot
// (unless defer: the caller updates later, once every tensor is known to be finite).
double project_whole(const t2d_tensor& t, double excess, double beta, bool check, uint8_t* bad, bool defer = false) {
    Sums s;
    for (int64_t b = 0; b < t.numel; b += kChunk) {
        Sums p = reduce_range(t, b, std::min(kChunk, t.numel - b));
        s.n += p.n;
        s.dot += p.dot;
    }
    double lam = t2d_lambda(s.n, s.dot, excess, beta);
    *bad = nonfinite_kind(check, s);
    if (!defer && t.numel > 0 && lam != 0.0 && *bad == 0) update_range(t, 0, t.numel, lam);
    return lam;
}

// ---------------------------------------------------------------- thread pool
class Pool {
public:
    ~Pool() {
        {
            std::lock_guard<std::mutex> lk(m_);
            stop_ = true;
        }
        cv_work_.notify_all();
        for (auto& th : threads_) th.join();
    }

    // Runs fn(worker) for worker in [0, n): 0 on the calling thread. Returns the workers actually used.
    int run(int n, const std::function<void(int)>& fn) {
        n = ensure(n);
        if (n <= 1) {
            fn(0);
            return 1;
        }
        {
            std::lock_guard<std::mutex> lk(m_);
            job_ = &fn;
            active_ = n;
            pending_ = n - 1;
            generation_++;
        }
        cv_work_.notify_all();
        fn(0);
        std::unique_lock<std::mutex> lk(m_);
        cv_done_.wait(lk, [&] { return pending_ == 0; });
        job_ = nullptr;
        return n;
    }

    // Starts helpers so that n workers exist (if possible); returns how many can run.
    int ensure(int n) {
        while ((int)threads_.size() < n - 1) {
            int index = (int)threads_.size() + 1;
            try {
                threads_.emplace_back([this, index] { loop(index); });
            } catch (...) {
                break;  // could not start a thread: use what we have
            }
        }
        return std::min(n, (int)threads_.size() + 1);
    }

private:
    void loop(int index) {
        uint64_t seen = 0;
        for (;;) {
            const std::function<void(int)>* job;
            {
                std::unique_lock<std::mutex> lk(m_);
                cv_work_.wait(lk, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                if (index >= active_) continue;
                job = job_;
            }
            (*job)(index);
            {
                std::lock_guard<std::mutex> lk(m_);
                if (--pending_ == 0) cv_done_.notify_one();
            }
        }
    }

    std::mutex m_;
    std::condition_variable cv_work_, cv_done_;
    std::vector<std::thread> threads_;
    const std::function<void(int)>* job_ = nullptr;
    uint64_t generation_ = 0;
    int active_ = 0, pending_ = 0;
    bool stop_ = false;
};

std::atomic<int32_t> g_thread_limit{0};
std::mutex g_pool_mutex;  // one parallel step at a time

// The CPUs this process may run on (its affinity mask, as taskset or a container's cpuset set it), not the
// machine's: hardware_concurrency() ignores the mask, and two workers on one allowed core only take turns.
int hardware_threads() {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    unsigned h = std::thread::hardware_concurrency();
    return h == 0 ? 1 : (int)h;
}

int thread_budget() {
    int hw = hardware_threads();
    int lim = g_thread_limit.load(std::memory_order_relaxed);
    return lim > 0 ? std::min(lim, hw) : hw;
}

Pool& pool() {
    // Leaked on purpose: joining threads from a static destructor at exit is fragile.
    static Pool* p = new Pool();
    return *p;
}

// ---------------------------------------------------------------- the step
// Computes every tensor's lam into lams and marks non-finite reductions in bad (when check).
void project_all(const t2d_tensor* tensors, int32_t count, double excess, double beta, bool check,
                 double* lams, uint8_t* bad) {
    int64_t total = 0;
    for (int32_t i = 0; i < count; i++) total += tensors[i].numel;
    int threads = thread_budget();

    // With the check, nothing is updated unless every tensor is finite: the updates wait for all reductions.
    if (threads <= 1 || total < kParallelMin) {
        bool any_bad = false;
        for (int32_t i = 0; i < count; i++) {
            lams[i] = project_whole(tensors[i], excess, beta, check, &bad[i], check);
            any_bad |= bad[i] != 0;
        }
        if (check && !any_bad)
            for (int32_t i = 0; i < count; i++)
                if (tensors[i].numel > 0 && lams[i] != 0.0) update_range(tensors[i], 0, tensors[i].numel, lams[i]);
        return;
    }

    // Large tensors (more than one chunk) are split into chunks shared by all workers, statically, so
    // a worker updates the chunks it reduced (still in its cache if they fit). Small ones are taken
    // whole, dynamically, reduced and updated while hot.
    std::vector<int32_t> small_idx, large_idx;
    std::vector<int64_t> first_chunk;  // per large tensor, index into partials
    int64_t large_chunks = 0;
    for (int32_t i = 0; i < count; i++) {
        if (tensors[i].numel > kChunk) {
            large_idx.push_back(i);
            first_chunk.push_back(large_chunks);
            large_chunks += num_chunks(tensors[i].numel);
        } else {
            small_idx.push_back(i);
        }
    }
    std::vector<Sums> partials((size_t)large_chunks);
    // chunk range [lo, hi) -> body(large slot, chunk id, tensor, begin, len)
    auto for_chunks = [&](int64_t lo, int64_t hi, auto&& body) {
        if (lo >= hi) return;
        size_t s = std::upper_bound(first_chunk.begin(), first_chunk.end(), lo) - first_chunk.begin() - 1;
        for (int64_t k = lo; k < hi; k++) {
            while (s + 1 < first_chunk.size() && first_chunk[s + 1] <= k) s++;
            const t2d_tensor& t = tensors[large_idx[s]];
            int64_t begin = (k - first_chunk[s]) * kChunk;
            body(s, k, t, begin, std::min(kChunk, t.numel - begin));
        }
    };

    int workers = (int)std::min<int64_t>(threads, std::max<int64_t>(1, total / (kParallelMin / 4)));
    std::lock_guard<std::mutex> guard(g_pool_mutex);
    int used = pool().ensure(workers);
    std::atomic<size_t> next_small{0};
    auto phase1 = [&](int w) {
        int64_t lo = large_chunks * w / used, hi = large_chunks * (w + 1) / used;
        for_chunks(lo, hi, [&](size_t, int64_t k, const t2d_tensor& t, int64_t begin, int64_t len) {
            partials[(size_t)k] = reduce_range(t, begin, len);
        });
        for (size_t j; (j = next_small.fetch_add(1, std::memory_order_relaxed)) < small_idx.size();) {
            int32_t i = small_idx[j];
            lams[i] = project_whole(tensors[i], excess, beta, check, &bad[i], check);
        }
    };
    pool().run(used, phase1);
    bool any_bad = false;
    for (int32_t i : small_idx) any_bad |= bad[i] != 0;

    std::vector<double> lam_large(large_idx.size(), 0.0);
    for (size_t s = 0; s < large_idx.size(); s++) {
        int64_t end = s + 1 < first_chunk.size() ? first_chunk[s + 1] : large_chunks;
        Sums tot;
        for (int64_t k = first_chunk[s]; k < end; k++) {
            tot.n += partials[(size_t)k].n;
            tot.dot += partials[(size_t)k].dot;
        }
        int32_t i = large_idx[s];
        lams[i] = t2d_lambda(tot.n, tot.dot, excess, beta);
        bad[i] = nonfinite_kind(check, tot);
        lam_large[s] = bad[i] ? 0.0 : lams[i];  // a non-finite tensor is left unchanged
        any_bad |= bad[i] != 0;
    }
    if (check && any_bad) return;  // nothing is updated

    if (check && !small_idx.empty()) {  // the small tensors' deferred updates
        std::atomic<size_t> next{0};
        auto phase_small = [&](int) {
            for (size_t j; (j = next.fetch_add(1, std::memory_order_relaxed)) < small_idx.size();) {
                const t2d_tensor& t = tensors[small_idx[j]];
                double l = lams[small_idx[j]];
                if (t.numel > 0 && l != 0.0) update_range(t, 0, t.numel, l);
            }
        };
        pool().run(used, phase_small);
    }

    if (large_chunks > 0) {
        auto phase2 = [&](int w) {
            int64_t lo = large_chunks * w / used, hi = large_chunks * (w + 1) / used;
            for_chunks(lo, hi, [&](size_t s, int64_t, const t2d_tensor& t, int64_t begin, int64_t len) {
                if (lam_large[s] != 0.0) update_range(t, begin, len, lam_large[s]);
            });
        };
        pool().run(used, phase2);
    }
}

int32_t project_host(const t2d_tensor* tensors, int32_t count, double excess, double beta, int32_t options,
                     double* lambdas) {
    bool check = (options & T2D_CHECK_FINITE) != 0;
    if (check && count > 0 && !std::isfinite(excess)) // t2d_excess keeps an overflow of finite operands finite
        return fail_t(0, T2D_ERR_NONFINITE, "tensor %d: g_value (the unconditional loss) is not finite "
                      "(alpha * (g_value - g_constraint) = %g)", 0, excess);
    std::vector<double> lams((size_t)count);
    std::vector<uint8_t> bad((size_t)count, 0);
    project_all(tensors, count, excess, beta, check, lams.data(), bad.data());
    if (check) {
        for (int32_t i = 0; i < count; i++) {
            if (bad[i] == 1)
                return fail_nonfinite(i, true);
            if (bad[i] == 2)
                return fail_nonfinite(i, false);
        }
    }
    if (lambdas) std::copy(lams.begin(), lams.end(), lambdas);
    return T2D_OK;
}

// ---------------------------------------------------------------- fused optimizer step
// Storage types (see t2d_step_elem): how an element of each dtype is loaded into its math type M, stored back,
// projected, and told non-finite from its bits (an integer test, so that the loops vectorise).
struct F32S {
    using T = float; using M = float;
    static M ld(T x) { return x; }
    static T st(M x) { return x; }
    static M proj(M g, M c, M lam) { return T2dUpdateOp<M>::apply(g, c, lam); }
    static uint32_t bad(T x) { uint32_t u; memcpy(&u, &x, 4); return (u & 0x7f800000u) == 0x7f800000u; }
};
struct F64S {
    using T = double; using M = double;
    static M ld(T x) { return x; }
    static T st(M x) { return x; }
    static M proj(M g, M c, M lam) { return T2dUpdateOp<M>::apply(g, c, lam); }
    static uint32_t bad(T x) {
        uint64_t u; memcpy(&u, &x, 8);
        return (u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
    }
};
// bfloat16 and float16: their conversions and the mask of their exponent bits.
template <float (*ToF)(uint16_t), uint16_t (*FromF)(float), uint16_t ExpMask>
struct HalfS {
    using T = uint16_t; using M = float;
    static M ld(T x) { return ToF(x); }
    static T st(M x) { return FromF(x); }
    static M proj(M g, M c, M lam) { return T2dUpdateOp<M>::apply(g, c, lam); }
    static uint32_t bad(T x) { return (x & ExpMask) == ExpMask; }
};
using Bf16S = HalfS<t2d_bf16_to_float, t2d_float_to_bf16, 0x7f80u>;
using F16S = HalfS<t2d_f16_to_float, t2d_float_to_f16, 0x7c00u>;

#if defined(__GNUC__)
#define T2D_INLINE inline __attribute__((always_inline))
#else
#define T2D_INLINE inline
#endif

// One pass over len elements of a parameter: g' = g + lam*c (Proj), then the optimizer update. Write: store
// everything; else compute only and return 1 if a stored value would be non-finite. The buffers never overlap
// (restrict parameters: without them the aliasing checks of five pointers keep the loop scalar).
template <typename S, typename Op, int NS, bool Proj, bool Write>
T2D_INLINE uint32_t step_loop(const Op& op, typename S::T* __restrict p, typename S::T* __restrict g,
                              const typename S::T* __restrict c, typename S::T* __restrict s0,
                              typename S::T* __restrict s1, typename S::T* __restrict s2, int64_t len,
                              typename S::M lam) {
    uint32_t bad = 0;
    for (int64_t i = 0; i < len; i++) bad |= t2d_step_elem<S, Op, NS, Proj, Write>(op, p, g, c, s0, s1, s2, i, lam);
    return bad;
}

template <typename S, typename Op, int NS, bool Proj, bool Write>
T2D_INLINE uint32_t step_range(const Op& op, const t2d_param& t, int64_t begin, int64_t len, typename S::M lam) {
    using T = typename S::T;
    return step_loop<S, Op, NS, Proj, Write>(op, (T*)t.param + begin, (T*)t.grad + begin,
                                             Proj ? (const T*)t.constraint + begin : nullptr,
                                             NS > 0 ? (T*)t.exp_avg + begin : nullptr,
                                             NS > 1 ? (T*)t.exp_avg_sq + begin : nullptr,
                                             NS > 2 ? (T*)t.max_exp_avg_sq + begin : nullptr, len, lam);
}

template <typename S, typename Op, int NS>
T2D_INLINE uint32_t step_range_ns(const Op& op, const t2d_param& t, int64_t begin, int64_t len, double lam, bool write) {
    using M = typename S::M;
    bool proj = t.constraint != nullptr;
    if (write) {
        return proj ? step_range<S, Op, NS, true, true>(op, t, begin, len, (M)lam)
                    : step_range<S, Op, NS, false, true>(op, t, begin, len, (M)lam);
    }
    return proj ? step_range<S, Op, NS, true, false>(op, t, begin, len, (M)lam)
                : step_range<S, Op, NS, false, false>(op, t, begin, len, (M)lam);
}

// The one dtype-generic chunk step: the optimizer's functor built for this tensor's step number.
template <typename S>
T2D_INLINE uint32_t step_chunk(const t2d_param& t, const t2d_optimizer& o, int64_t step, int64_t begin, int64_t len,
                               double lam, bool write) {
    using M = typename S::M;
    switch (t2d_state_count(o)) {
        case 0: return step_range_ns<S, T2dSgdOp<M>, 0>(T2dSgdOp<M>::make(o, step), t, begin, len, lam, write);
        case 1: return step_range_ns<S, T2dSgdOp<M>, 1>(T2dSgdOp<M>::make(o, step), t, begin, len, lam, write);
        case 2: return step_range_ns<S, T2dAdamOp<M>, 2>(T2dAdamOp<M>::make(o, step), t, begin, len, lam, write);
        default: return step_range_ns<S, T2dAdamOp<M>, 3>(T2dAdamOp<M>::make(o, step), t, begin, len, lam, write);
    }
}

// 1 if g holds a NaN or an infinity in [begin, begin+len) (the check of a gradient that is not projected).
template <typename S>
T2D_INLINE uint32_t probe_chunk(const t2d_param& t, int64_t begin, int64_t len) {
    const typename S::T* g = (const typename S::T*)t.grad + begin;
    uint32_t bad = 0;
    for (int64_t i = 0; i < len; i++) bad |= S::bad(g[i]);
    return bad;
}

using StepFn = uint32_t (*)(const t2d_param&, const t2d_optimizer&, int64_t, int64_t, int64_t, double, bool);
using ProbeFn = uint32_t (*)(const t2d_param&, int64_t, int64_t);
struct StepKernels {
    StepFn step[4];   // by dtype code
    ProbeFn probe[4];
};

template <typename S>
uint32_t step_generic(const t2d_param& t, const t2d_optimizer& o, int64_t st, int64_t b, int64_t l, double lam, bool w) {
    return step_chunk<S>(t, o, st, b, l, lam, w);
}
template <typename S>
uint32_t probe_generic(const t2d_param& t, int64_t b, int64_t l) { return probe_chunk<S>(t, b, l); }

#if defined(T2D_X86)
// The same template compiled for AVX2 (no FMA: results equal the generic path's exactly).
template <typename S>
__attribute__((target("avx2"))) uint32_t step_avx2(const t2d_param& t, const t2d_optimizer& o, int64_t st, int64_t b,
                                                   int64_t l, double lam, bool w) {
    return step_chunk<S>(t, o, st, b, l, lam, w);
}
template <typename S>
__attribute__((target("avx2"))) uint32_t probe_avx2(const t2d_param& t, int64_t b, int64_t l) { return probe_chunk<S>(t, b, l); }
#endif

StepKernels pick_step_kernels() {
    StepKernels k{{step_generic<F32S>, step_generic<F64S>, step_generic<Bf16S>, step_generic<F16S>},
                  {probe_generic<F32S>, probe_generic<F64S>, probe_generic<Bf16S>, probe_generic<F16S>}};
#if defined(T2D_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        k = StepKernels{{step_avx2<F32S>, step_avx2<F64S>, step_avx2<Bf16S>, step_avx2<F16S>},
                        {probe_avx2<F32S>, probe_avx2<F64S>, probe_avx2<Bf16S>, probe_avx2<F16S>}};
#endif
    return k;
}

const StepKernels& step_kernels() {
    static const StepKernels k = pick_step_kernels();
    return k;
}

// Runs body(chunk) for every chunk, the chunks split among the workers by elements (contiguous ranges,
// the same ones in every phase, so a worker meets again the memory it touched in the previous phase).
struct ChunkPlan {
    struct Chunk { int32_t tensor; int64_t begin, len; };
    std::vector<Chunk> chunks;
    std::vector<int64_t> start;  // elements before each chunk
    int64_t total = 0;

    explicit ChunkPlan(const t2d_param* params, int32_t count) {
        for (int32_t i = 0; i < count; i++)
            for (int64_t b = 0; b < params[i].numel; b += kChunk) {
                chunks.push_back(Chunk{i, b, std::min(kChunk, params[i].numel - b)});
                start.push_back(total);
                total += chunks.back().len;
            }
    }

    template <typename Body>
    void run(int used, Body&& body) {
        auto range = [&](int w) {
            int64_t lo = total * w / used, hi = total * (w + 1) / used;
            size_t k = std::lower_bound(start.begin(), start.end(), lo) - start.begin();
            for (; k < chunks.size() && start[k] < hi; k++) body(k, chunks[k]);
        };
        if (used <= 1) {
            range(0);
        } else {
            std::function<void(int)> fn = range;
            pool().run(used, fn);
        }
    }
};

int32_t step_host(const t2d_param* params, int32_t count, const t2d_optimizer& o, double excess, double beta,
                  double* lambdas) {
    for (int32_t i = 0; i < count; i++)
        if (*params[i].step < 0 || *params[i].step == INT64_MAX)
            return fail_t(i, T2D_ERR_BAD_COUNT, "tensor %d: step count %lld is out of range", i, (long long)*params[i].step);
    ChunkPlan plan(params, count);
    int threads = thread_budget();
    int workers = threads <= 1 || plan.total < kParallelMin
                      ? 1 : (int)std::min<int64_t>(threads, std::max<int64_t>(1, plan.total / (kParallelMin / 4)));
    std::unique_lock<std::mutex> guard(g_pool_mutex, std::defer_lock);
    int used = 1;
    if (workers > 1) {
        guard.lock();
        used = pool().ensure(workers);
    }
    const StepKernels& k = step_kernels();

    // Pass 1: the reductions of the projected tensors, the finiteness of the others' gradients.
    std::vector<Sums> partials(plan.chunks.size());
    plan.run(used, [&](size_t ci, const ChunkPlan::Chunk& ch) {
        const t2d_param& t = params[ch.tensor];
        if (t.constraint != nullptr) {
            t2d_tensor v{};
            v.grad = t.grad;
            v.constraint = t.constraint;
            v.dtype = v.constraint_dtype = t.dtype;
            partials[ci] = reduce_range(v, ch.begin, ch.len);
        } else {
            partials[ci] = Sums{0.0, k.probe[t.dtype](t, ch.begin, ch.len) ? NAN : 0.0};
        }
    });
    std::vector<double> lams((size_t)count, 0.0);
    {
        std::vector<Sums> tot((size_t)count);
        for (size_t ci = 0; ci < plan.chunks.size(); ci++) {
            Sums& s = tot[(size_t)plan.chunks[ci].tensor];
            s.n += partials[ci].n;
            s.dot += partials[ci].dot;
        }
        for (int32_t i = 0; i < count; i++) {
            const Sums& s = tot[(size_t)i];
            bool projected = params[i].constraint != nullptr;
            double lam = projected ? t2d_lambda(s.n, s.dot, excess, beta) : 0.0;
            switch (t2d_step_reason(projected, s.n, s.dot, excess, lam)) {
            case T2D_NONFINITE_CONSTRAINT:
                return fail_nonfinite(i, true);
            case T2D_NONFINITE_GRAD:
                return fail_nonfinite(i, false);
            case T2D_NONFINITE_LOSS:
                if (!std::isfinite(excess)) // t2d_excess keeps an overflow of finite operands finite
                    return fail_t(i, T2D_ERR_NONFINITE, "tensor %d: g_value (the unconditional loss) is not finite "
                                  "(alpha * (g_value - g_constraint) = %g)", i, excess);
                return fail_t(i, T2D_ERR_NONFINITE, "tensor %d: lam overflowed (<g,c> %g, <c,c> %g, alpha * (g_value - "
                              "g_constraint) %g, beta %g)", i, s.dot, s.n, excess, beta);
            }
            lams[(size_t)i] = lam;
        }
    }

    // Pass 2, bfloat16/float16 only: the update computed without storing; every stored value must be finite.
    if (t2d_has_half(params, count)) {
        std::vector<uint8_t> bad(plan.chunks.size(), 0);
        plan.run(used, [&](size_t ci, const ChunkPlan::Chunk& ch) {
            const t2d_param& t = params[ch.tensor];
            if (t2d_is_half(t.dtype))
                bad[ci] = (uint8_t)k.step[t.dtype](t, o, *t.step + 1, ch.begin, ch.len, lams[(size_t)ch.tensor], false);
        });
        for (size_t ci = 0; ci < bad.size(); ci++)
            if (bad[ci]) {
                int32_t i = plan.chunks[ci].tensor;
                return fail_t(i, T2D_ERR_NONFINITE,
                              "tensor %d: the %s update overflowed (a new value of the parameter, its gradient or the "
                              "optimizer's state is not finite in %s)", i, dtype_name(params[i].dtype), dtype_name(params[i].dtype));
            }
    }

    // Pass 3: write.
    plan.run(used, [&](size_t, const ChunkPlan::Chunk& ch) {
        const t2d_param& t = params[ch.tensor];
        k.step[t.dtype](t, o, *t.step + 1, ch.begin, ch.len, lams[(size_t)ch.tensor], true);
    });
    for (int32_t i = 0; i < count; i++) ++*params[i].step;
    if (lambdas) std::copy(lams.begin(), lams.end(), lambdas);
    return T2D_OK;
}

}  // namespace
}  // namespace t2d

extern "C" int32_t t2d_project_host(const t2d_tensor* tensors, int32_t count, double g_value, double g_constraint,
                                    double alpha, double beta, int32_t options, double* lambdas_out) {
    t2d::clear_error();
    int32_t rc = t2d::validate(tensors, count, true, nullptr);
    if (rc != T2D_OK) return rc;
    try {
        return t2d::project_host(tensors, count, t2d_excess(alpha, g_value, g_constraint), beta, options, lambdas_out);
    } catch (const std::bad_alloc&) {
        return t2d::fail(T2D_ERR_OUT_OF_MEMORY, "out of host memory");
    } catch (...) {
        return t2d::fail(T2D_ERR_OUT_OF_MEMORY, "unexpected internal error");
    }
}

extern "C" int32_t t2d_set_num_threads(int32_t n) {
    return t2d::g_thread_limit.exchange(n > 0 ? n : 0);
}

extern "C" int32_t t2d_step_host(const t2d_param* params, int32_t count, const t2d_optimizer* optimizer,
                                 double g_value, double g_constraint, double alpha, double beta, int32_t options,
                                 double* lambdas_out) {
    t2d::clear_error();
    int32_t rc = t2d::validate_step(params, count, optimizer, options, true, nullptr);
    if (rc != T2D_OK) return rc;
    try {
        return t2d::step_host(params, count, *optimizer, t2d_excess(alpha, g_value, g_constraint), beta, lambdas_out);
    } catch (const std::bad_alloc&) {
        return t2d::fail(T2D_ERR_OUT_OF_MEMORY, "out of host memory");
    } catch (...) {
        return t2d::fail(T2D_ERR_OUT_OF_MEMORY, "unexpected internal error");
    }
}
