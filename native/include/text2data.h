/*
 * text2data.h - the C ABI of libtext2data, Text2Data's fused constrained-gradient step.
 *
 * For every tensor t of a step (all reductions per tensor):
 *
 *     n    = sum(c*c)
 *     dot  = sum(g*c)
 *     phi  = min(alpha * (g_value - g_constraint), beta * n)
 *     lam  = max(0, (phi - dot) / (1e-8 + n))        (NaN propagates, as torch.relu)
 *     g   += lam * c                                 (in place)
 *
 * Reductions accumulate in double for float64 and float32 tensors, in float32 (CUDA) or double (CPU)
 * for bfloat16/float16. Results do not depend on the number of threads.
 *
 * Every entry point validates all of its input first; on any error it returns a non-zero status,
 * sets a thread-local message (t2d_last_error, t2d_last_error_tensor) naming the offending tensor
 * index, and writes nothing. (T2D_ERR_NONFINITE, found while computing, is the one exception: see
 * T2D_CHECK_FINITE.)
 * This header is plain C: it is the only interface of the library.
 */
#ifndef TEXT2DATA_H
#define TEXT2DATA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define T2D_ABI_VERSION 1

#if defined(_WIN32)
#define T2D_API __declspec(dllexport)
#elif defined(__GNUC__)
#define T2D_API __attribute__((visibility("default")))
#else
#define T2D_API
#endif

/* dtype codes */
#define T2D_FLOAT32  0
#define T2D_FLOAT64  1
#define T2D_BFLOAT16 2
#define T2D_FLOAT16  3

/* status codes */
#define T2D_OK                    0
#define T2D_ERR_NULL_POINTER      1  /* a required pointer is NULL */
#define T2D_ERR_BAD_COUNT         2  /* negative tensor count or numel */
#define T2D_ERR_SIZE_MISMATCH     3  /* grad and constraint numel differ */
#define T2D_ERR_UNSUPPORTED_DTYPE 4
#define T2D_ERR_DTYPE_MISMATCH    5  /* grad and constraint dtype differ */
#define T2D_ERR_WRONG_DEVICE      6  /* a tensor is not where the entry point needs it */
#define T2D_ERR_NOT_CONTIGUOUS    7
#define T2D_ERR_CUDA_NOT_BUILT    8  /* library built without CUDA */
#define T2D_ERR_CUDA_UNAVAILABLE  9  /* built with CUDA, but no driver or no device */
#define T2D_ERR_CUDA              10 /* a CUDA runtime call or kernel launch failed */
#define T2D_ERR_OUT_OF_MEMORY     11
#define T2D_ERR_NONFINITE         12 /* T2D_CHECK_FINITE: a tensor's n or dot is NaN or infinite; fused step: see below */
#define T2D_ERR_BAD_OPTION        13 /* an optimizer option is out of range */

/* options of the project calls */
#define T2D_CHECK_FINITE 1 /* fail with T2D_ERR_NONFINITE if any tensor's n = <c,c> or dot = <g,c> is not
                              finite; then no tensor is projected (nothing is written). On CUDA this costs
                              one synchronisation of the stream. */

/* t2d_tensor.device */
#define T2D_DEVICE_HOST (-1)

/* t2d_tensor.flags */
#define T2D_GRAD_CONTIGUOUS       1
#define T2D_CONSTRAINT_CONTIGUOUS 2

/* One parameter tensor of a step: its gradient g (updated in place) and kept constraint gradient c. */
typedef struct t2d_tensor {
    void*       grad;              /* g: numel elements of dtype; may be NULL when numel == 0 */
    const void* constraint;        /* c: constraint_numel elements of constraint_dtype */
    int64_t     numel;
    int64_t     constraint_numel;  /* must equal numel */
    int32_t     dtype;             /* T2D_FLOAT32 ... */
    int32_t     constraint_dtype;  /* must equal dtype */
    int32_t     device;            /* T2D_DEVICE_HOST, or k >= 0 for CUDA device k (grad) */
    int32_t     constraint_device; /* same convention, for c */
    int32_t     flags;             /* T2D_GRAD_CONTIGUOUS | T2D_CONSTRAINT_CONTIGUOUS: both required */
    int32_t     reserved;          /* set to 0 */
} t2d_tensor;                      /* 56 bytes on LP64 */

/*
 * CPU path. Every tensor must be host memory (device == T2D_DEVICE_HOST).
 * lambdas_out, if not NULL, receives count doubles: the lam of each tensor (written on success only).
 */
T2D_API int32_t t2d_project_host(const t2d_tensor* tensors, int32_t count,
                         double g_value, double g_constraint, double alpha, double beta,
                         int32_t options, double* lambdas_out);

/*
 * CUDA path. Every tensor must be memory of one CUDA device k (device == k, checked with
 * cudaPointerGetAttributes). g_value_device points to one element of g_value_dtype on device k
 * (it is read by a kernel: no host synchronisation). Work is enqueued on cuda_stream (a cudaStream_t;
 * NULL for the legacy default stream) and the call returns without waiting for it.
 * lambdas_out_device, if not NULL, is device memory receiving count doubles.
 */
T2D_API int32_t t2d_project_cuda(const t2d_tensor* tensors, int32_t count,
                         const void* g_value_device, int32_t g_value_dtype,
                         double g_constraint, double alpha, double beta, int32_t options,
                         void* cuda_stream, double* lambdas_out_device);

/* ------------------------------------------------------------------ fused constrained optimizers
 *
 * One call takes a whole constrained optimizer step: for every parameter tensor, the projection above
 * (when it has a constraint gradient; else g is used as it is) and then the optimizer update of the
 * parameter and its state, with PyTorch's (libtorch's C++ optimizers') arithmetic and option names:
 *
 *   Adam:  g' = g + weight_decay*p;  m = beta1*m + (1-beta1)*g';  v = beta2*v + (1-beta2)*g'*g'
 *          (amsgrad: vmax = max(vmax, v), used for v);  step_size = lr / (1 - beta1^step)
 *          p = p - step_size * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 *   AdamW: p = p * (1 - lr*weight_decay), then Adam without weight_decay
 *   SGD:   g' = g + weight_decay*p;  with momentum: buf = g' at the first step, else
 *          buf = momentum*buf + (1-dampening)*g';  g' = nesterov ? g' + momentum*buf : buf;  p = p - lr*g'
 *
 * step is the parameter's own step count (libtorch keeps one per parameter): read, incremented on success.
 * Math in double for float64 tensors, in float for the others (bfloat16/float16 converted on load and
 * rounded on store). The projected gradient g + lam*c is written back to g, as the two-step path leaves it.
 *
 * Contract: g_value (when a tensor is projected) and every used gradient (g and c) must be finite, and for bfloat16/float16 every value the step
 * would store (g, p and the state) must be finite too; otherwise the call writes nothing at all, for any
 * tensor (parameters, state, gradients and step counts stay bit for bit), and fails with
 * T2D_ERR_NONFINITE naming the first offending tensor (t2d_last_error_tensor). The check is always made.
 */

/* t2d_optimizer.kind */
#define T2D_SGD   0
#define T2D_ADAM  1
#define T2D_ADAMW 2

/* t2d_optimizer.flags */
#define T2D_AMSGRAD  1 /* Adam, AdamW: use the maximum of the second moments */
#define T2D_NESTEROV 2 /* SGD: Nesterov momentum (needs momentum > 0 and dampening == 0) */

/* The optimizer and its options, PyTorch's names and meaning. Options an optimizer lacks are ignored. */
typedef struct t2d_optimizer {
    int32_t kind;          /* T2D_SGD, T2D_ADAM or T2D_ADAMW */
    int32_t flags;         /* T2D_AMSGRAD, T2D_NESTEROV */
    double  lr;            /* >= 0 */
    double  beta1, beta2;  /* Adam/AdamW, in [0, 1) */
    double  eps;           /* Adam/AdamW, >= 0 */
    double  weight_decay;  /* >= 0; L2 for Adam and SGD, decoupled for AdamW */
    double  momentum;      /* SGD, >= 0 */
    double  dampening;     /* SGD */
} t2d_optimizer;

/* t2d_param.flags */
#define T2D_PARAM_CONTIGUOUS 1 /* every buffer of the parameter is contiguous: required when numel > 1 */

/* One parameter tensor of a fused step: every buffer holds numel elements of dtype, on one device. */
typedef struct t2d_param {
    void*       param;          /* p, updated in place */
    void*       grad;           /* g, updated in place to g + lam*c */
    const void* constraint;     /* c, the kept constraint gradient; NULL: not projected (g used as it is) */
    void*       exp_avg;        /* Adam/AdamW: first moment; SGD with momentum != 0: momentum buffer; else NULL */
    void*       exp_avg_sq;     /* Adam/AdamW: second moment; else NULL */
    void*       max_exp_avg_sq; /* Adam/AdamW with T2D_AMSGRAD; else NULL */
    int64_t*    step;           /* the parameter's step count (same memory kind as p): read, then incremented */
    int64_t     numel;
    int32_t     dtype;          /* T2D_FLOAT32 ... */
    int32_t     device;         /* T2D_DEVICE_HOST, or k >= 0 for CUDA device k */
    int32_t     flags;          /* T2D_PARAM_CONTIGUOUS */
    int32_t     reserved;       /* set to 0 */
} t2d_param;                    /* 80 bytes on LP64 */

/*
 * CPU path of the fused step. lam of each tensor as in t2d_project_host (g_value, g_constraint, alpha,
 * beta); options: reserved, set to 0. lambdas_out, if not NULL, receives count doubles (lam of each
 * tensor, 0 where not projected), written on success only.
 */
T2D_API int32_t t2d_step_host(const t2d_param* params, int32_t count, const t2d_optimizer* optimizer,
                         double g_value, double g_constraint, double alpha, double beta,
                         int32_t options, double* lambdas_out);

/* Device memory the CUDA step reports skipped steps in (zero it once before the first step). */
typedef struct t2d_step_status {
    int64_t calls;          /* fused steps enqueued with this status */
    int64_t skipped;        /* of which skipped because a value was not finite */
    int64_t first_skipped;  /* the call number (1-based) of the first skipped step, 0 if none */
    int32_t first_tensor;   /* the first offending tensor of that step */
    int32_t first_reason;   /* T2D_NONFINITE_CONSTRAINT, _GRAD, _UPDATE or _LOSS (below) */
    int32_t current;        /* this call's first offending tensor + 1 (0: none); scratch of the kernels */
    int32_t current_reason; /* scratch of the kernels */
} t2d_step_status;          /* 40 bytes */

/* t2d_step_status reasons */
#define T2D_NONFINITE_CONSTRAINT 1 /* the constraint gradient c holds a NaN or an infinity */
#define T2D_NONFINITE_GRAD       2 /* the gradient g holds a NaN or an infinity */
#define T2D_NONFINITE_UPDATE     3 /* bfloat16/float16: the update overflowed */
#define T2D_NONFINITE_LOSS       4 /* g_value is not finite, or alpha * (g_value - g_constraint) overflowed
                                      (first_tensor: the first projected tensor), or a projected tensor's lam
                                      overflowed from a finite excess (that tensor) */

/*
 * CUDA path of the fused step: a constant number of kernel launches whatever the count, no host
 * synchronisation. A first kernel reduces every tensor and finds non-finite values, the update kernel
 * skips everything when one was found (nothing written, step counts unchanged) and counts the skipped
 * step in status_device (device memory, one t2d_step_status; required). The host learns of a skipped
 * step only by reading status_device. g_value_device and cuda_stream as in t2d_project_cuda; step
 * pointers are device memory. lambdas_out_device, if not NULL, is device memory receiving count doubles
 * (lam of each tensor, 0 where not projected), written only by a step that is not skipped.
 */
T2D_API int32_t t2d_step_cuda(const t2d_param* params, int32_t count, const t2d_optimizer* optimizer,
                         const void* g_value_device, int32_t g_value_dtype,
                         double g_constraint, double alpha, double beta, int32_t options,
                         void* cuda_stream, t2d_step_status* status_device, double* lambdas_out_device);

/* ------------------------------------------------------------------ CUDA graphs
 * t2d_step_cuda cannot be captured into a CUDA graph: it reuses a ring of pinned tables, records events, may
 * grow its workspace, and takes the learning rate and the projection's scalars as values, which a graph would
 * keep forever. A plan holds what a captured step needs fixed (its own pinned table and device workspace, sized
 * once), and the scalars are read on the device, so that a replay sees their current values.
 */

/* The scalars of a planned step, in device memory (written by the caller between replays). */
typedef struct t2d_step_scalars {
    double lr;            /* the optimizer's learning rate (replaces optimizer->lr) */
    double g_constraint;
    double alpha;
    double beta;
} t2d_step_scalars;       /* 32 bytes */

typedef struct t2d_cuda_plan t2d_cuda_plan; /* opaque */

/*
 * Makes a plan for steps over at most count parameters and at most as many chunks as these rows make (numel
 * of each row; the pointers are not read) on CUDA device `device`, and loads the step's kernels. Allocates device and pinned
 * memory: call it outside any stream capture. *plan_out is NULL on failure.
 */
T2D_API int32_t t2d_plan_create(const t2d_param* params, int32_t count, int32_t device, t2d_cuda_plan** plan_out);

/* Frees a plan (NULL: nothing), once the device has finished every step enqueued with it (it waits for the
   whole device, cudaDeviceSynchronize: call it outside any stream capture, as t2d_plan_create). A graph that
   captured a step with the plan must not be replayed afterwards. */
T2D_API void t2d_plan_destroy(t2d_cuda_plan* plan);

/*
 * t2d_step_cuda with a plan: the same checks, step and status, but lr, g_constraint, alpha and beta are read
 * by the kernels from scalars_device (device memory of the plan's device), and the call enqueues only a copy
 * of the table from the plan's pinned memory, a memset and the kernels: no allocation, no event, no host
 * synchronisation. A stream capture of the call records the whole step, and each replay of the graph takes it
 * again with the table the plan's pinned memory then holds (that of the plan's last call): the graph keeps the
 * captured call's row count, chunk count and passes, so the plan's last call before a replay must have the
 * captured call's rows (count, numel and dtype of each; the pointers may differ). The rows must fit the plan
 * (no more rows or chunks than it was made for). Each call rewrites that pinned table, which a step
 * enqueued with the plan (or a replay) reads only when it runs: call it with other rows only once those have
 * run. A plan serves one stream and one thread at a time. The optimizer's other options are the call's (a
 * graph keeps those of the captured call), and the device scalars are used as they are: the checks of
 * optimizer->lr do not apply to them.
 */
T2D_API int32_t t2d_step_cuda_planned(t2d_cuda_plan* plan, const t2d_param* params, int32_t count,
                         const t2d_optimizer* optimizer, const void* g_value_device, int32_t g_value_dtype,
                         const t2d_step_scalars* scalars_device, int32_t options, void* cuda_stream,
                         t2d_step_status* status_device);

/*
 * Stream capture, for callers without a CUDA runtime binding of their own. capture_begin starts capturing
 * cuda_stream (a cudaStream_t other than the legacy default stream) in cudaStreamCaptureModeGlobal;
 * capture_end ends it and, when graph_exec_out is not NULL, instantiates the graph into *graph_exec_out (NULL
 * discards the capture, e.g. after a failure). launch enqueues one replay on cuda_stream; destroy frees an
 * instantiated graph (a replay in flight completes first).
 */
T2D_API int32_t t2d_graph_capture_begin(void* cuda_stream);
T2D_API int32_t t2d_graph_capture_end(void* cuda_stream, void** graph_exec_out);
T2D_API int32_t t2d_graph_launch(void* graph_exec, void* cuda_stream);
T2D_API void t2d_graph_destroy(void* graph_exec);

/* 1 if the library was built with CUDA and a CUDA driver and at least one device are present. */
T2D_API int32_t t2d_cuda_available(void);

/* 1 if the library was built with CUDA (whatever the machine has). */
T2D_API int32_t t2d_cuda_built(void);

/* Worker threads of the CPU path: at most n (n <= 0: as many as the CPUs this process may run on, its
   affinity mask). Returns the previous limit. */
T2D_API int32_t t2d_set_num_threads(int32_t n);

/* Message of this thread's last error ("" if none). Valid until this thread's next call. */
T2D_API const char* t2d_last_error(void);

/* Index (in the tensors array) of the tensor this thread's last error is about, or -1. */
T2D_API int32_t t2d_last_error_tensor(void);

/* Library version, e.g. "0.1.0 (abi 1, cuda)". */
T2D_API const char* t2d_version(void);

#ifdef __cplusplus
}
#endif

#endif /* TEXT2DATA_H */
