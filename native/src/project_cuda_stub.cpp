// CUDA entry points of a CPU-only build: they validate (common.cpp, as the CUDA build does), then report that
// CUDA was not built in.
#include "common.h"

namespace {
int32_t not_built(int32_t rc) {
    if (rc != T2D_OK) return rc;
    return t2d::fail(T2D_ERR_CUDA_NOT_BUILT, "libtext2data was built without CUDA (no nvcc, or T2D_CUDA=OFF)");
}
}  // namespace

extern "C" int32_t t2d_project_cuda(const t2d_tensor* tensors, int32_t count, const void* g_value_device,
                                    int32_t g_value_dtype, double, double, double, int32_t, void*,
                                    double*) {
    t2d::clear_error();
    int32_t device = 0;
    return not_built(t2d::validate_project_cuda(tensors, count, g_value_device, g_value_dtype, &device));
}

extern "C" int32_t t2d_cuda_available(void) { return 0; }

extern "C" int32_t t2d_step_cuda(const t2d_param* params, int32_t count, const t2d_optimizer* optimizer,
                                 const void* g_value_device, int32_t g_value_dtype, double, double, double,
                                 int32_t options, void*, t2d_step_status* status_device, double*) {
    t2d::clear_error();
    int32_t device = 0;
    return not_built(t2d::validate_step_cuda(params, count, optimizer, g_value_device, g_value_dtype, options,
                                             status_device, &device));
}

extern "C" int32_t t2d_plan_create(const t2d_param* params, int32_t count, int32_t device, t2d_cuda_plan** plan_out) {
    t2d::clear_error();
    return not_built(t2d::validate_plan(params, count, device, plan_out));
}

extern "C" void t2d_plan_destroy(t2d_cuda_plan*) {}

extern "C" int32_t t2d_step_cuda_planned(t2d_cuda_plan* plan, const t2d_param* params, int32_t count,
                                         const t2d_optimizer* optimizer, const void* g_value_device,
                                         int32_t g_value_dtype, const t2d_step_scalars* scalars_device,
                                         int32_t options, void*, t2d_step_status* status_device) {
    t2d::clear_error();
    int32_t device = 0;
    return not_built(t2d::validate_step_planned(plan, params, count, optimizer, g_value_device, g_value_dtype,
                                                scalars_device, options, status_device, &device));
}

extern "C" int32_t t2d_graph_capture_begin(void* cuda_stream) {
    t2d::clear_error();
    return not_built(t2d::validate_capture_begin(cuda_stream));
}

extern "C" int32_t t2d_graph_capture_end(void* cuda_stream, void** graph_exec_out) {
    t2d::clear_error();
    return not_built(t2d::validate_capture_end(cuda_stream, graph_exec_out));
}

extern "C" int32_t t2d_graph_launch(void* graph_exec, void*) {
    t2d::clear_error();
    return not_built(t2d::validate_graph_launch(graph_exec));
}

extern "C" void t2d_graph_destroy(void*) {}
