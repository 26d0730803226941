"""Time the constrained step against a plain baseline on the bench workloads.

Usage: /usr/bin/python3 bench_ref.py [--threads N] [--warmup K] [--iters M]
           [--workloads a,b] [--json OUT] [--weights-dir DIR] [--budget SEC] [--device cpu|cuda]

Per workload, three modes, each on a fresh copy of the initial weights, Adam lr 1e-3:
  constrained  run_step (zero_grad, uncond fwd/bwd, first_step, cond fwd/bwd,
               second_step, Adam step)
  baseline     zero_grad, uncond fwd/bwd, cond fwd/bwd (grads accumulate), Adam step
  projection   first_step + second_step alone, on gradients from one backward
With --device cuda, two more, the best a PyTorch user gets without any constraint:
  fused        baseline with Adam(fused=True)
  graphed      baseline with Adam(fused=True, capturable=True), captured once as a CUDA graph
               (torch.cuda.graph, after three warm-up steps on a side stream) and replayed
The modes are timed round-robin (one iteration of each per round) after --warmup
untimed rounds; without --iters, rounds go on until about --budget seconds per
mode have passed (at least 5 rounds, at most 200). With --device cuda, model and
batch live on the GPU and every timed call ends with torch.cuda.synchronize() (wall
time per step, as bench/gpu/java-check.sh's Java side measures it).
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402
from text2data_ref import Constraint, run_step  # noqa: E402

LR = 1e-3
MODES = ("constrained", "baseline", "projection")
CUDA_MODES = ("fused", "graphed")


def openblas():
    """The OpenBLAS that torch loaded (via libblas.so.3), or None. Debian's torch
    is built with BLAS_INFO=generic, so torch.set_num_threads does not reach it."""
    import ctypes
    try:
        with open("/proc/self/maps") as fh:
            paths = {l.split()[-1] for l in fh if "libopenblas" in l}
        return ctypes.CDLL(sorted(paths)[0]) if paths else None
    except (OSError, IndexError):
        return None


def blas_info():
    lines = []
    for l in torch.__config__.show().splitlines():
        if "BLAS" in l.upper():  # the build-settings line is long: keep its BLAS parts
            parts = [p.strip() for p in l.split(",") if "BLAS" in p.upper() or "LAPACK" in p.upper()]
            lines.append(", ".join(parts) if len(l) > 200 else l.strip())
    # BLAS_INFO=generic means "libblas.so.3"; say which library that resolved to.
    try:
        with open("/proc/self/maps") as fh:
            libs = sorted({l.split()[-1] for l in fh if re.search(r"blas|mkl", l.split()[-1], re.I)})
        lines += [f"loaded: {os.path.realpath(p)}" for p in libs]
    except OSError:
        pass
    return lines


def setup(model, batch, mode):
    """Returns a zero-argument callable doing one iteration of `mode`."""
    data, cond, label = batch["data"], batch["cond"], batch["label"]
    loss_fn = torch.nn.MSELoss()
    params = list(model.parameters())
    if mode in ("baseline", "fused"):
        opt = torch.optim.Adam(params, lr=LR, fused=True) if mode == "fused" else torch.optim.Adam(params, lr=LR)

        def it():
            opt.zero_grad(set_to_none=False)
            loss_fn(model(data, None), label).backward()
            loss_fn(model(data, cond), label).backward()
            opt.step()
        return it
    if mode == "graphed":  # as in PyTorch's CUDA-graph docs ("whole network capture")
        opt = torch.optim.Adam(params, lr=LR, fused=True, capturable=True)

        def plain():
            loss_fn(model(data, None), label).backward()
            loss_fn(model(data, cond), label).backward()
            opt.step()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                plain()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            plain()
        return graph.replay

    opt = Constraint(params, torch.optim.Adam, lr=LR)
    with torch.no_grad():  # an active constraint: 90% of the initial uncond loss
        g_constraint = 0.9 * loss_fn(model(data, None), label).item()
    if mode == "constrained":
        return lambda: run_step(opt, g_constraint, model, cond, data, label, loss_fn)

    opt.zero_grad(set_to_none=False)
    g = loss_fn(model(data, None), label)
    g.backward()
    g_value = g.item()

    def it():  # mode == "projection"
        opt.first_step(g_value=g_value)
        opt.second_step(g_constraint=g_constraint)
    return it


def time_modes(fns, warmup, iters, budget, sync=lambda: None):
    """Times the callables round-robin (one iteration of each per round), so that
    a load change on a shared machine hits every mode alike. sync() ends every call
    (torch.cuda.synchronize on a GPU)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync()
    times, start, rounds = {m: [] for m in fns}, time.perf_counter(), 0
    while True:
        for m, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[m].append((time.perf_counter() - t0) * 1e3)
        rounds += 1
        if iters is not None:
            if rounds >= iters:
                break
        elif rounds >= 200 or (rounds >= 5 and time.perf_counter() - start >= budget * len(fns)):
            break
    return {m: summary(t) for m, t in times.items()}


def summary(times):
    q = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "p25_ms": q[0], "p75_ms": q[2], "iters": len(times)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per mode without --iters")
    ap.add_argument("--workloads", default=",".join(workloads.WORKLOADS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    # Both sides flush denormal floats to zero: the fixed-batch training these timings run drifts into
    # denormals at different points on each side and for each mode, which would time the CPU's slow
    # path rather than the step (see bench/NOTES.md, "Denormals").
    torch.set_flush_denormal(True)
    ob = openblas()
    if args.threads:
        torch.set_num_threads(args.threads)
        if ob is not None:
            ob.openblas_set_num_threads(args.threads)
    ob_threads = ob.openblas_get_num_threads() if ob is not None else None
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"openblas threads {ob_threads if ob is not None else 'n/a'}")
    for line in blas_info():
        print(f"  {line}")

    results = {"torch": torch.__version__, "threads": torch.get_num_threads(),
               "openblas_threads": ob_threads, "device": str(dev), "workloads": {}}
    if dev.type == "cuda":
        print(f"device {torch.cuda.get_device_name(dev)}, torch CUDA {torch.version.cuda}")
    for name in args.workloads.split(","):
        model, batch = workloads.get(name, args.weights_dir)
        batch = {k: v.to(dev) for k, v in batch.items()}
        init = {k: v.clone() for k, v in model.state_dict().items()}
        n_tensors = len(list(model.parameters()))
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {n_tensors} parameter tensors, {n_params} parameters, "
              f"data {list(batch['data'].shape)}")
        res = {"param_tensors": n_tensors, "params": n_params}
        fns = {}
        for mode in MODES + (CUDA_MODES if dev.type == "cuda" else ()):  # each on its own copy of the weights
            m = workloads.build_model(workloads.WORKLOADS[name]).float()
            m.load_state_dict(init)
            m.to(dev)
            try:
                fns[mode] = setup(m, batch, mode)
            except Exception as e:  # a torch without fused Adam or graphs: the other modes still run
                if mode in MODES:
                    raise
                print(f"  {mode}: not measured ({type(e).__name__}: {e})")
        modes = tuple(fns)
        res.update(time_modes(fns, args.warmup, args.iters, args.budget, sync))
        for mode in modes:
            r = res[mode]
            print(f"  {mode:12s} median {r['median_ms']:9.3f} ms  "
                  f"[min {r['min_ms']:.3f}, p25 {r['p25_ms']:.3f}, p75 {r['p75_ms']:.3f}, "
                  f"max {r['max_ms']:.3f}]  n={r['iters']}")
        print(f"  constrained / baseline = {res['constrained']['median_ms'] / res['baseline']['median_ms']:.3f}")
        for mode in modes[len(MODES):]:
            print(f"  constrained / {mode} = {res['constrained']['median_ms'] / res[mode]['median_ms']:.3f}")
        results["workloads"][name] = res

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
