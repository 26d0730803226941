package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.ConcurrentModificationException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Misuse of the API is refused with a clear message and changes nothing: two threads on one
 * Constraint, close() from another thread, another model's forward, a parameter given twice, a NaN
 * gradient on a parameter the projection skips, a float16 update that overflows, a strided parameter.
 */
class MisuseTest {
    private static final double G = 1.241462456078726;

    /** The fixture model and a Constraint over it. */
    private static Constraint adam(TorchScriptModel m, Engine engine) {
        return new Constraint(m.namedParameters(), OptimizerSpec.adam(0.01), 1, 1, engine);
    }

    private static void step(Constraint opt, ConditionalModel m, Batch b) {
        Text2Data.runStep(opt, G, m, b.cond(), b.data(), b.label(), Loss.MSE).close();
    }

    /** A twin that took {@code steps} good steps has the same parameters as {@code model}, and so does the next step of each. */
    private static void assertSameAsTwinAfter(int steps, TorchScriptModel model, Constraint opt, Engine engine, Batch b) {
        try (TorchScriptModel twin = TestModels.model(); Constraint twinOpt = adam(twin, engine)) {
            for (int i = 0; i < steps; i++) {
                step(twinOpt, twin, b);
            }
            TestModels.assertUnchanged(model.namedParameters(), twin.namedParameters());
            step(twinOpt, twin, b);
            step(opt, model, b);
            TestModels.assertUnchanged(model.namedParameters(), twin.namedParameters());
        }
    }

    // ------------------------------------------------------------------ item 1: threads

    /** A model whose forward blocks (once) until released, so that another thread finds the Constraint busy. */
    private static final class BlockingModel implements ConditionalModel {
        final TorchScriptModel inner;
        final CountDownLatch entered = new CountDownLatch(1);
        final CountDownLatch release = new CountDownLatch(1);
        volatile boolean block = true;

        BlockingModel(TorchScriptModel inner) {
            this.inner = inner;
        }

        @Override
        public Tensor forward(Tensor data, Tensor cond) {
            if (block) {
                block = false;
                entered.countDown();
                try {
                    release.await(60, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            return inner.forward(data, cond);
        }
    }

    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"PLAIN", "FUSED"})
    void aSecondThreadIsRefusedWhileAStepRuns(Engine engine) throws Exception {
        try (TorchScriptModel model = TestModels.model(); Batch b = TestModels.batch(); Constraint opt = adam(model, engine)) {
            step(opt, model, b);
            BlockingModel blocking = new BlockingModel(model);
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread trainer = new Thread(() -> {
                try {
                    step(opt, blocking, b);
                } catch (Throwable t) {
                    failure.set(t);
                }
            }, "trainer-1");
            trainer.start();
            assertThat(blocking.entered.await(60, TimeUnit.SECONDS)).isTrue();
            Map<String, Tensor> before = TestModels.snapshot(model.namedParameters());
            assertThatThrownBy(() -> step(opt, model, b)).isInstanceOf(ConcurrentModificationException.class)
                    .hasMessageContaining("in use by thread 'trainer-1'").hasMessageContaining("one training loop per Constraint");
            assertThatThrownBy(opt::zeroGrad).isInstanceOf(ConcurrentModificationException.class);
            assertThatThrownBy(() -> opt.firstStep(true)).isInstanceOf(ConcurrentModificationException.class);
            assertThatThrownBy(opt::stepBase).isInstanceOf(ConcurrentModificationException.class);
            assertThatThrownBy(() -> opt.setLr(1)).isInstanceOf(ConcurrentModificationException.class);
            assertThatThrownBy(opt::gradNormPerLayer).isInstanceOf(ConcurrentModificationException.class);
            TestModels.assertUnchanged(model.namedParameters(), before);
            blocking.release.countDown();
            trainer.join(60_000);
            assertThat(failure.get()).isNull();
            assertThat(opt.lr()).isEqualTo(0.01);
            assertSameAsTwinAfter(2, model, opt, engine, b);
        }
    }

    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"PLAIN", "FUSED"})
    void twoThreadsSteppingFreelyNeverCrashOrInterleave(Engine engine) throws Exception {
        try (TorchScriptModel model = TestModels.model(); Batch b = TestModels.batch(); Constraint opt = adam(model, engine)) {
            AtomicInteger done = new AtomicInteger();
            AtomicInteger refused = new AtomicInteger();
            List<Throwable> other = java.util.Collections.synchronizedList(new ArrayList<>());
            CountDownLatch start = new CountDownLatch(1);
            Thread[] threads = new Thread[2];
            for (int t = 0; t < threads.length; t++) {
                threads[t] = new Thread(() -> {
                    try {
                        start.await();
                        for (int s = 0; s < 150; s++) {
                            try {
                                step(opt, model, b);
                                done.incrementAndGet();
                            } catch (ConcurrentModificationException e) {
                                refused.incrementAndGet();
                            }
                        }
                    } catch (Throwable e) {
                        other.add(e);
                    }
                }, "stepper-" + t);
                threads[t].start();
            }
            start.countDown();
            for (Thread t : threads) {
                t.join(300_000);
            }
            assertThat(other).isEmpty();
            assertThat(done.get() + refused.get()).isEqualTo(300);
            System.out.println(engine + ": " + done.get() + " steps taken, " + refused.get() + " refused");
            // the steps taken were whole steps, one after the other: a twin taking as many lands on the same bits
            assertSameAsTwinAfter(done.get(), model, opt, engine, b);
        }
    }

    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"PLAIN", "FUSED"})
    void closeFromAnotherThreadLetsTheRunningStepFinish(Engine engine) throws Exception {
        try (TorchScriptModel model = TestModels.model(); Batch b = TestModels.batch()) {
            Constraint opt = adam(model, engine);
            BlockingModel blocking = new BlockingModel(model);
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread trainer = new Thread(() -> {
                try {
                    step(opt, blocking, b);
                } catch (Throwable t) {
                    failure.set(t);
                }
            }, "trainer-2");
            trainer.start();
            assertThat(blocking.entered.await(60, TimeUnit.SECONDS)).isTrue();
            opt.close(); // returns at once; the step in flight keeps its optimizer until it is done
            assertThatThrownBy(() -> step(opt, model, b)).isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
            blocking.release.countDown();
            trainer.join(60_000);
            assertThat(failure.get()).isNull();
            assertThatThrownBy(() -> step(opt, model, b)).isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
            assertThatThrownBy(opt::lr).isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
            opt.close();
            // the step that ran is a whole step: it equals a twin's first step
            try (TorchScriptModel twin = TestModels.model(); Constraint twinOpt = adam(twin, engine)) {
                step(twinOpt, twin, b);
                TestModels.assertUnchanged(model.namedParameters(), twin.namedParameters());
            }
        }
    }

    // ------------------------------------------------------------------ item 9: another model, a parameter twice

    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"PLAIN", "FUSED"})
    void anotherModelIsRefused(Engine engine) {
        try (TorchScriptModel model = TestModels.model(); TorchScriptModel other = TestModels.model(); Batch b = TestModels.batch();
             Constraint opt = adam(model, engine)) {
            for (int round = 0; round < 2; round++) { // before any step (no gradients yet), and after one
                Map<String, Tensor> before = TestModels.snapshot(model.namedParameters());
                assertThatThrownBy(() -> step(opt, other, b)).isInstanceOf(IllegalArgumentException.class)
                        .hasMessageContaining("not the ones this Constraint optimizes")
                        .hasMessageContaining("Nothing was updated");
                TestModels.assertUnchanged(model.namedParameters(), before);
                if (round == 0) {
                    step(opt, model, b);
                }
            }
            assertSameAsTwinAfter(1, model, opt, engine, b);
        }
    }

    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"PLAIN", "FUSED"})
    void aParameterGivenTwiceIsRefused(Engine engine) {
        Tensor w = torch.randn(3, 4).requires_grad_(true);
        Tensor v = torch.randn(5).requires_grad_(true);
        Map<String, Tensor> twice = new LinkedHashMap<>();
        twice.put("enc.w", w);
        twice.put("bias", v);
        twice.put("dec.w", w);
        assertThatThrownBy(() -> new Constraint(twice, OptimizerSpec.sgd(0.1), 1, 1, engine))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("'enc.w' and 'dec.w' are the same tensor");
        Map<String, Tensor> alias = new LinkedHashMap<>();
        alias.put("w", w);
        alias.put("w.detached", w.detach());
        assertThatThrownBy(() -> new Constraint(alias, OptimizerSpec.sgd(0.1), 1, 1, engine))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("'w' and 'w.detached'");
        Map<String, Tensor> view = new LinkedHashMap<>();
        view.put("w", w);
        view.put("w.row", w.detach().select(0, 1));
        assertThatThrownBy(() -> new Constraint(view, OptimizerSpec.sgd(0.1), 1, 1, engine))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("'w' and 'w.row' share memory");
        // disjoint views of one buffer are distinct parameters
        Tensor flat = torch.randn(10);
        Map<String, Tensor> split = new LinkedHashMap<>();
        split.put("a", flat.narrow(0, 0, 4).detach().requires_grad_(true));
        split.put("b", flat.narrow(0, 4, 6).detach().requires_grad_(true));
        new Constraint(split, OptimizerSpec.sgd(0.1), 1, 1, engine).close();
    }

    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"PLAIN", "FUSED", "AUTO"})
    void stridedViewsThatShareMemoryAreRefused(Engine engine) {
        Tensor w = torch.randn(3, 4).requires_grad_(true);
        Map<String, Tensor> transposed = new LinkedHashMap<>();
        transposed.put("w", w);
        transposed.put("w.T", w.detach().t().requires_grad_(true));
        assertThatThrownBy(() -> new Constraint(transposed, OptimizerSpec.sgd(0.1), 1, 1, engine))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("'w' and 'w.T' share memory");
        Map<String, Tensor> column = new LinkedHashMap<>();
        column.put("w.col", w.detach().select(1, 2).requires_grad_(true));
        column.put("w.cols", w.detach().narrow(1, 1, 2).requires_grad_(true)); // columns 1 and 2
        assertThatThrownBy(() -> new Constraint(column, OptimizerSpec.sgd(0.1), 1, 1, engine))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("'w.col'")
                .hasMessageContaining("'w.cols'").hasMessageContaining("share memory");
        Map<String, Tensor> expanded = new LinkedHashMap<>();
        expanded.put("b", torch.randn(4).expand(3, 4).detach().requires_grad_(true)); // three rows on one
        assertThatThrownBy(() -> new Constraint(expanded, OptimizerSpec.sgd(0.1), 1, 1, engine))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("parameter 'b' has elements that share memory");
        // interleaved columns of one matrix span the same bytes but share no element: distinct parameters
        Map<String, Tensor> interleaved = new LinkedHashMap<>();
        interleaved.put("even", w.detach().slice(1, new org.bytedeco.pytorch.LongOptional(0),
                new org.bytedeco.pytorch.LongOptional(4), 2).requires_grad_(true));
        interleaved.put("odd", w.detach().slice(1, new org.bytedeco.pytorch.LongOptional(1),
                new org.bytedeco.pytorch.LongOptional(4), 2).requires_grad_(true));
        interleaved.put("T", torch.randn(5, 2).t().detach().requires_grad_(true)); // permuted, apart
        new Constraint(interleaved, OptimizerSpec.sgd(0.1).fused(false), 1, 1, engine).close();
    }

    /**
     * The index-range test for same-stride views ({@code Constraint.sliceBoxesShare}) against brute force: random
     * slices (with steps) of random 2-D and 3-D tensors, every element's offset listed; and the slices of a
     * 4096 x 12288 fused weight decided without touching memory.
     */
    @org.junit.jupiter.api.Test
    void sameStrideSlicesAreToldApartExactly() {
        java.util.Random r = new java.util.Random(11);
        int decided = 0;
        for (int trial = 0; trial < 3000; trial++) {
            int dims = 2 + r.nextInt(2);
            long[] base = new long[dims];
            for (int d = 0; d < dims; d++) {
                base[d] = 1 + r.nextInt(7);
            }
            long[] baseStrides = new long[dims];
            long st = 1;
            for (int d = dims - 1; d >= 0; d--) {
                baseStrides[d] = st;
                st *= base[d];
            }
            long[] step = new long[dims];
            long[] shapeA = new long[dims];
            long[] shapeB = new long[dims];
            long offA = 0;
            long offB = 0;
            for (int d = 0; d < dims; d++) {
                step[d] = 1 + r.nextInt(2);
                long startA = r.nextInt((int) base[d]);
                long startB = r.nextInt((int) base[d]);
                shapeA[d] = 1 + (base[d] - 1 - startA) / step[d] - r.nextInt((int) (1 + (base[d] - 1 - startA) / step[d]));
                shapeB[d] = 1 + (base[d] - 1 - startB) / step[d] - r.nextInt((int) (1 + (base[d] - 1 - startB) / step[d]));
                offA += startA * baseStrides[d];
                offB += startB * baseStrides[d];
            }
            long[] strides = new long[dims];
            for (int d = 0; d < dims; d++) {
                strides[d] = baseStrides[d] * step[d];
            }
            Boolean got = Constraint.sliceBoxesShare(shapeA, shapeB, strides, strides.clone(), offB - offA);
            if (got == null) {
                continue;
            }
            decided++;
            java.util.Set<Long> a = offsets(shapeA, strides, offA);
            boolean want = offsets(shapeB, strides, offB).stream().anyMatch(a::contains);
            assertThat(got).as("trial %d: %s %s strides %s offsets %d %d", trial, java.util.Arrays.toString(shapeA),
                    java.util.Arrays.toString(shapeB), java.util.Arrays.toString(strides), offA, offB).isEqualTo(want);
        }
        assertThat(decided).as("trials decided by index ranges").isGreaterThan(1000);
        long[] third = {4096, 4096};
        long[] strides = {12288, 1};
        assertThat(Constraint.sliceBoxesShare(third, third, strides, strides, 4096)).isFalse(); // q and k
        assertThat(Constraint.sliceBoxesShare(third, third, strides, strides, 8192)).isFalse(); // q and v
        assertThat(Constraint.sliceBoxesShare(third, third, strides, strides, 4095)).isTrue();
        assertThat(Constraint.sliceBoxesShare(third, third, strides, strides, 12288 * 4095L + 4096)).isFalse();
    }

    private static java.util.Set<Long> offsets(long[] shape, long[] strides, long offset) {
        java.util.Set<Long> out = new java.util.HashSet<>();
        long n = 1;
        for (long s : shape) {
            n *= s;
        }
        for (long flat = 0; flat < n; flat++) {
            long rest = flat;
            long at = offset;
            for (int d = shape.length - 1; d >= 0; d--) {
                at += (rest % shape[d]) * strides[d];
                rest /= shape[d];
            }
            out.add(at);
        }
        return out;
    }

    /** A parameter resized under SGD without momentum (no state buffer) steps on, as libtorch's SGD does. */
    @org.junit.jupiter.api.Test
    void aResizedParameterWithoutOptimizerBuffersStepsOnAsInLibtorch() {
        Tensor w = torch.zeros(4).requires_grad_(true);
        try (Constraint opt = new Constraint(Map.of("w", w), OptimizerSpec.sgd(0.5), 1, 1, Engine.FUSED)) {
            assertThat(opt.isFused()).isTrue();
            w.mutable_grad().put(torch.ones(4));
            opt.stepBase();
            try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
                w.set_(torch.zeros(6));
            }
            w.mutable_grad().put(torch.ones(6));
            opt.stepBase();
            assertThat(w.detach().eq(new Scalar(-0.5)).all().item_bool()).isTrue();
        }
    }

    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"PLAIN", "FUSED"})
    void aNonLeafParameterIsRefused(Engine engine) {
        Tensor w = torch.randn(3).requires_grad_(true);
        Map<String, Tensor> named = new LinkedHashMap<>();
        named.put("w2", w.mul(new Scalar(2.0)));
        assertThatThrownBy(() -> new Constraint(named, OptimizerSpec.adam(0.1), 1, 1, engine))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("parameter w2 is not a leaf tensor");
    }

    /**
     * Finite float32 gradients of about 1e20, whose squared norm overflows float32: both engines reduce in float64,
     * so both take the step, alike (the plain engine used to call them "a NaN or an infinity").
     */
    @org.junit.jupiter.api.Test
    void hugeFiniteFloat32GradientsAreProjectedAlikeByBothEngines() {
        Map<String, Tensor> after = new LinkedHashMap<>();
        for (Engine engine : new Engine[] {Engine.PLAIN, Engine.FUSED}) {
            torch.manual_seed(5);
            Tensor p = torch.randn(8).requires_grad_(true);
            Tensor c = torch.randn(8).mul(new Scalar(1e20));
            Tensor g = torch.randn(8).mul(new Scalar(1e20));
            try (Constraint opt = new Constraint(Map.of("p", p), OptimizerSpec.sgd(1e-21), 1, 1, engine)) {
                p.mutable_grad().put(c);
                opt.firstStep(true);
                p.mutable_grad().put(g);
                assertThat(opt.secondStep(0.7, 0.5)).isEqualTo(1);
                assertThat(torch.isfinite(p.grad()).all().item_bool()).isTrue();
                opt.stepBase();
            }
            after.put(engine.name(), p.detach().clone());
        }
        assertThat(TestModels.maxDiff(after.get("PLAIN"), after.get("FUSED"))).isLessThan(1e-6);
    }

    /**
     * alpha * (gValue - gConstraint) overflowing float64 from finite operands (alpha 1e308): as an infinity in the
     * reference, min() with beta * n takes over, so both engines take the step, alike (the fused engine refused it,
     * blaming a parameter); a NaN loss is still refused, naming the loss, not a parameter.
     */
    @org.junit.jupiter.api.Test
    void anExcessThatOverflowsIsTheReferencesInfinityOnBothEngines() {
        Map<String, Tensor> after = new LinkedHashMap<>();
        for (Engine engine : new Engine[] {Engine.PLAIN, Engine.FUSED}) {
            torch.manual_seed(6);
            Tensor p = torch.randn(8).to(torch.ScalarType.Double).requires_grad_(true);
            Tensor c = torch.randn(8).to(torch.ScalarType.Double);
            Tensor g = torch.randn(8).to(torch.ScalarType.Double);
            try (Constraint opt = new Constraint(Map.of("p", p), OptimizerSpec.sgd(0.1), 1e308, 1, engine)) {
                p.mutable_grad().put(c);
                opt.firstStep(true);
                p.mutable_grad().put(g);
                Tensor before = p.detach().clone();
                Tensor nan = torch.full(new long[] {1}, new Scalar(Double.NaN), new TensorOptions(torch.ScalarType.Double));
                Runnable[] bad = {() -> opt.secondStep(Double.NaN, 0.5), () -> opt.secondStep(nan, 0.5)};
                for (int i = 0; i < bad.length; i++) {
                    assertThat(org.assertj.core.api.Assertions.catchThrowable(bad[i]::run)).as(engine + ", gValue case " + i)
                            .isInstanceOf(NonFiniteException.class)
                            .hasMessageContaining("unconditional loss").hasMessageNotContaining("parameter 'p'");
                }
                assertThat(torch.equal(p.detach(), before)).isTrue();
                assertThat(opt.secondStep(10.0, 0.5)).isEqualTo(1);
                opt.stepBase();
            }
            after.put(engine.name(), p.detach().clone());
        }
        assertThat(TestModels.maxDiff(after.get("PLAIN"), after.get("FUSED"))).isLessThan(1e-12);
    }

    // ------------------------------------------------------------------ a parameter changed under the optimizer

    /**
     * A parameter whose memory is swapped for one of another size or dtype after its first step ({@code set_}, as
     * a widened layer): the fused optimizer's state no longer fits it, so the step is refused with its name, as
     * libtorch's optimizer refuses it, and nothing changes; shrinking is refused alike (it would step with the first
     * elements of the old state).
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.CsvSource({"1048576, Float", "2, Float", "4, Double"})
    void aParameterResizedAfterAStepIsRefusedByTheFusedOptimizer(long newSize, String dtype) {
        Tensor w = torch.zeros(4).requires_grad_(true);
        Tensor twinW = torch.zeros(4).requires_grad_(true);
        try (Constraint opt = new Constraint(Map.of("layer.w", w), OptimizerSpec.adam(0.1), 1, 1, Engine.FUSED);
             Constraint twin = new Constraint(Map.of("layer.w", twinW), OptimizerSpec.adam(0.1), 1, 1, Engine.FUSED)) {
            assertThat(opt.isFused()).isTrue();
            w.mutable_grad().put(torch.ones(4));
            opt.stepBase();
            Tensor kept = w.detach().clone();
            torch.ScalarType type = torch.ScalarType.valueOf(dtype);
            Tensor swapped = torch.full(new long[] {newSize}, new Scalar(0.5), new TensorOptions(type));
            if (type == torch.ScalarType.Float) {
                try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
                    w.set_(swapped); // a widened layer
                }
            } else {
                w.__dispatch_set_data(swapped); // PyTorch's p.data = ...: set_ keeps the dtype
            }
            w.mutable_grad().put(torch.ones(newSize).to(type));
            assertThatThrownBy(opt::stepBase).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("parameter 'layer.w' is [" + newSize + "]")
                    .hasMessageContaining("its optimizer state was made for [4] Float")
                    .hasMessageContaining("nothing was changed");
            assertThat(w.detach().eq(new Scalar(0.5)).all().item_bool()).as("the new memory is untouched").isTrue();
            // the optimizer state is as it was: back on the old memory, the next step is a twin's second step
            w.__dispatch_set_data(kept);
            w.mutable_grad().put(torch.ones(4));
            opt.stepBase();
            for (int i = 0; i < 2; i++) {
                twinW.mutable_grad().put(torch.ones(4));
                twin.stepBase();
            }
            assertThat(torch.equal(w.detach(), twinW.detach())).isTrue();
        }
    }

    // ------------------------------------------------------------------ item 2: NaN where nothing is projected

    /**
     * {@code out = data * w + sqrt(v * 0)}, v used only in the conditional pass: the output is finite,
     * but v's gradient is NaN (0 * infinity) when {@code poison}.
     */
    private static ConditionalModel condOnlyNaN(Tensor w, Tensor v, boolean[] poison) {
        return (data, cond) -> {
            Tensor out = data.mul(w);
            if (cond != null) {
                Tensor extra = poison[0] ? torch.sqrt(v.mul(new Scalar(0.0))) : v.mul(new Scalar(0.0));
                out = out.add(extra.sum());
            }
            return out;
        };
    }

    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"PLAIN", "FUSED"})
    void aNaNGradientOfAParameterWithoutUnconditionalGradientIsRefused(Engine engine) {
        Tensor data = torch.randn(8, 3).to(torch.ScalarType.Double);
        Tensor label = torch.randn(8, 3).to(torch.ScalarType.Double);
        Tensor cond = torch.randn(8, 2).to(torch.ScalarType.Double);
        Tensor w = torch.ones(3).to(torch.ScalarType.Double).requires_grad_(true);
        Tensor v = torch.ones(2).to(torch.ScalarType.Double).requires_grad_(true);
        Tensor w2 = w.detach().clone().requires_grad_(true);
        Tensor v2 = v.detach().clone().requires_grad_(true);
        boolean[] poison = {true};
        Map<String, Tensor> named = new LinkedHashMap<>();
        named.put("w", w);
        named.put("cond_only.v", v);
        Map<String, Tensor> twinNamed = new LinkedHashMap<>();
        twinNamed.put("w", w2);
        twinNamed.put("cond_only.v", v2);
        try (Constraint opt = new Constraint(named, OptimizerSpec.adam(0.1), 1, 1, engine);
             Constraint twin = new Constraint(twinNamed, OptimizerSpec.adam(0.1), 1, 1, engine)) {
            Map<String, Tensor> before = TestModels.snapshot(named);
            assertThatThrownBy(() -> Text2Data.runStep(opt, 0.1, condOnlyNaN(w, v, poison), cond, data, label, Loss.MSE))
                    .isInstanceOf(NonFiniteException.class).hasMessageContaining("parameter 'cond_only.v'")
                    .hasMessageContaining("NaN");
            TestModels.assertUnchanged(named, before);
            // the optimizer state is untouched: the next good step equals a twin's first step
            poison[0] = false;
            Text2Data.runStep(opt, 0.1, condOnlyNaN(w, v, poison), cond, data, label, Loss.MSE).close();
            Text2Data.runStep(twin, 0.1, condOnlyNaN(w2, v2, poison), cond, data, label, Loss.MSE).close();
            TestModels.assertUnchanged(named, twinNamed);
        }
    }

    // ------------------------------------------------------------------ item 3: float16 update overflow

    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"PLAIN", "FUSED"})
    void aFloat16UpdateThatOverflowsIsRefusedAndTheParametersRestored(Engine engine) {
        TensorOptions half = new TensorOptions(torch.ScalarType.Half);
        Tensor w = torch.ones(4).to(torch.ScalarType.Half).requires_grad_(true);
        Map<String, Tensor> named = Map.of("head.w", w);
        // libtorch's Adam, which computes in float16 (the fused Adam computes in float32 and takes this step)
        try (Constraint opt = new Constraint(named, OptimizerSpec.adam(0.1).fused(false), 1, 1, engine)) {
            Map<String, Tensor> before = TestModels.snapshot(named);
            // a gradient of 1e-4: Adam's squared moment underflows to 0 in float16, and eps 1e-8 rounds
            // to 0, so the update is 1e-5 / 0
            w.mutable_grad().put(torch.full(new long[] {4}, new Scalar(1e-4), half));
            assertThatThrownBy(() -> opt.step(() -> {
                w.grad().add_(torch.full(new long[] {4}, new Scalar(1e-4), half));
                return w.grad().sum();
            }, 1.0, 1.0)).isInstanceOf(NonFiniteException.class).hasMessageContaining("step 1")
                    .hasMessageContaining("'head.w'").hasMessageContaining("float16").hasMessageContaining("nothing was updated");
            TestModels.assertUnchanged(named, before);
            assertThat(torch.isfinite(w.detach()).all().item_bool()).isTrue();
        }
    }

    // ------------------------------------------------------------------ item 5: a strided parameter

    @org.junit.jupiter.api.Test
    void aNonContiguousParameterTrainsAlikeOnBothEngines() {
        Map<String, Map<String, Tensor>> results = new LinkedHashMap<>();
        for (Engine engine : new Engine[] {Engine.PLAIN, Engine.FUSED}) {
            torch.manual_seed(3);
            Tensor data = torch.randn(8, 5).to(torch.ScalarType.Double);
            Tensor label = torch.randn(8, 4).to(torch.ScalarType.Double);
            Tensor cond = torch.randn(8, 4).to(torch.ScalarType.Double);
            Tensor wt = torch.randn(4, 5).to(torch.ScalarType.Double).t().detach().requires_grad_(true); // [5, 4], strided
            Tensor bias = torch.randn(4).to(torch.ScalarType.Double).requires_grad_(true);
            assertThat(wt.is_contiguous()).isFalse();
            Map<String, Tensor> named = new LinkedHashMap<>();
            named.put("proj.weight_t", wt);
            named.put("proj.bias", bias);
            ConditionalModel m = (d, c) -> {
                Tensor out = d.matmul(wt).add(bias);
                return c == null ? out : out.add(c.mul(bias));
            };
            try (Constraint opt = new Constraint(named, OptimizerSpec.adam(0.05), 1, 1, engine)) {
                assertThat(opt.engineName()).startsWith(engine == Engine.PLAIN ? "plain" : "fused");
                for (int s = 0; s < 4; s++) {
                    try (StepResult r = Text2Data.runStep(opt, 0.5, m, cond, data, label, Loss.MSE)) {
                        assertThat(r.projectedTensors()).isEqualTo(2);
                    }
                }
            }
            assertThat(wt.is_contiguous()).isFalse();
            results.put(engine.name(), named);
        }
        Map<String, Tensor> plain = results.get("PLAIN");
        Map<String, Tensor> fused = results.get("FUSED");
        plain.forEach((k, v) -> assertThat(torch.allclose(v.detach(), fused.get(k).detach(), 1e-12, 1e-12, false))
                .as("parameter %s", k).isTrue());
    }
}
