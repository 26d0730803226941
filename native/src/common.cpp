#include "common.h"
#include "t2d_optim.h"

#include <cstdarg>
#include <cstdio>
#include <string>

namespace t2d {

static thread_local std::string g_last_error;
static thread_local int32_t g_last_error_tensor = -1;

static void set_message(const char* fmt, va_list ap) {
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    try {
        g_last_error = buf;
    } catch (...) {
    }
}

int32_t fail(int32_t code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    g_last_error_tensor = -1;
    return code;
}

int32_t fail_t(int32_t tensor, int32_t code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    g_last_error_tensor = tensor;
    return code;
}

void clear_error() {
    g_last_error.clear();
    g_last_error_tensor = -1;
}

const char* dtype_name(int32_t d) {
    switch (d) {
        case T2D_FLOAT32: return "float32";
        case T2D_FLOAT64: return "float64";
        case T2D_BFLOAT16: return "bfloat16";
        case T2D_FLOAT16: return "float16";
        default: return "unknown";
    }
}

static void describe_device(char* buf, size_t len, int32_t device) {
    if (device == T2D_DEVICE_HOST) snprintf(buf, len, "host");
    else snprintf(buf, len, "cuda:%d", device);
}

int32_t fail_nonfinite(int32_t tensor, bool constraint) {
    return fail_t(tensor, T2D_ERR_NONFINITE, "tensor %d: its %s holds a NaN or an infinity", tensor,
                  constraint ? "constraint gradient" : "gradient");
}

int32_t validate(const t2d_tensor* tensors, int32_t count, bool expect_host, int32_t* device) {
    if (count < 0) return fail(T2D_ERR_BAD_COUNT, "tensor count is negative (%d)", count);
    if (count > 0 && tensors == nullptr) return fail(T2D_ERR_NULL_POINTER, "tensors is NULL but count is %d", count);
    int32_t dev = expect_host ? T2D_DEVICE_HOST : -2;
    for (int32_t i = 0; i < count; i++) {
        const t2d_tensor& t = tensors[i];
        if (t.numel < 0 || t.constraint_numel < 0)
            return fail_t(i, T2D_ERR_BAD_COUNT, "tensor %d: negative numel (grad %lld, constraint %lld)", i,
                        (long long)t.numel, (long long)t.constraint_numel);
        if (t.numel != t.constraint_numel)
            return fail_t(i, T2D_ERR_SIZE_MISMATCH, "tensor %d: grad has %lld elements but constraint gradient has %lld", i,
                        (long long)t.numel, (long long)t.constraint_numel);
        if (!valid_dtype(t.dtype))
            return fail_t(i, T2D_ERR_UNSUPPORTED_DTYPE, "tensor %d: unsupported grad dtype code %d (float32, float64, bfloat16, float16 only)", i, t.dtype);
        if (!valid_dtype(t.constraint_dtype))
            return fail_t(i, T2D_ERR_UNSUPPORTED_DTYPE, "tensor %d: unsupported constraint dtype code %d", i, t.constraint_dtype);
        if (t.dtype != t.constraint_dtype)
            return fail_t(i, T2D_ERR_DTYPE_MISMATCH, "tensor %d: grad is %s but constraint gradient is %s", i,
                        dtype_name(t.dtype), dtype_name(t.constraint_dtype));
        for (int k = 0; k < 2; k++) {
            int32_t d = k == 0 ? t.device : t.constraint_device;
            const char* what = k == 0 ? "grad" : "constraint gradient";
            char got[32], want[32];
            describe_device(got, sizeof got, d);
            if (expect_host) {
                if (d != T2D_DEVICE_HOST)
                    return fail_t(i, T2D_ERR_WRONG_DEVICE, "tensor %d: %s is on %s, expected host memory", i, what, got);
            } else {
                if (d < 0)
                    return fail_t(i, T2D_ERR_WRONG_DEVICE, "tensor %d: %s is on %s, expected a CUDA device", i, what, got);
                if (dev == -2) dev = d;
                if (d != dev) {
                    describe_device(want, sizeof want, dev);
                    return fail_t(i, T2D_ERR_WRONG_DEVICE, "tensor %d: %s is on %s but tensor 0 is on %s", i, what, got, want);
                }
            }
        }
        if (t.numel > 0) {
            if (t.grad == nullptr) return fail_t(i, T2D_ERR_NULL_POINTER, "tensor %d: grad pointer is NULL", i);
            if (t.constraint == nullptr) return fail_t(i, T2D_ERR_NULL_POINTER, "tensor %d: constraint pointer is NULL", i);
            if (t.numel > 1) {
                if (!(t.flags & T2D_GRAD_CONTIGUOUS))
                    return fail_t(i, T2D_ERR_NOT_CONTIGUOUS, "tensor %d: grad is not contiguous", i);
                if (!(t.flags & T2D_CONSTRAINT_CONTIGUOUS))
                    return fail_t(i, T2D_ERR_NOT_CONTIGUOUS, "tensor %d: constraint gradient is not contiguous", i);
            }
        }
    }
    if (device) *device = dev;
    return T2D_OK;
}

// A fused step's row count and table, and one row's numel and dtype: the checks of t2d_step_* and t2d_plan_create.
static int32_t validate_rows(const t2d_param* params, int32_t count) {
    if (count < 0) return fail(T2D_ERR_BAD_COUNT, "tensor count is negative (%d)", count);
    if (count > 0 && params == nullptr) return fail(T2D_ERR_NULL_POINTER, "params is NULL but count is %d", count);
    return T2D_OK;
}

static int32_t validate_row(const t2d_param& t, int32_t i) {
    if (t.numel < 0) return fail_t(i, T2D_ERR_BAD_COUNT, "tensor %d: negative numel (%lld)", i, (long long)t.numel);
    if (!valid_dtype(t.dtype))
        return fail_t(i, T2D_ERR_UNSUPPORTED_DTYPE, "tensor %d: unsupported dtype code %d (float32, float64, bfloat16, float16 only)", i, t.dtype);
    return T2D_OK;
}

static bool finite_nonneg(double v) { return v >= 0 && v <= 1.7976931348623157e308; }

int32_t validate_step(const t2d_param* params, int32_t count, const t2d_optimizer* o, int32_t options, bool expect_host,
                      int32_t* device) {
    if (o == nullptr) return fail(T2D_ERR_NULL_POINTER, "optimizer is NULL");
    if (o->kind != T2D_SGD && o->kind != T2D_ADAM && o->kind != T2D_ADAMW)
        return fail(T2D_ERR_BAD_OPTION, "unknown optimizer kind %d (T2D_SGD, T2D_ADAM or T2D_ADAMW)", o->kind);
    if (o->flags & ~(T2D_AMSGRAD | T2D_NESTEROV)) return fail(T2D_ERR_BAD_OPTION, "unknown optimizer flags 0x%x", o->flags);
    if (!finite_nonneg(o->lr)) return fail(T2D_ERR_BAD_OPTION, "lr must be a finite number >= 0, got %g", o->lr);
    if (!finite_nonneg(o->weight_decay))
        return fail(T2D_ERR_BAD_OPTION, "weight_decay must be a finite number >= 0, got %g", o->weight_decay);
    if (o->kind == T2D_SGD) {
        if (!finite_nonneg(o->momentum)) return fail(T2D_ERR_BAD_OPTION, "momentum must be a finite number >= 0, got %g", o->momentum);
        if (!(o->dampening == o->dampening) || o->dampening - o->dampening != 0)
            return fail(T2D_ERR_BAD_OPTION, "dampening must be finite, got %g", o->dampening);
        if ((o->flags & T2D_NESTEROV) && (o->momentum <= 0 || o->dampening != 0))
            return fail(T2D_ERR_BAD_OPTION, "nesterov needs a positive momentum and zero dampening (momentum %g, dampening %g)",
                        o->momentum, o->dampening);
        if (o->flags & T2D_AMSGRAD) return fail(T2D_ERR_BAD_OPTION, "amsgrad is not an option of SGD");
    } else {
        if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1))
            return fail(T2D_ERR_BAD_OPTION, "betas must lie in [0, 1), got (%g, %g)", o->beta1, o->beta2);
        if (!finite_nonneg(o->eps)) return fail(T2D_ERR_BAD_OPTION, "eps must be a finite number >= 0, got %g", o->eps);
        if (o->flags & T2D_NESTEROV) return fail(T2D_ERR_BAD_OPTION, "nesterov is not an option of Adam or AdamW");
    }
    if (options != 0) return fail(T2D_ERR_BAD_OPTION, "options must be 0 (reserved), got %d", options);
    int states = t2d_state_count(*o);
    static const char* const state_names[3] = {"exp_avg (or momentum buffer)", "exp_avg_sq", "max_exp_avg_sq"};
    int32_t rc = validate_rows(params, count);
    if (rc != T2D_OK) return rc;
    int32_t dev = expect_host ? T2D_DEVICE_HOST : -2;
    for (int32_t i = 0; i < count; i++) {
        const t2d_param& t = params[i];
        rc = validate_row(t, i);
        if (rc != T2D_OK) return rc;
        if (expect_host && t.device != T2D_DEVICE_HOST)
            return fail_t(i, T2D_ERR_WRONG_DEVICE, "tensor %d: it is on cuda:%d, expected host memory", i, t.device);
        if (!expect_host) {
            if (t.device < 0) return fail_t(i, T2D_ERR_WRONG_DEVICE, "tensor %d: it is on the host, expected a CUDA device", i);
            if (dev == -2) dev = t.device;
            if (t.device != dev)
                return fail_t(i, T2D_ERR_WRONG_DEVICE, "tensor %d: it is on cuda:%d but tensor 0 is on cuda:%d", i, t.device, dev);
        }
        if (t.step == nullptr) return fail_t(i, T2D_ERR_NULL_POINTER, "tensor %d: step pointer is NULL", i);
        if (t.numel > 0) {
            if (t.param == nullptr) return fail_t(i, T2D_ERR_NULL_POINTER, "tensor %d: param pointer is NULL", i);
            if (t.grad == nullptr) return fail_t(i, T2D_ERR_NULL_POINTER, "tensor %d: grad pointer is NULL", i);
            void* const st[3] = {t.exp_avg, t.exp_avg_sq, t.max_exp_avg_sq};
            for (int k = 0; k < states; k++)
                if (st[k] == nullptr)
                    return fail_t(i, T2D_ERR_NULL_POINTER, "tensor %d: %s pointer is NULL (the optimizer needs it)", i, state_names[k]);
            if (t.numel > 1 && !(t.flags & T2D_PARAM_CONTIGUOUS))
                return fail_t(i, T2D_ERR_NOT_CONTIGUOUS, "tensor %d: its buffers are not marked contiguous", i);
        }
    }
    if (device) *device = dev;
    return T2D_OK;
}

// The device g_value of a CUDA call.
static int32_t validate_g_value(const void* g_value_device, int32_t g_value_dtype) {
    if (g_value_device == nullptr) return fail(T2D_ERR_NULL_POINTER, "g_value_device is NULL");
    if (!valid_dtype(g_value_dtype)) return fail(T2D_ERR_UNSUPPORTED_DTYPE, "unsupported g_value dtype code %d", g_value_dtype);
    return T2D_OK;
}

int32_t validate_project_cuda(const t2d_tensor* tensors, int32_t count, const void* g_value_device, int32_t g_value_dtype,
                              int32_t* device) {
    int32_t rc = validate(tensors, count, false, device);
    if (rc != T2D_OK) return rc;
    return validate_g_value(g_value_device, g_value_dtype);
}

int32_t validate_step_cuda(const t2d_param* params, int32_t count, const t2d_optimizer* optimizer,
                           const void* g_value_device, int32_t g_value_dtype, int32_t options,
                           const t2d_step_status* status_device, int32_t* device) {
    int32_t rc = validate_step(params, count, optimizer, options, false, device);
    if (rc != T2D_OK) return rc;
    rc = validate_g_value(g_value_device, g_value_dtype);
    if (rc != T2D_OK) return rc;
    if (status_device == nullptr) return fail(T2D_ERR_NULL_POINTER, "status_device is NULL");
    return T2D_OK;
}

int32_t validate_step_planned(const t2d_cuda_plan* plan, const t2d_param* params, int32_t count, const t2d_optimizer* optimizer,
                              const void* g_value_device, int32_t g_value_dtype, const t2d_step_scalars* scalars_device,
                              int32_t options, const t2d_step_status* status_device, int32_t* device) {
    if (plan == nullptr) return fail(T2D_ERR_NULL_POINTER, "plan is NULL");
    int32_t rc = validate_step_cuda(params, count, optimizer, g_value_device, g_value_dtype, options, status_device, device);
    if (rc != T2D_OK) return rc;
    if (scalars_device == nullptr) return fail(T2D_ERR_NULL_POINTER, "scalars_device is NULL");
    return T2D_OK;
}

int32_t validate_plan(const t2d_param* params, int32_t count, int32_t device, t2d_cuda_plan** plan_out) {
    if (plan_out == nullptr) return fail(T2D_ERR_NULL_POINTER, "plan_out is NULL");
    *plan_out = nullptr;
    int32_t rc = validate_rows(params, count);
    if (rc != T2D_OK) return rc;
    if (device < 0) return fail(T2D_ERR_WRONG_DEVICE, "a plan is for a CUDA device, got device %d", device);
    for (int32_t i = 0; i < count; i++) {
        rc = validate_row(params[i], i);
        if (rc != T2D_OK) return rc;
    }
    return T2D_OK;
}

int32_t validate_capture_begin(const void* cuda_stream) {
    if (cuda_stream == nullptr)
        return fail(T2D_ERR_NULL_POINTER, "cuda_stream is NULL: the legacy default stream cannot be captured");
    return T2D_OK;
}

int32_t validate_capture_end(const void* cuda_stream, void** graph_exec_out) {
    if (graph_exec_out) *graph_exec_out = nullptr;
    if (cuda_stream == nullptr) return fail(T2D_ERR_NULL_POINTER, "cuda_stream is NULL");
    return T2D_OK;
}

int32_t validate_graph_launch(const void* graph_exec) {
    if (graph_exec == nullptr) return fail(T2D_ERR_NULL_POINTER, "graph_exec is NULL");
    return T2D_OK;
}

}  // namespace t2d

extern "C" const char* t2d_last_error(void) { return t2d::g_last_error.c_str(); }

extern "C" int32_t t2d_last_error_tensor(void) { return t2d::g_last_error_tensor; }

extern "C" const char* t2d_version(void) {
#if defined(T2D_WITH_CUDA)
    return "0.1.0 (abi 1, cuda)";
#else
    return "0.1.0 (abi 1, cpu)";
#endif
}

extern "C" int32_t t2d_cuda_built(void) {
#if defined(T2D_WITH_CUDA)
    return 1;
#else
    return 0;
#endif
}
