// Quick timing of the CPU path and a STREAM-like bandwidth measurement (not a test; see bench/NOTES.md).
// usage: t2d_bench [threads]
#include <algorithm>
#include <functional>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "text2data.h"

using clk = std::chrono::steady_clock;

static std::vector<char> g_flush;  // T2D_COLD=1: sweep 1 GB before each repetition (untimed)
static double best_of(int reps, const std::function<void()>& f) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        if (!g_flush.empty()) {
            for (size_t i = 0; i < g_flush.size(); i += 64) g_flush[i]++;
        }
        auto t0 = clk::now();
        f();
        best = std::min(best, std::chrono::duration<double>(clk::now() - t0).count());
    }
    return best;
}

// STREAM-like kernels over n floats with t threads: copy (a = b) and "project-like" (a += s * b).
static void stream(int threads) {
    const char* mb = getenv("T2D_STREAM_MB");  // per array; default 256 MB
    const size_t n = (size_t)(mb ? atoi(mb) : 256) << 18;
    std::vector<float> a(n, 1.0f), b(n, 2.0f);
    auto par = [&](auto&& body) {
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; t++)
            ts.emplace_back([&, t] { body(n * t / threads, n * (t + 1) / threads); });
        for (auto& th : ts) th.join();
    };
    double copy = best_of(5, [&] { par([&](size_t lo, size_t hi) { memcpy(&a[lo], &b[lo], (hi - lo) * 4); }); });
    double axpy = best_of(5, [&] { par([&](size_t lo, size_t hi) { for (size_t i = lo; i < hi; i++) a[i] += 0.5f * b[i]; }); });
    double read = 0;
    volatile double sink = 0;
    read = best_of(5, [&] {
        std::vector<double> part(threads);
        par([&](size_t lo, size_t hi) {
            double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            size_t i = lo;
            for (; i + 4 <= hi; i += 4) { s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3]; }
            part[(lo * threads) / n] = s0 + s1 + s2 + s3;
        });
        sink = part[0];
    });
    printf("stream (%d threads): copy %.1f GB/s (2 x 4 B/elem counted), a+=s*b %.1f GB/s (12 B/elem), dot %.1f GB/s (8 B/elem)\n",
           threads, 2.0 * n * 4 / copy / 1e9, 3.0 * n * 4 / axpy / 1e9, 2.0 * n * 4 / read / 1e9);
}

struct List {
    std::vector<std::vector<float>> g, c;
    std::vector<t2d_tensor> d;
    size_t total = 0;
    explicit List(const std::vector<int64_t>& sizes) {
        std::mt19937 r(1);
        std::normal_distribution<float> nd;
        for (int64_t s : sizes) {
            g.emplace_back(s);
            c.emplace_back(s);
            for (int64_t i = 0; i < s; i++) { g.back()[i] = nd(r); c.back()[i] = nd(r); }
            total += s;
        }
        for (size_t i = 0; i < sizes.size(); i++) {
            t2d_tensor t{};
            t.grad = g[i].data(); t.constraint = c[i].data();
            t.numel = t.constraint_numel = sizes[i];
            t.dtype = t.constraint_dtype = T2D_FLOAT32;
            t.device = t.constraint_device = T2D_DEVICE_HOST;
            t.flags = T2D_GRAD_CONTIGUOUS | T2D_CONSTRAINT_CONTIGUOUS;
            d.push_back(t);
        }
    }
};

static void bench(const char* name, List& l, int reps) {
    // g_value small: lam usually > 0, so the update runs (worst case)
    double s = best_of(reps, [&] {
        if (t2d_project_host(l.d.data(), (int)l.d.size(), 1e6, 0, 1, 1, 0, nullptr) != T2D_OK) { fprintf(stderr, "%s\n", t2d_last_error()); exit(1); }
    });
    printf("%-34s %3zu tensors %9zu params: %9.3f ms  (%.2f GB/s at 20 B/param, %.2f GB/s at 12 B/param)\n", name, l.d.size(),
           l.total, s * 1e3, 20.0 * l.total / s / 1e9, 12.0 * l.total / s / 1e9);
}

// The fused Adam step (t2d_step_host) over the same list: it must read g, c, p, exp_avg, exp_avg_sq and write
// g, p, exp_avg, exp_avg_sq (36 B/param in float32); compared with a memcpy moving the same 36 B/param
// (18 B/param read and written), in the same run.
struct Fused {
    List& l;
    std::vector<std::vector<float>> p, m, v;
    std::vector<int64_t> steps;
    std::vector<t2d_param> d;
    std::vector<char> src, dst;
    explicit Fused(List& list) : l(list), steps(list.d.size(), 0) {
        for (size_t i = 0; i < l.d.size(); i++) {
            size_t n = (size_t)l.d[i].numel;
            p.emplace_back(n, 0.5f);
            m.emplace_back(n, 0.0f);
            v.emplace_back(n, 0.0f);
        }
        for (size_t i = 0; i < l.d.size(); i++) {
            t2d_param t{};
            t.param = p[i].data(); t.grad = l.g[i].data(); t.constraint = l.c[i].data();
            t.exp_avg = m[i].data(); t.exp_avg_sq = v[i].data(); t.step = &steps[i];
            t.numel = l.d[i].numel; t.dtype = T2D_FLOAT32; t.device = T2D_DEVICE_HOST; t.flags = T2D_PARAM_CONTIGUOUS;
            d.push_back(t);
        }
        src.assign(l.total * 18, 1);
        dst.assign(l.total * 18, 0);
    }
};

static void bench_fused(const char* name, List& l, int reps, int threads) {
    Fused f(l);
    t2d_optimizer o{};
    o.kind = T2D_ADAM; o.lr = 1e-6; o.beta1 = 0.9; o.beta2 = 0.999; o.eps = 1e-8;
    double s = best_of(reps, [&] {
        // g_value = g_constraint: lam from the gradients alone; a tiny lr keeps the values in range
        if (t2d_step_host(f.d.data(), (int)f.d.size(), &o, 0.0, 0.0, 1, 1, 0, nullptr) != T2D_OK) { fprintf(stderr, "%s\n", t2d_last_error()); exit(1); }
    });
    size_t bytes = f.src.size();
    double c = best_of(reps, [&] {
        auto part = [&](size_t lo, size_t hi) { memcpy(&f.dst[lo], &f.src[lo], hi - lo); };
        if (threads <= 1 || bytes < ((size_t)1 << 20)) {
            part(0, bytes);
        } else {
            std::vector<std::thread> ts;
            for (int t = 0; t < threads; t++) ts.emplace_back([&, t] { part(bytes * t / threads, bytes * (t + 1) / threads); });
            for (auto& th : ts) th.join();
        }
    });
    printf("%-34s fused Adam %9.3f ms, copy of the same 36 B/param %9.3f ms: %.0f%% of the copy's bandwidth (%.2f GB/s)\n",
           name, s * 1e3, c * 1e3, 100.0 * c / s, 36.0 * l.total / s / 1e9);
}

int main(int argc, char** argv) {
    int threads = argc > 1 ? atoi(argv[1]) : (int)std::thread::hardware_concurrency();
    stream(1);
    if (threads > 1) stream(threads);
    std::vector<int64_t> big = {2048 * 2048, 2048 * 2048, 2048 * 2048, 2048 * 128, 65536, 4096, 2048, 1000, 128};
    std::vector<int64_t> small;
    {
        std::mt19937 r(3);
        std::uniform_int_distribution<int> u(16, 3600);
        for (int i = 0; i < 39; i++) small.push_back(u(r));
    }
    List lb(big), ls(small);
    if (getenv("T2D_COLD")) g_flush.assign((size_t)1 << 30, 0);
    for (int t : {1, threads}) {
        t2d_set_num_threads(t);
        printf("threads = %d\n", t);
        bench("12.9M-param list", lb, 10);
        bench("39-tensor small list", ls, 2000);
        bench_fused("12.9M-param list", lb, 10, t);
        bench_fused("39-tensor small list", ls, 2000, t);
    }
    return 0;
}
