#!/usr/bin/env python3
"""Check and time libtext2data's CUDA entry point (t2d_project_cuda) from Python: ctypes + torch only.

Usage (normally through bench/gpu/check.sh, which builds the library first):

    python3 bench/gpu/check_cuda.py --lib /tmp/.../libtext2data.so [--json OUT.json] [--quick]
    python3 bench/gpu/check_cuda.py --lib ... --host        # same checks through t2d_project_host (CPU)
    python3 bench/gpu/check_cuda.py --lib ... --also-host   # CUDA checks, then the host correctness checks

What it does (see bench/gpu/README.md):
  correctness  many tensor lists (float32/float64/bfloat16/float16, empty, 1-element, odd and chunk-edge
               lengths, 4M-element tensors, 333 tensors, mixed dtypes, misaligned views; constraint
               violated/satisfied/equal; zero constraint gradients; NaN propagation; g_value of every dtype;
               lambdas_out; side streams) against a float64 torch reimplementation, and the
               projection.json conformance fixtures;
  errors       every status code the entry point can return from validation, with the offending tensor
               index, and nothing written; T2D_CHECK_FINITE with NaN/inf;
  no host sync the call returns while a long kernel queued before it is still running (torch.cuda._sleep);
  timing       the fused call against the original reference's first/second step in plain torch on the
               conformance denoiser shapes, CUDA events, medians; bandwidth against a torch copy.

Prints one line per check (PASS/FAIL, WARN for soft checks, INFO for measurements) and ends with
"N passed, M failed". Exit status 1 if any check failed.

Works with PyTorch 1.13 (Debian's, CPU, for --host) and PyTorch 2.x with CUDA.
"""

import argparse
import ctypes
import json
import math
import os
import re
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
HEADER = os.path.join(ROOT, "native", "include", "text2data.h")
FIXTURE = os.path.join(ROOT, "core", "src", "test", "resources", "conformance", "projection.json")

# ---------------------------------------------------------------- the C ABI (native/include/text2data.h)
T2D_ABI_VERSION = 1
T2D_FLOAT32, T2D_FLOAT64, T2D_BFLOAT16, T2D_FLOAT16 = 0, 1, 2, 3
T2D_OK = 0
T2D_ERR_NULL_POINTER = 1
T2D_ERR_BAD_COUNT = 2
T2D_ERR_SIZE_MISMATCH = 3
T2D_ERR_UNSUPPORTED_DTYPE = 4
T2D_ERR_DTYPE_MISMATCH = 5
T2D_ERR_WRONG_DEVICE = 6
T2D_ERR_NOT_CONTIGUOUS = 7
T2D_ERR_CUDA_NOT_BUILT = 8
T2D_ERR_CUDA_UNAVAILABLE = 9
T2D_ERR_CUDA = 10
T2D_ERR_OUT_OF_MEMORY = 11
T2D_ERR_NONFINITE = 12
T2D_CHECK_FINITE = 1
T2D_DEVICE_HOST = -1
T2D_GRAD_CONTIGUOUS = 1
T2D_CONSTRAINT_CONTIGUOUS = 2
T2D_ERR_BAD_OPTION = 13
T2D_SGD, T2D_ADAM, T2D_ADAMW = 0, 1, 2
T2D_AMSGRAD, T2D_NESTEROV = 1, 2
T2D_PARAM_CONTIGUOUS = 1
T2D_NONFINITE_CONSTRAINT, T2D_NONFINITE_GRAD, T2D_NONFINITE_UPDATE, T2D_NONFINITE_LOSS = 1, 2, 3, 4

CODE_NAMES = {v: k for k, v in globals().items() if k.startswith("T2D_ERR_") or k == "T2D_OK"}

DTYPE_CODE = {torch.float32: T2D_FLOAT32, torch.float64: T2D_FLOAT64,
              torch.bfloat16: T2D_BFLOAT16, torch.float16: T2D_FLOAT16}
DTYPE_NAME = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16", torch.float16: "f16"}
HALF = (torch.bfloat16, torch.float16)


class T2dTensor(ctypes.Structure):
    """typedef struct t2d_tensor {...} t2d_tensor; 56 bytes on LP64."""
    _fields_ = [
        ("grad", ctypes.c_void_p),
        ("constraint", ctypes.c_void_p),
        ("numel", ctypes.c_int64),
        ("constraint_numel", ctypes.c_int64),
        ("dtype", ctypes.c_int32),
        ("constraint_dtype", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("constraint_device", ctypes.c_int32),
        ("flags", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
    ]


class T2dOptimizer(ctypes.Structure):
    """typedef struct t2d_optimizer {...} t2d_optimizer;"""
    _fields_ = [("kind", ctypes.c_int32), ("flags", ctypes.c_int32), ("lr", ctypes.c_double),
                ("beta1", ctypes.c_double), ("beta2", ctypes.c_double), ("eps", ctypes.c_double),
                ("weight_decay", ctypes.c_double), ("momentum", ctypes.c_double), ("dampening", ctypes.c_double)]


class T2dParam(ctypes.Structure):
    """typedef struct t2d_param {...} t2d_param; 80 bytes on LP64."""
    _fields_ = [("param", ctypes.c_void_p), ("grad", ctypes.c_void_p), ("constraint", ctypes.c_void_p),
                ("exp_avg", ctypes.c_void_p), ("exp_avg_sq", ctypes.c_void_p), ("max_exp_avg_sq", ctypes.c_void_p),
                ("step", ctypes.c_void_p), ("numel", ctypes.c_int64), ("dtype", ctypes.c_int32),
                ("device", ctypes.c_int32), ("flags", ctypes.c_int32), ("reserved", ctypes.c_int32)]


P_TENSOR = ctypes.POINTER(T2dTensor)
P_DOUBLE = ctypes.POINTER(ctypes.c_double)


def load_library(path):
    lib = ctypes.CDLL(path)
    i32, f64, vp = ctypes.c_int32, ctypes.c_double, ctypes.c_void_p
    # int32_t t2d_project_host(const t2d_tensor*, int32_t count, double g_value, double g_constraint,
    #                          double alpha, double beta, int32_t options, double* lambdas_out)
    lib.t2d_project_host.argtypes = [P_TENSOR, i32, f64, f64, f64, f64, i32, P_DOUBLE]
    lib.t2d_project_host.restype = i32
    # int32_t t2d_project_cuda(const t2d_tensor*, int32_t count, const void* g_value_device,
    #                          int32_t g_value_dtype, double g_constraint, double alpha, double beta,
    #                          int32_t options, void* cuda_stream, double* lambdas_out_device)
    lib.t2d_project_cuda.argtypes = [P_TENSOR, i32, vp, i32, f64, f64, f64, i32, vp, P_DOUBLE]
    lib.t2d_project_cuda.restype = i32
    # int32_t t2d_step_host(const t2d_param*, int32_t, const t2d_optimizer*, double g_value, double g_constraint,
    #                       double alpha, double beta, int32_t options, double* lambdas_out)
    lib.t2d_step_host.argtypes = [ctypes.POINTER(T2dParam), i32, ctypes.POINTER(T2dOptimizer), f64, f64, f64, f64, i32,
                                  P_DOUBLE]
    lib.t2d_step_host.restype = i32
    # int32_t t2d_step_cuda(const t2d_param*, int32_t, const t2d_optimizer*, const void* g_value_device,
    #                       int32_t g_value_dtype, double g_constraint, double alpha, double beta, int32_t options,
    #                       void* cuda_stream, t2d_step_status* status_device, double* lambdas_out_device)
    lib.t2d_step_cuda.argtypes = [ctypes.POINTER(T2dParam), i32, ctypes.POINTER(T2dOptimizer), vp, i32, f64, f64, f64,
                                  i32, vp, vp, P_DOUBLE]
    lib.t2d_step_cuda.restype = i32
    # int32_t t2d_plan_create(const t2d_param*, int32_t count, int32_t device, t2d_cuda_plan** plan_out);
    # int32_t t2d_step_cuda_planned(t2d_cuda_plan*, const t2d_param*, int32_t, const t2d_optimizer*, const void* g_value,
    #                               int32_t g_value_dtype, const t2d_step_scalars*, int32_t options, void* stream,
    #                               t2d_step_status*)
    lib.t2d_plan_create.argtypes = [ctypes.POINTER(T2dParam), i32, i32, ctypes.POINTER(vp)]
    lib.t2d_plan_create.restype = i32
    lib.t2d_plan_destroy.argtypes = [vp]
    lib.t2d_plan_destroy.restype = None
    lib.t2d_step_cuda_planned.argtypes = [vp, ctypes.POINTER(T2dParam), i32, ctypes.POINTER(T2dOptimizer), vp, i32, vp,
                                          i32, vp, vp]
    lib.t2d_step_cuda_planned.restype = i32
    lib.t2d_graph_capture_begin.argtypes = [vp]
    lib.t2d_graph_capture_begin.restype = i32
    lib.t2d_graph_capture_end.argtypes = [vp, ctypes.POINTER(vp)]
    lib.t2d_graph_capture_end.restype = i32
    lib.t2d_graph_launch.argtypes = [vp, vp]
    lib.t2d_graph_launch.restype = i32
    lib.t2d_graph_destroy.argtypes = [vp]
    lib.t2d_graph_destroy.restype = None
    for name in ("t2d_cuda_available", "t2d_cuda_built", "t2d_last_error_tensor"):
        getattr(lib, name).argtypes = []
        getattr(lib, name).restype = i32
    lib.t2d_set_num_threads.argtypes = [i32]
    lib.t2d_set_num_threads.restype = i32
    for name in ("t2d_last_error", "t2d_version"):
        getattr(lib, name).argtypes = []
        getattr(lib, name).restype = ctypes.c_char_p
    return lib


def lam_ptr(t):
    """double* from a float64 tensor (or None)."""
    if t is None:
        return None
    return ctypes.cast(ctypes.c_void_p(t.data_ptr()), P_DOUBLE)


def dev_code(t):
    return T2D_DEVICE_HOST if t.device.type == "cpu" else t.device.index


def make_desc(pairs):
    """ctypes array of t2d_tensor for [(grad, constraint), ...] (one spare slot when empty)."""
    arr = (T2dTensor * max(1, len(pairs)))()
    for i, (g, c) in enumerate(pairs):
        d = arr[i]
        d.grad = g.data_ptr() or None
        d.constraint = c.data_ptr() or None
        d.numel = g.numel()
        d.constraint_numel = c.numel()
        d.dtype = DTYPE_CODE.get(g.dtype, 99)
        d.constraint_dtype = DTYPE_CODE.get(c.dtype, 99)
        d.device = dev_code(g)
        d.constraint_device = dev_code(c)
        d.flags = (T2D_GRAD_CONTIGUOUS if g.is_contiguous() else 0) | \
                  (T2D_CONSTRAINT_CONTIGUOUS if c.is_contiguous() else 0)
        d.reserved = 0
    return arr


# ---------------------------------------------------------------- reporting
class Report:
    def __init__(self):
        self.checks = []
        self.timings = []
        self.info_lines = []
        self.prefix = ""

    def check(self, name, ok, detail=""):
        name = self.prefix + name
        self.checks.append({"name": name, "ok": bool(ok), "soft": False, "detail": detail})
        print("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""), flush=True)
        return ok

    def soft(self, name, ok, detail=""):
        """A check that warns instead of failing."""
        name = self.prefix + name
        self.checks.append({"name": name, "ok": bool(ok), "soft": True, "detail": detail})
        print("%s %s%s" % ("PASS" if ok else "WARN", name, (": " + detail) if detail else ""), flush=True)
        return ok

    def info(self, text):
        self.info_lines.append(self.prefix + text)
        print("INFO " + self.prefix + text, flush=True)

    def guard(self, name, fn, *a, **k):
        """Runs a group of checks; an exception is one failed check."""
        try:
            return fn(*a, **k)
        except Exception as e:  # noqa: BLE001
            tb = traceback.format_exc().strip().splitlines()
            self.check(name, False, "exception %s: %s | %s" % (type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "",
                                                            " / ".join(l.strip() for l in tb[-4:-1])))
            return None

    def counts(self):
        passed = sum(1 for c in self.checks if c["ok"])
        failed = sum(1 for c in self.checks if not c["ok"] and not c["soft"])
        warned = sum(1 for c in self.checks if not c["ok"] and c["soft"])
        return passed, failed, warned


# ---------------------------------------------------------------- the two entry points behind one face
class Backend:
    def __init__(self, lib, cuda):
        self.lib = lib
        self.cuda = cuda
        self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        self.entry = "t2d_project_cuda" if cuda else "t2d_project_host"
        self._keep = []

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def g_value_tensor(self, value, dtype=torch.float64):
        return torch.tensor(value, dtype=dtype, device=self.device)

    @staticmethod
    def effective_g_value(value, dtype):
        """The g_value the kernel sees: rounded to its dtype (CUDA reads it from a dtype-typed buffer)."""
        if torch.is_tensor(value):
            return float(value.detach().double().cpu().item())
        return float(torch.tensor(value, dtype=dtype).double().item())

    def project(self, arr, count, g_value, g_constraint, alpha=1.0, beta=1.0, options=0, lambdas=None,
                gv_dtype=torch.float64, stream=None):
        """g_value: float, or a 0-dim tensor (CUDA: on the device). lambdas: float64 tensor or None.
        stream (CUDA): a cudaStream_t as int; default torch's current stream."""
        if self.cuda:
            gv = g_value if torch.is_tensor(g_value) else self.g_value_tensor(g_value, gv_dtype)
            self._keep = [gv, lambdas]  # alive until the next call (callers synchronise before that)
            if stream is None:
                stream = torch.cuda.current_stream().cuda_stream
            return self.lib.t2d_project_cuda(arr, count, ctypes.c_void_p(gv.data_ptr()), DTYPE_CODE[gv.dtype],
                                             g_constraint, alpha, beta, options,
                                             ctypes.c_void_p(stream or None), lam_ptr(lambdas))
        gvf = float(g_value.item()) if torch.is_tensor(g_value) else float(g_value)
        return self.lib.t2d_project_host(arr, count, gvf, g_constraint, alpha, beta, options, lam_ptr(lambdas))

    def last_error(self):
        return self.lib.t2d_last_error().decode("utf-8", "replace"), self.lib.t2d_last_error_tensor()


# ---------------------------------------------------------------- float64 reference of the math
def t2d_lambda(n, dot, excess, beta):
    """lam = max(0, (min(excess, beta*n) - dot) / (1e-8 + n)); NaN propagates like torch.minimum/relu."""
    bn = beta * n
    phi = excess if (math.isnan(excess) or excess < bn) else bn
    x = (phi - dot) / (1e-8 + n)
    return (x if (x > 0.0 or math.isnan(x)) else 0.0), phi


def reference(pairs, g_value, g_constraint, alpha, beta):
    """Per tensor: expected g (float64, CPU), lam, and the scales the tolerances are relative to.
    Must be called before the projection (which updates g in place)."""
    excess = alpha * (g_value - g_constraint)
    out = []
    for g, c in pairs:
        g64 = g.detach().reshape(-1).to(device="cpu", dtype=torch.float64).clone()
        c64 = c.detach().reshape(-1).to(device="cpu", dtype=torch.float64).clone()
        n = float((c64 * c64).sum()) if c64.numel() else 0.0
        prod = g64 * c64
        dot = float(prod.sum()) if c64.numel() else 0.0
        absdot = float(prod.abs().sum()) if c64.numel() else 0.0
        lam, phi = t2d_lambda(n, dot, excess, beta)
        expected = g64 if lam == 0.0 else g64 + lam * c64  # lam == 0: the kernels leave g untouched
        # lam is (phi - dot)/(1e-8+n): its rounding error scales with |phi| + sum|g*c| (not |dot|)
        lam_scale = (abs(phi) + absdot) / (1e-8 + n) + abs(lam) if not math.isnan(lam) else float("nan")
        gmax = float(g64.abs().max()) if g64.numel() else 0.0
        cmax = float(c64.abs().max()) if c64.numel() else 0.0
        out.append({"g0": g64, "c0": c64, "expected": expected, "lam": lam, "lam_scale": lam_scale,
                    "gmax": gmax, "cmax": cmax, "n": n, "dot": dot})
    return out


def value_error(actual, ref):
    """max |a - e| / scale, scale = the magnitude of the operands of g + lam*c (max|e|, max|g|, lam*max|c|).
    NaN must match NaN, equal infinities count as equal. Returns inf on a NaN mismatch."""
    a = actual.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    e = ref["expected"]
    if e.numel() == 0:
        return 0.0
    an, en = torch.isnan(a), torch.isnan(e)
    if not torch.equal(an, en):
        return float("inf")
    same = (a == e) | en
    if bool(same.all()):
        return 0.0
    diff = (a - e).abs()
    diff[same] = 0.0
    fin = e[~en & torch.isfinite(e)]
    lam_part = ref["lam_scale"] * ref["cmax"] if math.isfinite(ref["lam_scale"]) else 0.0
    scale = max(float(fin.abs().max()) if fin.numel() else 0.0, ref["gmax"], lam_part, 1e-300)
    return float(diff.max()) / scale


def lam_error(got, ref):
    want = ref["lam"]
    if math.isnan(want) or math.isnan(got):
        return 0.0 if (math.isnan(want) and math.isnan(got)) else float("inf")
    if got == want:
        return 0.0
    return abs(got - want) / max(ref["lam_scale"], 1e-300)


def fixture_rel_err(actual, expected):
    """bench/python/check_conformance.py's measure: max |a-e| / max(|e|, 1e-3 * max|e|)."""
    a = actual.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64).reshape(-1)
    if e.numel() == 0:
        return 0.0
    floor = max(1e-3 * float(e.abs().max()), 1e-300)
    return float(((a - e).abs() / e.abs().clamp(min=floor)).max())


VALUE_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def lam_tol(dtype, cuda):
    # float64/float32 reduce in double on both paths; half types in float32 on CUDA, double on the CPU.
    if dtype in HALF and cuda:
        return 1e-4
    return 1e-12


INT_OF_SIZE = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}


def bits(t):
    """A copy of t's bit pattern (so NaN payloads compare equal)."""
    flat = t.detach().reshape(-1).clone()
    return flat.view(INT_OF_SIZE[flat.element_size()])


def same_bits(t, snapshot):
    return torch.equal(bits(t), snapshot)


# ---------------------------------------------------------------- test data
def randn(n, gen, dtype=torch.float64):
    return torch.randn(n, generator=gen, dtype=dtype)


def make_pair(numel, dtype, device, gen, k=None, scale=None, zero_c=False, shape=None):
    """g = noise + k*c: k < 0 makes <g,c> negative (lam > 0 when violated), k > 0 positive (lam = 0)."""
    if k is None:
        k = float(torch.empty(1).uniform_(-2.0, 2.0, generator=gen))
    if scale is None:
        lo, hi = (-1.0, 1.0) if dtype in HALF else (-2.0, 2.0)
        scale = 10.0 ** float(torch.empty(1).uniform_(lo, hi, generator=gen))
    c = randn(numel, gen) * scale
    if zero_c:
        c.zero_()
    g = randn(numel, gen) * scale + k * c
    shape = shape or [numel]
    return (g.to(dtype).reshape(shape).to(device), c.to(dtype).reshape(shape).to(device))


SCENARIOS = {  # (g_value, g_constraint, alpha, beta)
    "violated": (1.7, 0.4, 1.0, 1.0),
    "satisfied": (0.3, 0.9, 1.0, 3.0),
    "equal": (0.9697, 0.9697, 0.5, 0.1),
    "beta-branch": (50.0, 0.0, 2.0, 1e-3),  # phi = beta*n for every tensor
}

ODD_SIZES = [0, 1, 2, 3, 0, 31, 255, 256, 257, 1023, 0, 0, 16383, 16384, 16385, 32769,
             65535, 65536, 65537, 100003, 0]


def denoiser_shapes(d, c, h, layers):
    shapes = [[c], [h, c], [h], [h, d], [h]]
    for _ in range(layers):
        shapes += [[h, h], [h]]
    return shapes + [[d, h], [d]]


MLP_DEEP_SMALL = denoiser_shapes(16, 16, 64, 16)   # 39 tensors, 69,792 parameters
MLP_WIDE = denoiser_shapes(64, 32, 2048, 3)        # 13 tensors, 12,920,928 parameters


def numel_of(shape):
    n = 1
    for s in shape:
        n *= s
    return n


# ---------------------------------------------------------------- correctness
def run_case(B, R, name, pairs, scenario="violated", gv_dtype=torch.float64, options=0, with_lambdas=True,
             stream=None, gv_override=None):
    gv, gc, alpha, beta = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    if gv_override is not None:
        gv = gv_override
    gv_eff = B.effective_g_value(gv, gv_dtype) if B.cuda else float(gv)
    refs = reference(pairs, gv_eff, gc, alpha, beta)
    arr = make_desc(pairs)
    lam_t = torch.full((max(1, len(pairs)),), -777.0, dtype=torch.float64, device=B.device) if with_lambdas else None
    rc = B.project(arr, len(pairs), gv, gc, alpha, beta, options, lam_t, gv_dtype=gv_dtype, stream=stream)
    B.sync()
    return judge(B, R, name, pairs, refs, rc, lam_t)


def judge(B, R, name, pairs, refs, rc, lam_t, want_rc=T2D_OK):
    worst, lam_worst, bad, half_mism = 0.0, 0.0, [], 0
    lam_host = lam_t.detach().cpu() if lam_t is not None else None  # one copy, not one sync per tensor
    for i, ((g, _), ref) in enumerate(zip(pairs, refs)):
        err = value_error(g, ref)
        tol = VALUE_TOL[g.dtype]
        if not err <= tol:
            bad.append("t%d %s n=%d err %.3g > %.0e" % (i, DTYPE_NAME[g.dtype], g.numel(), err, tol))
        worst = max(worst, err / tol)
        if lam_t is not None:
            le = lam_error(float(lam_host[i]), ref)
            lt = lam_tol(g.dtype, B.cuda)
            if not le <= lt:
                bad.append("t%d lam %.17g want %.17g (err %.3g > %.0e)" % (i, float(lam_host[i]), ref["lam"], le, lt))
            lam_worst = max(lam_worst, le / lt if le == le else float("inf"))
            # half types: the update is g = half(float(g) + float(lam) * float(c)), each operation rounded to
            # nearest even (no FMA, on the CPU and on CUDA); redo it in torch with the library's own lam and
            # require the same bits everywhere (an FMA differed on 7 of 4642 elements once; truncation would on ~half)
            lk = float(lam_host[i])
            if g.dtype in HALF and g.numel() and lk != 0.0 and lk == lk:
                emu = (ref["g0"].float() + torch.tensor(lk, dtype=torch.float32) * ref["c0"].float()).to(g.dtype)
                mism = int((bits(emu) != bits(g.detach().cpu())).sum())
                half_mism += mism
                if mism > 0:
                    bad.append("t%d %s: %d of %d elements differ from round-to-nearest of the float32 update" % (
                        i, DTYPE_NAME[g.dtype], mism, g.numel()))
    npos = sum(1 for r in refs if r["lam"] != 0.0)
    elems = sum(g.numel() for g, _ in pairs)
    dts = "/".join(sorted({DTYPE_NAME[g.dtype] for g, _ in pairs})) or "-"
    detail = "%d tensors, %d elements, %s, lam>0 on %d; worst err/tol %.2g%s%s" % (
        len(pairs), elems, dts, npos, worst, (", lam err/tol %.2g" % lam_worst) if lam_t is not None else "",
        (", half elements not bit-exact: %d" % half_mism) if any(g.dtype in HALF for g, _ in pairs) and lam_t is not None else "")
    if rc != want_rc:
        msg, idx = B.last_error()
        bad.insert(0, "rc %d (%s) want %d: %s [tensor %d]" % (rc, CODE_NAMES.get(rc, "?"), want_rc, msg, idx))
    if bad:
        detail += "; " + "; ".join(bad[:4]) + (" (+%d more)" % (len(bad) - 4) if len(bad) > 4 else "")
    return R.check(name, not bad, detail)


def correctness(B, R, gen):
    dev = B.device
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
    # odd/chunk-edge sizes with empty tensors at the start, in the middle (also several in a row) and at the end
    for dt in dtypes:
        for sc in ("violated", "satisfied", "equal"):
            pairs = [make_pair(n, dt, dev, gen) for n in ODD_SIZES]
            run_case(B, R, "odd sizes %s %s" % (DTYPE_NAME[dt], sc), pairs, sc)
    # phi = beta*n branch, zero constraint gradients (lam = 0, g untouched), orthogonal/aligned/opposed
    for dt in dtypes:
        pairs = [make_pair(n, dt, dev, gen, k=-1.0) for n in (5, 300, 20000)]
        run_case(B, R, "beta*n branch %s" % DTYPE_NAME[dt], pairs, "beta-branch")
        pairs = [make_pair(n, dt, dev, gen, zero_c=True) for n in (1, 7, 16385, 70000)] + \
                [make_pair(n, dt, dev, gen) for n in (9, 40000)]
        run_case(B, R, "zero constraint gradient %s" % DTYPE_NAME[dt], pairs, "violated")
    for k in (0.0, 1.0, -1.0, -5.0):
        pairs = [make_pair(n, torch.float64, dev, gen, k=k) for n in (3, 1000, 16384 * 3 + 1)]
        run_case(B, R, "g = noise %+g*c (f64)" % k, pairs, "violated")
    # single elements, one tensor, count 0, all empty
    for dt in dtypes:
        run_case(B, R, "one 1-element tensor %s" % DTYPE_NAME[dt], [make_pair(1, dt, dev, gen, k=-1.0)])
    z = torch.zeros(0, device=dev)
    run_case(B, R, "all tensors empty", [(z, z)] * 5)
    arr0 = make_desc([])
    lam = torch.full((1,), -777.0, dtype=torch.float64, device=dev)
    rc = B.project(None, 0, 1.0, 0.5, lambdas=lam)
    rc2 = B.project(arr0, 0, 1.0, 0.5)
    B.sync()
    R.check("count 0 (tensors NULL and non-NULL)", rc == 0 and rc2 == 0 and float(lam[0]) == -777.0,
            "rc %d, %d; lambdas untouched %s" % (rc, rc2, float(lam[0]) == -777.0))
    # 4M-element tensors (+ odd), every dtype
    big = 4 * 1024 * 1024
    for dt in dtypes:
        pairs = [make_pair(big + 3, dt, dev, gen, k=-0.5), make_pair(5, dt, dev, gen), make_pair(big, dt, dev, gen, k=0.7)]
        run_case(B, R, "4M-element tensors %s" % DTYPE_NAME[dt], pairs, "violated")
    # 333 tensors of random sizes (some empty), per dtype and mixed
    sizes = [int(x) for x in torch.randint(0, 5000, (333,), generator=gen)]
    for i in range(0, 333, 37):
        sizes[i] = 0
    sizes[100] = 70001
    for dt in (torch.float32, torch.bfloat16):
        pairs = [make_pair(n, dt, dev, gen) for n in sizes]
        run_case(B, R, "333 tensors %s" % DTYPE_NAME[dt], pairs, "violated")
    pairs = [make_pair(n, dtypes[i % 4], dev, gen) for i, n in enumerate(sizes)]
    run_case(B, R, "333 tensors, mixed dtypes in one call", pairs, "violated")
    # views with a storage offset (pointers not 16-byte aligned, g and c misaligned differently), 2-D shapes
    for dt in dtypes:
        base_g = (randn(20000, gen) - 0.5 * randn(20000, gen)).to(dt).to(dev)
        base_c = randn(20000, gen).to(dt).to(dev)
        pairs, o = [], 0
        for pad, n in ((1, 5), (3, 16385), (5, 33), (7, 3000)):  # disjoint slices
            pairs.append((base_g[o + pad:o + pad + n], base_c[o + pad + 1:o + pad + 1 + n]))
            o += pad + n + 1
        pairs += [make_pair(numel_of(s), dt, dev, gen, shape=s) for s in ([64, 16], [3, 5, 7], [1])]
        run_case(B, R, "misaligned views and 2-D shapes %s" % DTYPE_NAME[dt], pairs, "violated")
    # g_value of every dtype (CUDA reads it from device memory as that dtype)
    for gvd in dtypes:
        pairs = [make_pair(n, torch.float32, dev, gen, k=-0.3) for n in (17, 5000)]
        run_case(B, R, "g_value as %s" % DTYPE_NAME[gvd], pairs, "violated", gv_dtype=gvd, gv_override=1.2345678)
    # without lambdas_out; with T2D_CHECK_FINITE on finite data
    pairs = [make_pair(n, torch.float32, dev, gen) for n in ODD_SIZES]
    run_case(B, R, "lambdas_out NULL", pairs, "violated", with_lambdas=False)
    pairs = [make_pair(n, torch.float64, dev, gen) for n in ODD_SIZES]
    run_case(B, R, "T2D_CHECK_FINITE on finite data", pairs, "violated", options=T2D_CHECK_FINITE)
    # NaN without T2D_CHECK_FINITE propagates (lam = NaN, the tensor becomes NaN), others are projected
    pairs = [make_pair(n, torch.float32, dev, gen, k=-1.0) for n in (10, 20000, 30)]
    pairs[1][0][123] = float("nan")
    run_case(B, R, "NaN without T2D_CHECK_FINITE propagates", pairs, "violated")
    # g_value NaN: phi = min(NaN, beta*n) is NaN (like torch.minimum), so lam and every non-empty g become NaN
    pairs = [make_pair(n, torch.float32, dev, gen) for n in (0, 4, 20000)] + [make_pair(6, torch.float32, dev, gen, zero_c=True)]
    run_case(B, R, "g_value NaN propagates", pairs, "violated", gv_override=float("nan"))
    # alpha * (g_value - g_constraint) overflows float64 from finite operands: held at DBL_MAX, min() with beta * n
    # gives the lam the infinity gives (the reference's), with T2D_CHECK_FINITE too
    pairs = [make_pair(n, torch.float64, dev, gen, k=-1.0) for n in (4, 20000)]
    run_case(B, R, "alpha * (g_value - g_constraint) overflows", pairs, (10.0, 0.5, 1e308, 1.0), options=T2D_CHECK_FINITE)
    # huge and tiny magnitudes in float64
    pairs = [make_pair(n, torch.float64, dev, gen, k=-1.0, scale=s) for n, s in ((100, 1e150), (100, 1e-150), (5, 1e-300))]
    run_case(B, R, "huge and tiny magnitudes f64", pairs, "violated")

    # determinism: same inputs twice -> the same bits (CUDA: fixed reduction order; CPU: any thread count)
    pairs = [make_pair(n, torch.float32, dev, gen) for n in sizes] + [make_pair(big + 3, torch.float32, dev, gen, k=-0.5)]
    g0 = [g.clone() for g, _ in pairs]
    outs = []
    threads = [0, 1] if not B.cuda else [0, 0]
    for t in threads:
        for (g, _), s in zip(pairs, g0):
            g.copy_(s)
        B.lib.t2d_set_num_threads(t)
        lam = torch.zeros(len(pairs), dtype=torch.float64, device=dev)
        rc = B.project(make_desc(pairs), len(pairs), 1.7, 0.4, lambdas=lam)
        B.sync()
        outs.append((rc, [bits(g) for g, _ in pairs], bits(lam)))
    B.lib.t2d_set_num_threads(0)
    same = all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1])) and torch.equal(outs[0][2], outs[1][2])
    R.check("deterministic (two runs%s give the same bits)" % ("" if B.cuda else ", default threads and 1 thread"),
            outs[0][0] == 0 and outs[1][0] == 0 and same, "rc %d, %d; %d tensors" % (outs[0][0], outs[1][0], len(pairs)))


def cuda_streams(B, R, gen):
    dev = B.device
    cur = torch.cuda.current_stream()
    # a side stream (non-blocking)
    s = torch.cuda.Stream()
    pairs = [make_pair(n, torch.float32, dev, gen) for n in ODD_SIZES]
    s.wait_stream(cur)
    with torch.cuda.stream(s):
        run_case(B, R, "side stream", pairs, "violated", gv_dtype=torch.float32, stream=s.cuda_stream)
    # the legacy default stream passed as NULL explicitly
    pairs = [make_pair(n, torch.float32, dev, gen) for n in ODD_SIZES]
    run_case(B, R, "stream NULL (legacy default stream)", pairs, "violated", stream=0)
    # two independent calls on two streams, both pending at once behind a busy kernel: the library's shared
    # workspace must not mix them up
    busy = Busy.get()
    pa = [make_pair(n, torch.float32, dev, gen) for n in ODD_SIZES]
    pb = [make_pair(n, torch.float64, dev, gen) for n in reversed(ODD_SIZES)] + [make_pair(300000, torch.float64, dev, gen)]
    ra = reference(pa, 1.7, 0.4, 1.0, 1.0)
    rb = reference(pb, 2.5, 0.4, 1.0, 1.0)
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    gva = torch.tensor(1.7, dtype=torch.float64, device=dev)
    gvb = torch.tensor(2.5, dtype=torch.float64, device=dev)
    la = torch.full((len(pa),), -777.0, dtype=torch.float64, device=dev)
    lb = torch.full((len(pb),), -777.0, dtype=torch.float64, device=dev)
    torch.cuda.synchronize()
    busy.run(50.0)  # on the current stream
    s1.wait_stream(cur)
    s2.wait_stream(cur)
    rca = B.lib.t2d_project_cuda(make_desc(pa), len(pa), ctypes.c_void_p(gva.data_ptr()), T2D_FLOAT64, 0.4, 1.0, 1.0, 0,
                                 ctypes.c_void_p(s1.cuda_stream), lam_ptr(la))
    rcb = B.lib.t2d_project_cuda(make_desc(pb), len(pb), ctypes.c_void_p(gvb.data_ptr()), T2D_FLOAT64, 0.4, 1.0, 1.0, 0,
                                 ctypes.c_void_p(s2.cuda_stream), lam_ptr(lb))
    torch.cuda.synchronize()
    judge(B, R, "two streams at once: list A", pa, ra, rca, la)
    judge(B, R, "two streams at once: list B", pb, rb, rcb, lb)


def fixtures(B, R):
    if not os.path.exists(FIXTURE):
        R.check("projection.json fixtures", False, "not found: " + FIXTURE)
        return
    with open(FIXTURE) as fh:
        cases = json.load(fh)["cases"]
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    for case in cases:
        dt = dtypes[case["dtype"]]
        pairs = [(torch.tensor(t["grad"], dtype=dt).reshape(t["shape"]).to(B.device),
                  torch.tensor(t["constraint_grad"], dtype=dt).reshape(t["shape"]).to(B.device)) for t in case["tensors"]]
        gv, gc, alpha, beta = case["g_value"], case["g_constraint"], case["alpha"], case["beta"]
        refs = reference(pairs, gv, gc, alpha, beta)
        lam_t = torch.full((len(pairs),), -777.0, dtype=torch.float64, device=B.device)
        rc = B.project(make_desc(pairs), len(pairs), gv, gc, alpha, beta, 0, lam_t, gv_dtype=torch.float64)
        B.sync()
        ferr = max(fixture_rel_err(g, t["expected"]) for (g, _), t in zip(pairs, case["tensors"]))
        ftol = 1e-9 if dt == torch.float64 else 1e-5
        ok_fix = ferr <= ftol
        R.check("fixture %s vs expected" % case["name"], rc == 0 and ok_fix,
                "rc %d, rel err %.3g (tol %.0e, check_conformance.py's measure)" % (rc, ferr, ftol))
        judge(B, R, "fixture %s vs float64 reference" % case["name"], pairs, refs, rc, lam_t)


# ---------------------------------------------------------------- errors
def errors(B, R, gen):
    dev = B.device
    lib = B.lib
    sizes = [5, 17, 0, 1, 33, 8, 4000]

    def fresh():
        return [make_pair(n, torch.float32, dev, gen) for n in sizes]

    def expect(name, want_rc, want_idx, pairs=None, mutate=None, invoke=None):
        pairs = pairs if pairs is not None else fresh()
        arr = make_desc(pairs)
        if mutate:
            mutate(arr)
        snaps = [(bits(g), bits(c)) for g, c in pairs]
        lam_t = torch.full((len(pairs),), -777.0, dtype=torch.float64, device=dev)
        B.sync()
        if invoke is None:
            rc = B.project(arr, len(pairs), 1.7, 0.4, 1.0, 1.0, 0, lam_t)
        else:
            rc = invoke(arr, len(pairs), lam_t)
        msg, idx = B.last_error()  # read right away: thread-local, valid until the next call
        B.sync()
        untouched = all(same_bits(g, sg) and same_bits(c, sc) for (g, c), (sg, sc) in zip(pairs, snaps))
        lam_untouched = bool((lam_t == -777.0).all())
        ok = rc == want_rc and idx == want_idx and bool(msg) and untouched and lam_untouched
        R.check("error %s -> %s" % (name, CODE_NAMES.get(want_rc, want_rc)), ok,
                "rc %d (%s), tensor %d (want %d), wrote nothing: %s%s; '%s'" % (
                    rc, CODE_NAMES.get(rc, "?"), idx, want_idx, untouched,
                    "" if lam_untouched else " (lambdas_out written!)", msg))

    def setf(i, **kv):
        def m(arr):
            for k, v in kv.items():
                setattr(arr[i], k, v)
        return m

    gv_dev = torch.tensor(1.7, dtype=torch.float64, device=dev)

    def cuda_call(gv_ptr=None, gv_code=T2D_FLOAT64, count=None, tensors="arr", lam="lam_t", stream=None):
        def f(arr, n, lam_t):
            p = ctypes.c_void_p(gv_dev.data_ptr()) if gv_ptr is None else gv_ptr
            t = arr if tensors == "arr" else tensors
            lp = lam_ptr(lam_t) if lam == "lam_t" else lam
            st = torch.cuda.current_stream().cuda_stream if stream is None else stream
            return lib.t2d_project_cuda(t, n if count is None else count, p, gv_code, 0.4, 1.0, 1.0, 0,
                                        ctypes.c_void_p(st or None), lp)
        return f

    def host_call(count=None, tensors="arr"):
        def f(arr, n, lam_t):
            t = arr if tensors == "arr" else tensors
            return lib.t2d_project_host(t, n if count is None else count, 1.7, 0.4, 1.0, 1.0, 0, lam_ptr(lam_t))
        return f

    call = cuda_call if B.cuda else (lambda **kv: host_call(**{k: v for k, v in kv.items() if k in ("count", "tensors")}))

    expect("tensors NULL, count 7", T2D_ERR_NULL_POINTER, -1, invoke=call(tensors=None))
    expect("grad NULL (tensor 4)", T2D_ERR_NULL_POINTER, 4, mutate=setf(4, grad=None))
    expect("constraint NULL (tensor 6)", T2D_ERR_NULL_POINTER, 6, mutate=setf(6, constraint=None))
    expect("count -1", T2D_ERR_BAD_COUNT, -1, invoke=call(count=-1))
    expect("numel -5 (tensor 3)", T2D_ERR_BAD_COUNT, 3, mutate=setf(3, numel=-5, constraint_numel=-5))
    expect("numel != constraint_numel (tensor 5)", T2D_ERR_SIZE_MISMATCH, 5, mutate=setf(5, constraint_numel=7))
    expect("grad dtype code 7 (tensor 1)", T2D_ERR_UNSUPPORTED_DTYPE, 1, mutate=setf(1, dtype=7, constraint_dtype=7))
    expect("constraint dtype code -1 (tensor 2)", T2D_ERR_UNSUPPORTED_DTYPE, 2, mutate=setf(2, constraint_dtype=-1))
    p = fresh()
    p[3] = (p[3][0], p[3][1].double())
    expect("dtype mismatch f32/f64 (tensor 3)", T2D_ERR_DTYPE_MISMATCH, 3, pairs=p)
    p = fresh()
    p[6] = (randn(4000, gen).float().to(dev).reshape(40, 100).t(), p[6][1])  # a transposed (non-contiguous) grad
    expect("non-contiguous grad (tensor 6)", T2D_ERR_NOT_CONTIGUOUS, 6, pairs=p)
    expect("constraint flag cleared (tensor 1)", T2D_ERR_NOT_CONTIGUOUS, 1, mutate=setf(1, flags=T2D_GRAD_CONTIGUOUS))
    # a 1-element tensor needs no contiguity flag (not an error)
    pairs = fresh()
    arr = make_desc(pairs)
    arr[3].flags = 0
    refs = reference(pairs, 1.7, 0.4, 1.0, 1.0)
    lam_t = torch.full((len(pairs),), -777.0, dtype=torch.float64, device=dev)
    if B.cuda:
        rc = lib.t2d_project_cuda(arr, len(pairs), ctypes.c_void_p(gv_dev.data_ptr()), T2D_FLOAT64, 0.4, 1.0, 1.0, 0,
                                  ctypes.c_void_p(torch.cuda.current_stream().cuda_stream or None), lam_ptr(lam_t))
    else:
        rc = lib.t2d_project_host(arr, len(pairs), 1.7, 0.4, 1.0, 1.0, 0, lam_ptr(lam_t))
    B.sync()
    judge(B, R, "1-element tensor without contiguity flags is accepted", pairs, refs, rc, lam_t)
    # an empty tensor may carry NULL pointers
    pairs = fresh()
    arr = make_desc(pairs)
    arr[2].grad = None
    arr[2].constraint = None
    refs = reference(pairs, 1.7, 0.4, 1.0, 1.0)
    lam_t = torch.full((len(pairs),), -777.0, dtype=torch.float64, device=dev)
    rc = B.project(arr, len(pairs), 1.7, 0.4, 1.0, 1.0, 0, lam_t)
    B.sync()
    judge(B, R, "empty tensor with NULL pointers is accepted", pairs, refs, rc, lam_t)

    if B.cuda:
        cpu = [make_pair(n, torch.float32, torch.device("cpu"), gen) for n in sizes]
        p = fresh()
        p[5] = cpu[5]
        expect("CPU tensor, honest descriptor (tensor 5)", T2D_ERR_WRONG_DEVICE, 5, pairs=p)
        p = fresh()
        keep = cpu[4]
        expect("CPU memory described as cuda:0 (tensor 4 grad)", T2D_ERR_WRONG_DEVICE, 4, pairs=p,
               mutate=setf(4, grad=keep[0].data_ptr()))
        expect("CPU memory described as cuda:0 (tensor 1 constraint)", T2D_ERR_WRONG_DEVICE, 1,
               mutate=setf(1, constraint=cpu[1][1].data_ptr()))
        try:
            pinned = torch.empty(17, dtype=torch.float32).pin_memory()
        except RuntimeError:
            pinned = None
        if pinned is not None:
            expect("pinned host memory described as cuda:0 (tensor 1)", T2D_ERR_WRONG_DEVICE, 1,
                   mutate=setf(1, grad=pinned.data_ptr()))
        nd = torch.cuda.device_count()
        expect("descriptor on cuda:%d (no such device)" % nd, T2D_ERR_WRONG_DEVICE, -1,
               mutate=lambda arr: [setattr(arr[i], f, nd) for i in range(len(sizes)) for f in ("device", "constraint_device")])
        expect("tensors on cuda:0 and cuda:1 (tensor 2)", T2D_ERR_WRONG_DEVICE, 2,
               mutate=setf(2, device=1, constraint_device=1))
        expect("constraint_device host (tensor 0)", T2D_ERR_WRONG_DEVICE, 0, mutate=setf(0, constraint_device=T2D_DEVICE_HOST))
        gv_cpu = torch.tensor(1.7, dtype=torch.float64)
        expect("g_value in host memory", T2D_ERR_WRONG_DEVICE, -1, invoke=call(gv_ptr=ctypes.c_void_p(gv_cpu.data_ptr())))
        expect("g_value NULL", T2D_ERR_NULL_POINTER, -1, invoke=call(gv_ptr=ctypes.c_void_p(None)))
        expect("g_value dtype code 5", T2D_ERR_UNSUPPORTED_DTYPE, -1, invoke=call(gv_code=5))
        lam_cpu = torch.zeros(len(sizes), dtype=torch.float64)
        expect("lambdas_out in host memory", T2D_ERR_WRONG_DEVICE, -1, invoke=call(lam=lam_ptr(lam_cpu)))
        R.check("lambdas_out in host memory: not written", bool((lam_cpu == 0).all()))
    else:
        expect("descriptor says cuda:0 (tensor 2)", T2D_ERR_WRONG_DEVICE, 2, mutate=setf(2, device=0))
        expect("constraint_device cuda:0 (tensor 5)", T2D_ERR_WRONG_DEVICE, 5, mutate=setf(5, constraint_device=0))
        # the CUDA entry with host tensors: validation first, then "not built" or "unavailable"
        gv = torch.tensor(1.7, dtype=torch.float64)

        def cuda_entry(gvp, code=T2D_FLOAT64):
            def f(arr, n, lam_t):
                return lib.t2d_project_cuda(arr, n, gvp, code, 0.4, 1.0, 1.0, 0, None, None)
            return f
        expect("t2d_project_cuda with host descriptors (tensor 0)", T2D_ERR_WRONG_DEVICE, 0,
               invoke=cuda_entry(ctypes.c_void_p(gv.data_ptr())))
        want = T2D_ERR_CUDA_UNAVAILABLE if lib.t2d_cuda_built() else T2D_ERR_CUDA_NOT_BUILT
        if not lib.t2d_cuda_available():
            expect("t2d_project_cuda without a device", want, -1,
                   mutate=lambda arr: [setattr(arr[i], f, 0) for i in range(len(sizes)) for f in ("device", "constraint_device")],
                   invoke=cuda_entry(ctypes.c_void_p(gv.data_ptr())))
            expect("t2d_project_cuda g_value NULL", T2D_ERR_NULL_POINTER, -1,
                   mutate=lambda arr: [setattr(arr[i], f, 0) for i in range(len(sizes)) for f in ("device", "constraint_device")],
                   invoke=cuda_entry(ctypes.c_void_p(None)))

    # a later success clears the error state
    pairs = fresh()
    rc = B.project(make_desc(pairs), len(pairs), 1.7, 0.4)
    B.sync()
    msg, idx = B.last_error()
    R.check("success clears t2d_last_error", rc == 0 and msg == "" and idx == -1, "rc %d, '%s', %d" % (rc, msg, idx))


def nonfinite(B, R, gen):
    """T2D_CHECK_FINITE: T2D_ERR_NONFINITE naming the lowest bad tensor; no tensor changed (nothing is written)."""
    dev = B.device

    def case(name, dt, sizes, poison, want_idx, want_word, not_word=None, gv=1.7):
        pairs = [make_pair(n, dt, dev, gen, k=-1.0) for n in sizes]
        for (i, which, pos, val) in poison:
            t = pairs[i][0] if which == "g" else pairs[i][1]
            t.view(-1)[pos] = val
        refs = reference(pairs, gv, 0.4, 1.0, 1.0)
        snaps = [bits(g) for g, _ in pairs]
        lam_t = torch.full((len(pairs),), -777.0, dtype=torch.float64, device=dev)
        rc = B.project(make_desc(pairs), len(pairs), gv, 0.4, 1.0, 1.0, T2D_CHECK_FINITE, lam_t)
        msg, idx = B.last_error()
        B.sync()
        lam_written = not bool((lam_t == -777.0).all())
        bad_idx = {p[0] for p in poison}
        problems, projected, unchanged = [], 0, 0
        for i, (g, _) in enumerate(pairs):
            if same_bits(g, snaps[i]):
                unchanged += 1
            elif i in bad_idx:
                problems.append("bad tensor %d was changed" % i)
            else:
                projected += 1
                problems.append("finite tensor %d was changed although the call failed (err to its projection %.3g)"
                                % (i, value_error(g, refs[i])))
        if lam_written and not B.cuda:  # t2d_project_host: "written on success only"
            problems.append("lambdas_out written although the call failed")
        ok = rc == T2D_ERR_NONFINITE and idx == want_idx and want_word in msg and not problems and \
            not (not_word and not_word in msg)
        R.check("T2D_CHECK_FINITE %s" % name, ok, "rc %d (%s), tensor %d (want %d), '%s'; others: %d projected, %d unchanged; "
                "lambdas_out written: %s%s" % (
            rc, CODE_NAMES.get(rc, "?"), idx, want_idx, msg, projected, unchanged - len(bad_idx), lam_written,
            ("; " + "; ".join(problems)) if problems else ""))

    sizes = [7, 20000, 0, 33, 5, 70001, 1, 300, 16384, 2]
    case("NaN in grad of tensor 5", torch.float32, sizes, [(5, "g", 12345, float("nan"))], 5, "gradient", "constraint")
    case("inf in constraint of tensor 3, NaN in grad of tensor 7", torch.float32, sizes,
         [(3, "c", 4, float("inf")), (7, "g", 0, float("nan"))], 3, "constraint gradient")
    case("NaN in grad of tensor 0 (f64)", torch.float64, sizes, [(0, "g", 6, float("nan"))], 0, "gradient", "constraint")
    case("NaN in constraint of tensor 9 (bf16)", torch.bfloat16, sizes, [(9, "c", 1, float("nan"))], 9, "constraint")
    case("-inf in grad of tensor 8 (f16)", torch.float16, sizes, [(8, "g", 16383, float("-inf"))], 8, "gradient", "constraint")
    case("finite values, <c,c> overflows (f64, tensor 4)", torch.float64, sizes, [(4, "c", 0, 1e200)], 4, "constraint")
    # a non-finite g_value is the loss's fault, reported before any tensor's, at the first tensor
    case("g_value NaN", torch.float32, sizes, [], 0, "g_value", "gradient", gv=float("nan"))
    case("g_value inf, NaN in grad of tensor 5", torch.float32, sizes, [(5, "g", 3, float("nan"))], 0, "g_value",
         gv=float("inf"))


# ---------------------------------------------------------------- "no host synchronisation"
class Busy:
    """Keeps the GPU busy for a given time on the current stream: torch.cuda._sleep (a spin kernel, in
    every PyTorch since 1.x), calibrated with CUDA events; big matmuls if _sleep is missing."""
    _inst = None

    @classmethod
    def get(cls):
        if cls._inst is None:
            cls._inst = cls()
        return cls._inst

    def __init__(self):
        self.sleep = getattr(torch.cuda, "_sleep", None)
        self.kind = "torch.cuda._sleep" if self.sleep else "matmul"
        if not self.sleep:
            self.a = torch.randn(4096, 4096, device="cuda")
        unit = 10_000_000 if self.sleep else 1
        self._unit(unit)  # warm up
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        self._unit(unit)
        e.record()
        torch.cuda.synchronize()
        self.ms_per_unit = max(s.elapsed_time(e), 1e-3) / unit

    def _unit(self, n):
        if self.sleep:
            self.sleep(int(n))
        else:
            for _ in range(int(n)):
                self.a @ self.a

    def run(self, ms):
        self._unit(max(1, int(ms / self.ms_per_unit)))


def behind_busy(busy, sleep_ms, call, after_busy=None):
    """Queues busy for sleep_ms (then after_busy(), e.g. a kernel writing an input), then call(): returns call's
    result, how long the call took on the host (ms), how long until the device was done (ms, from the queueing),
    and whether the device still had work right after the call."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    busy.run(sleep_ms)
    if after_busy is not None:
        after_busy()
    t1 = time.perf_counter()
    result = call()
    t2 = time.perf_counter()
    ev = torch.cuda.Event()
    ev.record()
    pending = not ev.query()
    torch.cuda.synchronize()
    t3 = time.perf_counter()
    return result, (t2 - t1) * 1e3, (t3 - t0) * 1e3, pending


def no_host_sync(B, R, gen):
    """Why this method: torch.cuda.set_sync_debug_mode only sees synchronisations made through PyTorch's
    own CUDA wrappers, not those inside a foreign library with its own (static) cudart; and a CUDA-graph
    capture would test graph-safety (the call records events and reuses a pinned table), which the ABI
    does not promise. So: queue a ~300 ms spin kernel, call the projection, and measure how long the host
    call takes; a synchronising call would take the rest of the 300 ms."""
    dev = B.device
    busy = Busy.get()
    R.info("busy kernel: %s, %.3g ms per unit" % (busy.kind, busy.ms_per_unit))
    lists = {
        "mlp-deep-small f32": [make_pair(numel_of(s), torch.float32, dev, gen, shape=s) for s in MLP_DEEP_SMALL],
        "odd sizes f32": [make_pair(n, torch.float32, dev, gen) for n in ODD_SIZES],
        "4M + 3 f64": [make_pair(4 * 1024 * 1024 + 3, torch.float64, dev, gen, k=-0.5), make_pair(10, torch.float64, dev, gen)],
    }
    descs = {k: make_desc(v) for k, v in lists.items()}
    gv = torch.tensor(1.7, dtype=torch.float32, device=dev)
    lam = {k: torch.zeros(len(v), dtype=torch.float64, device=dev) for k, v in lists.items()}
    for _ in range(8):  # warm: every ring slot and the device workspace sized for these lists
        for k, v in lists.items():
            B.project(descs[k], len(v), gv, 0.4, 1.0, 1.0, 0, lam[k])
    torch.cuda.synchronize()
    sleep_ms = 300.0

    def timed(name, calls, g_value_write=None):
        """calls: list of list names, issued back to back behind the busy kernel."""
        gvt = torch.tensor(0.0 if g_value_write is not None else 1.7, dtype=torch.float32, device=dev)
        gv_eff = float(g_value_write) if g_value_write is not None else float(gvt.item())
        refs = {k: reference(lists[k], gv_eff, 0.4, 1.0, 1.0) for k in calls}
        lams = {k: torch.full((len(lists[k]),), -777.0, dtype=torch.float64, device=dev) for k in calls}
        # a kernel after the busy one writes g_value, when asked
        rcs, call_ms, total_ms, pending = behind_busy(
            busy, sleep_ms, lambda: [B.project(descs[k], len(lists[k]), gvt, 0.4, 1.0, 1.0, 0, lams[k]) for k in calls],
            (lambda: gvt.fill_(g_value_write)) if g_value_write is not None else None)
        fast = call_ms < min(50.0, 0.2 * total_ms)
        R.check("no host sync: %s" % name, all(rc == 0 for rc in rcs) and fast and pending,
                "%d call(s) took %.3f ms on the host while the GPU was busy (%.0f ms to finish); work still pending "
                "after the calls: %s" % (len(calls), call_ms, total_ms, pending))
        for k in calls:
            judge(B, R, "no host sync: %s: results after the busy kernel (%s)" % (name, k), lists[k], refs[k], 0, lams[k])
            for (g, _), r in zip(lists[k], refs[k]):  # restore the inputs for the next round
                g.copy_(r["g0"].reshape(g.shape).to(g.dtype))
        torch.cuda.synchronize()

    timed("one call (39 tensors)", ["mlp-deep-small f32"])
    timed("one call (4M elements)", ["4M + 3 f64"])
    timed("3 calls back to back (< ring of 4 pinned tables)", ["mlp-deep-small f32", "odd sizes f32", "4M + 3 f64"])
    timed("g_value written by a kernel queued before the call", ["odd sizes f32"], g_value_write=5.0)

    # More calls than the pinned ring holds: the header allows a wait here; only results are checked.
    k = "odd sizes f32"
    p = lists[k]
    excesses = [0.1 * (j + 1) for j in range(10)]
    chain = [g.detach().to("cpu", torch.float64).reshape(-1).clone() for g, _ in p]
    cs = [c.detach().to("cpu", torch.float64).reshape(-1) for _, c in p]
    gvts = [torch.tensor(0.4 + e, dtype=torch.float64, device=dev) for e in excesses]
    torch.cuda.synchronize()
    busy.run(100.0)
    t1 = time.perf_counter()
    rcs = [B.project(descs[k], len(p), gvts[j], 0.4, 1.0, 1.0, 0, None) for j in range(10)]
    t2 = time.perf_counter()
    torch.cuda.synchronize()
    # float64 chain of the same 10 projections (each with a larger excess, so lam > 0 again)
    for e in excesses:
        for i in range(len(chain)):
            n = float((cs[i] * cs[i]).sum())
            d = float((chain[i] * cs[i]).sum())
            lam, _ = t2d_lambda(n, d, e, 1.0)
            if lam != 0.0:
                chain[i] = chain[i] + lam * cs[i]
    worst = max((float((g.detach().to("cpu", torch.float64).reshape(-1) - e).abs().max()) /
                 max(float(e.abs().max()), 1e-30)) if e.numel() else 0.0 for (g, _), e in zip(p, chain))
    R.check("10 calls back to back (more than the ring of 4): chained results", all(rc == 0 for rc in rcs) and worst <= 1e-5,
            "host %.2f ms for 10 calls (waiting is allowed here), worst rel err %.3g (f32, tol 1e-5)" % ((t2 - t1) * 1e3, worst))

    # Growth of the pinned table (a list longer than any before): soft check, the header promises no sync
    many = [make_pair(n, torch.float32, dev, gen) for n in [3] * 3000]
    refs = reference(many, 1.7, 0.4, 1.0, 1.0)
    lam_t = torch.full((len(many),), -777.0, dtype=torch.float64, device=dev)
    desc = make_desc(many)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    busy.run(sleep_ms)
    t1 = time.perf_counter()
    rc = B.project(desc, len(many), 1.7, 0.4, 1.0, 1.0, 0, lam_t)
    t2 = time.perf_counter()
    torch.cuda.synchronize()
    t3 = time.perf_counter()
    call_ms = (t2 - t1) * 1e3
    R.soft("no host sync when the pinned table grows (3000 tensors, first time)", rc == 0 and call_ms < min(50.0, 0.2 * (t3 - t0) * 1e3),
           "call took %.2f ms on the host, GPU busy for %.0f ms (cudaFreeHost/cudaHostAlloc may synchronise)" % (call_ms, (t3 - t0) * 1e3))
    judge(B, R, "3000 tiny tensors", many, refs, rc, lam_t)


# ---------------------------------------------------------------- timing
def ref_first_step(gs, loss):
    """The original first step, per parameter: constraint_grad = torch.ones_like(p.grad) * p.grad,
    with g_value = loss.item() (a host sync) as run_step does."""
    g_value = loss.item()
    return g_value, [torch.ones_like(g) * g for g in gs]


def ref_second_step(gs, cs, g_value, g_constraint, alpha, beta):
    """The original second step, per parameter (g_value a Python float; builtin min on a float and a
    0-dim tensor, so one host sync per tensor)."""
    for g, c in zip(gs, cs):
        phi = min(alpha * (g_value - g_constraint), beta * torch.norm(c) ** 2)
        lam = F.relu((phi - (g * c).sum()) / (1e-8 + c.norm().pow(2)))
        g.add_(lam * c)


def measure(B, fn, restore, iters, warmup):
    """Median per-iteration time. CUDA: events around each call (no host sync between iterations, so
    the host may run ahead and the events see GPU time) and, separately, wall time of call + sync."""
    for _ in range(warmup):
        restore()
        fn()
    B.sync()
    res = {"iters": iters}
    if B.cuda:
        st = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        en = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for i in range(iters):
            restore()
            st[i].record()
            fn()
            en[i].record()
        torch.cuda.synchronize()
        dev = sorted(s.elapsed_time(e) for s, e in zip(st, en))
        res.update(gpu_ms=statistics.median(dev), gpu_min_ms=dev[0], gpu_p90_ms=dev[int(0.9 * (len(dev) - 1))])
    wall = []
    for _ in range(iters):
        restore()
        B.sync()
        t0 = time.perf_counter()
        fn()
        B.sync()
        wall.append((time.perf_counter() - t0) * 1e3)
    wall.sort()
    res.update(wall_ms=statistics.median(wall), wall_min_ms=wall[0])
    return res


def copy_bandwidth(B, quick):
    n = (256 if B.cuda else 64) * 1024 * 1024  # float32: 1 GiB on the GPU, 256 MiB on the CPU
    a = torch.randn(n, device=B.device) if B.cuda else torch.empty(n).normal_()
    b = torch.empty_like(a)
    iters = 5 if (quick or not B.cuda) else 20
    m = measure(B, lambda: b.copy_(a), lambda: None, iters, 2)
    ms = m.get("gpu_ms", m["wall_ms"])
    return 2 * 4 * n / (ms * 1e-3) / 1e9, ms, 4 * n


def kernel_breakdown(fn, calls=20):
    """Per-call device time of the library's kernels and copies, from torch.profiler (CUPTI sees every
    kernel in the process, also those launched by the library's own cudart)."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages():
        t = getattr(ev, "self_device_time_total", None)
        if t is None:
            t = getattr(ev, "self_cuda_time_total", 0.0)
        if t and ev.count:
            short = re.sub(r"\(.*", "", ev.key).split("::")[-1][:40]
            rows.append((short, ev.count / calls, t / calls))
    rows.sort(key=lambda r: -r[2])
    return sum(r[2] for r in rows), rows


def device_span(fn, calls=20):
    """Device time of one call from the start of its first operation to the end of its last, the gaps between
    them included (warm L2): each call is queued behind 0.5 ms of Busy, so the time the host spends queueing it
    is not counted, and the stream is idle again before the next. Median over calls, in us."""
    busy = Busy.get()
    fn()
    spans = []
    for _ in range(calls):
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        busy.run(0.5)
        e0.record()
        fn()
        e1.record()
        torch.cuda.synchronize()
        spans.append(e0.elapsed_time(e1) * 1000.0)
    return statistics.median(spans)


def timing(B, R, gen, quick):
    bw, bw_ms, bw_bytes = copy_bandwidth(B, quick)
    if B.cuda:
        torch.cuda.empty_cache()
    where = torch.cuda.get_device_name(B.device) if B.cuda else "CPU (%d threads)" % os.cpu_count()
    R.info("copy bandwidth (torch copy_ of %d MiB float32, read+write): %.1f GB/s (%.3f ms) on %s" % (
        bw_bytes >> 20, bw, bw_ms, where))
    timings = {"device": where, "copy_GBps": bw, "lists": {}}
    configs = [("mlp-deep-small", MLP_DEEP_SMALL, torch.float32), ("mlp-wide", MLP_WIDE, torch.float32)]
    if B.cuda:  # issue 8's target covers both half types
        configs += [("mlp-wide", MLP_WIDE, torch.bfloat16), ("mlp-wide", MLP_WIDE, torch.float16)]
    R.timings.append(timings)
    for name, shapes, dt in configs:
        timings["lists"]["%s-%s" % (name, DTYPE_NAME[dt])] = time_list(B, R, gen, quick, name, shapes, dt, bw, where)
        if B.cuda:
            torch.cuda.empty_cache()


def time_list(B, R, gen, quick, name, shapes, dt, bw, where):
    alpha, beta, g_constraint = 1.0, 1.0, 0.4
    P = sum(numel_of(s) for s in shapes)
    big = P > 1_000_000
    if B.cuda:
        iters = (30 if big else 100) if quick else (100 if big else 300)
        ref_iters = (10 if big else 20) if quick else (30 if big else 100)
    else:
        iters = (5 if big else 50) if quick else (10 if big else 200)
        ref_iters = (3 if big else 10) if quick else (5 if big else 50)
    # g = noise - c/2: <g,c> < 0, so lam > 0 and every tensor is updated in every iteration (the kernels
    # skip the update of a tensor whose lam is 0). All g are views of one buffer G, restored from G0.
    C = randn(P, gen).to(dt).to(B.device)
    G0 = (randn(P, gen) - 0.5 * C.double().cpu()).to(dt).to(B.device)
    G = G0.clone()
    gs, cs, off = [], [], 0
    for s in shapes:
        n = numel_of(s)
        gs.append(G[off:off + n].view(s))
        cs.append(C[off:off + n].view(s))
        off += n
    pairs = list(zip(gs, cs))
    desc = make_desc(pairs)
    loss = torch.tensor(1.7, dtype=torch.float32, device=B.device)  # the unconditional loss g
    g_value = loss.item()
    # CUDA: after restoring G, overwrite 256 MiB so that the timed call starts with a cold L2 (50 MB on H100)
    scratch = torch.empty(64 * 1024 * 1024, device=B.device) if B.cuda else None

    def restore():
        G.copy_(G0)
        if scratch is not None:
            scratch.fill_(1.0)
    failed_rc = []

    def fused():
        rc = B.project(desc, len(pairs), loss, g_constraint, alpha, beta, 0, None)
        if rc:
            failed_rc.append(rc)

    # sanity: the fused call and the original second step (in the tensors' dtype) both against float64
    restore()
    refs = reference(pairs, g_value, g_constraint, alpha, beta)
    fused()
    B.sync()
    err_fused = max(value_error(g, r) for g, r in zip(gs, refs))
    restore()
    ref_second_step(gs, cs, g_value, g_constraint, alpha, beta)
    B.sync()
    err_ref = max(value_error(g, r) for g, r in zip(gs, refs))
    npos = sum(1 for r in refs if r["lam"] > 0)
    del refs
    tol = VALUE_TOL[dt]
    R.check("timing list %s %s: fused result vs float64" % (name, DTYPE_NAME[dt]), not failed_rc and err_fused <= tol,
            "%d tensors (lam > 0 on %d), %d params, err %.3g (tol %.0e); the original second step in %s: err %.3g" % (
                len(pairs), npos, P, err_fused, tol, DTYPE_NAME[dt], err_ref))

    m_fused = measure(B, fused, restore, iters, 10)
    m_second = measure(B, lambda: ref_second_step(gs, cs, g_value, g_constraint, alpha, beta), restore, ref_iters, 3)
    m_first = measure(B, lambda: ref_first_step(gs, loss), restore, ref_iters, 3)

    def both():
        gv, cs2 = ref_first_step(gs, loss)
        ref_second_step(gs, cs2, gv, g_constraint, alpha, beta)
    m_both = measure(B, both, restore, ref_iters, 3)
    R.check("timing list %s %s: every timed call returned T2D_OK" % (name, DTYPE_NAME[dt]), not failed_rc,
            ("failures: %s" % failed_rc[:3]) if failed_rc else "")

    key = "gpu_ms" if B.cuda else "wall_ms"
    esize = torch.tensor([], dtype=dt).element_size()
    nbytes = 5 * esize * P  # read g, c; read g, c; write g
    R.info("timing %s (%d tensors, %s params, %s) on %s%s:" % (
        name, len(pairs), format(P, ","), DTYPE_NAME[dt], where, ", L2 flushed before each call" if B.cuda else ""))

    def line(label, m):
        s = "  %-30s" % label
        if B.cuda:
            s += " gpu %9.4f ms (median of %d, CUDA events; min %.4f)" % (m["gpu_ms"], m["iters"], m["gpu_min_ms"])
        s += " | wall %9.4f ms (call + sync, median)" % m["wall_ms"]
        R.info(s)
    line("fused %s" % B.entry, m_fused)
    line("reference second step", m_second)
    line("reference first step", m_first)
    line("reference first + second step", m_both)
    gbps = nbytes / (m_fused[key] * 1e-3) / 1e9
    R.info("  ratios: reference second / fused = %.1fx, reference first+second / fused = %.1fx (%s time)" % (
        m_second[key] / m_fused[key], m_both[key] / m_fused[key], key.replace("_ms", "")))
    R.info("  fused bandwidth: %.1f GB/s at %d B/param = %.0f%% of the copy bandwidth (%.1f GB/s)%s" % (
        gbps, 5 * esize, 100.0 * gbps / bw, bw,
        "" if big else "; this list is launch/latency bound, bandwidth is not its limit"))
    out = {"tensors": len(pairs), "params": P, "dtype": str(dt), "bytes_per_call": nbytes,
           "fused": m_fused, "ref_second": m_second, "ref_first": m_first, "ref_first_second": m_both,
           "ratio_second": m_second[key] / m_fused[key], "ratio_first_second": m_both[key] / m_fused[key],
           "fused_GBps": gbps, "fraction_of_copy": gbps / bw}
    if B.cuda:
        try:
            total, rows = kernel_breakdown(fused)
            R.info("  device time per fused call (torch.profiler, warm L2): %.2f us: %s" % (
                total, ", ".join("%s x%.3g %.2f us" % r for r in rows[:6])))
            out["profiler_us_per_call"] = total
            out["profiler_rows"] = rows
        except Exception as e:  # noqa: BLE001
            R.info("  torch.profiler breakdown unavailable: %s" % ((str(e).splitlines() or [type(e).__name__])[0][:200]))
        try:
            span = device_span(fused)
            total = out.get("profiler_us_per_call")
            R.info("  device span per fused call (warm L2, queued behind a busy kernel): %.2f us%s" % (
                span, "" if total is None else ", of which %.2f us in kernels and copies and %.2f us between them "
                "(launch gaps)" % (total, span - total)))
            out["device_span_us"] = span
        except Exception as e:  # noqa: BLE001
            R.info("  device span unavailable: %s" % ((str(e).splitlines() or [type(e).__name__])[0][:200]))
    return out


# ---------------------------------------------------------------- the fused optimizer step (t2d_step_host/_cuda)
class FusedParam:
    """One parameter of a fused step: p, g, c (or None) and the state, on one device, of one dtype."""

    def __init__(self, numel, dtype, device, gen, project=True):
        self.p = randn(numel, gen).to(device=device, dtype=dtype)
        self.g = randn(numel, gen).to(device=device, dtype=dtype)
        c = randn(numel, gen) * 0.5 - 0.3 * self.g.detach().to("cpu", torch.float64)  # against g: lam > 0 often
        self.c = c.to(device=device, dtype=dtype) if project else None
        self.state = [torch.zeros(numel, dtype=dtype, device=device) for _ in range(3)]
        self.step = torch.zeros((), dtype=torch.int64, device=device)

    def row(self, r, n_states):
        r.param, r.grad = self.p.data_ptr() or None, self.g.data_ptr() or None
        r.constraint = (self.c.data_ptr() or None) if self.c is not None else None
        ptrs = [t.data_ptr() or None for t in self.state]
        r.exp_avg, r.exp_avg_sq, r.max_exp_avg_sq = [ptrs[k] if k < n_states else None for k in range(3)]
        r.step = self.step.data_ptr()
        r.numel, r.dtype = self.p.numel(), DTYPE_CODE[self.p.dtype]
        r.device, r.flags, r.reserved = dev_code(self.p), T2D_PARAM_CONTIGUOUS, 0

    def snapshot(self):
        ts = [self.p, self.g, self.step] + self.state + ([self.c] if self.c is not None else [])
        return [bits(t) for t in ts]

    def unchanged(self, snap):
        return all(torch.equal(a, b) for a, b in zip(self.snapshot(), snap))


def opt_struct(kind, lr, wd=0.0, amsgrad=False, betas=(0.9, 0.999), eps=1e-8, momentum=0.0, dampening=0.0,
               nesterov=False):
    o = T2dOptimizer()
    o.kind, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay = kind, lr, betas[0], betas[1], eps, wd
    o.momentum, o.dampening = momentum, dampening
    o.flags = (T2D_AMSGRAD if amsgrad else 0) | (T2D_NESTEROV if nesterov else 0)
    return o


def opt_states(o):
    if o.kind == T2D_SGD:
        return 1 if o.momentum != 0 else 0
    return 3 if o.flags & T2D_AMSGRAD else 2


def torch_optimizer(o, params):
    """torch.optim's optimizer with the same options (foreach=False: the per-tensor reference loop)."""
    if o.kind == T2D_SGD:
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, dampening=o.dampening, weight_decay=o.weight_decay,
                               nesterov=bool(o.flags & T2D_NESTEROV), foreach=False)
    cls = torch.optim.Adam if o.kind == T2D_ADAM else torch.optim.AdamW
    return cls(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay,
               amsgrad=bool(o.flags & T2D_AMSGRAD), foreach=False)


def param_rows(fps, o):
    """The t2d_param array of a fused step (at least one row, as the table of an empty step)."""
    arr = (T2dParam * max(1, len(fps)))()
    for i, fp in enumerate(fps):
        fp.row(arr[i], opt_states(o))
    return arr


def fused_step(B, fps, o, g_value, g_constraint, status=None, stream=None, alpha=1.0):
    arr = param_rows(fps, o)
    if B.cuda:
        gv = g_value if torch.is_tensor(g_value) else torch.tensor(g_value, dtype=torch.float64, device=B.device)
        B._keep = [gv, arr]
        if stream is None:
            stream = torch.cuda.current_stream().cuda_stream
        return B.lib.t2d_step_cuda(arr, len(fps), ctypes.byref(o), ctypes.c_void_p(gv.data_ptr()), DTYPE_CODE[gv.dtype],
                                   g_constraint, alpha, 1.0, 0, ctypes.c_void_p(stream or None),
                                   ctypes.c_void_p(status.data_ptr()), None)
    return B.lib.t2d_step_host(arr, len(fps), ctypes.byref(o), float(g_value), g_constraint, alpha, 1.0, 0, None)


def new_status(B):
    return torch.zeros(5, dtype=torch.int64, device=B.device) if B.cuda else None


def read_status(status):
    """calls, skipped, first_skipped, first_tensor, first_reason (t2d_step_status)."""
    v = status.cpu().tolist()
    return v[0], v[1], v[2], v[3] & 0xffffffff, (v[3] >> 32) & 0xffffffff


def fused_optimizer(B, R, gen):
    """The fused step against an independent float64 oracle: lam from this file's t2d_lambda on float64 copies,
    g + lam*c rounded in the kernel's math type (float32 for the 32- and 16-bit dtypes) and stored in the parameter's
    dtype (the kernel writes the projected gradient before the optimizer reads it), then torch.optim's
    Adam/AdamW/SGD in float64; three steps, each from the values the kernel stored;
    each dtype; every third tensor without a constraint gradient."""
    configs = [
        ("adam", opt_struct(T2D_ADAM, 1e-2)),
        ("adam wd amsgrad", opt_struct(T2D_ADAM, 1e-2, wd=0.05, amsgrad=True)),
        ("adamw", opt_struct(T2D_ADAMW, 1e-2, wd=0.01)),
        ("adamw amsgrad", opt_struct(T2D_ADAMW, 1e-2, wd=0.1, amsgrad=True)),
        ("sgd", opt_struct(T2D_SGD, 0.05)),
        ("sgd momentum dampening wd", opt_struct(T2D_SGD, 0.05, wd=0.01, momentum=0.9, dampening=0.2)),
        ("sgd nesterov", opt_struct(T2D_SGD, 0.05, momentum=0.8, nesterov=True)),
    ]
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}
    sizes = [7, 20000, 0, 33, 70001, 1, 16384]
    names = {T2D_SGD: ["momentum_buffer"], T2D_ADAM: ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]}
    for name, o0 in configs:
        for dt in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
            o = o0
            if dt in HALF and o.kind != T2D_SGD:  # a second moment that underflows: see native/test/t2d_test.cpp
                o = opt_struct(o.kind, o.lr, o.weight_decay, bool(o.flags & T2D_AMSGRAD), eps=1e-3)
            fps = [FusedParam(n, dt, B.device, gen, project=(i % 3 != 2)) for i, n in enumerate(sizes)]
            ref_p = [fp.p.detach().to("cpu", torch.float64).clone().requires_grad_(True) for fp in fps]
            topt = torch_optimizer(o, ref_p)
            status = new_status(B)
            worst, ok = 0.0, True
            for step in range(3):
                g_value, g_constraint = 2.0 + step, 1.0
                for fp, rp in zip(fps, ref_p):  # the oracle's gradient: lam in float64, g + lam*c in the math type
                    g64 = fp.g.detach().to("cpu", torch.float64)
                    if fp.c is not None:
                        c64 = fp.c.detach().to("cpu", torch.float64)
                        n = float((c64 * c64).sum()) if c64.numel() else 0.0
                        dot = float((g64 * c64).sum()) if c64.numel() else 0.0
                        lam, _ = t2d_lambda(n, dot, g_value - g_constraint, 1.0)
                        # rounded as the kernel (and the reference, in the parameter's dtype) rounds it: where g and
                        # lam*c nearly cancel, Adam's first steps turn the rounding of g + lam*c into a step of
                        # about lr, which a float64 sum would hold against a correct float32 kernel
                        m = torch.float64 if dt == torch.float64 else torch.float32
                        gm, cm = g64.to(m), c64.to(m)
                        g64 = (gm + cm * torch.tensor(lam, dtype=m)).to(dt).to(torch.float64)  # stored in dt, as g
                    rp.grad = g64.clone()
                topt.step()
                rc = fused_step(B, fps, o, g_value, g_constraint, status)
                B.sync()
                ok &= rc == T2D_OK
                for fp, rp in zip(fps, ref_p):
                    if fp.p.numel() == 0:
                        continue
                    got = fp.p.detach().to("cpu", torch.float64)
                    want = rp.detach()
                    worst = max(worst, float((got - want).abs().max()) / max(float(want.abs().max()), 1e-300))
                    # the next step: new gradients, and the oracle starts from the values the kernel stored
                    fp.g.copy_(randn(fp.g.numel(), gen).to(dt))
                    if fp.c is not None:
                        fp.c.copy_((randn(fp.c.numel(), gen) * 0.5).to(dt))
                    with torch.no_grad():
                        rp.copy_(got)
                    st = topt.state.get(rp, {})
                    for k, key in enumerate(names[T2D_SGD if o.kind == T2D_SGD else T2D_ADAM][:opt_states(o)]):
                        if st.get(key) is not None:
                            st[key].copy_(fp.state[k].detach().to("cpu", torch.float64))
            steps = [int(fp.step.item()) for fp in fps]
            skipped = read_status(status)[1] if B.cuda else 0
            R.check("fused step %s %s against torch.optim (float64 oracle), 3 steps" % (name, DTYPE_NAME[dt]),
                    ok and worst <= tol[dt] and steps == [3] * len(fps) and skipped == 0,
                    "worst normwise rel err of p %.3g (tol %.0e); step counts %s; skipped %d" % (
                        worst, tol[dt], steps, skipped))


def fused_nonfinite(B, R, gen):
    """NaN/inf in g, in c, in an unprojected g, and float16 overflow: nothing written anywhere, step counts
    unchanged; host: T2D_ERR_NONFINITE naming the tensor; CUDA: rc 0 and the status says skipped, tensor, why."""
    o = opt_struct(T2D_ADAM, 1e-2, wd=0.01, amsgrad=True)
    cases = [("NaN in g of tensor 3", 3, "g", float("nan"), T2D_NONFINITE_GRAD),
             ("inf in c of tensor 1", 1, "c", float("inf"), T2D_NONFINITE_CONSTRAINT),
             ("-inf in g of unprojected tensor 2", 2, "g", float("-inf"), T2D_NONFINITE_GRAD)]
    for dt in (torch.float32, torch.float16):
        for name, idx, which, val, reason in cases:
            fps = [FusedParam(n, dt, B.device, gen, project=(i != 2)) for i, n in enumerate([5, 70001, 300, 16385])]
            status = new_status(B)
            fused_step(B, fps, o, 2.0, 1.0, status)  # a first good step: the state is not all zero
            B.sync()
            t = fps[idx].g if which == "g" else fps[idx].c
            t.view(-1)[t.numel() // 2] = val
            snaps = [fp.snapshot() for fp in fps]
            rc = fused_step(B, fps, o, 2.0, 1.0, status)
            B.sync()
            untouched = all(fp.unchanged(sn) for fp, sn in zip(fps, snaps))
            if B.cuda:
                calls, skipped, first, tensor, why = read_status(status)
                ok = rc == T2D_OK and calls == 2 and skipped == 1 and first == 2 and tensor == idx and why == reason
                detail = "status calls %d skipped %d first %d tensor %d reason %d" % (calls, skipped, first, tensor, why)
            else:
                msg, at = B.last_error()
                ok = rc == T2D_ERR_NONFINITE and at == idx
                detail = "rc %d '%s' tensor %d" % (rc, msg, at)
            R.check("fused step %s %s: nothing written" % (name, DTYPE_NAME[dt]), ok and untouched,
                    "%s; everything bit for bit as before: %s" % (detail, untouched))
    # an infinite g_value (the loss): refused like NaN, though lam alone would come out finite (phi = beta n for
    # +inf, lam 0 for -inf); the first projected tensor is named (tensor 0 here)
    for gv in (float("inf"), float("-inf"), float("nan")):
        fps = [FusedParam(n, torch.float32, B.device, gen) for n in (40, 300)]
        refused_step(B, R, "g_value %s" % gv, fps, o, gv, 0, T2D_NONFINITE_LOSS, "g_value")
    # alpha * (g_value - g_constraint) overflowing float64 from finite operands (alpha 1e308) is no non-finite loss:
    # taken, with the lam an infinite excess gives (phi = beta * n), so the same bits as an excess of 1e300
    runs = []
    for alpha, gv in ((1e308, 10.0), (1.0, 1e300)):
        fps = [FusedParam(n, torch.float32, B.device, torch.Generator().manual_seed(77 + i)) for i, n in enumerate((40, 300))]
        status = new_status(B)
        rc = fused_step(B, fps, o, gv, 0.5, status, alpha=alpha)
        B.sync()
        skipped = read_status(status)[1] if B.cuda else 0
        runs.append((rc, skipped, [bits(fp.p) for fp in fps]))
    same = all(bool(torch.equal(a, b)) for a, b in zip(runs[0][2], runs[1][2]))
    R.check("fused step: alpha * (g_value - g_constraint) overflows, taken as phi = beta * n",
            runs[0][:2] == (T2D_OK, 0) and runs[1][:2] == (T2D_OK, 0) and same,
            "rc/skipped %s and %s; parameters bit for bit those of an excess of 1e300: %s" % (
                runs[0][:2], runs[1][:2], same))
    # float16: finite gradients, an SGD update that leaves float16's range (g_value < g_constraint: lam = 0)
    fps = [FusedParam(n, torch.float16, B.device, gen) for n in (40, 300)]
    fps[1].p.view(-1)[7], fps[1].g.view(-1)[7] = 65000.0, -60000.0
    refused_step(B, R, "float16 update overflow", fps, opt_struct(T2D_SGD, 1.0), 0.0, 1, T2D_NONFINITE_UPDATE,
                 "overflowed")


def refused_step(B, R, label, fps, o, g_value, tensor_want, reason, host_word):
    """One fused step that must be refused: nothing written; host: T2D_ERR_NONFINITE naming tensor_want with
    host_word in the message; CUDA: rc 0 and the status says skipped, tensor_want, reason."""
    status = new_status(B)
    snaps = [fp.snapshot() for fp in fps]
    rc = fused_step(B, fps, o, g_value, 1.0, status)
    B.sync()
    untouched = all(fp.unchanged(sn) for fp, sn in zip(fps, snaps))
    if B.cuda:
        calls, skipped, first, tensor, why = read_status(status)
        ok = rc == T2D_OK and skipped == 1 and tensor == tensor_want and why == reason
        detail = "status skipped %d tensor %d reason %d" % (skipped, tensor, why)
    else:
        msg, at = B.last_error()
        ok = rc == T2D_ERR_NONFINITE and at == tensor_want and host_word in msg
        detail = "rc %d '%s'" % (rc, msg)
    R.check("fused step %s: nothing written" % label, ok and untouched, "%s; untouched %s" % (detail, untouched))


def planned_capture(B, R, gen):
    """t2d_step_cuda_planned captured with the t2d_graph_* wrappers and replayed: the same bits as t2d_step_cuda
    called eagerly with the same scalars, a learning rate and gConstraint changed in the device scalars between
    replays reach the replays, a NaN gradient makes a replay skip (nothing written, counted), and the capture itself
    writes nothing."""
    o = opt_struct(T2D_ADAM, 1e-2, wd=0.01)
    sizes = [numel_of(s) for s in MLP_DEEP_SMALL]
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    eager = [FusedParam(n, torch.float32, B.device, torch.Generator().manual_seed(seed + i), project=(i % 4 != 3))
             for i, n in enumerate(sizes)]
    graphed = [FusedParam(n, torch.float32, B.device, torch.Generator().manual_seed(seed + i), project=(i % 4 != 3))
               for i, n in enumerate(sizes)]
    gv = torch.tensor(2.0, dtype=torch.float32, device=B.device)
    status_e, status_g = new_status(B), new_status(B)
    rows = param_rows(graphed, o)
    plan = ctypes.c_void_p()
    rc = B.lib.t2d_plan_create(rows, len(graphed), torch.cuda.current_device(), ctypes.byref(plan))
    R.check("plan: created", rc == T2D_OK and plan.value, B.last_error()[0])
    if rc != T2D_OK:
        return
    scalars = torch.tensor([o.lr, 1.0, 1.0, 1.0], dtype=torch.float64, device=B.device)
    # one row more than the plan was made for: refused before anything is enqueued (status_g stays at 0 calls, which
    # the replay check below also asserts)
    extra = graphed + [FusedParam(16, torch.float32, B.device, torch.Generator().manual_seed(seed + len(sizes)))]
    before = [fp.snapshot() for fp in extra]
    rc = B.lib.t2d_step_cuda_planned(plan, param_rows(extra, o), len(extra), ctypes.byref(o),
                                     ctypes.c_void_p(gv.data_ptr()), DTYPE_CODE[gv.dtype],
                                     ctypes.c_void_p(scalars.data_ptr()), 0,
                                     ctypes.c_void_p(torch.cuda.current_stream().cuda_stream),
                                     ctypes.c_void_p(status_g.data_ptr()))
    msg = B.last_error()[0]
    torch.cuda.synchronize()
    R.check("planned step: more rows than the plan refused (T2D_ERR_SIZE_MISMATCH), nothing written",
            rc == T2D_ERR_SIZE_MISMATCH and "does not fit the plan" in msg
            and all(fp.unchanged(b) for fp, b in zip(extra, before)) and read_status(status_g)[0] == 0,
            "rc %d: %s" % (rc, msg))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    torch.cuda.synchronize()
    before = [fp.snapshot() for fp in graphed]
    exec_ = ctypes.c_void_p()
    with torch.cuda.stream(side):
        rc0 = B.lib.t2d_graph_capture_begin(ctypes.c_void_p(side.cuda_stream))
        rc1 = B.lib.t2d_step_cuda_planned(plan, rows, len(graphed), ctypes.byref(o), ctypes.c_void_p(gv.data_ptr()),
                                          DTYPE_CODE[gv.dtype], ctypes.c_void_p(scalars.data_ptr()), 0,
                                          ctypes.c_void_p(side.cuda_stream), ctypes.c_void_p(status_g.data_ptr()))
        rc2 = B.lib.t2d_graph_capture_end(ctypes.c_void_p(side.cuda_stream), ctypes.byref(exec_))
    torch.cuda.synchronize()
    R.check("planned step captured (t2d_graph_capture_begin/end), nothing written by the capture",
            (rc0, rc1, rc2) == (T2D_OK, T2D_OK, T2D_OK) and exec_.value
            and all(fp.unchanged(b) for fp, b in zip(graphed, before)), "rc %s %s %s: %s" % (rc0, rc1, rc2, B.last_error()))
    if not exec_.value:
        B.lib.t2d_plan_destroy(plan)
        return
    schedule = [(1e-2, 1.0), (1e-2, 1.0), (5e-3, 1.0), (5e-3, 3.0), (2e-2, 0.5)]
    same = True
    for lr, gc in schedule:
        o.lr = lr
        fused_step(B, eager, o, gv, gc, status_e)
        scalars.copy_(torch.tensor([lr, gc, 1.0, 1.0], dtype=torch.float64))
        rcl = B.lib.t2d_graph_launch(exec_, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
        same &= rcl == T2D_OK
        torch.cuda.synchronize()
        same &= all(a.unchanged(b.snapshot()) for a, b in zip(eager, graphed))
        for e, g in zip(eager, graphed):  # the next step's gradients, the same on both sides
            g.g.copy_(e.g.mul_(0.9).add_(0.01))
    R.check("planned step replayed 5 times: the bits of t2d_step_cuda, lr and gConstraint changed in the device "
            "scalars between replays", same and read_status(status_g)[:2] == (5, 0),
            "status (calls, skipped) %s" % (read_status(status_g)[:2],))
    graphed[5].g.view(-1)[0] = float("nan")
    torch.cuda.synchronize()
    before = [fp.snapshot() for fp in graphed]
    B.lib.t2d_graph_launch(exec_, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
    torch.cuda.synchronize()
    calls, skipped, first, tensor, why = read_status(status_g)
    R.check("planned step replay with a NaN gradient: skipped, nothing written, named",
            all(fp.unchanged(b) for fp, b in zip(graphed, before)) and skipped == 1 and tensor == 5
            and why == T2D_NONFINITE_GRAD, "calls %d skipped %d tensor %d reason %d" % (calls, skipped, tensor, why))
    B.lib.t2d_graph_destroy(exec_)
    # fewer rows than the plan was made for, called eagerly (the plan's workspace and counters serve any step that
    # fits): the bits of t2d_step_cuda on the same rows
    graphed[5].g.copy_(eager[5].g)
    k = len(graphed) // 2
    o.lr = 1e-2
    fused_step(B, eager[:k], o, gv, 1.0, status_e)
    scalars.copy_(torch.tensor([o.lr, 1.0, 1.0, 1.0], dtype=torch.float64))
    rc = B.lib.t2d_step_cuda_planned(plan, param_rows(graphed[:k], o), k, ctypes.byref(o), ctypes.c_void_p(gv.data_ptr()),
                                     DTYPE_CODE[gv.dtype], ctypes.c_void_p(scalars.data_ptr()), 0,
                                     ctypes.c_void_p(torch.cuda.current_stream().cuda_stream),
                                     ctypes.c_void_p(status_g.data_ptr()))
    msg = B.last_error()[0]
    torch.cuda.synchronize()
    R.check("planned step with fewer rows than the plan (%d of %d): the bits of t2d_step_cuda" % (k, len(graphed)),
            rc == T2D_OK and all(a.unchanged(b.snapshot()) for a, b in zip(eager, graphed)), "rc %d: %s" % (rc, msg))
    B.lib.t2d_plan_destroy(plan)


def planned_errors(B, R, gen):
    """The plan and capture entry points refuse bad arguments with a message and write nothing (both modes)."""
    o = opt_struct(T2D_ADAM, 1e-2)
    fps = [FusedParam(n, torch.float32, B.device, gen) for n in (5, 7)]
    plan = ctypes.c_void_p(12345)
    rc = B.lib.t2d_plan_create(param_rows(fps, o), -1, 0, ctypes.byref(plan))
    R.check("plan_create: negative count refused, *plan_out set to NULL", rc == T2D_ERR_BAD_COUNT and not plan.value,
            "rc %d: %s" % (rc, B.last_error()))
    rc = B.lib.t2d_plan_create(param_rows(fps, o), 2, -1, ctypes.byref(plan))
    R.check("plan_create: a host device refused", rc == T2D_ERR_WRONG_DEVICE and "CUDA device" in B.last_error()[0],
            "rc %d: %s" % (rc, B.last_error()))
    before = [fp.snapshot() for fp in fps]
    rc = B.lib.t2d_step_cuda_planned(None, param_rows(fps, o), 2, ctypes.byref(o), None, 0, None, 0, None, None)
    R.check("step_cuda_planned: NULL plan refused, nothing written",
            rc == T2D_ERR_NULL_POINTER and "plan is NULL" in B.last_error()[0]
            and all(fp.unchanged(b) for fp, b in zip(fps, before)), "rc %d: %s" % (rc, B.last_error()))
    rc = B.lib.t2d_graph_capture_begin(None)
    R.check("graph_capture_begin: the legacy default stream refused",
            rc == T2D_ERR_NULL_POINTER and "legacy default stream" in B.last_error()[0],
            "rc %d: %s" % (rc, B.last_error()))
    rc = B.lib.t2d_graph_launch(None, None)
    R.check("graph_launch: NULL graph refused", rc == T2D_ERR_NULL_POINTER and "graph_exec is NULL" in B.last_error()[0],
            "rc %d: %s" % (rc, B.last_error()))
    B.lib.t2d_graph_destroy(None)
    B.lib.t2d_plan_destroy(None)


def fused_no_host_sync(B, R, gen):
    """The fused step returns while a long kernel queued before it still runs, also when it skips the step."""
    busy = Busy.get()
    o = opt_struct(T2D_ADAM, 1e-3)
    for label, poison in (("finite step", False), ("skipped step (NaN)", True)):
        fps = [FusedParam(numel_of(s), torch.float32, B.device, gen) for s in MLP_DEEP_SMALL]
        status = new_status(B)
        gv = torch.tensor(2.0, dtype=torch.float32, device=B.device)
        for _ in range(4):  # warm: ring slots and the workspace
            fused_step(B, fps, o, gv, 1.0, status)
        torch.cuda.synchronize()
        if poison:
            fps[5].g.view(-1)[0] = float("nan")
        calls_before = read_status(status)[0]
        rc, call_ms, total_ms, pending = behind_busy(busy, 300.0, lambda: fused_step(B, fps, o, gv, 1.0, status))
        calls, skipped, first, tensor, why = read_status(status)
        R.check("fused step no host sync: %s (39 tensors)" % label,
                rc == T2D_OK and call_ms < min(50.0, 0.2 * total_ms) and pending and calls == calls_before + 1
                and skipped == (1 if poison else 0),
                "call took %.3f ms on the host while the GPU was busy (%.0f ms); pending %s; status calls %d skipped %d"
                % (call_ms, total_ms, pending, calls, skipped))


# ---------------------------------------------------------------- ABI self-checks
def abi_checks(R, lib):
    ok_size = ctypes.sizeof(T2dTensor) == 56
    offs = [(f, getattr(T2dTensor, f).offset) for f, _ in T2dTensor._fields_]
    want = [0, 8, 16, 24, 32, 36, 40, 44, 48, 52]
    R.check("abi: sizeof(t2d_tensor) == 56 and field offsets", ok_size and [o for _, o in offs] == want,
            "size %d, offsets %s" % (ctypes.sizeof(T2dTensor), [o for _, o in offs]))
    if os.path.exists(HEADER):
        with open(HEADER) as fh:
            text = fh.read()
        defs = dict(re.findall(r"#define\s+(T2D_[A-Z0-9_]+)\s+\(?(-?\d+)\)?", text))
        mism = [k for k, v in defs.items() if k in globals() and globals()[k] != int(v)]
        missing = [k for k in defs if k not in globals()]
        R.check("abi: constants match text2data.h", not mism and not missing,
                "%d defines; mismatched %s, not declared here %s" % (len(defs), mism, missing))
    ver = lib.t2d_version().decode()
    R.info("library: %s | cuda built %d | cuda available %d" % (ver, lib.t2d_cuda_built(), lib.t2d_cuda_available()))
    R.check("abi: version says abi %d" % T2D_ABI_VERSION, ("abi %d" % T2D_ABI_VERSION) in ver, ver)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="path of libtext2data.so")
    ap.add_argument("--host", action="store_true", help="check t2d_project_host on CPU tensors instead of CUDA")
    ap.add_argument("--also-host", action="store_true", help="after the CUDA checks, run the host correctness checks")
    ap.add_argument("--quick", action="store_true", help="fewer timing iterations")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--timing-only", action="store_true",
                    help="skip the correctness suite: the ABI smoke call and the timing lists, whose results are "
                         "still checked against float64 (bench/gpu/ab.sh)")
    ap.add_argument("--json", help="write checks and timings here")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    if args.timing_only and args.no_timing:
        ap.error("--timing-only and --no-timing exclude each other")

    R = Report()
    t_start = time.time()
    print("check_cuda.py: torch %s (CUDA %s), python %s, library %s" % (
        torch.__version__, torch.version.cuda, sys.version.split()[0], args.lib), flush=True)
    lib = load_library(args.lib)
    abi_checks(R, lib)
    gen = torch.Generator().manual_seed(args.seed)

    modes = []
    if args.host:
        modes.append(False)
    else:
        if not torch.cuda.is_available():
            R.check("cuda: torch sees a CUDA device", False, "torch.cuda.is_available() is False (use --host on a CPU machine)")
        elif not lib.t2d_cuda_built():
            R.check("cuda: library built with CUDA", False, lib.t2d_version().decode())
        elif not lib.t2d_cuda_available():
            R.check("cuda: t2d_cuda_available()", False,
                    "0 although torch sees %s: the library's static cudart (from the nvcc used) probably needs a newer "
                    "driver than this machine has; compare nvcc's release with nvidia-smi's 'CUDA Version'"
                    % torch.cuda.get_device_name(0))
        else:
            R.check("cuda: t2d_cuda_available()", True, torch.cuda.get_device_name(0))
            modes.append(True)
        if args.also_host:
            modes.append(False)

    for cuda in modes:
        B = Backend(lib, cuda)
        R.prefix = "cuda: " if cuda else "host: "
        t0 = time.time()
        R.guard("ABI smoke call", lambda: run_case(B, R, "smoke (3 tensors)", [make_pair(n, torch.float32, B.device, gen) for n in (3, 5, 7)]))
        if not args.timing_only:
            R.guard("correctness", correctness, B, R, gen)
            R.guard("fixtures", fixtures, B, R)
            R.guard("errors", errors, B, R, gen)
            R.guard("nonfinite", nonfinite, B, R, gen)
            R.guard("fused optimizer", fused_optimizer, B, R, gen)
            R.guard("fused optimizer nonfinite", fused_nonfinite, B, R, gen)
            R.guard("plan and capture errors", planned_errors, B, R, gen)
        if cuda and not args.timing_only:
            R.guard("streams", cuda_streams, B, R, gen)
            R.guard("no host sync", no_host_sync, B, R, gen)
            R.guard("fused optimizer no host sync", fused_no_host_sync, B, R, gen)
            R.guard("planned step in a CUDA graph", planned_capture, B, R, gen)
        R.info("checks took %.1f s" % (time.time() - t0))
        if not args.no_timing and (cuda or args.host):
            t0 = time.time()
            R.guard("timing", timing, B, R, gen, args.quick)
            R.info("timing took %.1f s" % (time.time() - t0))
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    R.prefix = ""

    passed, failed, warned = R.counts()
    if args.json:
        try:
            with open(args.json, "w") as fh:
                json.dump({"torch": torch.__version__, "torch_cuda": torch.version.cuda, "python": sys.version.split()[0],
                           "library": args.lib, "version": lib.t2d_version().decode(), "host_mode": args.host,
                           "seconds": time.time() - t_start, "passed": passed, "failed": failed, "warnings": warned,
                           "checks": R.checks, "info": R.info_lines, "timings": R.timings}, fh, indent=1, default=str)
            print("json: " + args.json)
        except OSError as e:
            print("could not write %s: %s" % (args.json, e))
    print("%d warning(s); %.1f s in all" % (warned, time.time() - t_start))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
