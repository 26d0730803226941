// Internal helpers shared by the CPU and CUDA translation units.
#ifndef T2D_COMMON_H
#define T2D_COMMON_H

#include "text2data.h"

namespace t2d {

// Sets this thread's error message (printf-style) and returns code.
int32_t fail(int32_t code, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// Same, and records the tensor index the error is about (t2d_last_error_tensor).
int32_t fail_t(int32_t tensor, int32_t code, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

void clear_error();

// fail_t(tensor, T2D_ERR_NONFINITE, ...) naming what holds the NaN or infinity: the constraint gradient, or the
// gradient. The one wording of both paths.
int32_t fail_nonfinite(int32_t tensor, bool constraint);

// Structural validation of a tensor list, shared by both paths. Checks counts, sizes, dtypes,
// null pointers, contiguity and the declared devices: expect_host -> every device field must be
// T2D_DEVICE_HOST; otherwise all device fields must be one CUDA device k >= 0, returned in *device.
int32_t validate(const t2d_tensor* tensors, int32_t count, bool expect_host, int32_t* device);

// Validation of a fused step's arguments (see t2d_step_host): the optimizer's options, the reserved options
// word, then every parameter's pointers, sizes, dtype, device and contiguity, as validate() does for a projection.
int32_t validate_step(const t2d_param* params, int32_t count, const t2d_optimizer* optimizer, int32_t options,
                      bool expect_host, int32_t* device);

// validate (device side) and t2d_project_cuda's own arguments: g_value_device and its dtype.
int32_t validate_project_cuda(const t2d_tensor* tensors, int32_t count, const void* g_value_device, int32_t g_value_dtype,
                              int32_t* device);

// validate_step (device side) and t2d_step_cuda's own arguments: g_value_device, its dtype, status.
int32_t validate_step_cuda(const t2d_param* params, int32_t count, const t2d_optimizer* optimizer,
                           const void* g_value_device, int32_t g_value_dtype, int32_t options,
                           const t2d_step_status* status_device, int32_t* device);

// validate_step_cuda, and t2d_step_cuda_planned's own arguments: the plan and the scalars.
int32_t validate_step_planned(const t2d_cuda_plan* plan, const t2d_param* params, int32_t count, const t2d_optimizer* optimizer,
                              const void* g_value_device, int32_t g_value_dtype, const t2d_step_scalars* scalars_device,
                              int32_t options, const t2d_step_status* status_device, int32_t* device);

// t2d_plan_create's arguments: plan_out (set to NULL first when it is not NULL), the count, each row's numel and
// dtype, the device.
int32_t validate_plan(const t2d_param* params, int32_t count, int32_t device, t2d_cuda_plan** plan_out);

// The graph calls' arguments (t2d_graph_capture_begin, _end, t2d_graph_launch); _end sets *graph_exec_out to NULL
// first when graph_exec_out is not NULL.
int32_t validate_capture_begin(const void* cuda_stream);
int32_t validate_capture_end(const void* cuda_stream, void** graph_exec_out);
int32_t validate_graph_launch(const void* graph_exec);

inline bool valid_dtype(int32_t d) { return d >= T2D_FLOAT32 && d <= T2D_FLOAT16; }
const char* dtype_name(int32_t d);

}  // namespace t2d

#endif
