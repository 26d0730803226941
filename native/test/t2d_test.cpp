// Native tests: the CPU path against a naive double-precision implementation, and every error code.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "t2d_math.h"
#include "text2data.h"

static int failures = 0;
#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n");                                           \
        }                                                                    \
    } while (0)

static std::mt19937_64 rng(12345);

struct Buf {  // one tensor's g and c as raw bytes of some dtype
    int32_t dtype;
    int64_t n;
    std::vector<unsigned char> g, c;
    size_t es() const { return dtype == T2D_FLOAT64 ? 8 : dtype == T2D_FLOAT32 ? 4 : 2; }
    double get(const std::vector<unsigned char>& v, int64_t i) const {
        switch (dtype) {
            case T2D_FLOAT32: { float f; memcpy(&f, &v[i * 4], 4); return f; }
            case T2D_FLOAT64: { double d; memcpy(&d, &v[i * 8], 8); return d; }
            case T2D_BFLOAT16: { uint16_t h; memcpy(&h, &v[i * 2], 2); return t2d_bf16_to_float(h); }
            default: { uint16_t h; memcpy(&h, &v[i * 2], 2); return t2d_f16_to_float(h); }
        }
    }
    void set(std::vector<unsigned char>& v, int64_t i, double x) {
        switch (dtype) {
            case T2D_FLOAT32: { float f = (float)x; memcpy(&v[i * 4], &f, 4); break; }
            case T2D_FLOAT64: memcpy(&v[i * 8], &x, 8); break;
            case T2D_BFLOAT16: { uint16_t h = t2d_float_to_bf16((float)x); memcpy(&v[i * 2], &h, 2); break; }
            default: { uint16_t h = t2d_float_to_f16((float)x); memcpy(&v[i * 2], &h, 2); break; }
        }
    }
    Buf(int32_t dt, int64_t numel, double gscale, double cscale, double corr) : dtype(dt), n(numel) {
        g.resize(es() * n + 1);
        c.resize(es() * n + 1);
        std::normal_distribution<double> nd;
        for (int64_t i = 0; i < n; i++) {
            double ci = nd(rng) * cscale;
            set(c, i, ci);
            set(g, i, nd(rng) * gscale + corr * ci);
        }
    }
    t2d_tensor desc() {
        t2d_tensor t{};
        t.grad = n ? g.data() : nullptr;
        t.constraint = n ? c.data() : nullptr;
        t.numel = t.constraint_numel = n;
        t.dtype = t.constraint_dtype = dtype;
        t.device = t.constraint_device = T2D_DEVICE_HOST;
        t.flags = T2D_GRAD_CONTIGUOUS | T2D_CONSTRAINT_CONTIGUOUS;
        return t;
    }
};

// Naive reference: returns lam, and fills expected g (double).
static double naive(const Buf& b, double excess, double beta, std::vector<double>& out) {
    long double n = 0, dot = 0;
    for (int64_t i = 0; i < b.n; i++) {
        long double g = b.get(b.g, i), c = b.get(b.c, i);
        n += c * c;
        dot += g * c;
    }
    double lam = t2d_lambda((double)n, (double)dot, excess, beta);
    out.resize(b.n);
    for (int64_t i = 0; i < b.n; i++) out[i] = b.get(b.g, i) + lam * b.get(b.c, i);
    return lam;
}

static double tol_for(int32_t dt) {
    switch (dt) {
        case T2D_FLOAT64: return 1e-11;
        case T2D_FLOAT32: return 2e-6;
        case T2D_BFLOAT16: return 1.6e-2;
        default: return 2e-3;
    }
}

static void run_case(const char* name, std::vector<Buf>& bufs, double g_value, double g_constraint, double alpha, double beta) {
    double excess = alpha * (g_value - g_constraint);
    std::vector<std::vector<double>> want(bufs.size());
    std::vector<double> lam_want(bufs.size());
    for (size_t i = 0; i < bufs.size(); i++) lam_want[i] = naive(bufs[i], excess, beta, want[i]);
    std::vector<t2d_tensor> d;
    for (auto& b : bufs) d.push_back(b.desc());
    std::vector<double> lam(bufs.size(), -7.0);
    int32_t rc = t2d_project_host(d.data(), (int32_t)d.size(), g_value, g_constraint, alpha, beta, 0, lam.data());
    CHECK(rc == T2D_OK, "%s: rc=%d %s", name, rc, t2d_last_error());
    int bad = 0;
    for (size_t i = 0; i < bufs.size() && bad < 5; i++) {
        double lt = std::fabs(lam[i] - lam_want[i]) <= 1e-9 * (1 + std::fabs(lam_want[i])) ? 0 : 1;
        if (lt && bufs[i].dtype == T2D_FLOAT64) { CHECK(false, "%s: tensor %zu lam %.17g want %.17g", name, i, lam[i], lam_want[i]); bad++; }
        double tol = tol_for(bufs[i].dtype);
        for (int64_t k = 0; k < bufs[i].n; k++) {
            double got = bufs[i].get(bufs[i].g, k);
            double scale = std::fabs(want[i][k]) + std::fabs(lam_want[i] * bufs[i].get(bufs[i].c, k)) + 1e-30;
            if (!(std::fabs(got - want[i][k]) <= tol * scale)) {
                CHECK(false, "%s: tensor %zu (%s, numel %lld) elem %lld got %.17g want %.17g lam %.17g/%.17g", name, i,
                      bufs[i].dtype == 0 ? "f32" : bufs[i].dtype == 1 ? "f64" : "half", (long long)bufs[i].n,
                      (long long)k, got, want[i][k], lam[i], lam_want[i]);
                bad++;
                break;
            }
        }
    }
}

static std::vector<Buf> make(int32_t dt, const std::vector<int64_t>& sizes) {
    std::vector<Buf> v;
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    for (int64_t s : sizes) v.emplace_back(dt, s, 1.0, 0.5 + std::fabs(u(rng)), u(rng));
    return v;
}

static void test_math() {
    const int32_t dts[] = {T2D_FLOAT32, T2D_FLOAT64, T2D_BFLOAT16, T2D_FLOAT16};
    std::vector<int64_t> shapes = {0, 1, 2, 3, 7, 15, 16, 17, 31, 33, 100, 1000, 4097, 65535, 65536, 65537, 131073, 200003};
    for (int32_t dt : dts) {
        for (int violated = 0; violated < 2; violated++) {
            double gv = violated ? 5.0 : 0.1, gc = violated ? 0.5 : 3.0;
            auto bufs = make(dt, shapes);
            run_case("shapes", bufs, gv, gc, 1.0, 1.0);
            auto many = make(dt, [] { std::vector<int64_t> s; std::uniform_int_distribution<int> u(0, 3000); for (int i = 0; i < 400; i++) s.push_back(u(rng)); return s; }());
            run_case("hundreds", many, gv, gc, 0.7, 1.3);
        }
    }
    // Larger than the caches, several big tensors plus small ones: exercises the parallel path.
    for (int32_t dt : {T2D_FLOAT32, T2D_FLOAT64}) {
        auto big = make(dt, {3 * 1024 * 1024 + 5, 1, 0, 777, 1 << 20, 65536 * 3});
        run_case("big", big, 9.0, 1.0, 1.0, 0.5);
        auto big2 = make(dt, {3 * 1024 * 1024 + 5, 100000});
        run_case("big-satisfied", big2, 0.0, 1.0, 1.0, 1.0);
    }
    // Special values: NaN gValue propagates like torch (phi NaN -> lam NaN -> g NaN).
    {
        auto b = make(T2D_FLOAT64, {5});
        t2d_tensor d = b[0].desc();
        double lam = 0;
        int32_t rc = t2d_project_host(&d, 1, NAN, 0.0, 1.0, 1.0, 0, &lam);
        CHECK(rc == T2D_OK && std::isnan(lam), "NaN g_value gives lam %g", lam);
    }
    // Zero constraint gradient: lam = 0 when excess >= 0 (phi = beta*0 = 0, dot = 0).
    {
        Buf b(T2D_FLOAT32, 10, 1.0, 0.0, 0.0);
        std::vector<unsigned char> before = b.g;
        t2d_tensor d = b.desc();
        double lam = -1;
        int32_t rc = t2d_project_host(&d, 1, 2.0, 1.0, 1.0, 1.0, 0, &lam);
        CHECK(rc == T2D_OK && lam == 0.0 && before == b.g, "zero constraint: lam %g", lam);
    }
}

static void test_threads_deterministic() {
    for (int32_t dt : {T2D_FLOAT32, T2D_FLOAT64}) {
        auto a = make(dt, {2 * 1024 * 1024 + 3, 70000, 12, 300000});
        std::vector<Buf> b = a;
        std::vector<t2d_tensor> da, db;
        for (auto& x : a) da.push_back(x.desc());
        for (auto& x : b) db.push_back(x.desc());
        int prev = t2d_set_num_threads(1);
        CHECK(t2d_project_host(da.data(), (int)da.size(), 4, 1, 1, 1, 0, nullptr) == T2D_OK, "%s", t2d_last_error());
        t2d_set_num_threads(0);
        CHECK(t2d_project_host(db.data(), (int)db.size(), 4, 1, 1, 1, 0, nullptr) == T2D_OK, "%s", t2d_last_error());
        t2d_set_num_threads(prev);
        for (size_t i = 0; i < a.size(); i++) CHECK(a[i].g == b[i].g, "thread count changed tensor %zu", i);
    }
}

static void expect_error(const char* name, std::vector<t2d_tensor> d, int32_t want_code, const char* want_text,
                         std::vector<Buf>& bufs, int32_t count_override = -100) {
    std::vector<std::vector<unsigned char>> before;
    for (auto& b : bufs) before.push_back(b.g);
    std::vector<double> lam(d.size() + 1, -7.0);
    int32_t count = count_override == -100 ? (int32_t)d.size() : count_override;
    int32_t rc = t2d_project_host(d.empty() ? nullptr : d.data(), count, 5.0, 1.0, 1.0, 1.0, 0, lam.data());
    std::string msg = t2d_last_error();
    CHECK(rc == want_code, "%s: rc=%d want %d (%s)", name, rc, want_code, msg.c_str());
    CHECK(msg.find(want_text) != std::string::npos, "%s: message '%s' lacks '%s'", name, msg.c_str(), want_text);
    int32_t at = t2d_last_error_tensor();
    if (strncmp(want_text, "tensor ", 7) == 0) CHECK(at == atoi(want_text + 7), "%s: error tensor %d", name, at);
    else CHECK(at == -1, "%s: error tensor %d", name, at);
    for (size_t i = 0; i < bufs.size(); i++) CHECK(before[i] == bufs[i].g, "%s: tensor %zu written on error", name, i);
    for (double l : lam) CHECK(l == -7.0, "%s: lambdas written on error", name);
}

static void test_nonfinite() {
    for (int big = 0; big < 2; big++) {
        int64_t n = big ? 300000 : 50;
        auto bufs = make(T2D_FLOAT32, {n, n, n, n});
        bufs[1].set(bufs[1].g, n / 2, NAN);
        bufs[3].set(bufs[3].c, 3, INFINITY);
        std::vector<std::vector<unsigned char>> before;
        for (auto& b : bufs) before.push_back(b.g);
        std::vector<t2d_tensor> d;
        for (auto& b : bufs) d.push_back(b.desc());
        double lam[4] = {-7, -7, -7, -7};
        int32_t rc = t2d_project_host(d.data(), 4, 1e6, 1.0, 1.0, 1.0, T2D_CHECK_FINITE, lam); // large excess: phi = beta*n, lam ~ 1 - corr > 0
        std::string msg = t2d_last_error();
        CHECK(rc == T2D_ERR_NONFINITE, "nonfinite: rc=%d (%s)", rc, msg.c_str());
        CHECK(t2d_last_error_tensor() == 1, "nonfinite: tensor %d", t2d_last_error_tensor());
        CHECK(msg == "tensor 1: its gradient holds a NaN or an infinity", "nonfinite message '%s'", msg.c_str());
        CHECK(bufs[1].g == before[1] && bufs[3].g == before[3], "non-finite tensors were written");
        CHECK(bufs[0].g == before[0] && bufs[2].g == before[2], "a refused call projected the finite tensors");
        CHECK(lam[0] == -7 && lam[3] == -7, "lambdas written on error");
        // constraint-gradient message
        d.erase(d.begin() + 1);
        rc = t2d_project_host(d.data(), 3, 9.0, 1.0, 1.0, 1.0, T2D_CHECK_FINITE, nullptr);
        msg = t2d_last_error();
        CHECK(rc == T2D_ERR_NONFINITE && t2d_last_error_tensor() == 2 &&
              msg == "tensor 2: its constraint gradient holds a NaN or an infinity", "rc %d msg '%s'", rc, msg.c_str());
        // without the check NaN propagates like torch
        rc = t2d_project_host(d.data(), 3, 9.0, 1.0, 1.0, 1.0, 0, nullptr);
        CHECK(rc == T2D_OK, "unchecked rc %d", rc);
    }
}

static void test_errors() {
    auto bufs = make(T2D_FLOAT32, {10, 20, 30});
    auto good = [&] { std::vector<t2d_tensor> d; for (auto& b : bufs) d.push_back(b.desc()); return d; };
    std::vector<t2d_tensor> d;
    expect_error("negative count", good(), T2D_ERR_BAD_COUNT, "negative", bufs, -1);
    expect_error("null tensors", {}, T2D_ERR_NULL_POINTER, "NULL", bufs, 3);
    d = good(); d[1].numel = -5; d[1].constraint_numel = -5;
    expect_error("negative numel", d, T2D_ERR_BAD_COUNT, "tensor 1", bufs);
    d = good(); d[2].constraint_numel = 29;
    expect_error("size mismatch", d, T2D_ERR_SIZE_MISMATCH, "tensor 2", bufs);
    d = good(); d[1].dtype = 9;
    expect_error("bad dtype", d, T2D_ERR_UNSUPPORTED_DTYPE, "tensor 1", bufs);
    d = good(); d[2].constraint_dtype = T2D_FLOAT64;
    expect_error("dtype mismatch", d, T2D_ERR_DTYPE_MISMATCH, "tensor 2: grad is float32 but constraint gradient is float64", bufs);
    d = good(); d[1].device = 0;
    expect_error("wrong device", d, T2D_ERR_WRONG_DEVICE, "tensor 1: grad is on cuda:0", bufs);
    d = good(); d[2].constraint_device = 1;
    expect_error("wrong device c", d, T2D_ERR_WRONG_DEVICE, "tensor 2: constraint gradient is on cuda:1", bufs);
    d = good(); d[1].grad = nullptr;
    expect_error("null grad", d, T2D_ERR_NULL_POINTER, "tensor 1: grad pointer is NULL", bufs);
    d = good(); d[2].constraint = nullptr;
    expect_error("null constraint", d, T2D_ERR_NULL_POINTER, "tensor 2: constraint pointer is NULL", bufs);
    d = good(); d[1].flags = T2D_CONSTRAINT_CONTIGUOUS;
    expect_error("grad not contiguous", d, T2D_ERR_NOT_CONTIGUOUS, "tensor 1: grad is not contiguous", bufs);
    d = good(); d[0].flags = T2D_GRAD_CONTIGUOUS;
    expect_error("constraint not contiguous", d, T2D_ERR_NOT_CONTIGUOUS, "tensor 0: constraint gradient is not contiguous", bufs);

    // An empty tensor may have NULL pointers; count 0 with NULL tensors is fine.
    d = good(); d[1].numel = d[1].constraint_numel = 0; d[1].grad = nullptr; d[1].constraint = nullptr;
    CHECK(t2d_project_host(d.data(), 3, 1, 1, 1, 1, 0, nullptr) == T2D_OK, "empty tensor with NULL: %s", t2d_last_error());
    CHECK(t2d_project_host(nullptr, 0, 1, 1, 1, 1, 0, nullptr) == T2D_OK, "count 0: %s", t2d_last_error());

    // CUDA entry point: validation first, then a clean "not built"/"unavailable" without a device.
    int avail = t2d_cuda_available();
    printf("version %s, cuda built %d, cuda available %d\n", t2d_version(), t2d_cuda_built(), avail);
    if (!t2d_cuda_built()) CHECK(avail == 0, "cuda available without CUDA build");
    if (!avail) {
        float gv = 1.0f;
        d = good();
        for (auto& t : d) t.device = t.constraint_device = 0;
        int32_t rc = t2d_project_cuda(d.data(), 3, &gv, T2D_FLOAT32, 1, 1, 1, 0, nullptr, nullptr);
        int32_t want = t2d_cuda_built() ? T2D_ERR_CUDA_UNAVAILABLE : T2D_ERR_CUDA_NOT_BUILT;
        CHECK(rc == want, "cuda without device: rc=%d (%s)", rc, t2d_last_error());
        d = good();  // host tensors given to the CUDA path
        rc = t2d_project_cuda(d.data(), 3, &gv, T2D_FLOAT32, 1, 1, 1, 0, nullptr, nullptr);
        CHECK(rc == T2D_ERR_WRONG_DEVICE, "host tensors to cuda: rc=%d (%s)", rc, t2d_last_error());
        for (auto& t : d) t.device = t.constraint_device = 0;
        rc = t2d_project_cuda(d.data(), 3, nullptr, T2D_FLOAT32, 1, 1, 1, 0, nullptr, nullptr);
        CHECK(rc == T2D_ERR_NULL_POINTER, "null g_value: rc=%d (%s)", rc, t2d_last_error());
    }
}

static void test_half_conversion() {
#if defined(__FLT16_MAX__)
    // f16 <- float: compare with the compiler's _Float16 on many floats; f16 -> float exhaustively.
    for (uint32_t h = 0; h < 65536; h++) {
        _Float16 x;
        uint16_t hh = (uint16_t)h;
        memcpy(&x, &hh, 2);
        float a = t2d_f16_to_float(hh), b = (float)x;
        CHECK((a != a && b != b) || memcmp(&a, &b, 4) == 0, "f16 %04x -> %g vs %g", h, a, b);
        if (failures > 20) return;
    }
    std::uniform_int_distribution<uint32_t> u;
    for (int i = 0; i < 2000000; i++) {
        uint32_t bits = u(rng);
        if (i < 1000000) bits = (bits & 0x87ffffffu) | 0x30000000u;  // bias towards the half range
        float f;
        memcpy(&f, &bits, 4);
        _Float16 y = (_Float16)f;
        uint16_t want, got = t2d_float_to_f16(f);
        memcpy(&want, &y, 2);
        bool nan = f != f;
        CHECK(nan ? ((got & 0x7c00) == 0x7c00 && (got & 0x3ff)) : got == want, "float %08x -> f16 %04x want %04x", bits, got, want);
        if (failures > 20) return;
    }
#else
    printf("no _Float16: skipping the half conversion check\n");
#endif
}

// ---------------------------------------------------------------- the fused optimizer step (t2d_step_host)
// One parameter's buffers as raw bytes of its dtype (p, g, c and three state buffers) and its step count.
struct PBuf {
    Buf b;  // g and c, dtype, n
    std::vector<unsigned char> p, s0, s1, s2;
    int64_t step = 0;
    bool proj = true;
    PBuf(int32_t dt, int64_t n, double corr) : b(dt, n, 1.0, 1.0, corr) {
        p.resize(b.es() * n + 1);
        s0 = s1 = s2 = p;
        std::normal_distribution<double> nd;
        for (int64_t i = 0; i < n; i++) b.set(p, i, nd(rng));
    }
    t2d_param desc() {
        t2d_param t{};
        bool any = b.n > 0;
        t.param = any ? p.data() : nullptr;
        t.grad = any ? b.g.data() : nullptr;
        t.constraint = proj && any ? b.c.data() : nullptr;
        t.exp_avg = any ? s0.data() : nullptr;
        t.exp_avg_sq = any ? s1.data() : nullptr;
        t.max_exp_avg_sq = any ? s2.data() : nullptr;
        t.step = &step;
        t.numel = b.n;
        t.dtype = b.dtype;
        t.device = T2D_DEVICE_HOST;
        t.flags = T2D_PARAM_CONTIGUOUS;
        if (!any) t.constraint = proj ? nullptr : nullptr;
        return t;
    }
    std::vector<unsigned char> bytes() const {  // everything the step may write
        std::vector<unsigned char> all(p);
        for (auto* v : {&b.g, &s0, &s1, &s2}) all.insert(all.end(), v->begin(), v->end());
        const unsigned char* st = (const unsigned char*)&step;
        all.insert(all.end(), st, st + 8);
        return all;
    }
};

// libtorch's optimizers in double, element by element (torch/csrc/api/src/optim), written out here
// independently of t2d_optim.h. Returns the new p, g, s0, s1, s2.
struct Want { double p, g, s0, s1, s2; };
static Want oracle_elem(const t2d_optimizer& o, int64_t step, double lam, bool proj, double p, double g, double c,
                        double s0, double s1, double s2) {
    if (proj) g = g + lam * c;
    Want w{p, g, s0, s1, s2};
    if (o.kind == T2D_SGD) {
        double d = g + o.weight_decay * p;
        if (o.momentum != 0) {
            w.s0 = step == 1 ? d : o.momentum * s0 + (1 - o.dampening) * d;
            d = (o.flags & T2D_NESTEROV) ? d + o.momentum * w.s0 : w.s0;
        }
        w.p = p - o.lr * d;
        return w;
    }
    if (o.kind == T2D_ADAMW) p = p * (1 - o.lr * o.weight_decay);
    else g = g + o.weight_decay * p;
    double bc1 = 1 - std::pow(o.beta1, (double)step), bc2 = 1 - std::pow(o.beta2, (double)step);
    w.s0 = o.beta1 * s0 + (1 - o.beta1) * g;
    w.s1 = o.beta2 * s1 + (1 - o.beta2) * g * g;
    double v = w.s1;
    if (o.flags & T2D_AMSGRAD) v = w.s2 = std::max(s2, w.s1);
    w.p = p - (o.lr / bc1) * w.s0 / (std::sqrt(v) / std::sqrt(bc2) + o.eps);
    return w;
}

static t2d_optimizer make_opt(int32_t kind, int32_t flags, double wd, double momentum, double dampening) {
    t2d_optimizer o{};
    o.kind = kind;
    o.flags = flags;
    o.lr = kind == T2D_SGD ? 0.05 : 1e-2;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.eps = 1e-8;
    o.weight_decay = wd;
    o.momentum = momentum;
    o.dampening = dampening;
    return o;
}

static void step_case(const char* name, t2d_optimizer o, int32_t dt, const std::vector<int64_t>& sizes) {
    // In half precision a second moment that underflows makes Adam's step ill-conditioned (m / sqrt(v) with
    // both tiny): the usual remedy, a larger eps, keeps the comparison meaningful.
    if (dt == T2D_FLOAT16 || dt == T2D_BFLOAT16) o.eps = 1e-3;
    std::vector<PBuf> ps;
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    for (size_t i = 0; i < sizes.size(); i++) {
        ps.emplace_back(dt, sizes[i], u(rng));
        ps.back().proj = i % 3 != 2;  // every third tensor has no constraint gradient
    }
    double tol = dt == T2D_FLOAT64 ? 1e-12 : dt == T2D_FLOAT32 ? 1e-5 : dt == T2D_BFLOAT16 ? 3e-2 : 4e-3;
    for (int s = 0; s < 3 && failures < 20; s++) {
        // the oracle's inputs: this step's values, and lam from the naive reductions
        std::vector<std::vector<Want>> want(ps.size());
        std::vector<double> lam_want(ps.size());
        for (size_t i = 0; i < ps.size(); i++) {
            PBuf& q = ps[i];
            std::vector<double> unused;
            lam_want[i] = q.proj ? naive(q.b, 1.0 * (2.0 - 1.0), 1.0, unused) : 0.0;
            for (int64_t k = 0; k < q.b.n; k++)
                want[i].push_back(oracle_elem(o, q.step + 1, lam_want[i], q.proj, q.b.get(q.p, k), q.b.get(q.b.g, k),
                                              q.b.get(q.b.c, k), q.b.get(q.s0, k), q.b.get(q.s1, k), q.b.get(q.s2, k)));
        }
        std::vector<t2d_param> d;
        for (auto& q : ps) d.push_back(q.desc());
        std::vector<double> lam(ps.size(), -7);
        int32_t rc = t2d_step_host(d.data(), (int32_t)d.size(), &o, 2.0, 1.0, 1.0, 1.0, 0, lam.data());
        CHECK(rc == T2D_OK, "%s: rc %d %s", name, rc, t2d_last_error());
        for (size_t i = 0; i < ps.size(); i++) {
            PBuf& q = ps[i];
            CHECK(q.step == s + 1, "%s: tensor %zu step %lld", name, i, (long long)q.step);
            CHECK(std::fabs(lam[i] - lam_want[i]) <= 1e-9 * (1 + std::fabs(lam_want[i])), "%s: lam %g want %g", name, lam[i], lam_want[i]);
            for (int64_t k = 0; k < q.b.n; k++) {
                const Want& w = want[i][k];
                double got[5] = {q.b.get(q.p, k), q.b.get(q.b.g, k), q.b.get(q.s0, k), q.b.get(q.s1, k), q.b.get(q.s2, k)};
                double exp[5] = {w.p, w.g, w.s0, w.s1, w.s2};
                for (int j = 0; j < 5; j++) {
                    // absolute part: g and its moments cancel (g + lam*c ~ 0), and in half precision an
                    // Adam step of a gradient that rounds to ~0 may go either way (|step| <= lr)
                    double atol = j == 0 ? (dt == T2D_FLOAT32 || dt == T2D_FLOAT64 ? tol * o.lr : 2.5 * o.lr)
                                         : j == 3 ? tol * 1e-3 : tol;
                    if (!(std::fabs(got[j] - exp[j]) <= tol * std::fabs(exp[j]) + atol)) {
                        CHECK(false, "%s: step %d tensor %zu (numel %lld) elem %lld buffer %d: got %.17g want %.17g", name,
                              s + 1, i, (long long)q.b.n, (long long)k, j, got[j], exp[j]);
                        k = q.b.n;
                        break;
                    }
                }
            }
        }
    }
}

static void test_step_math() {
    const int32_t dts[] = {T2D_FLOAT32, T2D_FLOAT64, T2D_BFLOAT16, T2D_FLOAT16};
    struct { const char* name; t2d_optimizer o; } opts[] = {
        {"sgd", make_opt(T2D_SGD, 0, 0, 0, 0)},
        {"sgd momentum dampening wd", make_opt(T2D_SGD, 0, 0.01, 0.9, 0.1)},
        {"sgd nesterov", make_opt(T2D_SGD, T2D_NESTEROV, 0.0, 0.9, 0)},
        {"adam", make_opt(T2D_ADAM, 0, 0, 0, 0)},
        {"adam wd amsgrad", make_opt(T2D_ADAM, T2D_AMSGRAD, 0.01, 0, 0)},
        {"adamw", make_opt(T2D_ADAMW, 0, 0.01, 0, 0)},
        {"adamw amsgrad", make_opt(T2D_ADAMW, T2D_AMSGRAD, 0.1, 0, 0)},
    };
    for (auto& c : opts)
        for (int32_t dt : dts) {
            char name[96];
            snprintf(name, sizeof name, "step %s dtype %d", c.name, dt);
            step_case(name, c.o, dt, {1, 0, 37, 1000, 70000, 5});
            if (dt == T2D_FLOAT32) step_case(name, c.o, dt, {300000, 3, 200000});  // the threaded path
        }
}

// The scalars of a t2d_step_host call.
struct StepScalars {
    double g_value = 5.0, g_constraint = 1.0, alpha = 1.0, beta = 1.0;
};

// A call that must fail: status, message, error tensor, and not one byte written anywhere.
static void expect_step_error(const char* name, std::vector<PBuf>& ps, std::vector<t2d_param> d, const t2d_optimizer* o,
                              int32_t want_code, const char* want_text, int32_t count_override = -100,
                              StepScalars sc = {}) {
    std::vector<std::vector<unsigned char>> before;
    for (auto& q : ps) before.push_back(q.bytes());
    std::vector<double> lam(d.size() + 1, -7.0);
    int32_t count = count_override == -100 ? (int32_t)d.size() : count_override;
    int32_t rc = t2d_step_host(d.empty() ? nullptr : d.data(), count, o, sc.g_value, sc.g_constraint, sc.alpha, sc.beta,
                               0, lam.data());
    std::string msg = t2d_last_error();
    CHECK(rc == want_code, "%s: rc=%d want %d (%s)", name, rc, want_code, msg.c_str());
    CHECK(msg.find(want_text) != std::string::npos, "%s: message '%s' lacks '%s'", name, msg.c_str(), want_text);
    int32_t at = t2d_last_error_tensor();
    if (strncmp(want_text, "tensor ", 7) == 0) CHECK(at == atoi(want_text + 7), "%s: error tensor %d", name, at);
    for (size_t i = 0; i < ps.size(); i++) CHECK(before[i] == ps[i].bytes(), "%s: tensor %zu written on error", name, i);
    for (double l : lam) CHECK(l == -7.0, "%s: lambdas written on error", name);
}

static void test_step_nonfinite() {
    const int32_t dts[] = {T2D_FLOAT32, T2D_FLOAT64, T2D_BFLOAT16, T2D_FLOAT16};
    t2d_optimizer adam = make_opt(T2D_ADAM, T2D_AMSGRAD, 0.01, 0, 0);
    for (int32_t dt : dts)
        for (int big = 0; big < 2; big++)
            for (int which = 0; which < 3; which++) {  // 0: g of a projected tensor, 1: its c, 2: g of an unprojected one
                int64_t n = big ? 300000 : 50;
                std::vector<PBuf> ps;
                for (int i = 0; i < 4; i++) ps.emplace_back(dt, n, 0.3);
                ps[2].proj = false;
                int bad = which == 2 ? 2 : 3;
                PBuf& q = ps[bad];
                if (which == 1) q.b.set(q.b.c, n - 1, INFINITY);
                else q.b.set(q.b.g, n / 2, which == 0 ? NAN : -INFINITY);
                // earlier steps taken, so that the state is not all zero
                std::vector<t2d_param> d;
                for (auto& x : ps) d.push_back(x.desc());
                char name[64], text[96];
                snprintf(name, sizeof name, "step nonfinite dtype %d big %d which %d", dt, big, which);
                snprintf(text, sizeof text, "tensor %d: its %s holds a NaN or an infinity", bad,
                         which == 1 ? "constraint gradient" : "gradient");
                expect_step_error(name, ps, d, &adam, T2D_ERR_NONFINITE, text);
            }
    // a non-finite g_value (the unconditional loss) when a tensor is projected: NaN, and +-inf, for which lam
    // alone would come out finite (phi = min(inf, beta n); -inf gives lam 0)
    for (double gv : {(double)NAN, (double)INFINITY, -(double)INFINITY}) {
        std::vector<PBuf> ps;
        for (int i = 0; i < 3; i++) ps.emplace_back(T2D_FLOAT32, 40, 0.3);
        ps[0].proj = false;
        std::vector<t2d_param> d;
        for (auto& x : ps) d.push_back(x.desc());
        char name[48];
        snprintf(name, sizeof name, "g_value %g", gv);
        expect_step_error(name, ps, d, &adam, T2D_ERR_NONFINITE,
                          "tensor 1: g_value (the unconditional loss) is not finite", -100, {gv, 1.0, 1.0, 1.0});
    }
    // a finite g_value whose lam overflows (float64: <c,c> = 1, <g,c> = -1e308, phi = beta n = 1e308, so
    // lam = (phi - dot) / (1e-8 + n) = inf): refused on tensor 1 as the CUDA path refuses it (T2D_NONFINITE_LOSS),
    // the message naming lam and not g_value; nothing written
    {
        std::vector<PBuf> ps;
        for (int i = 0; i < 3; i++) ps.emplace_back(T2D_FLOAT64, i == 1 ? 1 : 40, 0.3);
        ps[0].proj = false;
        ps[1].b.set(ps[1].b.c, 0, 1.0);
        ps[1].b.set(ps[1].b.g, 0, -1e308);
        std::vector<t2d_param> d;
        for (auto& x : ps) d.push_back(x.desc());
        expect_step_error("lam overflow", ps, d, &adam, T2D_ERR_NONFINITE, "tensor 1: lam overflowed", -100,
                          {1e308, 0.0, 1.0, 1e308});
    }
    // float16 overflow of the update: finite gradients, an SGD step that leaves float16's range
    for (int32_t dt : {T2D_FLOAT16, T2D_BFLOAT16}) {
        std::vector<PBuf> ps;
        for (int i = 0; i < 3; i++) ps.emplace_back(dt, 1000, 0.3);
        ps[1].b.set(ps[1].p, 10, dt == T2D_FLOAT16 ? 65000.0 : 3.0e38);
        ps[1].b.set(ps[1].b.g, 10, dt == T2D_FLOAT16 ? -60000.0 : -3.0e38);
        t2d_optimizer sgd = make_opt(T2D_SGD, 0, 0, 0, 0);
        sgd.lr = 1.0;
        std::vector<t2d_param> d;
        for (auto& x : ps) d.push_back(x.desc());
        expect_step_error(dt == T2D_FLOAT16 ? "float16 overflow" : "bfloat16 overflow", ps, d, &sgd, T2D_ERR_NONFINITE,
                          "tensor 1: the");
    }
    // float16 Adam: the squared gradient overflows in the state (300^2 > 65504)
    {
        std::vector<PBuf> ps;
        for (int i = 0; i < 2; i++) ps.emplace_back(T2D_FLOAT16, 100, 0.3);
        ps[1].proj = false;
        ps[1].b.set(ps[1].b.g, 7, 300000.0 / 1000 * 1000);  // 300000 is not a float16: use a large finite one
        ps[1].b.set(ps[1].b.g, 7, 60000.0);
        t2d_optimizer a = make_opt(T2D_ADAM, 0, 0, 0, 0);
        a.beta2 = 0.0;  // v = g*g
        std::vector<t2d_param> d;
        for (auto& x : ps) d.push_back(x.desc());
        expect_step_error("float16 adam state overflow", ps, d, &a, T2D_ERR_NONFINITE, "tensor 1: the float16 update overflowed");
    }
}

static void test_step_errors() {
    std::vector<PBuf> ps;
    for (int i = 0; i < 3; i++) ps.emplace_back(T2D_FLOAT32, 10 + i, 0.2);
    auto good = [&] { std::vector<t2d_param> d; for (auto& q : ps) d.push_back(q.desc()); return d; };
    t2d_optimizer adam = make_opt(T2D_ADAM, 0, 0, 0, 0), o;
    std::vector<t2d_param> d;
    expect_step_error("null optimizer", ps, good(), nullptr, T2D_ERR_NULL_POINTER, "optimizer is NULL");
    o = adam; o.kind = 7;
    expect_step_error("bad kind", ps, good(), &o, T2D_ERR_BAD_OPTION, "unknown optimizer kind 7");
    o = adam; o.lr = -1;
    expect_step_error("negative lr", ps, good(), &o, T2D_ERR_BAD_OPTION, "lr must be");
    o = adam; o.lr = NAN;
    expect_step_error("NaN lr", ps, good(), &o, T2D_ERR_BAD_OPTION, "lr must be");
    o = adam; o.beta2 = 1.0;
    expect_step_error("beta2 = 1", ps, good(), &o, T2D_ERR_BAD_OPTION, "betas must lie in [0, 1)");
    o = adam; o.eps = INFINITY;
    expect_step_error("eps inf", ps, good(), &o, T2D_ERR_BAD_OPTION, "eps must be");
    o = adam; o.weight_decay = -0.1;
    expect_step_error("negative wd", ps, good(), &o, T2D_ERR_BAD_OPTION, "weight_decay must be");
    o = make_opt(T2D_SGD, T2D_NESTEROV, 0, 0, 0);
    expect_step_error("nesterov without momentum", ps, good(), &o, T2D_ERR_BAD_OPTION, "nesterov needs");
    o = make_opt(T2D_SGD, T2D_NESTEROV, 0, 0.9, 0.5);
    expect_step_error("nesterov with dampening", ps, good(), &o, T2D_ERR_BAD_OPTION, "nesterov needs");
    o = make_opt(T2D_SGD, T2D_AMSGRAD, 0, 0.9, 0);
    expect_step_error("sgd amsgrad", ps, good(), &o, T2D_ERR_BAD_OPTION, "amsgrad is not an option of SGD");
    o = make_opt(T2D_SGD, 0, 0, 0.9, NAN);
    expect_step_error("NaN dampening", ps, good(), &o, T2D_ERR_BAD_OPTION, "dampening must be finite");
    expect_step_error("negative count", ps, good(), &adam, T2D_ERR_BAD_COUNT, "negative", -1);
    expect_step_error("null params", ps, {}, &adam, T2D_ERR_NULL_POINTER, "params is NULL", 2);
    d = good(); d[1].numel = -3;
    expect_step_error("negative numel", ps, d, &adam, T2D_ERR_BAD_COUNT, "tensor 1: negative numel");
    d = good(); d[2].dtype = 9;
    expect_step_error("bad dtype", ps, d, &adam, T2D_ERR_UNSUPPORTED_DTYPE, "tensor 2: unsupported dtype");
    d = good(); d[0].device = 0;
    expect_step_error("cuda pointer on host path", ps, d, &adam, T2D_ERR_WRONG_DEVICE, "tensor 0: it is on cuda:0");
    d = good(); d[1].param = nullptr;
    expect_step_error("null param", ps, d, &adam, T2D_ERR_NULL_POINTER, "tensor 1: param pointer is NULL");
    d = good(); d[1].grad = nullptr;
    expect_step_error("null grad", ps, d, &adam, T2D_ERR_NULL_POINTER, "tensor 1: grad pointer is NULL");
    d = good(); d[2].exp_avg_sq = nullptr;
    expect_step_error("null state", ps, d, &adam, T2D_ERR_NULL_POINTER, "tensor 2: exp_avg_sq pointer is NULL");
    d = good(); d[0].step = nullptr;
    expect_step_error("null step", ps, d, &adam, T2D_ERR_NULL_POINTER, "tensor 0: step pointer is NULL");
    d = good(); d[1].flags = 0;
    expect_step_error("not contiguous", ps, d, &adam, T2D_ERR_NOT_CONTIGUOUS, "tensor 1: its buffers are not marked contiguous");
    ps[2].step = -1;
    expect_step_error("negative step", ps, good(), &adam, T2D_ERR_BAD_COUNT, "tensor 2: step count -1 is out of range");
    ps[2].step = 0;
    d = good();
    CHECK(t2d_step_host(d.data(), 3, &adam, 1, 1, 1, 1, 4, nullptr) == T2D_ERR_BAD_OPTION, "nonzero options accepted");
    // SGD without momentum needs no state; a NULL state pointer is fine there
    o = make_opt(T2D_SGD, 0, 0, 0, 0);
    d = good();
    for (auto& t : d) t.exp_avg = t.exp_avg_sq = t.max_exp_avg_sq = nullptr;
    CHECK(t2d_step_host(d.data(), 3, &o, 1, 1, 1, 1, 0, nullptr) == T2D_OK, "plain sgd: %s", t2d_last_error());
    CHECK(ps[0].step == 1, "plain sgd step count %lld", (long long)ps[0].step);
    // CUDA entry point on a host-only build or with host pointers: refused, nothing written
    d = good();
    t2d_step_status* status = nullptr;
    double gv = 1.0;
    int32_t rc = t2d_step_cuda(d.data(), 3, &adam, &gv, T2D_FLOAT64, 1, 1, 1, 0, nullptr, status, nullptr);
    CHECK(rc == T2D_ERR_WRONG_DEVICE, "cuda step with host tensors: rc %d %s", rc, t2d_last_error());
}

// Plans and graphs without a GPU: every bad argument refused with a message; valid ones report that CUDA is
// missing (not built, or no device); nothing crashes, *plan_out is NULL.
static void test_plan_errors() {
    float p[4] = {1, 2, 3, 4}, g[4] = {0.5f, 0.5f, 0.5f, 0.5f}, m[4] = {}, v[4] = {};
    int64_t step = 0;
    t2d_param row{};
    row.param = p; row.grad = g; row.exp_avg = m; row.exp_avg_sq = v; row.step = &step;
    row.numel = 4; row.dtype = T2D_FLOAT32; row.device = 0; row.flags = T2D_PARAM_CONTIGUOUS;
    t2d_cuda_plan* plan = reinterpret_cast<t2d_cuda_plan*>(&row);  // not NULL: must be set to NULL on failure
    CHECK(t2d_plan_create(&row, 1, 0, nullptr) == T2D_ERR_NULL_POINTER, "plan_create with NULL plan_out: %s", t2d_last_error());
    CHECK(t2d_plan_create(&row, -1, 0, &plan) == T2D_ERR_BAD_COUNT && plan == nullptr, "negative count: %s", t2d_last_error());
    CHECK(t2d_plan_create(nullptr, 2, 0, &plan) == T2D_ERR_NULL_POINTER, "NULL rows: %s", t2d_last_error());
    CHECK(t2d_plan_create(&row, 1, -1, &plan) == T2D_ERR_WRONG_DEVICE && strstr(t2d_last_error(), "CUDA device"),
          "host device: %s", t2d_last_error());
    row.dtype = 9;
    CHECK(t2d_plan_create(&row, 1, 0, &plan) == T2D_ERR_UNSUPPORTED_DTYPE && t2d_last_error_tensor() == 0,
          "bad dtype: %s", t2d_last_error());
    row.dtype = T2D_FLOAT32;
    int32_t rc = t2d_plan_create(&row, 1, 0, &plan);
    if (t2d_cuda_available()) {  // on a GPU the rows are valid: the plan is made (its table is the plan's own copy)
        CHECK(rc == T2D_OK && plan != nullptr, "valid plan on a GPU: rc %d %s", rc, t2d_last_error());
        if (plan) t2d_plan_destroy(plan);
    } else {
        CHECK((rc == T2D_ERR_CUDA_UNAVAILABLE || rc == T2D_ERR_CUDA_NOT_BUILT) && plan == nullptr,
              "valid plan without a GPU: rc %d %s", rc, t2d_last_error());
    }
    t2d_optimizer adam = make_opt(T2D_ADAM, 0, 0, 0, 0);
    float gv = 1.0f;
    t2d_step_status status{};
    t2d_step_scalars scalars{0.01, 1, 1, 1};
    rc = t2d_step_cuda_planned(nullptr, &row, 1, &adam, &gv, T2D_FLOAT32, &scalars, 0, nullptr, &status);
    CHECK(rc == T2D_ERR_NULL_POINTER && strstr(t2d_last_error(), "plan is NULL"), "NULL plan: rc %d %s", rc, t2d_last_error());
    t2d_cuda_plan* fake = reinterpret_cast<t2d_cuda_plan*>(&row);  // validation fails before the plan is read
    rc = t2d_step_cuda_planned(fake, &row, 1, &adam, &gv, T2D_FLOAT32, nullptr, 0, nullptr, &status);
    CHECK(rc == T2D_ERR_NULL_POINTER && strstr(t2d_last_error(), "scalars_device is NULL"), "NULL scalars: rc %d %s", rc,
          t2d_last_error());
    rc = t2d_step_cuda_planned(fake, &row, 1, &adam, nullptr, T2D_FLOAT32, &scalars, 0, nullptr, &status);
    CHECK(rc == T2D_ERR_NULL_POINTER, "NULL g_value: rc %d %s", rc, t2d_last_error());
    rc = t2d_graph_capture_begin(nullptr);
    CHECK(rc == T2D_ERR_NULL_POINTER, "capture on the legacy stream: rc %d %s", rc, t2d_last_error());
    void* exec = &row;
    rc = t2d_graph_capture_end(nullptr, &exec);
    CHECK(rc == T2D_ERR_NULL_POINTER && exec == nullptr, "capture_end without a stream: rc %d %s", rc, t2d_last_error());
    rc = t2d_graph_launch(nullptr, nullptr);
    CHECK(rc == T2D_ERR_NULL_POINTER, "launch of NULL: rc %d %s", rc, t2d_last_error());
    if (!t2d_cuda_available()) {  // well-formed arguments (never used: nothing to capture or launch without a GPU)
        void* stream = &row;
        int32_t none = t2d_cuda_built() ? T2D_ERR_CUDA_UNAVAILABLE : T2D_ERR_CUDA_NOT_BUILT;
        rc = t2d_graph_capture_begin(stream);
        CHECK(rc == none, "capture_begin without a GPU: rc %d %s", rc, t2d_last_error());
        exec = &row;
        rc = t2d_graph_capture_end(stream, &exec);
        CHECK(rc == none && exec == nullptr, "capture_end without a GPU: rc %d %s", rc, t2d_last_error());
        rc = t2d_graph_launch(stream, stream);
        CHECK(rc == none, "launch without a GPU: rc %d %s", rc, t2d_last_error());
    }
    t2d_graph_destroy(nullptr);
    t2d_plan_destroy(nullptr);
}

int main() {
    auto t0 = std::chrono::steady_clock::now();
    test_half_conversion();
    test_math();
    test_threads_deterministic();
    test_errors();
    test_nonfinite();
    test_step_math();
    test_step_nonfinite();
    test_step_errors();
    test_plan_errors();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("all native tests passed (%.1f s)\n", s);
    return 0;
}
