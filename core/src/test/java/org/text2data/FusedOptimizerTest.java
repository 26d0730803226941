package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.text2data.CheckpointAssert.assertParametersAre;
import static org.text2data.CheckpointAssert.assertSameState;
import static org.text2data.CheckpointAssert.snapshot;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.text2data.engine.Engines;

/**
 * The fused constrained optimizers (OptimizerSpec.fused): the same trajectories as libtorch's optimizers, all or
 * nothing on non-finite values, the learning rate reaching the kernel, and the API around them.
 */
class FusedOptimizerTest {
    private static final double G = 1.241462456078726;

    @BeforeAll
    static void nativeLibraryLoads() {
        assertThat(Engines.fusedAvailable()).as(String.valueOf(Engines.fusedUnavailableReason())).isTrue();
    }

    static List<OptimizerSpec> fusedKinds() {
        return List.of(OptimizerSpec.adam(0.01), OptimizerSpec.adam(0.01).weightDecay(0.05).amsgrad(true),
                OptimizerSpec.adam(0.01).betas(0.8, 0.99).eps(1e-6),
                OptimizerSpec.adamw(0.01), OptimizerSpec.adamw(0.01).weightDecay(0.1).amsgrad(true),
                OptimizerSpec.sgd(0.05), OptimizerSpec.sgd(0.05).momentum(0.9).dampening(0.2).weightDecay(0.01),
                OptimizerSpec.sgd(0.05).momentum(0.8).nesterov(true).weightDecay(0.02));
    }

    // ------------------------------------------------------------------ trajectories

    /** Normwise relative error of each tensor, the worst over the tensors: max|a - b| / max|b|. */
    static double worstRelative(List<Tensor> got, List<Tensor> want) {
        double worst = 0;
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < want.size(); i++) {
                Tensor a = got.get(i).detach().cpu().to(ScalarType.Double);
                Tensor b = want.get(i).detach().cpu().to(ScalarType.Double);
                double scale = b.abs().max().item_double();
                double err = a.sub(b).abs().max().item_double();
                worst = Math.max(worst, scale == 0 ? err : err / scale);
            }
        }
        return worst;
    }

    private static TorchScriptModel model(String fixture, String device) {
        TorchScriptModel m = TorchScriptModel.load(TestModels.fixture(fixture + ".model.pt"));
        m.to(device);
        return m;
    }

    /**
     * 50 steps of every fused optimizer against libtorch's (after the plain engine's projection, and after the fused
     * projection), on {@code device}. On the CPU the bound is {@code tol}. On a GPU libtorch's own kernels round
     * differently from the CPU's (its CUDA {@code add(c, alpha)} is one fused multiply-add, while the fused
     * kernel rounds {@code g + lam*c} as the CPU path does, so that both give the same bits; its optimizer update
     * rounds as libtorch's CUDA kernels do), and Adam turns a last-bit difference of a nearly cancelled gradient into
     * a step of about lr. So the bound there is the larger of {@code tol} and twice what separates libtorch from
     * itself on this trajectory: the plain engine + libtorch on the GPU against the same on the CPU (on an H100 the
     * bound was {@code tol} for every kind, and every kind within it). Every kind is run before anything is
     * asserted; the numbers are printed.
     */
    private static void trajectories(String fixture, double tol, String device) {
        boolean cpu = device.equals("cpu");
        List<String> failures = new ArrayList<>();
        for (OptimizerSpec spec : fusedKinds()) {
            // the yardsticks: libtorch's optimizer after the plain engine's projection, and after the fused one's
            try (TorchScriptModel fusedModel = model(fixture, device);
                 TorchScriptModel plainModel = model(fixture, device);
                 TorchScriptModel kernelModel = model(fixture, device);
                 TorchScriptModel cpuModel = cpu ? null : model(fixture, "cpu"); // the GPU's yardstick only
                 Batch stored = Batch.load(TestModels.fixture(fixture + ".batch.pt"));
                 Batch batch = stored.to(device);
                 Constraint fused = new Constraint(fusedModel.namedParameters(), spec, 1.0, 1.0, Engine.FUSED);
                 Constraint plain = new Constraint(plainModel.namedParameters(), spec.fused(false), 1.0, 1.0, Engine.PLAIN);
                 Constraint kernel = new Constraint(kernelModel.namedParameters(), spec.fused(false), 1.0, 1.0,
                         Engine.FUSED);
                 Constraint plainCpu = cpu ? null : new Constraint(cpuModel.namedParameters(), spec.fused(false), 1.0,
                         1.0, Engine.PLAIN)) {
                assertThat(fused.isFused()).isTrue();
                assertThat(plain.isFused()).isFalse();
                assertThat(kernel.isFused()).isFalse();
                double gc = G * 0.98; // a little under the first loss: the constraint is active in some steps
                double worstPlain = 0;
                double worstKernel = 0;
                double libtorchAcross = 0;
                int projected = 0;
                for (int step = 0; step < 50; step++) {
                    try (StepResult r = Text2Data.runStep(fused, gc, fusedModel, batch.cond(), batch.data(),
                            batch.label(), Loss.MSE)) {
                        projected += r.projectedTensors();
                    }
                    Text2Data.runStep(plain, gc, plainModel, batch.cond(), batch.data(), batch.label(), Loss.MSE).close();
                    Text2Data.runStep(kernel, gc, kernelModel, batch.cond(), batch.data(), batch.label(), Loss.MSE).close();
                    worstPlain = Math.max(worstPlain, worstRelative(fused.parameters(), plain.parameters()));
                    worstKernel = Math.max(worstKernel, worstRelative(fused.parameters(), kernel.parameters()));
                    if (!cpu) {
                        Text2Data.runStep(plainCpu, gc, cpuModel, stored.cond(), stored.data(), stored.label(),
                                Loss.MSE).close();
                        libtorchAcross = Math.max(libtorchAcross, worstRelative(plain.parameters(), plainCpu.parameters()));
                    }
                }
                String what = spec + " on " + fixture + " (" + device + ")";
                double bound = cpu ? tol : Math.max(tol, 2 * libtorchAcross);
                System.out.printf(java.util.Locale.ROOT, "%s: against plain + libtorch %.3g, against the fused projection "
                        + "+ libtorch %.3g%s; bound %.3g%n", what, worstPlain, worstKernel,
                        cpu ? "" : String.format(java.util.Locale.ROOT, ", libtorch %s against libtorch cpu %.3g",
                                device, libtorchAcross), bound);
                assertThat(projected).as(what + ": tensors projected").isPositive();
                if (!(worstPlain <= bound)) {
                    failures.add(what + ": against the plain engine + libtorch " + worstPlain + " > " + bound);
                }
                if (!(worstKernel <= bound)) {
                    failures.add(what + ": against the fused projection + libtorch " + worstKernel + " > " + bound);
                }
                // the parameters moved: a step that did nothing would match trivially
                try (TorchScriptModel start = TorchScriptModel.load(TestModels.fixture(fixture + ".model.pt"))) {
                    assertThat(worstRelative(fused.parameters(), start.parameters())).as(what + ": moved")
                            .isGreaterThan(1e3 * tol);
                }
            }
        }
        assertThat(failures).as("trajectories off libtorch's").isEmpty();
    }

    @Test
    void float64TrajectoriesEqualLibtorchsOptimizersTo1e12() {
        trajectories("adam-f64", 1e-12, "cpu");
    }

    @Test
    void float32TrajectoriesEqualLibtorchsOptimizersTo1e5() {
        trajectories("adam-f32", 1e-5, "cpu");
    }

    /**
     * The same on a GPU (skipped without one; bench/gpu/java-check.sh runs it): the CUDA kernel's optimizers, held
     * to the bound explained at {@link #trajectories}.
     */
    @Test
    void onAGpuTrajectoriesEqualLibtorchsOptimizersToTheSameTolerances() {
        Assumptions.assumeTrue(LibTorch.cudaAvailable(), "no CUDA device: the CUDA optimizers are checked on a GPU only");
        trajectories("adam-f64", 1e-12, "cuda");
        trajectories("adam-f32", 1e-5, "cuda");
    }

    /** An optimizer's options as the oracle takes them, and the spec built from them. */
    private record Opt(String kind, double lr, double beta1, double beta2, double eps, double wd, boolean amsgrad,
                       double momentum, double dampening, boolean nesterov) {
        OptimizerSpec spec() {
            return switch (kind) {
                case "sgd" -> OptimizerSpec.sgd(lr).momentum(momentum).dampening(dampening).nesterov(nesterov).weightDecay(wd);
                case "adam" -> OptimizerSpec.adam(lr).betas(beta1, beta2).eps(eps).weightDecay(wd).amsgrad(amsgrad);
                default -> OptimizerSpec.adamw(lr).betas(beta1, beta2).eps(eps).weightDecay(wd).amsgrad(amsgrad);
            };
        }
    }

    /**
     * Three fused steps of float64 tensors (one without a constraint gradient) against the float64 oracle,
     * ProjectionOracle: lam and the projection, then the optimizer update, each step from the stored values.
     */
    @Test
    void fusedStepsMatchTheFloat64Oracle() {
        Random rnd = new Random(11);
        List<Opt> opts = List.of(new Opt("adam", 0.01, 0.9, 0.999, 1e-8, 0, false, 0, 0, false),
                new Opt("adam", 0.01, 0.8, 0.99, 1e-6, 0.05, true, 0, 0, false),
                new Opt("adamw", 0.01, 0.9, 0.999, 1e-8, 0.1, true, 0, 0, false),
                new Opt("sgd", 0.05, 0, 0, 0, 0, false, 0, 0, false),
                new Opt("sgd", 0.05, 0, 0, 0, 0.01, false, 0.9, 0.2, false),
                new Opt("sgd", 0.05, 0, 0, 0, 0.02, false, 0.8, 0, true));
        for (Opt o : opts) {
            int[] sizes = {3, 1000, 70000};
            Map<String, Tensor> params = new LinkedHashMap<>();
            List<double[]> p = new ArrayList<>();
            for (int i = 0; i < sizes.length; i++) {
                p.add(random(rnd, sizes[i], 1));
                Tensor t = tensor(p.get(i), ScalarType.Double);
                t.requires_grad_(true);
                params.put("w" + i, t);
            }
            List<double[][]> state = new ArrayList<>(); // m, v, vmax (Adam) or the momentum buffer (SGD)
            for (int n : sizes) {
                state.add(new double[][] {new double[n], new double[n], new double[n]});
            }
            double worst = 0;
            try (Constraint opt = new Constraint(params, o.spec(), 1.0, 1.0, Engine.FUSED)) {
                assertThat(opt.isFused()).isTrue();
                for (long step = 1; step <= 3; step++) {
                    List<double[]> u = grads(rnd, sizes);
                    List<double[]> f = grads(rnd, sizes);
                    u.set(2, null); // w2 has no unconditional gradient: not projected, stepped with its own
                    stepWithMissing(opt, u, f);
                    for (int i = 0; i < sizes.length; i++) {
                        double[] g = u.get(i) == null ? f.get(i)
                                : ProjectionOracle.project(f.get(i), u.get(i), G - G * 0.5, 1.0);
                        double[][] st = state.get(i);
                        if (o.kind().equals("sgd")) {
                            ProjectionOracle.sgd(p.get(i), g, o.momentum() != 0 ? st[0] : null, step == 1, o.lr(),
                                    o.momentum(), o.dampening(), o.nesterov(), o.wd());
                        } else {
                            ProjectionOracle.adam(p.get(i), g, st[0], st[1], o.amsgrad() ? st[2] : null, step, o.lr(),
                                    o.beta1(), o.beta2(), o.eps(), o.wd(), o.kind().equals("adamw"));
                        }
                        double[] got = values(opt.parameters().get(i));
                        double scale = 0;
                        double err = 0;
                        for (int k = 0; k < got.length; k++) {
                            scale = Math.max(scale, Math.abs(p.get(i)[k]));
                            err = Math.max(err, Math.abs(got[k] - p.get(i)[k]));
                        }
                        worst = Math.max(worst, err / scale);
                        System.arraycopy(got, 0, p.get(i), 0, got.length); // the next step from the stored values
                    }
                }
            } finally {
                params.values().forEach(Tensor::close);
            }
            assertThat(worst).as(o.toString()).isLessThanOrEqualTo(1e-12);
        }
    }

    /** {@link #step} where a null unconditional gradient means none: that parameter's gradient is undefined then. */
    private static void stepWithMissing(Constraint opt, List<double[]> u, List<double[]> f) {
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < u.size(); i++) {
                Tensor p = opt.parameters().get(i);
                p.mutable_grad().put(u.get(i) == null ? new Tensor() : tensor(u.get(i), ScalarType.Double));
            }
            opt.step(() -> {
                for (int i = 0; i < f.size(); i++) {
                    Tensor p = opt.parameters().get(i);
                    if (p.grad().defined()) {
                        p.grad().copy_(tensor(f.get(i), ScalarType.Double));
                    } else {
                        p.mutable_grad().put(tensor(f.get(i), ScalarType.Double));
                    }
                }
                return torch.ones(1);
            }, G, G * 0.5);
        }
    }

    // ------------------------------------------------------------------ a refused step changes nothing

    private static Tensor tensor(double[] values, ScalarType type) {
        try (DoublePointer p = new DoublePointer(values)) {
            Tensor t = torch.from_blob(p, new long[] {values.length}, new TensorOptions(ScalarType.Double)).to(type).clone();
            t.retainReference();
            return t;
        }
    }

    private static double[] random(Random rnd, int n, double scale) {
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            v[i] = rnd.nextGaussian() * scale;
        }
        return v;
    }

    /** Parameters, their gradients and the optimizer's state, as bytes. */
    private static List<byte[]> everything(Constraint opt) {
        List<byte[]> out = new ArrayList<>();
        try (PointerScope scope = new PointerScope()) {
            for (Tensor p : opt.parameters()) {
                out.add(bytes(p));
                out.add(p.grad().defined() ? bytes(p.grad()) : new byte[0]);
            }
            try (Checkpoint.OptimizerState s = opt.optimizerState()) {
                for (Checkpoint.ParamState ps : s.perParam()) {
                    if (ps == null) {
                        out.add(new byte[] {-1});
                        continue;
                    }
                    out.add(ps.ints().toString().getBytes(java.nio.charset.StandardCharsets.UTF_8));
                    ps.tensors().forEach((k, t) -> out.add(bytes(t)));
                }
            }
        }
        return out;
    }

    private static byte[] bytes(Tensor t) {
        Tensor c = t.detach().contiguous().cpu().view(ScalarType.Byte);
        byte[] b = new byte[(int) c.numel()];
        if (b.length > 0) {
            c.data_ptr_byte().get(b);
        }
        return b;
    }

    private enum Setup { PLAIN_LIBTORCH, FUSED_LIBTORCH, FUSED_OPTIMIZER }

    private static Constraint constraint(Setup setup, Map<String, Tensor> params, OptimizerSpec spec) {
        return switch (setup) {
            case PLAIN_LIBTORCH -> new Constraint(params, spec.fused(false), 1.0, 1.0, Engine.PLAIN);
            case FUSED_LIBTORCH -> new Constraint(params, spec.fused(false), 1.0, 1.0, Engine.FUSED);
            case FUSED_OPTIMIZER -> new Constraint(params, spec.fused(true), 1.0, 1.0, Engine.FUSED);
        };
    }

    /**
     * One constrained step through {@link Constraint#step}: the unconditional gradients {@code u} are current
     * before it, the closure puts the conditional ones {@code f}; {@code seen} receives everything as the closure
     * leaves it (the gradients the projection and the optimizer will use).
     */
    private static void step(Constraint opt, List<double[]> u, List<double[]> f, ScalarType type, List<List<byte[]>> seen) {
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < u.size(); i++) {
                Tensor p = opt.parameters().get(i);
                p.mutable_grad().put(tensor(u.get(i), type));
            }
            opt.step(() -> {
                for (int i = 0; i < f.size(); i++) {
                    opt.parameters().get(i).grad().copy_(tensor(f.get(i), type));
                }
                if (seen != null) {
                    seen.add(everything(opt));
                }
                return torch.ones(1);
            }, G, G * 0.5);
        }
    }

    @Test
    void aNonFiniteGradientInEitherPassChangesNothingOnEveryEngine() {
        Random rnd = new Random(7);
        for (Setup setup : Setup.values()) {
            for (OptimizerSpec spec : List.of(OptimizerSpec.adam(0.01).amsgrad(true), OptimizerSpec.sgd(0.1).momentum(0.9))) {
                for (int pass = 0; pass < 2; pass++) {
                    for (double bad : new double[] {Double.NaN, Double.POSITIVE_INFINITY}) {
                        Map<String, Tensor> params = new LinkedHashMap<>();
                        int[] sizes = {5, 70000, 3};
                        for (int i = 0; i < sizes.length; i++) {
                            Tensor p = tensor(random(rnd, sizes[i], 1), ScalarType.Double);
                            p.requires_grad_(true);
                            params.put("w" + i, p);
                        }
                        String what = setup + " " + spec + " pass " + (pass + 1) + " " + bad;
                        try (Constraint opt = constraint(setup, params, spec)) {
                            for (int s = 0; s < 3; s++) { // some state first
                                step(opt, grads(rnd, sizes), grads(rnd, sizes), ScalarType.Double, null);
                            }
                            List<double[]> u = grads(rnd, sizes);
                            List<double[]> f = grads(rnd, sizes);
                            (pass == 0 ? u : f).get(1)[1234] = bad;
                            List<List<byte[]>> seen = new ArrayList<>();
                            assertThatThrownBy(() -> step(opt, u, f, ScalarType.Double, seen)).as(what)
                                    .isInstanceOf(NonFiniteException.class)
                                    .hasMessageContaining("parameter 'w1'").hasMessageContaining("step 4")
                                    .hasMessageContaining(pass == 0 ? "constraint" : "its gradient holds");
                            assertThat(seen).as(what + ": the closure ran").hasSize(1);
                            List<byte[]> after = everything(opt);
                            for (int k = 0; k < after.size(); k++) {
                                assertThat(after.get(k)).as(what + ": item " + k + " changed").isEqualTo(seen.get(0).get(k));
                            }
                            // and the next good step goes through
                            step(opt, grads(rnd, sizes), grads(rnd, sizes), ScalarType.Double, null);
                        } finally {
                            params.values().forEach(Tensor::close);
                        }
                    }
                }
            }
        }
    }

    private static List<double[]> grads(Random rnd, int[] sizes) {
        List<double[]> g = new ArrayList<>();
        for (int n : sizes) {
            g.add(random(rnd, n, 0.5));
        }
        return g;
    }

    @Test
    void aFloat16UpdateThatOverflowsIsRefusedAndChangesNothing() {
        Random rnd = new Random(3);
        for (OptimizerSpec spec : List.of(OptimizerSpec.sgd(1.0), OptimizerSpec.adam(0.01).betas(0.9, 0.0))) {
            Map<String, Tensor> params = new LinkedHashMap<>();
            int[] sizes = {16, 300};
            for (int i = 0; i < sizes.length; i++) {
                double[] v = random(rnd, sizes[i], 1);
                if (i == 1) {
                    v[7] = 65000; // SGD: 65000 + 60000 leaves float16's range
                }
                Tensor p = tensor(v, ScalarType.Half);
                p.requires_grad_(true);
                params.put("h" + i, p);
            }
            try (Constraint opt = new Constraint(params, spec.fused(true), 1.0, 1.0, Engine.FUSED)) {
                step(opt, grads(rnd, sizes), grads(rnd, sizes), ScalarType.Half, null);
                List<double[]> u = grads(rnd, sizes);
                List<double[]> f = grads(rnd, sizes);
                f.get(1)[7] = -60000; // finite; SGD: p - lr*g = 125000; Adam (beta2 = 0): v = g*g = 3.6e9
                List<List<byte[]>> seen = new ArrayList<>();
                assertThatThrownBy(() -> step(opt, u, f, ScalarType.Half, seen)).as(spec.toString())
                        .isInstanceOf(NonFiniteException.class).hasMessageContaining("parameter 'h1'")
                        .hasMessageContaining("float16 update overflowed").hasMessageContaining("step 2");
                List<byte[]> after = everything(opt);
                for (int k = 0; k < after.size(); k++) {
                    assertThat(after.get(k)).as(spec + ": item " + k + " changed").isEqualTo(seen.get(0).get(k));
                }
            } finally {
                params.values().forEach(Tensor::close);
            }
        }
    }

    // ------------------------------------------------------------------ the learning rate, the API

    @Test
    void aLearningRateChangeReachesTheFusedKernel() {
        Map<String, Tensor> params = new LinkedHashMap<>();
        Tensor p = tensor(new double[] {1, 2, 3}, ScalarType.Double);
        p.requires_grad_(true);
        params.put("w", p);
        try (Constraint opt = new Constraint(params, OptimizerSpec.sgd(0.1), 1.0, 1.0, Engine.FUSED)) {
            assertThat(opt.isFused()).isTrue();
            double[] g = {0.5, -1, 2};
            // gValue below gConstraint: no projection (lam = 0), so p' = p - lr * g exactly
            opt.setLr(0.25);
            stepWithoutConstraint(opt, g);
            assertThat(values(p)).containsExactly(1 - 0.25 * 0.5, 2 + 0.25, 3 - 0.25 * 2);
            opt.paramGroups().get(0).setLr(2.0);
            assertThat(opt.lr()).isEqualTo(2.0);
            assertThat(opt.paramGroups()).hasSize(1);
            assertThat(opt.paramGroups().get(0).size()).isEqualTo(1);
            double[] before = values(p);
            stepWithoutConstraint(opt, g);
            assertThat(values(p)).containsExactly(before[0] - 2.0 * 0.5, before[1] + 2.0, before[2] - 2.0 * 2);
        } finally {
            p.close();
        }
    }

    private static void stepWithoutConstraint(Constraint opt, double[] g) {
        Tensor p = opt.parameters().get(0);
        p.mutable_grad().put(tensor(g, ScalarType.Double));
        opt.step(() -> {
            p.grad().copy_(tensor(g, ScalarType.Double));
            return torch.ones(1);
        }, 0.0, 1.0);
    }

    private static double[] values(Tensor t) {
        Tensor d = t.detach().to(ScalarType.Double).contiguous();
        double[] out = new double[(int) d.numel()];
        d.data_ptr_double().get(out);
        return out;
    }

    @Test
    void theFusedOptimizerHasNoLibtorchOptimizerAndSaysSo() {
        try (TorchScriptModel m = TestModels.model();
             Constraint opt = new Constraint(m.namedParameters(), OptimizerSpec.adam(0.01), 1, 1, Engine.AUTO)) {
            assertThat(opt.isFused()).isTrue();
            assertThatThrownBy(opt::baseOptimizer).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("fused adam").hasMessageContaining("no libtorch optimizer")
                    .hasMessageContaining("fused(false)");
        }
        try (TorchScriptModel m = TestModels.model();
             Constraint opt = new Constraint(m.namedParameters(), OptimizerSpec.adam(0.01).fused(false), 1, 1,
                     Engine.AUTO)) {
            assertThat(opt.isFused()).isFalse();
            assertThat(opt.baseOptimizer()).isNotNull();
        }
        try (TorchScriptModel m = TestModels.model();
             Constraint opt = new Constraint(m.namedParameters(), OptimizerSpec.rmsprop(0.01), 1, 1, Engine.FUSED)) {
            assertThat(opt.isFused()).isFalse(); // no fused RMSprop: libtorch's
        }
    }

    @Test
    void fusedTrueWhereItCannotBeIsAClearError() {
        assertThatThrownBy(() -> OptimizerSpec.rmsprop(0.1).fused(true)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("SGD, Adam and AdamW only");
        try (TorchScriptModel m = TestModels.model()) {
            assertThatThrownBy(() -> new Constraint(m.namedParameters(), OptimizerSpec.adam(0.01).fused(true), 1, 1,
                    Engine.PLAIN)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("fused(true) cannot be honoured").hasMessageContaining("Engine.PLAIN");
        }
    }

    @Test
    void aFusedCheckpointResumesBitForBitAndLoadsIntoLibtorchsOptimizer(@TempDir Path tmp) throws Exception {
        boolean optimize = torch.getGraphExecutorOptimize();
        torch.setGraphExecutorOptimize(false);
        try {
            Path ck = tmp.resolve("fused.t2d");
            try (TorchScriptModel a = TestModels.model(); TorchScriptModel b = TestModels.model();
                 TorchScriptModel c = TestModels.model(); Batch batch = TestModels.batch();
                 Constraint optA = new Constraint(a.namedParameters(), OptimizerSpec.adam(0.01).amsgrad(true), 1, 1,
                         Engine.FUSED);
                 Constraint optB = new Constraint(b.namedParameters(), OptimizerSpec.adam(0.01).amsgrad(true), 1, 1,
                         Engine.FUSED);
                 Constraint optC = new Constraint(c.namedParameters(), OptimizerSpec.adam(0.01).amsgrad(true).fused(false),
                         1, 1, Engine.FUSED)) {
                for (int i = 0; i < 3; i++) {
                    Text2Data.runStep(optA, G, a, batch.cond(), batch.data(), batch.label(), Loss.MSE).close();
                }
                optA.saveCheckpoint(ck);
                optB.loadCheckpoint(ck);
                optC.loadCheckpoint(ck); // the same state as libtorch's Adam keeps it
                try (Checkpoint.OptimizerState sa = optA.optimizerState(); Checkpoint.OptimizerState sb = optB.optimizerState();
                     Checkpoint.OptimizerState sc = optC.optimizerState()) {
                    assertThat(sa.perParam()).allMatch(s -> s != null && s.ints().get("step") == 3L
                            && s.tensors().keySet().equals(java.util.Set.of("exp_avg", "exp_avg_sq", "max_exp_avg_sq")));
                    assertSameState(sa.perParam(), sb.perParam(), "fused -> fused");
                    assertSameState(sa.perParam(), sc.perParam(), "fused -> libtorch");
                }
                for (int i = 0; i < 2; i++) {
                    Text2Data.runStep(optA, G, a, batch.cond(), batch.data(), batch.label(), Loss.MSE).close();
                    Text2Data.runStep(optB, G, b, batch.cond(), batch.data(), batch.label(), Loss.MSE).close();
                }
                assertParametersAre(optB, snapshot(optA), "resumed fused run");
                try (Checkpoint.OptimizerState sa = optA.optimizerState(); Checkpoint.OptimizerState sb = optB.optimizerState()) {
                    assertSameState(sa.perParam(), sb.perParam(), "resumed fused run");
                }
            }
        } finally {
            torch.setGraphExecutorOptimize(optimize);
        }
    }

    @Test
    void aCheckpointOfAnotherOptimizerKindIsRefusedByTheFusedOne(@TempDir Path tmp) throws Exception {
        Path ck = tmp.resolve("sgd.t2d");
        try (TorchScriptModel a = TestModels.model(); TorchScriptModel b = TestModels.model(); Batch batch = TestModels.batch();
             Constraint sgd = new Constraint(a.namedParameters(), OptimizerSpec.sgd(0.01).momentum(0.9), 1, 1, Engine.FUSED);
             Constraint adam = new Constraint(b.namedParameters(), OptimizerSpec.adam(0.01), 1, 1, Engine.FUSED)) {
            Text2Data.runStep(sgd, G, a, batch.cond(), batch.data(), batch.label(), Loss.MSE).close();
            sgd.saveCheckpoint(ck);
            List<Tensor> before = snapshot(adam);
            assertThatThrownBy(() -> adam.loadCheckpoint(ck)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("the checkpoint's optimizer is sgd, this one is adam")
                    .hasMessageContaining("nothing was restored");
            assertParametersAre(adam, before, "refused load");
        }
    }
}
