// CUDA path of the fused constrained step: a multi-tensor apply in two launches whatever the number
// of tensors. A tensor table (pointers, sizes, first chunk) goes to the device with one async copy from
// pinned memory; blocks map to fixed-size chunks by a binary search over the first-chunk column.
//   1. reduce: per chunk (n, dot) partial sums into a workspace; the last of a tensor's blocks to finish (a
//      counter per tensor) adds the tensor's partials in a fixed order, reads g_value on the device, computes
//      lam (and, with T2D_CHECK_FINITE, flags non-finite reductions);
//   2. update: g += lam * c per chunk, the chunks in the reverse order (what the reduction read last may still
//      be in L2).
// Nothing synchronises with the host unless T2D_CHECK_FINITE is asked for.
//
// The fused optimizer step (t2d_step_cuda) is the same multi-tensor apply over a table of parameters:
// reduce and lambda (probing the gradients that are not projected; the first non-finite tensor is flagged in a
// device word), for bfloat16/float16 a check pass computing the update without storing it, the update
// (every block returns at once when the flag is set), and a one-block finalize that increments the step
// counts or, when the step was skipped, records it in the caller's t2d_step_status. Three kernels (four with a
// half-precision row), an async copy and a memset whatever the number of tensors; no host synchronisation at all.
// Unplanned calls share per-device cached buffers (a ring of pinned tables, a stream-ordered workspace:
// unplanned_call); t2d_step_cuda_planned uses a plan's own, made once by t2d_plan_create, so that the
// step can be captured in a CUDA graph.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <new>
#include <type_traits>
#include <vector>

#include "common.h"
#include "t2d_math.h"
#include "t2d_optim.h"

namespace t2d {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kCudaChunk = 16 * 1024;  // elements per block
constexpr int kMaxDevices = 64;

// Chunks of a tensor of numel elements (one block each). An empty tensor has one (empty) chunk, so that every
// tensor has a block whose reduction ends in its lam (reduce_kernel).
__host__ __device__ constexpr int64_t chunks_of(int64_t numel) {
    return numel == 0 ? 1 : (numel + kCudaChunk - 1) / kCudaChunk;
}

// A row of the device table: a projection's tensor (DevTensor) or a fused step's parameter (DevParam).
struct DevTensor {
    void* grad;
    const void* constraint;
    int64_t numel;
    int64_t first_chunk;  // chunks [first_chunk, first_chunk + ceil(numel / kCudaChunk))
    int32_t dtype;
    int32_t pad;
};
struct DevParam {
    void* param;
    void* grad;
    const void* constraint;
    void* s0;
    void* s1;
    void* s2;
    int64_t* step;
    int64_t numel;
    int64_t first_chunk;
    int32_t dtype;
    int32_t pad;
};

constexpr int kNoBad = 0x7f7f7f7f;  // the flag word's value when every value is finite (memset 0x7f)

template <typename T>
struct Acc {  // accumulation type: double for float/double, float for half types
    using type = double;
};
template <>
struct Acc<__half> {
    using type = float;
};
template <>
struct Acc<__nv_bfloat16> {
    using type = float;
};


template <typename T>
__device__ __forceinline__ typename Acc<T>::type load(const T* p, int64_t i) {
    return (typename Acc<T>::type)p[i];
}
template <>
__device__ __forceinline__ float load<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <>
__device__ __forceinline__ float load<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

// T2dUpdateOp's g + lam * c, each operation rounded on its own (round to nearest even), as the CPU path
// computes it (its update loops are built without FMA). Left to itself nvcc contracts the two into one
// fma, whose single rounding gives other bits: for half types, after the conversion back, 7 of 4642
// elements differed from the CPU path in one H100 run. The intrinsics are never contracted.
__device__ __forceinline__ float update_rn(float g, float c, float lam) { return __fadd_rn(g, __fmul_rn(lam, c)); }
__device__ __forceinline__ double update_rn(double g, double c, double lam) { return __dadd_rn(g, __dmul_rn(lam, c)); }

// Storage types on the device: load into the math type, store rounding to nearest even, non-finite from bits.
struct DF32 {
    using T = float; using M = float;
    __device__ static M ld(T x) { return x; }
    __device__ static T st(M x) { return x; }
    __device__ static M proj(M g, M c, M lam) { return update_rn(g, c, lam); }
    __device__ static bool bad(T x) { return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u; }
};
struct DF64 {
    using T = double; using M = double;
    __device__ static M ld(T x) { return x; }
    __device__ static T st(M x) { return x; }
    __device__ static M proj(M g, M c, M lam) { return update_rn(g, c, lam); }
    __device__ static bool bad(T x) { return ((unsigned long long)__double_as_longlong(x) & 0x7ff0000000000000ull) == 0x7ff0000000000000ull; }
};
struct DH16 {
    using T = __half; using M = float;
    __device__ static M ld(T x) { return __half2float(x); }
    __device__ static T st(M x) { return __float2half_rn(x); }
    __device__ static M proj(M g, M c, M lam) { return update_rn(g, c, lam); }
    __device__ static bool bad(T x) { return (__half_as_ushort(x) & 0x7c00u) == 0x7c00u; }
};
struct DBF16 {
    using T = __nv_bfloat16; using M = float;
    __device__ static M ld(T x) { return __bfloat162float(x); }
    __device__ static T st(M x) { return __float2bfloat16_rn(x); }
    __device__ static M proj(M g, M c, M lam) { return update_rn(g, c, lam); }
    __device__ static bool bad(T x) { return (__bfloat16_as_ushort(x) & 0x7f80u) == 0x7f80u; }
};

// The one dtype dispatch of the CUDA path: calls f with a value of dtype's storage type (DF32 ...), whose
// T is the element type and M the math type. Every kernel goes through it.
template <typename F>
__device__ __forceinline__ void with_dtype(int dtype, F&& f) {
    switch (dtype) {
        case T2D_FLOAT32: f(DF32{}); break;
        case T2D_FLOAT64: f(DF64{}); break;
        case T2D_BFLOAT16: f(DBF16{}); break;
        default: f(DH16{}); break;
    }
}

template <typename Table>
__device__ __forceinline__ int find_tensor(const Table* table, int count, int64_t chunk) {
    // last t with first_chunk <= chunk (every tensor has at least one chunk: first_chunk increases)
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (table[mid].first_chunk <= chunk) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// The table row of a block's chunk. Every thread of the block must call it.
template <typename Table>
__device__ __forceinline__ int chunk_row(const Table* table, int count, int64_t chunk) {
    __shared__ int s_t;
    if (threadIdx.x == 0) s_t = find_tensor(table, count, chunk);
    __syncthreads();
    return s_t;
}

// The chunk of a block of a pass over the chunks after the reduction (whose block b takes chunk b, walked forwards):
// a pass takes the chunks, and walks each, in the reverse of the order of the pass before it (update_chunk,
// step_elems). What the pass before read last is what this one reads first: on a list larger than the L2 cache, part
// of the second read of g and c comes from there.
template <bool Reverse>
__device__ __forceinline__ int64_t pass_chunk() {
    return Reverse ? (int64_t)gridDim.x - 1 - blockIdx.x : (int64_t)blockIdx.x;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// 16-byte accesses (8 halves or 4 floats per load) where both of a chunk's pointers are 16-byte aligned, as
// libtorch's allocations are (views with an offset may not be: they take the element-wise loop); 2-byte loads
// kept the half types far below the device's bandwidth. Chunks start at multiples of kCudaChunk elements, so a
// chunk is aligned where its tensor is. The tail (fewer than one vector) goes element by element.
__device__ __forceinline__ bool aligned16(const void* a, const void* b) {
    return ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b)) & 15u) == 0;
}

template <typename T>
__device__ void reduce_chunk(const T* __restrict__ g, const T* __restrict__ c, int64_t begin, int64_t end,
                             double2* out) {
    using A = typename Acc<T>::type;
    A n = 0, dot = 0;
    int64_t rest = begin;
    if constexpr (sizeof(T) < 8) {
        if (aligned16(g + begin, c + begin)) {
            constexpr int W = 16 / sizeof(T);
            const uint4* gv = reinterpret_cast<const uint4*>(g + begin);
            const uint4* cv = reinterpret_cast<const uint4*>(c + begin);
            const int64_t nv = (end - begin) / W;
            for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
                const uint4 a = gv[v], b = cv[v];
                const T* ga = reinterpret_cast<const T*>(&a);
                const T* cb = reinterpret_cast<const T*>(&b);
#pragma unroll
                for (int k = 0; k < W; k++) T2dReduceOp<A>::apply(n, dot, load(ga, k), load(cb, k));
            }
            rest = begin + nv * W;
        }
    }
    for (int64_t i = rest + threadIdx.x; i < end; i += blockDim.x) {
        T2dReduceOp<A>::apply(n, dot, load(g, i), load(c, i));
    }
    n = warp_sum(n);
    dot = warp_sum(dot);
    __shared__ double sn[kThreads / 32], sd[kThreads / 32];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) {
        sn[warp] = (double)n;
        sd[warp] = (double)dot;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double tn = 0, td = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) {
            tn += sn[w];
            td += sd[w];
        }
        *out = make_double2(tn, td);
    }
}

// A chunk of a gradient that is not projected (a fused step's row without constraint gradient): (0, NaN) when it
// holds a non-finite value, else (0, 0).
template <typename S>
__device__ void probe_chunk(const typename S::T* __restrict__ g, int64_t begin, int64_t end, double2* out) {
    int bad = 0;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) bad |= S::bad(g[i]);
    bad = __syncthreads_or(bad);
    if (threadIdx.x == 0) *out = make_double2(0.0, bad ? (double)NAN : 0.0);
}

__device__ __forceinline__ double read_scalar(const void* p, int dtype) {
    double v = 0;
    with_dtype(dtype, [&](auto s) {
        using S = decltype(s);
        v = (double)S::ld(*(const typename S::T*)p);
    });
    return v;
}

// A warp's sum of one tensor's chunk partials (n, dot), in a fixed order: valid in every lane. The partials were
// written by other blocks of the same launch: read past L1.
__device__ __forceinline__ double2 tensor_sums(const double2* __restrict__ partials, int64_t first_chunk, int64_t numel,
                                               int lane) {
    int64_t chunks = chunks_of(numel);
    double n = 0, dot = 0;
    for (int64_t k = lane; k < chunks; k += 32) {
        double2 p = __ldcg(partials + first_chunk + k);
        n += p.x;
        dot += p.y;
    }
    return make_double2(warp_sum(n), warp_sum(dot));
}

// lam of a projection's tensor from its sums (reduce_kernel's last block of the tensor, one thread): lam[t] (and
// lambdas_out[t]); with check, bad = lowest non-finite tensor index * 4 + kind - 1 (kind 1: its constraint
// gradient, 2: its gradient, 3: g_value, which every tensor sees, so the first one reports it).
struct ProjectionLambda {
    const void* g_value;
    int g_value_dtype;
    double g_constraint, alpha, beta;
    double* lam;
    double* lambdas_out;
    int check;
    int* bad;
    __device__ void operator()(const DevTensor&, int ti, double n, double dot) const {
        double excess = t2d_excess(alpha, read_scalar(g_value, g_value_dtype), g_constraint);
        double l = t2d_lambda(n, dot, excess, beta);
        int kind = 0;
        if (check) {
            if (!isfinite(excess)) kind = 3;
            else if (!isfinite(n)) kind = 1;
            else if (!isfinite(dot)) kind = 2;
        }
        if (kind) {
            atomicMin(bad, ti * 4 + (kind - 1));
            l = 0.0;  // a non-finite tensor is left unchanged
        }
        lam[ti] = l;
        if (lambdas_out) lambdas_out[ti] = l;
    }
};

// lam of a fused step's parameter (0 where not projected); the lowest (tensor * 8 + reason) of a non-finite tensor
// into *bad. sc, when not NULL (a planned step), holds the scalars' current values, read on the device.
struct StepLambda {
    const void* g_value;
    int g_value_dtype;
    double g_constraint, alpha, beta;
    const t2d_step_scalars* sc;
    double* lam;
    int* bad;
    __device__ void operator()(const DevParam& t, int ti, double n, double dot) const {
        double gc = g_constraint, a = alpha, b = beta;
        if (sc) {
            gc = sc->g_constraint;
            a = sc->alpha;
            b = sc->beta;
        }
        bool projected = t.constraint != nullptr;
        double excess = projected ? t2d_excess(a, read_scalar(g_value, g_value_dtype), gc) : 0.0;
        double l = projected ? t2d_lambda(n, dot, excess, b) : 0.0;
        int reason = t2d_step_reason(projected, n, dot, excess, l);
        if (reason) atomicMin(bad, ti * 8 + reason);
        lam[ti] = l;
    }
};

// Pass 1 of the projection (Row = DevTensor, Lambda = ProjectionLambda) and of the fused step (DevParam, StepLambda):
// per chunk, a projected row's (n, dot) partial sums (a fused step's row without constraint gradient is probed
// instead: probe_chunk); then the last of a tensor's blocks to finish adds the tensor's partials in a fixed order
// and computes its lam. counters holds kNoBad per row before the launch (set with the flag word by the call's memset,
// so that no launch depends on an earlier one having finished its count).
template <typename Row, typename Lambda>
__global__ void reduce_kernel(const Row* __restrict__ table, int count, double2* __restrict__ partials,
                              int* __restrict__ counters, Lambda lambda) {
    const int ti = chunk_row(table, count, blockIdx.x);
    const Row t = table[ti];
    int64_t begin = ((int64_t)blockIdx.x - t.first_chunk) * kCudaChunk;
    int64_t end = min(begin + kCudaChunk, t.numel);
    double2* out = partials + blockIdx.x;
    bool probe = false;
    // a projection's rows always have a constraint gradient
    if constexpr (std::is_same<Row, DevParam>::value) probe = t.constraint == nullptr;
    with_dtype(t.dtype, [&](auto s) {
        using S = decltype(s);
        using T = typename S::T;
        if (probe) probe_chunk<S>((const T*)t.grad, begin, end, out);
        else reduce_chunk((const T*)t.grad, (const T*)t.constraint, begin, end, out);
    });
    // Thread 0 wrote the partial: made visible to the whole device before the block is counted (as in CUDA's
    // threadFenceReduction sample).
    __shared__ bool s_last;
    if (threadIdx.x == 0) {
        __threadfence();
        const unsigned done = (unsigned)atomicAdd(counters + ti, 1) - (unsigned)kNoBad;
        s_last = done == (unsigned)(chunks_of(t.numel) - 1);
    }
    __syncthreads();
    if (!s_last || threadIdx.x >= 32) return;
    __threadfence();
    const double2 sums = tensor_sums(partials, t.first_chunk, t.numel, threadIdx.x);
    if (threadIdx.x == 0) lambda(t, ti, sums.x, sums.y);
}

// One element of the update, in the precision the CPU path uses (S's math type: float for float and the half
// types, double for double; the half types convert back rounding to nearest even): the rule t2d_step_elem
// applies to a fused step's projected gradient.
template <typename S>
__device__ __forceinline__ typename S::T update_elem(typename S::T g, typename S::T c, typename S::M lam) {
    return S::st(S::proj(S::ld(g), S::ld(c), lam));
}

// g += lam * c over [begin, end), walked from the end (pass_chunk: the reduction went forwards).
template <typename S>
__device__ void update_chunk(typename S::T* __restrict__ g, const typename S::T* __restrict__ c, int64_t begin,
                             int64_t end, typename S::M lam) {
    using T = typename S::T;
    int64_t rest = begin;
    if constexpr (sizeof(T) < 8) {
        if (aligned16(g + begin, c + begin)) {  // 16-byte accesses, as in reduce_chunk
            constexpr int W = 16 / sizeof(T);
            uint4* gv = reinterpret_cast<uint4*>(g + begin);
            const uint4* cv = reinterpret_cast<const uint4*>(c + begin);
            const int64_t nv = (end - begin) / W;
            for (int64_t v = nv - 1 - threadIdx.x; v >= 0; v -= blockDim.x) {
                uint4 a = gv[v];
                const uint4 b = cv[v];
                T* ga = reinterpret_cast<T*>(&a);
                const T* cb = reinterpret_cast<const T*>(&b);
#pragma unroll
                for (int k = 0; k < W; k++) ga[k] = update_elem<S>(ga[k], cb[k], lam);
                gv[v] = a;
            }
            rest = begin + nv * W;
        }
    }
    for (int64_t i = end - 1 - threadIdx.x; i >= rest; i -= blockDim.x) {
        g[i] = update_elem<S>(g[i], c[i], lam);
    }
}

__global__ void update_kernel(const DevTensor* __restrict__ table, int count, const double* __restrict__ lam,
                              const int* bad) {
    if (bad != nullptr && *bad != kNoBad) return;  // T2D_CHECK_FINITE found a non-finite tensor: nothing is written
    const int64_t chunk = pass_chunk<true>();
    const int ti = chunk_row(table, count, chunk);
    const double l = lam[ti];
    if (l == 0.0) return;
    const DevTensor t = table[ti];
    int64_t begin = (chunk - t.first_chunk) * kCudaChunk;
    int64_t end = min(begin + kCudaChunk, t.numel);
    with_dtype(t.dtype, [&](auto s) {
        using S = decltype(s);
        using T = typename S::T;
        update_chunk<S>((T*)t.grad, (const T*)t.constraint, begin, end, (typename S::M)l);
    });
}

// Per-device cached buffers. Device buffers are stream-ordered (cudaMallocAsync/cudaFreeAsync) and
// every call waits (on the device, not the host) for the previous call's work before reusing them.
// The pinned host tables form a ring; a slot is rewritten only after its copy has completed.
constexpr int kRing = 4;
struct DeviceState {
    std::mutex mutex;
    bool init = false;
    void* d_buf = nullptr;  // [table | partials | lam | bad | counters]
    size_t d_cap = 0;
    cudaStream_t d_stream = nullptr;  // stream that last used d_buf
    cudaEvent_t done = nullptr;       // recorded after the last call's kernels
    bool has_done = false;
    void* h_table[kRing] = {};
    size_t h_cap[kRing] = {};
    cudaEvent_t copied[kRing] = {};
    bool has_copied[kRing] = {};
    int slot = 0;
    int* h_bad = nullptr;  // pinned, for T2D_CHECK_FINITE
};
DeviceState g_states[kMaxDevices];

int32_t cuda_unavailable() { return fail(T2D_ERR_CUDA_UNAVAILABLE, "CUDA is not available (no driver or no device)"); }

// A failed CUDA call: T2D_ERR_CUDA naming it, except that no driver or no device is T2D_ERR_CUDA_UNAVAILABLE, as the
// entry points that ask first say it (the graph calls do not ask: one runs inside a capture, another once per replay)
int32_t cuda_fail(cudaError_t e, const char* what) {
    cudaGetLastError();  // clear a non-sticky error
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorStubLibrary) return cuda_unavailable();
    return fail(T2D_ERR_CUDA, "%s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
}

#define T2D_CU(call, what)                              \
    do {                                                \
        cudaError_t e_ = (call);                        \
        if (e_ != cudaSuccess) return cuda_fail(e_, what); \
    } while (0)

size_t align_up(size_t x) { return (x + 255) & ~(size_t)255; }

// A call's device workspace [table | partials | lam | bad | counters]: byte offsets, and the total size. row_bytes is
// the size of one table row (DevTensor or DevParam); the table and the counters (reduce_kernel's, one per row) take
// at least one row. The flag word and the counters are set together, by one memset per call (flags_bytes).
struct Workspace {
    size_t table, partials, lam, bad, size;
    Workspace(size_t row_bytes, int32_t count, int64_t chunks) {
        size_t rows = (size_t)std::max(count, 1);
        table = row_bytes * rows;
        partials = align_up(table);
        lam = partials + align_up(sizeof(double2) * (size_t)chunks);
        bad = lam + align_up(sizeof(double) * rows);
        size = bad + sizeof(int) * (1 + rows);
    }
    size_t flags_bytes() const { return size - bad; }
};

// The device memory a call works in: a workspace laid out by layout.
struct Buffers {
    void* workspace;
    Workspace layout;
    template <typename Row>
    Row* table() const { return (Row*)workspace; }
    double2* partials() const { return (double2*)((char*)workspace + layout.partials); }
    double* lam() const { return (double*)((char*)workspace + layout.lam); }
    int* bad() const { return (int*)((char*)workspace + layout.bad); }
    int* counters() const { return bad() + 1; }
    // the flag word and the counters to kNoBad, on stream (every call, before its reduction)
    cudaError_t reset_flags(cudaStream_t stream) const {
        return cudaMemsetAsync(bad(), 0x7f, layout.flags_bytes(), stream);
    }
};

// The chunks of a call's rows (t2d_tensor or t2d_param); a launch takes one block each: check_chunks.
template <typename Row>
int64_t total_chunks(const Row* rows, int32_t count) {
    int64_t chunks = 0;
    for (int32_t i = 0; i < count; i++) chunks += chunks_of(rows[i].numel);
    return chunks;
}

int32_t check_chunks(int64_t chunks) {
    if (chunks > INT32_MAX) return fail(T2D_ERR_BAD_COUNT, "too many elements for one step (%lld chunks)", (long long)chunks);
    return T2D_OK;
}

int32_t check_pointer(const void* p, int32_t device, int32_t tensor, const char* what) {
    cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return fail_t(tensor, T2D_ERR_WRONG_DEVICE, "tensor %d: %s is not CUDA memory (%s)", tensor, what, cudaGetErrorName(e));
    }
    if ((a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged) || a.device != device) {
        if (tensor >= 0)
            return fail_t(tensor, T2D_ERR_WRONG_DEVICE, "tensor %d: %s is not memory of cuda:%d (type %d, device %d)", tensor,
                          what, device, (int)a.type, a.device);
        return fail(T2D_ERR_WRONG_DEVICE, "%s is not memory of cuda:%d (type %d, device %d)", what, device, (int)a.type, a.device);
    }
    return T2D_OK;
}

struct DeviceGuard {
    int prev = -1;
    explicit DeviceGuard(int d) {
        if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
        if (prev != d) cudaSetDevice(d);
    }
    ~DeviceGuard() {
        int cur = -1;
        if (prev >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev) cudaSetDevice(prev);
    }
};

// Takes the next free slot of the pinned host-table ring (at least table_bytes) and makes the device
// workspace at least need bytes, ordered after the previous call's kernels on stream. Call with st.mutex held.
int32_t acquire(DeviceState& st, cudaStream_t stream, size_t table_bytes, size_t need, int* slot_out, void** host) {
    if (!st.init) {
        T2D_CU(cudaEventCreateWithFlags(&st.done, cudaEventDisableTiming), "cudaEventCreate");
        for (int k = 0; k < kRing; k++)
            T2D_CU(cudaEventCreateWithFlags(&st.copied[k], cudaEventDisableTiming), "cudaEventCreate");
        T2D_CU(cudaHostAlloc((void**)&st.h_bad, sizeof(int), cudaHostAllocDefault), "cudaHostAlloc");
        st.init = true;
    }
    // Host table in the next free ring slot (the slot's previous copy must be complete).
    int slot = -1;
    for (int k = 0; k < kRing; k++) {
        int s = (st.slot + k) % kRing;
        if (!st.has_copied[s] || cudaEventQuery(st.copied[s]) == cudaSuccess) {
            slot = s;
            break;
        }
    }
    cudaGetLastError();  // cudaErrorNotReady from the queries
    if (slot < 0) {  // the host is kRing steps ahead of the device: wait for the oldest copy
        slot = st.slot;
        T2D_CU(cudaEventSynchronize(st.copied[slot]), "cudaEventSynchronize");
    }
    st.slot = (slot + 1) % kRing;
    if (st.h_cap[slot] < table_bytes) {
        if (st.h_table[slot]) cudaFreeHost(st.h_table[slot]);
        st.h_table[slot] = nullptr;
        st.h_cap[slot] = 0;
        size_t cap = std::max(table_bytes * 2, (size_t)4096);
        T2D_CU(cudaHostAlloc((void**)&st.h_table[slot], cap, cudaHostAllocDefault), "cudaHostAlloc");
        st.h_cap[slot] = cap;
    }
    // Device workspace: wait for the previous call's kernels if they ran on another stream.
    if (st.has_done && st.d_stream != stream) T2D_CU(cudaStreamWaitEvent(stream, st.done, 0), "cudaStreamWaitEvent");
    if (st.d_cap < need) {
        if (st.d_buf) T2D_CU(cudaFreeAsync(st.d_buf, stream), "cudaFreeAsync");
        st.d_buf = nullptr;
        st.d_cap = 0;
        size_t cap = need + need / 2;
        T2D_CU(cudaMallocAsync(&st.d_buf, cap, stream), "cudaMallocAsync");
        st.d_cap = cap;
    }
    *slot_out = slot;
    *host = st.h_table[slot];
    return T2D_OK;
}

// T2D_OK if cuda:device exists (and is within the devices this library keeps state for).
int32_t check_device(int32_t device) {
    if (device >= kMaxDevices) return fail(T2D_ERR_WRONG_DEVICE, "cuda:%d is beyond the %d devices supported", device, kMaxDevices);
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess) {
        cudaGetLastError();
        ndev = 0;
    }
    if (device >= ndev) return fail(T2D_ERR_WRONG_DEVICE, "cuda:%d does not exist (%d devices)", device, ndev);
    return T2D_OK;
}

// A table row from a call's row: a projection's tensor or a fused step's parameter, with its first chunk.
DevTensor dev_row(const t2d_tensor& t, int64_t first_chunk) {
    return DevTensor{t.grad, t.constraint, t.numel, first_chunk, t.dtype, 0};
}
DevParam dev_row(const t2d_param& t, int64_t first_chunk) {
    return DevParam{t.param, t.grad, t.constraint, t.exp_avg, t.exp_avg_sq, t.max_exp_avg_sq, t.step, t.numel, first_chunk,
                    t.dtype, 0};
}

// Writes the rows into the (pinned) host table h.
template <typename Dev, typename Row>
void fill_table(Dev* h, const Row* rows, int32_t count) {
    int64_t chunks = 0;
    for (int32_t i = 0; i < count; i++) {
        h[i] = dev_row(rows[i], chunks);
        chunks += chunks_of(rows[i].numel);
    }
}

// An unplanned call (project_cuda, step_cuda) on device's cached buffers: under the device's lock, the rows'
// chunks, the workspace laid out for them, the next pinned table of the ring filled with them, then
// launch(host_table, chunks, buffers, copied), which enqueues the call's work on stream and records copied
// once the table's copy is enqueued. The ring slot is free again once that copy has completed; the next call's
// workspace waits for this one's kernels. After a failed launch both events are recorded here (the slot and the
// workspace wait for whatever was enqueued), and the launch's error comes first: a failing event record does not
// replace it.
template <typename Dev, typename Row, typename Launch>
int32_t unplanned_call(int32_t device, cudaStream_t stream, const Row* rows, int32_t count, Launch&& launch) {
    DeviceState& st = g_states[device];
    std::lock_guard<std::mutex> lock(st.mutex);
    int64_t chunks = total_chunks(rows, count);
    int32_t rc = check_chunks(chunks);
    if (rc != T2D_OK) return rc;
    Workspace layout(sizeof(Dev), count, chunks);
    int slot = 0;
    void* hv = nullptr;
    rc = acquire(st, stream, layout.table, layout.size, &slot, &hv);
    if (rc != T2D_OK) return rc;
    fill_table((Dev*)hv, rows, count);
    rc = launch((const Dev*)hv, chunks, Buffers{st.d_buf, layout}, st.copied[slot]);
    if (rc != T2D_OK) cudaEventRecord(st.copied[slot], stream);  // the table's copy may be enqueued, copied not
    st.has_copied[slot] = true;
    cudaError_t e = cudaEventRecord(st.done, stream);
    if (e == cudaSuccess) {
        st.has_done = true;
        st.d_stream = stream;
    }
    if (rc != T2D_OK) {
        cudaGetLastError();
        return rc;
    }
    return e == cudaSuccess ? T2D_OK : cuda_fail(e, "cudaEventRecord");
}

// The opening a projection and a fused step share: the table to the device (and the event that says the host copy
// may be reused), the flag word and counters reset, and the reduction whose last block per tensor computes lam with
// `lambda` (whose lam and bad are set here).
template <typename Row, typename Lambda>
int32_t enqueue_reduction(const Row* h, int32_t count, int64_t chunks, const Buffers& d, Lambda lambda,
                          cudaStream_t stream, cudaEvent_t copied) {
    Row* d_table = d.table<Row>();
    lambda.lam = d.lam();
    lambda.bad = d.bad();
    if (count > 0)
        T2D_CU(cudaMemcpyAsync(d_table, h, sizeof(Row) * (size_t)count, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
    if (copied) T2D_CU(cudaEventRecord(copied, stream), "cudaEventRecord");
    T2D_CU(d.reset_flags(stream), "cudaMemsetAsync");
    if (chunks > 0) reduce_kernel<<<(unsigned)chunks, kThreads, 0, stream>>>(d_table, count, d.partials(), d.counters(), lambda);
    T2D_CU(cudaGetLastError(), "reduce kernel launch");
    return T2D_OK;
}

// Enqueues a projection on stream: enqueue_reduction, then the update.
int32_t launch_projection(const DevTensor* h, int32_t count, int64_t chunks, const Buffers& d, ProjectionLambda lambda,
                          cudaStream_t stream, cudaEvent_t copied) {
    int32_t rc = enqueue_reduction(h, count, chunks, d, lambda, stream, copied);
    if (rc != T2D_OK) return rc;
    DevTensor* d_table = d.table<DevTensor>();
    if (chunks > 0) update_kernel<<<(unsigned)chunks, kThreads, 0, stream>>>(d_table, count, d.lam(), lambda.check ? d.bad() : nullptr);
    T2D_CU(cudaGetLastError(), "update kernel launch");
    return T2D_OK;
}

int32_t project_cuda(const t2d_tensor* tensors, int32_t count, int32_t device, const void* g_value,
                     int32_t g_value_dtype, double g_constraint, double alpha, double beta, int32_t options,
                     cudaStream_t stream, double* lambdas_out) {
    int32_t rc0 = check_device(device);
    if (rc0 != T2D_OK) return rc0;
    DeviceGuard guard(device);
    // Device pointers: every grad, constraint and g_value on this device. Nothing is written before here.
    for (int32_t i = 0; i < count; i++) {
        if (tensors[i].numel == 0) continue;
        int32_t rc = check_pointer(tensors[i].grad, device, i, "grad");
        if (rc == T2D_OK) rc = check_pointer(tensors[i].constraint, device, i, "constraint gradient");
        if (rc != T2D_OK) return rc;
    }
    int32_t rc = check_pointer(g_value, device, -1, "g_value");
    if (rc != T2D_OK) return rc;
    if (lambdas_out) {
        rc = check_pointer(lambdas_out, device, -1, "lambdas_out");
        if (rc != T2D_OK) return rc;
    }
    if (count == 0) return T2D_OK;

    const bool check = (options & T2D_CHECK_FINITE) != 0;
    int bad = kNoBad;
    const ProjectionLambda lambda{g_value, g_value_dtype, g_constraint, alpha, beta, nullptr, lambdas_out, check ? 1 : 0,
                                  nullptr};
    rc = unplanned_call<DevTensor>(device, stream, tensors, count,
                                   [&](const DevTensor* h, int64_t chunks, const Buffers& d, cudaEvent_t copied) -> int32_t {
        int32_t r = launch_projection(h, count, chunks, d, lambda, stream, copied);
        if (r != T2D_OK || !check) return r;
        // the one host synchronisation, asked for by the caller (st.h_bad is the device's: read under its lock)
        DeviceState& st = g_states[device];
        T2D_CU(cudaMemcpyAsync(st.h_bad, d.bad(), sizeof(int), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
        T2D_CU(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        bad = *st.h_bad;
        return T2D_OK;
    });
    if (rc != T2D_OK || bad == kNoBad) return rc;
    int i = bad / 4;
    if (bad % 4 == 2)
        return fail_t(i, T2D_ERR_NONFINITE, "tensor %d: g_value (the unconditional loss) is not finite", i);
    return fail_nonfinite(i, bad % 4 == 0);
}

// ---------------------------------------------------------------- fused optimizer step

// One chunk of the update (Write) or of its check (!Write: nothing stored, a non-finite value to store flags
// the tensor), walked from its end when Reverse (pass_chunk). The same functors as the CPU path (t2d_optim.h).
template <typename S, typename Op, int NS, bool Write, bool Reverse>
__device__ void step_elems(const Op& op, const DevParam& t, int64_t begin, int64_t end, typename S::M lam, int ti,
                           int* bad) {
    using T = typename S::T;
    using M = typename S::M;
    T* __restrict__ p = (T*)t.param;
    T* __restrict__ g = (T*)t.grad;
    const T* __restrict__ c = (const T*)t.constraint;
    T* __restrict__ s0 = (T*)t.s0;
    T* __restrict__ s1 = (T*)t.s1;
    T* __restrict__ s2 = (T*)t.s2;
    uint32_t found = 0;
    auto walk = [&](auto&& elem) {
        if constexpr (Reverse) {
            for (int64_t i = end - 1 - threadIdx.x; i >= begin; i -= blockDim.x) elem(i);
        } else {
            for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) elem(i);
        }
    };
    if (c != nullptr) {
        walk([&](int64_t i) { found |= t2d_step_elem<S, Op, NS, true, Write>(op, p, g, c, s0, s1, s2, i, lam); });
    } else {
        walk([&](int64_t i) { found |= t2d_step_elem<S, Op, NS, false, Write>(op, p, g, c, s0, s1, s2, i, lam); });
    }
    if (!Write && found) atomicMin(bad, ti * 8 + T2D_NONFINITE_UPDATE);
}

template <typename S, bool Write, bool Reverse>
__device__ void step_chunk(const DevParam& t, const t2d_optimizer& o, int64_t begin, int64_t end, double lam, int ti,
                           int* bad) {
    using M = typename S::M;
    int64_t step = *t.step + 1;
    switch (t2d_state_count(o)) {
        case 0: step_elems<S, T2dSgdOp<M>, 0, Write, Reverse>(T2dSgdOp<M>::make(o, step), t, begin, end, (M)lam, ti, bad); break;
        case 1: step_elems<S, T2dSgdOp<M>, 1, Write, Reverse>(T2dSgdOp<M>::make(o, step), t, begin, end, (M)lam, ti, bad); break;
        case 2: step_elems<S, T2dAdamOp<M>, 2, Write, Reverse>(T2dAdamOp<M>::make(o, step), t, begin, end, (M)lam, ti, bad); break;
        default: step_elems<S, T2dAdamOp<M>, 3, Write, Reverse>(T2dAdamOp<M>::make(o, step), t, begin, end, (M)lam, ti, bad); break;
    }
}

// Pass 2 (!Write, half types only) and pass 3 (Write, skipped entirely when *bad is set); Reverse: the chunks in the
// reverse of the pass before's order (pass_chunk).
template <bool Write, bool Reverse>
__global__ void step_update_kernel(const DevParam* __restrict__ table, int count, const double* __restrict__ lam,
                                   t2d_optimizer o, const t2d_step_scalars* sc, int* bad) {
    // a step already refused by an earlier pass: nothing to write, nothing to check (the check pass goes on only
    // while the flag is unset or holds its own kind, so that the lowest overflowing tensor is the one named)
    const int b = *(volatile int*)bad;
    if (b != kNoBad && (Write || b % 8 != T2D_NONFINITE_UPDATE)) return;
    const int64_t chunk = pass_chunk<Reverse>();
    const int ti = chunk_row(table, count, chunk);
    const DevParam t = table[ti];
    if (!Write && !t2d_is_half(t.dtype)) return;
    int64_t begin = (chunk - t.first_chunk) * kCudaChunk;
    int64_t end = min(begin + kCudaChunk, t.numel);
    const double l = lam[ti];
    if (sc) o.lr = sc->lr;
    with_dtype(t.dtype, [&](auto s) { step_chunk<decltype(s), Write, Reverse>(t, o, begin, end, l, ti, bad); });
}

// Pass 4, one block: the step counts, or the skipped step in the status.
__global__ void step_finalize_kernel(const DevParam* __restrict__ table, int count, const int* bad,
                                     const double* __restrict__ lam, double* __restrict__ lambdas_out,
                                     t2d_step_status* status) {
    const int b = *bad;
    const bool skip = b != kNoBad;
    if (!skip)
        for (int i = threadIdx.x; i < count; i += blockDim.x) {
            *table[i].step += 1;
            if (lambdas_out) lambdas_out[i] = lam[i]; // a skipped step writes nothing, lambdas_out included
        }
    if (threadIdx.x == 0) {
        status->calls += 1;
        if (skip) {
            status->skipped += 1;
            if (status->first_skipped == 0) {
                status->first_skipped = status->calls;
                status->first_tensor = b / 8;
                status->first_reason = b % 8;
            }
            status->current = b / 8 + 1;
            status->current_reason = b % 8;
        } else {
            status->current = 0;
            status->current_reason = 0;
        }
    }
}

// Every pointer of a fused step on cuda:device (nothing is written before this).
int32_t check_step_pointers(const t2d_param* params, int32_t count, const t2d_optimizer& o, int32_t device,
                            const void* g_value, const t2d_step_status* status, const double* lambdas_out,
                            const t2d_step_scalars* scalars) {
    int states = t2d_state_count(o);
    for (int32_t i = 0; i < count; i++) {
        const t2d_param& t = params[i];
        int32_t rc = check_pointer(t.step, device, i, "step");
        if (t.numel > 0) {
            if (rc == T2D_OK) rc = check_pointer(t.param, device, i, "param");
            if (rc == T2D_OK) rc = check_pointer(t.grad, device, i, "grad");
            if (rc == T2D_OK && t.constraint) rc = check_pointer(t.constraint, device, i, "constraint gradient");
            if (rc == T2D_OK && states > 0) rc = check_pointer(t.exp_avg, device, i, "exp_avg");
            if (rc == T2D_OK && states > 1) rc = check_pointer(t.exp_avg_sq, device, i, "exp_avg_sq");
            if (rc == T2D_OK && states > 2) rc = check_pointer(t.max_exp_avg_sq, device, i, "max_exp_avg_sq");
        }
        if (rc != T2D_OK) return rc;
    }
    int32_t rc = check_pointer(g_value, device, -1, "g_value");
    if (rc == T2D_OK) rc = check_pointer(status, device, -1, "status");
    if (rc == T2D_OK && lambdas_out) rc = check_pointer(lambdas_out, device, -1, "lambdas_out");
    if (rc == T2D_OK && scalars) rc = check_pointer(scalars, device, -1, "scalars");
    return rc;
}

// Enqueues a fused step on stream: the table's copy from pinned memory (then copied, when not NULL, is recorded:
// the pinned table may be rewritten once it has completed), the flag's and counters' reset and the passes (three,
// four with a half-precision row) in the buffers d. lambda's lam and bad are set here; its scalars, when not NULL, replace lr,
// g_constraint, alpha and beta (read on the device).
int32_t launch_step(const DevParam* h, int32_t count, int64_t chunks, const Buffers& d, bool half, const t2d_optimizer& o,
                    StepLambda lambda, t2d_step_status* status, double* lambdas_out, cudaStream_t stream,
                    cudaEvent_t copied) {
    int32_t rc = enqueue_reduction(h, count, chunks, d, lambda, stream, copied);
    if (rc != T2D_OK) return rc;
    DevParam* d_table = d.table<DevParam>();
    // each pass over the chunks walks them opposite to the pass before: reduction forwards, then the check pass (half
    // types) backwards, the update forwards; or, without a check pass, the update backwards
    if (half && chunks > 0) {
        step_update_kernel<false, true><<<(unsigned)chunks, kThreads, 0, stream>>>(d_table, count, d.lam(), o, lambda.sc,
                                                                                  d.bad());
        T2D_CU(cudaGetLastError(), "step check kernel launch");
        step_update_kernel<true, false><<<(unsigned)chunks, kThreads, 0, stream>>>(d_table, count, d.lam(), o, lambda.sc,
                                                                                  d.bad());
    } else if (chunks > 0) {
        step_update_kernel<true, true><<<(unsigned)chunks, kThreads, 0, stream>>>(d_table, count, d.lam(), o, lambda.sc,
                                                                                 d.bad());
    }
    T2D_CU(cudaGetLastError(), "step update kernel launch");
    step_finalize_kernel<<<1, kThreads, 0, stream>>>(d_table, count, d.bad(), d.lam(), lambdas_out, status);
    T2D_CU(cudaGetLastError(), "step finalize kernel launch");
    return T2D_OK;
}

int32_t step_cuda(const t2d_param* params, int32_t count, const t2d_optimizer& o, int32_t device, const void* g_value,
                  int32_t g_value_dtype, double g_constraint, double alpha, double beta, cudaStream_t stream,
                  t2d_step_status* status, double* lambdas_out) {
    int32_t rc = check_device(device);
    if (rc != T2D_OK) return rc;
    DeviceGuard guard(device);
    rc = check_step_pointers(params, count, o, device, g_value, status, lambdas_out, nullptr);
    if (rc != T2D_OK) return rc;

    const bool half = t2d_has_half(params, count);
    const StepLambda lambda{g_value, g_value_dtype, g_constraint, alpha, beta, nullptr, nullptr, nullptr};
    return unplanned_call<DevParam>(device, stream, params, count,
                                    [&](const DevParam* h, int64_t chunks, const Buffers& d, cudaEvent_t copied) {
        return launch_step(h, count, chunks, d, half, o, lambda, status, lambdas_out, stream, copied);
    });
}

// The step's kernels, loaded now (with lazy module loading they would be loaded at their first launch,
// which a stream capture must not be the one to do).
int32_t load_step_kernels() {
    cudaFuncAttributes a;
    T2D_CU(cudaFuncGetAttributes(&a, reduce_kernel<DevParam, StepLambda>), "cudaFuncGetAttributes");
    T2D_CU(cudaFuncGetAttributes(&a, step_update_kernel<false, true>), "cudaFuncGetAttributes");
    T2D_CU(cudaFuncGetAttributes(&a, step_update_kernel<true, false>), "cudaFuncGetAttributes");
    T2D_CU(cudaFuncGetAttributes(&a, step_update_kernel<true, true>), "cudaFuncGetAttributes");
    T2D_CU(cudaFuncGetAttributes(&a, step_finalize_kernel), "cudaFuncGetAttributes");
    return T2D_OK;
}

}  // namespace
}  // namespace t2d

// A plan (text2data.h): a pinned table and a device workspace sized once, owned by the caller.
struct t2d_cuda_plan {
    int32_t device;
    int32_t rows;           // at most this many rows per step
    int64_t chunks;         // at most this many chunks per step
    t2d::Workspace layout;  // Workspace(sizeof(DevParam), rows, chunks): fits every step the plan takes
    t2d::DevParam* host;    // pinned, rows entries
    void* workspace;        // device memory, layout.size bytes
};

extern "C" int32_t t2d_cuda_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n > 0 ? 1 : 0;
}

extern "C" int32_t t2d_project_cuda(const t2d_tensor* tensors, int32_t count, const void* g_value_device,
                                    int32_t g_value_dtype, double g_constraint, double alpha, double beta,
                                    int32_t options, void* cuda_stream, double* lambdas_out_device) {
    t2d::clear_error();
    int32_t device = 0;
    int32_t rc = t2d::validate_project_cuda(tensors, count, g_value_device, g_value_dtype, &device);
    if (rc != T2D_OK) return rc;
    if (!t2d_cuda_available()) return t2d::cuda_unavailable();
    if (device < 0) device = 0;  // count == 0: any device will do
    try {
        return t2d::project_cuda(tensors, count, device, g_value_device, g_value_dtype, g_constraint, alpha, beta,
                                 options, (cudaStream_t)cuda_stream, lambdas_out_device);
    } catch (...) {
        return t2d::fail(T2D_ERR_OUT_OF_MEMORY, "unexpected internal error");
    }
}

extern "C" int32_t t2d_step_cuda(const t2d_param* params, int32_t count, const t2d_optimizer* optimizer,
                                 const void* g_value_device, int32_t g_value_dtype, double g_constraint, double alpha,
                                 double beta, int32_t options, void* cuda_stream, t2d_step_status* status_device,
                                 double* lambdas_out_device) {
    t2d::clear_error();
    int32_t device = 0;
    int32_t rc = t2d::validate_step_cuda(params, count, optimizer, g_value_device, g_value_dtype, options, status_device,
                                         &device);
    if (rc != T2D_OK) return rc;
    if (!t2d_cuda_available()) return t2d::cuda_unavailable();
    if (device < 0) device = 0;  // count == 0: any device will do
    try {
        return t2d::step_cuda(params, count, *optimizer, device, g_value_device, g_value_dtype, g_constraint, alpha, beta,
                              (cudaStream_t)cuda_stream, status_device, lambdas_out_device);
    } catch (...) {
        return t2d::fail(T2D_ERR_OUT_OF_MEMORY, "unexpected internal error");
    }
}

extern "C" int32_t t2d_plan_create(const t2d_param* params, int32_t count, int32_t device, t2d_cuda_plan** plan_out) {
    t2d::clear_error();
    int32_t rc = t2d::validate_plan(params, count, device, plan_out);
    if (rc != T2D_OK) return rc;
    if (!t2d_cuda_available()) return t2d::cuda_unavailable();
    rc = t2d::check_device(device);
    if (rc != T2D_OK) return rc;
    t2d::DeviceGuard guard(device);
    int64_t chunks = t2d::total_chunks(params, count);
    rc = t2d::check_chunks(chunks);
    if (rc != T2D_OK) return rc;
    rc = t2d::load_step_kernels();
    if (rc != T2D_OK) return rc;
    t2d_cuda_plan* plan = new (std::nothrow)
        t2d_cuda_plan{device, count, chunks, t2d::Workspace(sizeof(t2d::DevParam), count, chunks), nullptr, nullptr};
    if (plan == nullptr) return t2d::fail(T2D_ERR_OUT_OF_MEMORY, "out of host memory for a plan");
    cudaError_t e = cudaHostAlloc((void**)&plan->host, plan->layout.table, cudaHostAllocDefault);
    if (e == cudaSuccess) e = cudaMalloc(&plan->workspace, plan->layout.size);
    if (e != cudaSuccess) {
        t2d_plan_destroy(plan);
        return t2d::cuda_fail(e, "allocating a plan");
    }
    *plan_out = plan;
    return T2D_OK;
}

extern "C" void t2d_plan_destroy(t2d_cuda_plan* plan) {
    if (plan == nullptr) return;
    t2d::DeviceGuard guard(plan->device);
    cudaDeviceSynchronize();  // no step enqueued with the plan may still read its memory
    if (plan->workspace) cudaFree(plan->workspace);
    if (plan->host) cudaFreeHost(plan->host);
    cudaGetLastError();
    delete plan;
}

extern "C" int32_t t2d_step_cuda_planned(t2d_cuda_plan* plan, const t2d_param* params, int32_t count,
                                         const t2d_optimizer* optimizer, const void* g_value_device,
                                         int32_t g_value_dtype, const t2d_step_scalars* scalars_device,
                                         int32_t options, void* cuda_stream, t2d_step_status* status_device) {
    t2d::clear_error();
    int32_t device = 0;
    int32_t rc = t2d::validate_step_planned(plan, params, count, optimizer, g_value_device, g_value_dtype,
                                            scalars_device, options, status_device, &device);
    if (rc != T2D_OK) return rc;
    if (count > 0 && device != plan->device)
        return t2d::fail(T2D_ERR_WRONG_DEVICE, "the tensors are on cuda:%d but the plan was made for cuda:%d", device, plan->device);
    int64_t chunks = t2d::total_chunks(params, count);
    if (count > plan->rows || chunks > plan->chunks)
        return t2d::fail(T2D_ERR_SIZE_MISMATCH, "the step (%d tensors, %lld chunks) does not fit the plan (%d tensors, %lld chunks)",
                         count, (long long)chunks, plan->rows, (long long)plan->chunks);
    try {
        t2d::DeviceGuard guard(plan->device);
        rc = t2d::check_step_pointers(params, count, *optimizer, plan->device, g_value_device, status_device, nullptr,
                                      scalars_device);
        if (rc != T2D_OK) return rc;
        t2d::fill_table(plan->host, params, count);
        const t2d::StepLambda lambda{g_value_device, g_value_dtype, 0.0, 0.0, 0.0, scalars_device, nullptr, nullptr};
        return t2d::launch_step(plan->host, count, chunks, t2d::Buffers{plan->workspace, plan->layout},
                                t2d_has_half(params, count), *optimizer, lambda, status_device, nullptr,
                                (cudaStream_t)cuda_stream, nullptr);
    } catch (...) {
        return t2d::fail(T2D_ERR_OUT_OF_MEMORY, "unexpected internal error");
    }
}

extern "C" int32_t t2d_graph_capture_begin(void* cuda_stream) {
    t2d::clear_error();
    int32_t rc = t2d::validate_capture_begin(cuda_stream);
    if (rc != T2D_OK) return rc;
    cudaError_t e = cudaStreamBeginCapture((cudaStream_t)cuda_stream, cudaStreamCaptureModeGlobal);
    return e == cudaSuccess ? T2D_OK : t2d::cuda_fail(e, "cudaStreamBeginCapture");
}

extern "C" int32_t t2d_graph_capture_end(void* cuda_stream, void** graph_exec_out) {
    t2d::clear_error();
    int32_t rc = t2d::validate_capture_end(cuda_stream, graph_exec_out);
    if (rc != T2D_OK) return rc;
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture((cudaStream_t)cuda_stream, &graph);
    if (e != cudaSuccess) {
        if (graph) cudaGraphDestroy(graph);
        return t2d::cuda_fail(e, "cudaStreamEndCapture (something in the captured work was not capturable)");
    }
    if (graph == nullptr) return t2d::fail(T2D_ERR_CUDA, "the capture produced no graph");
    if (graph_exec_out == nullptr) {
        cudaGraphDestroy(graph);
        return T2D_OK;
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiateWithFlags(&exec, graph, 0);
    cudaGraphDestroy(graph);  // the executable graph is independent of it
    if (e != cudaSuccess) return t2d::cuda_fail(e, "cudaGraphInstantiateWithFlags");
    *graph_exec_out = exec;
    return T2D_OK;
}

extern "C" int32_t t2d_graph_launch(void* graph_exec, void* cuda_stream) {
    t2d::clear_error();
    int32_t rc = t2d::validate_graph_launch(graph_exec);
    if (rc != T2D_OK) return rc;
    cudaError_t e = cudaGraphLaunch((cudaGraphExec_t)graph_exec, (cudaStream_t)cuda_stream);
    return e == cudaSuccess ? T2D_OK : t2d::cuda_fail(e, "cudaGraphLaunch");
}

extern "C" void t2d_graph_destroy(void* graph_exec) {
    if (graph_exec) cudaGraphExecDestroy((cudaGraphExec_t)graph_exec);
    cudaGetLastError();
}
