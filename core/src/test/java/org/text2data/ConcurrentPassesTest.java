package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.text2data.TestModels.assertSameTensors;
import static org.text2data.TestModels.maxDiff;
import static org.text2data.TestModels.step;

import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@link Constraint#setConcurrentPasses}: runStep's two passes run at the same time, on the constraint's worker and
 * the caller's thread, and the steps are those of the passes in turn (parameters, gradients, losses, projected
 * counts), on every engine, including the parameters only one pass reaches (TestModels.SmallModel); a failing pass
 * changes nothing; the worker runs under the caller's libtorch thread-local state, with OpenBLAS's threads split.
 */
class ConcurrentPassesTest {

    private static Batch batch(ScalarType type) {
        return TestModels.randomBatch("cpu", type, 16, 4, 3);
    }

    @ParameterizedTest
    @ValueSource(strings = {"fused adam", "fused sgd", "fused projection, libtorch adam", "plain adam"})
    void theStepsAreThoseOfThePassesInTurn(String setUp) {
        OptimizerSpec spec = setUp.endsWith("sgd") ? OptimizerSpec.sgd(0.05).momentum(0.9).weightDecay(0.01)
                : OptimizerSpec.adam(0.05);
        Engine engine = setUp.startsWith("plain") ? Engine.PLAIN : Engine.FUSED;
        boolean fusedOptimizer = setUp.equals("fused adam") || setUp.equals("fused sgd");
        Map<String, Thread> threads = new ConcurrentHashMap<>();
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel cm = new TestModels.SmallModel(ScalarType.Double);
             TestModels.SmallModel tm = new TestModels.SmallModel(ScalarType.Double);
             Constraint concurrent = new Constraint(cm.params, spec.fused(fusedOptimizer), 1.0, 1.0, engine);
             Constraint inTurn = new Constraint(tm.params, spec.fused(fusedOptimizer), 1.0, 1.0, engine)) {
            concurrent.setConcurrentPasses(true);
            assertThat(concurrent.concurrentPasses()).isTrue();
            assertThat(inTurn.concurrentPasses()).isFalse();
            ConditionalModel watched = (x, c) -> {
                threads.put(c == null ? "unconditional" : "conditional", Thread.currentThread());
                return cm.forward(x, c);
            };
            double gc;
            try (StepResult r = step(inTurn, 0.0, tm, in)) {
                gc = 0.9 * r.uncondLoss(); // active in some steps
            }
            step(concurrent, 0.0, watched, in).close();
            int projected = 0;
            for (int s = 0; s < 12; s++) {
                try (StepResult a = step(concurrent, gc, watched, in); StepResult b = step(inTurn, gc, tm, in)) {
                    assertThat(a.projectedTensors()).as("step %d: tensors projected", s).isEqualTo(b.projectedTensors());
                    assertThat(a.uncondLoss()).as("step %d: unconditional loss", s).isEqualTo(b.uncondLoss());
                    assertThat(a.condLoss()).as("step %d: conditional loss", s).isEqualTo(b.condLoss());
                    projected += a.projectedTensors();
                }
                assertSameTensors(setUp + ", step " + s, cm.params, tm.params, 1e-12);
            }
            assertThat(projected).as("the projection ran").isPositive();
            assertThat(threads.get("unconditional").getName()).isEqualTo("text2data-unconditional-pass");
            assertThat(threads.get("conditional")).isSameAs(Thread.currentThread());
        }
    }

    /**
     * Two parameters summed before use ({@code W + D}, LoRA-like) get one and the same gradient tensor from autograd;
     * backward's AccumulateGrad gives the second a copy, so that the step's in-place writes to one do not reach the
     * other. Handing over must do the same.
     */
    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"FUSED", "PLAIN"})
    void parametersThatShareOneGradientTensorGetTheirOwnAsInTurn(Engine engine) {
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel cm = new TestModels.SmallModel(ScalarType.Double);
             TestModels.SmallModel tm = new TestModels.SmallModel(ScalarType.Double);
             PointerScope scope = new PointerScope()) {
            java.util.function.Consumer<Map<String, Tensor>> change = p -> {
                Tensor d = p.get("W").detach().mul(new Scalar(0.1)).requires_grad_(true);
                d.retainReference();
                p.put("D", d);
            };
            Map<String, Tensor> cp = changed(cm, change);
            Map<String, Tensor> tp = changed(tm, change);
            ConditionalModel cModel = (x, c) -> forwardWith(cp.get("W").add(cp.get("D")), cp, x, c);
            ConditionalModel tModel = (x, c) -> forwardWith(tp.get("W").add(tp.get("D")), tp, x, c);
            try {
                stepAlike(engine.toString(), engine, in, cp, cModel, tp, tModel, 6);
            } finally {
                cp.get("D").releaseReference();
                tp.get("D").releaseReference();
            }
        }
    }

    /** A copy of a model's tensor map, changed by {@code change}. */
    private static Map<String, Tensor> changed(TestModels.SmallModel m, java.util.function.Consumer<Map<String, Tensor>> change) {
        Map<String, Tensor> p = new java.util.LinkedHashMap<>(m.params);
        change.accept(p);
        return p;
    }

    /**
     * SmallModel's forward over the tensors {@code p}, with {@code w} in place of W: W itself, {@code W + D}, or
     * W through a contiguous copy (so that its gradient comes back contiguous, where a matmul would hand a transposed
     * operand a transposed gradient, and must be laid out as W).
     */
    private static Tensor forwardWith(Tensor w, Map<String, Tensor> p, Tensor data, Tensor cond) {
        Tensor h = data.matmul(w).tanh();
        return cond == null ? h.add(p.get("nullEmb")) : h.add(cond.matmul(p.get("condW")));
    }

    /**
     * Steps Adam constraints over {@code cp}, with concurrent passes, and over {@code tp}, in turn, alike, and holds
     * their tensors and gradients equal after every step.
     */
    private static void stepAlike(String what, Engine engine, Batch in, Map<String, Tensor> cp, ConditionalModel cModel,
                                  Map<String, Tensor> tp, ConditionalModel tModel, int steps) {
        try (Constraint concurrent = new Constraint(cp, OptimizerSpec.adam(0.05), 1.0, 1.0, engine);
             Constraint inTurn = new Constraint(tp, OptimizerSpec.adam(0.05), 1.0, 1.0, engine)) {
            concurrent.setConcurrentPasses(true);
            for (int s = 0; s < steps; s++) {
                step(concurrent, 0.5, cModel, in).close();
                step(inTurn, 0.5, tModel, in).close();
                assertSameTensors(what + ", step " + s, cp, tp, 1e-12);
            }
        }
    }

    /**
     * A frozen tensor among the constraint's tensors: a backward pass fills no {@code .grad} of it, so it is not
     * stepped; {@code torch::autograd::grad} would refuse it. Concurrent passes differentiate only what a backward
     * pass fills. (A non-leaf tensor is refused when the constraint is made: {@code MisuseTest}.)
     */
    @Test
    void aFrozenTensorIsLeftAloneAsInTurn() {
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel cm = new TestModels.SmallModel(ScalarType.Double);
             TestModels.SmallModel tm = new TestModels.SmallModel(ScalarType.Double);
             PointerScope scope = new PointerScope()) {
            java.util.function.Consumer<Map<String, Tensor>> change = p -> p.get("condW").requires_grad_(false);
            Map<String, Tensor> cp = changed(cm, change);
            Map<String, Tensor> tp = changed(tm, change);
            ConditionalModel cModel = (x, c) -> forwardWith(cp.get("W"), cp, x, c);
            ConditionalModel tModel = (x, c) -> forwardWith(tp.get("W"), tp, x, c);
            Map<String, Tensor> before = TestModels.snapshot(cp);
            stepAlike("frozen", Engine.AUTO, in, cp, cModel, tp, tModel, 4);
            assertThat(maxDiff(cp.get("condW"), before.get("condW"))).as("frozen").isZero();
            assertThat(maxDiff(cp.get("W"), before.get("W"))).as("stepped").isGreaterThan(1e-6);
        }
    }

    /**
     * Strided leaves (a transposed one, one with gaps between its rows): backward's AccumulateGrad gives each a
     * gradient laid out as the parameter, and so must handing over: same values, same strides, every step.
     */
    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"FUSED", "PLAIN"})
    void stridedParametersGetGradientsLaidOutAsInTurn(Engine engine) {
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel cm = new TestModels.SmallModel(ScalarType.Double);
             TestModels.SmallModel tm = new TestModels.SmallModel(ScalarType.Double);
             PointerScope scope = new PointerScope()) {
            java.util.function.Consumer<Map<String, Tensor>> change = p -> {
                // the same values as W and condW, stored transposed and with gaps
                p.put("W", p.get("W").detach().t().contiguous().t().requires_grad_(true));
                Tensor wide = torch.zeros(new long[] {3, 7}, new org.bytedeco.pytorch.TensorOptions(ScalarType.Double));
                wide.narrow(1, 0, 4).copy_(p.get("condW").detach());
                p.put("condW", wide.narrow(1, 0, 4).detach().requires_grad_(true));
            };
            Map<String, Tensor> cp = changed(cm, change);
            Map<String, Tensor> tp = changed(tm, change);
            assertThat(cp.get("W").is_contiguous()).isFalse();
            assertThat(cp.get("condW").is_contiguous()).isFalse();
            ConditionalModel cModel = (x, c) -> forwardWith(cp.get("W").contiguous(), cp, x, c);
            ConditionalModel tModel = (x, c) -> forwardWith(tp.get("W").contiguous(), tp, x, c);
            stepAlike(engine.toString(), engine, in, cp, cModel, tp, tModel, 4);
            for (String n : List.of("W", "condW")) {
                assertThat(Tensors.strides(cp.get(n).grad())).as(n + ": gradient strides")
                        .containsExactly(Tensors.strides(tp.get(n).grad()));
            }
        }
    }

    /**
     * A model may throw a checked exception undeclared (Kotlin, Scala, Lombok): runStep still waits for the worker,
     * so the model is never left running on tensors the caller may free.
     */
    @Test
    void aCheckedExceptionFromTheCallersPassStillWaitsForTheWorker() {
        boolean[] workerDone = {false};
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel m = new TestModels.SmallModel(ScalarType.Double);
             Constraint opt = new Constraint(m.params, OptimizerSpec.adam(0.05))) {
            opt.setConcurrentPasses(true);
            Map<String, Tensor> before = TestModels.snapshot(m.params);
            ConditionalModel slowThenSneaky = (x, c) -> {
                if (c == null) {
                    try {
                        Thread.sleep(300);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    Tensor out = m.forward(x, null);
                    workerDone[0] = true;
                    return out;
                }
                throw ConcurrentPassesTest.<RuntimeException>sneaky(new java.io.IOException("disk gone"));
            };
            // as the passes in turn throw it: the model's own exception, not a wrapper
            assertThatThrownBy(() -> step(opt, 0.0, slowThenSneaky, in)).isInstanceOf(java.io.IOException.class)
                    .hasMessage("disk gone");
            assertThat(workerDone[0]).as("the worker's pass had finished when runStep threw").isTrue();
            TestModels.assertUnchanged(m.params, before);
            step(opt, 0.0, m, in).close(); // and the constraint steps on
        }
    }

    @SuppressWarnings("unchecked")
    private static <T extends Throwable> T sneaky(Throwable t) throws T {
        throw (T) t;
    }

    /**
     * TorchScript's graph optimizer and libtorch's intra-op thread count are per-thread settings outside the
     * thread-local state PyTorch carries: with the optimizer off on the caller (as {@code finetune} runs, so that a
     * resumed run ends bit for bit where an uninterrupted one does), the worker's pass must run with it off too.
     * Bitwise, over 23 steps of the fixture's TorchScript model.
     */
    @Test
    void theWorkerRunsUnderTheCallersTorchScriptOptimizerSetting() {
        boolean optimize = torch.getGraphExecutorOptimize();
        torch.setGraphExecutorOptimize(false);
        try (TorchScriptModel cm = TestModels.model(); TorchScriptModel tm = TestModels.model();
             Batch in = TestModels.batch();
             Constraint concurrent = new Constraint(cm.namedParameters(), OptimizerSpec.adam(0.01), 1.0, 1.0, Engine.PLAIN);
             Constraint inTurn = new Constraint(tm.namedParameters(), OptimizerSpec.adam(0.01), 1.0, 1.0, Engine.PLAIN)) {
            concurrent.setConcurrentPasses(true);
            for (int s = 0; s < 23; s++) {
                step(concurrent, 1.2, cm, in).close();
                step(inTurn, 1.2, tm, in).close();
            }
            assertSameTensors("after 23 steps", cm.namedParameters(), tm.namedParameters(), 0.0);
        } finally {
            torch.setGraphExecutorOptimize(optimize);
        }
    }

    /**
     * The worker flushes denormal floats to zero exactly when the caller does ({@code setFlushDenormal} is a
     * per-thread setting of the CPU): a gradient whose exact value is denormal comes out the same from both passes.
     * Here the forward's 1e-40 and the gradient's 5e-41 are below float's smallest normal number: flushed, both are
     * 0; left alone, the gradient is 5e-41.
     */
    @Test
    void theWorkerFlushesDenormalsWhenTheCallerDoes() {
        boolean flushing = LibTorch.flushesDenormals();
        try (PointerScope scope = new PointerScope(); ConcurrentPasses passes = new ConcurrentPasses()) {
            org.bytedeco.pytorch.TensorOptions f32 = new org.bytedeco.pytorch.TensorOptions(ScalarType.Float);
            Tensor w = torch.ones(new long[] {4}, f32).requires_grad_(true);
            Tensor data = torch.full(new long[] {4}, new Scalar(1e-30), f32);
            Tensor label = torch.full(new long[] {4}, new Scalar(-1.0), f32);
            ConditionalModel model = (d, c) -> d.mul(w).mul(new Scalar(1e-10)); // both passes alike
            for (boolean flush : new boolean[] {true, false}) {
                torch.globalContext().setFlushDenormal(flush);
                ConcurrentPasses.Pass[] both = passes.run(model, data, data, label, Loss.MSE,
                        new org.bytedeco.pytorch.TensorVector(w), false);
                // compared as bits: while this thread flushes, a float comparison would read a denormal as 0
                Tensor unconditional = both[0].grads().get(0).view(ScalarType.Int);
                Tensor conditional = both[1].grads().get(0).view(ScalarType.Int); // computed on this thread
                assertThat(conditional.abs().max().item_int()).as("flush " + flush)
                        .isEqualTo(flush ? 0 : Float.floatToRawIntBits(5e-41f));
                assertThat(torch.equal(unconditional, conditional)).as("flush " + flush + ": the worker's gradient's bits "
                        + unconditional.abs().max().item_int()).isTrue();
                both[0].closeGrads();
                both[1].closeGrads();
            }
        } finally {
            torch.globalContext().setFlushDenormal(flushing);
        }
    }

    /** The passes overlap: the unconditional one waits until the conditional one has begun, which in turn never does. */
    @Test
    void thePassesRunAtTheSameTime() {
        CountDownLatch conditionalBegan = new CountDownLatch(1);
        boolean[] overlapped = {false};
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel m = new TestModels.SmallModel(ScalarType.Double);
             Constraint opt = new Constraint(m.params, OptimizerSpec.adam(0.05))) {
            opt.setConcurrentPasses(true);
            ConditionalModel meeting = (x, c) -> {
                if (c != null) {
                    conditionalBegan.countDown();
                } else {
                    try {
                        overlapped[0] = conditionalBegan.await(20, TimeUnit.SECONDS);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                return m.forward(x, c);
            };
            step(opt, 0.0, meeting, in).close();
            assertThat(overlapped[0]).as("the conditional pass began while the unconditional one ran").isTrue();
        }
    }

    @Test
    void aFailingPassChangesNothingAndTheNextStepsAreThoseOfThePassesInTurn() {
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel cm = new TestModels.SmallModel(ScalarType.Double);
             TestModels.SmallModel tm = new TestModels.SmallModel(ScalarType.Double);
             Constraint concurrent = new Constraint(cm.params, OptimizerSpec.adam(0.05));
             Constraint inTurn = new Constraint(tm.params, OptimizerSpec.adam(0.05));
             PointerScope scope = new PointerScope()) {
            concurrent.setConcurrentPasses(true);
            step(concurrent, 0.0, cm, in).close();
            step(inTurn, 0.0, tm, in).close();
            Map<String, Tensor> before = TestModels.snapshot(cm.params);

            for (String which : List.of("conditional", "unconditional")) {
                ConditionalModel oneFails = (x, c) -> {
                    if ((c == null) == which.equals("unconditional")) {
                        throw new IllegalStateException(which + " pass failed");
                    }
                    return cm.forward(x, c);
                };
                assertThatThrownBy(() -> step(concurrent, 0.0, oneFails, in))
                        .isInstanceOf(IllegalStateException.class).hasMessage(which + " pass failed");
                TestModels.assertUnchanged(cm.params, before);
            }

            ConditionalModel bothFail = (x, c) -> {
                throw new IllegalStateException((c == null ? "unconditional" : "conditional") + " pass failed");
            };
            assertThatThrownBy(() -> step(concurrent, 0.0, bothFail, in))
                    .as("the unconditional pass's failure, as in turn; the other's attached")
                    .isInstanceOf(IllegalStateException.class).hasMessage("unconditional pass failed")
                    .satisfies(e -> assertThat(e.getSuppressed()).extracting(Throwable::getMessage)
                            .containsExactly("conditional pass failed"));
            TestModels.assertUnchanged(cm.params, before);

            Tensor nanLabel = in.label().clone();
            nanLabel.select(0, 0).select(0, 0).fill_(new Scalar(Double.NaN));
            Batch bad = new Batch(in.data(), in.cond(), nanLabel);
            assertThatThrownBy(() -> step(concurrent, 0.0, cm, bad)).isInstanceOf(NonFiniteException.class)
                    .hasMessageContaining("the unconditional loss is NaN");
            assertThatThrownBy(() -> step(inTurn, 0.0, tm, bad)).isInstanceOf(NonFiniteException.class)
                    .hasMessageContaining("the unconditional loss is NaN");
            TestModels.assertUnchanged(cm.params, before);
            assertSameTensors("after the refused steps", cm.params, tm.params, 1e-12);

            for (int s = 0; s < 3; s++) { // the worker survived its failures
                step(concurrent, 0.5, cm, in).close();
                step(inTurn, 0.5, tm, in).close();
                assertSameTensors("step " + s + " after the failures", cm.params, tm.params, 1e-12);
            }
        }
    }

    /** With a gradient sync the gradients are zeroed, not released: each pass's are added into them. */
    @Test
    void withAGradientSyncTheStepsAreThoseOfThePassesInTurn() {
        GradientSync otherProcessAllOnes = TestModels.otherProcessAllOnes();
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel cm = new TestModels.SmallModel(ScalarType.Double);
             TestModels.SmallModel tm = new TestModels.SmallModel(ScalarType.Double);
             Constraint concurrent = new Constraint(cm.params, OptimizerSpec.adam(0.05));
             Constraint inTurn = new Constraint(tm.params, OptimizerSpec.adam(0.05))) {
            concurrent.setConcurrentPasses(true);
            concurrent.setGradientSync(otherProcessAllOnes);
            inTurn.setGradientSync(otherProcessAllOnes);
            for (int s = 0; s < 6; s++) {
                try (StepResult a = step(concurrent, 0.5, cm, in); StepResult b = step(inTurn, 0.5, tm, in)) {
                    assertThat(a.projectedTensors()).as("step %d: tensors projected", s).isEqualTo(b.projectedTensors());
                }
                assertSameTensors("step " + s, cm.params, tm.params, 1e-12);
            }
        }
    }

    @Test
    void anotherModelsPassesAreRefusedAsInTurn() {
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel mine = new TestModels.SmallModel(ScalarType.Double);
             TestModels.SmallModel other = new TestModels.SmallModel(ScalarType.Double);
             Constraint opt = new Constraint(mine.params, OptimizerSpec.adam(0.05))) {
            opt.setConcurrentPasses(true);
            Map<String, Tensor> before = TestModels.snapshot(mine.params);
            assertThatThrownBy(() -> step(opt, 0.0, other, in)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("no parameter of this Constraint received a gradient")
                    .hasMessageContaining("Nothing was updated");
            TestModels.assertUnchanged(mine.params, before);
        }
    }

    /** Autocast is libtorch thread-local state: the worker's unconditional pass must run under the caller's. */
    @Test
    void theWorkerRunsUnderTheCallersAutocast() {
        try (Batch in = batch(ScalarType.Float);
             TestModels.SmallModel cm = new TestModels.SmallModel(ScalarType.Float);
             TestModels.SmallModel tm = new TestModels.SmallModel(ScalarType.Float);
             TestModels.SmallModel fm = new TestModels.SmallModel(ScalarType.Float);
             Constraint concurrent = new Constraint(cm.params, OptimizerSpec.sgd(0.1));
             Constraint inTurn = new Constraint(tm.params, OptimizerSpec.sgd(0.1));
             Constraint full = new Constraint(fm.params, OptimizerSpec.sgd(0.1))) {
            concurrent.setConcurrentPasses(true);
            step(full, 0.0, fm, in).close(); // float32 throughout
            torch.set_autocast_enabled(torch.DeviceType.CPU, true); // matmul in bfloat16
            try {
                step(concurrent, 0.0, cm, in).close();
                step(inTurn, 0.0, tm, in).close();
            } finally {
                torch.set_autocast_enabled(torch.DeviceType.CPU, false);
                torch.clear_cache(); // autocast's cast weights
            }
            assertThat(maxDiff(tm.params.get("nullEmb"), fm.params.get("nullEmb")))
                    .as("autocast changes the unconditional pass's step").isGreaterThan(1e-6);
            assertSameTensors("under autocast", cm.params, tm.params, 0.0);
        }
    }

    @Test
    void openBlasThreadsAreSplitWhileThePassesRunAndRestoredAfter() {
        int before = LibTorch.blasThreads();
        Map<String, Integer> seen = new ConcurrentHashMap<>();
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel m = new TestModels.SmallModel(ScalarType.Double);
             Constraint opt = new Constraint(m.params, OptimizerSpec.adam(0.05))) {
            assertThat(LibTorch.setBlasThreads(4)).isTrue();
            opt.setConcurrentPasses(true);
            ConditionalModel probe = (x, c) -> {
                seen.put(c == null ? "unconditional" : "conditional", LibTorch.blasThreadsNow());
                return m.forward(x, c);
            };
            step(opt, 0.0, probe, in).close();
            assertThat(seen).containsEntry("unconditional", 2).containsEntry("conditional", 2);
            assertThat(LibTorch.blasThreadsNow()).as("restored after the step").isEqualTo(4);
            assertThat(LibTorch.blasThreads()).isEqualTo(4);
            opt.setConcurrentPasses(false);
            step(opt, 0.0, probe, in).close();
            assertThat(seen).containsEntry("unconditional", 4).containsEntry("conditional", 4);
        } finally {
            if (before > 0) {
                LibTorch.setBlasThreads(before);
            }
        }
    }

    @Test
    void turningItOffOrClosingStopsTheWorker() throws InterruptedException {
        Thread[] worker = new Thread[1];
        try (Batch in = batch(ScalarType.Double);
             TestModels.SmallModel m = new TestModels.SmallModel(ScalarType.Double)) {
            ConditionalModel watched = (x, c) -> {
                if (c == null) {
                    worker[0] = Thread.currentThread();
                }
                return m.forward(x, c);
            };
            Constraint opt = new Constraint(m.params, OptimizerSpec.adam(0.05));
            opt.setConcurrentPasses(true);
            step(opt, 0.0, watched, in).close();
            Thread first = worker[0];
            assertThat(first).isNotSameAs(Thread.currentThread());
            opt.setConcurrentPasses(false);
            first.join(10_000);
            assertThat(first.isAlive()).as("stopped by setConcurrentPasses(false)").isFalse();
            step(opt, 0.0, watched, in).close();
            assertThat(worker[0]).as("in turn: the caller's thread").isSameAs(Thread.currentThread());

            opt.setConcurrentPasses(true);
            step(opt, 0.0, watched, in).close();
            Thread second = worker[0];
            assertThat(second).isNotSameAs(Thread.currentThread()).isNotSameAs(first);
            opt.close();
            second.join(10_000);
            assertThat(second.isAlive()).as("stopped by close()").isFalse();
            assertThatThrownBy(() -> opt.setConcurrentPasses(true)).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("closed");
        }
    }

    /** Run in a forked JVM: two constraints turn concurrent passes on, and one step each. */
    public static void main(String[] args) {
        LibTorch.ensureLoaded();
        for (int i = 0; i < 2; i++) {
            try (Batch in = batch(ScalarType.Double);
                 TestModels.SmallModel m = new TestModels.SmallModel(ScalarType.Double);
                 Constraint opt = new Constraint(m.params, OptimizerSpec.adam(0.05))) {
                opt.setConcurrentPasses(true);
                step(opt, 0.0, m, in).close();
                System.out.println("stepped with concurrent passes on " + Runtime.getRuntime().availableProcessors());
            }
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2})
    void withOneAvailableProcessorTurningThemOnWarnsOnce(int processors) throws Exception {
        String output = ForkedJvm.runOk(ForkedJvm.command(ConcurrentPassesTest.class,
                List.of("-XX:ActiveProcessorCount=" + processors, "-Dtext2data.blasThreads=1")));
        assertThat(output.split("stepped with concurrent passes on " + processors, -1)).as(output).hasSize(3);
        assertThat(output.split("concurrent passes with 1 available processor", -1)).as(output)
                .hasSize(processors == 1 ? 2 : 1); // once, or not at all
    }

    @Test
    void parametersOffTheCpuAreRefusedAndNothingChanges() {
        try (PointerScope scope = new PointerScope()) {
            Tensor meta = torch.zeros(new long[] {3}, new org.bytedeco.pytorch.TensorOptions(
                    new org.bytedeco.pytorch.Device("meta"))).requires_grad_(true);
            try (Constraint opt = new Constraint(java.util.List.of(meta), OptimizerSpec.sgd(0.1), 1.0, 1.0,
                    Engine.PLAIN)) {
                assertThatThrownBy(() -> opt.setConcurrentPasses(true)).isInstanceOf(IllegalArgumentException.class)
                        .hasMessageContaining("concurrent passes run on the CPU only")
                        .hasMessageContaining("is on meta");
                assertThat(opt.concurrentPasses()).isFalse();
            }
        }
    }
}
