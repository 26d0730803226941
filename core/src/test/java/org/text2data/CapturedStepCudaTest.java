package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The captured step on a GPU (skipped without one; bench/gpu/java-check.sh runs it): 100 replays give the
 * parameters of 100 uncaptured runStep calls (float32, 1e-5 relative) with the static inputs refilled each step,
 * the learning rate and gConstraint changed on the way; the capture itself changes nothing; a replay with a NaN
 * input is skipped on the device and reported, and changes nothing; a model that reads a value on the host is
 * refused with the cause named, changes nothing and leaves the device usable; a replay after the optimizer state
 * was released (a checkpoint without state restored) is refused; replays still read the static inputs after the
 * caller released its handles on them; a replay after a static input was resized is refused. The last was written
 * after the H100 runs of 2026-11-26 and has not run on a GPU yet.
 */
class CapturedStepCudaTest {

    @BeforeAll
    static void needsAGpu() {
        assumeTrue(LibTorch.cudaAvailable(), "no CUDA device: the captured step is checked on a GPU only");
    }

    private static final Device CUDA = new Device("cuda:0");

    /** A small conditional MLP on cuda:0, seeded: two instances are equal. */
    private static final class Model implements ConditionalModel, AutoCloseable {
        final Map<String, Tensor> params = new LinkedHashMap<>();

        Model() {
            torch.manual_seed(21);
            TensorOptions f32 = new TensorOptions(ScalarType.Float);
            put("W1", torch.randn(new long[] {8, 32}, f32).mul(new Scalar(0.3)));
            put("b1", torch.zeros(new long[] {32}, f32));
            put("nullEmb", torch.randn(new long[] {32}, f32).mul(new Scalar(0.1)));
            put("condW", torch.randn(new long[] {4, 32}, f32).mul(new Scalar(0.3)));
            put("W2", torch.randn(new long[] {32, 8}, f32).mul(new Scalar(0.3)));
        }

        private void put(String name, Tensor cpu) {
            Tensor t = cpu.to(CUDA, ScalarType.Float).detach();
            t.requires_grad_(true);
            t.retainReference();
            params.put(name, t);
        }

        @Override
        public Tensor forward(Tensor data, Tensor cond) {
            Tensor h = data.matmul(params.get("W1")).add(params.get("b1"));
            h = cond == null ? h.add(params.get("nullEmb")) : h.add(cond.matmul(params.get("condW")));
            return h.tanh().matmul(params.get("W2"));
        }

        @Override
        public void close() {
            params.values().forEach(Tensor::releaseReference);
        }
    }

    @Test
    void replaysGiveTheUncapturedTrajectoryAndSeeLrAndGConstraintChanges() {
        int steps = 100;
        List<Tensor[]> batches = new ArrayList<>();
        for (int k = 0; k < 8; k++) {
            batches.add(new Tensor[] {TestModels.random(100 + k, CUDA, ScalarType.Float, 16, 8),
                TestModels.random(200 + k, CUDA, ScalarType.Float, 16, 4),
                TestModels.random(300 + k, CUDA, ScalarType.Float, 16, 8)});
        }
        try (Batch in = TestModels.randomBatch("cuda:0", ScalarType.Float, 16, 8, 4);
             Model a = new Model(); Model b = new Model();
             Constraint eager = new Constraint(a.params, OptimizerSpec.adam(5e-3), 1.0, 1.0, Engine.FUSED);
             Constraint graphed = new Constraint(b.params, OptimizerSpec.adam(5e-3), 1.0, 1.0, Engine.FUSED)) {
            double g0;
            try (StepResult r = Text2Data.runStep(eager, 0.0, a, batches.get(0)[1], batches.get(0)[0], batches.get(0)[2],
                    Loss.MSE)) {
                g0 = r.uncondLoss();
            }
            Text2Data.runStep(graphed, 0.0, b, batches.get(0)[1], batches.get(0)[0], batches.get(0)[2], Loss.MSE).close();
            Map<String, Tensor> beforeCapture = TestModels.snapshot(b.params);
            try (CapturedStep step = CapturedStep.capture(graphed, g0, b, in.cond(), in.data(), in.label(), Loss.MSE)) {
                TestModels.assertUnchanged(b.params, beforeCapture);
                for (int k = 0; k < steps; k++) {
                    Tensor[] batch = batches.get(k % batches.size());
                    double gc = g0 * (0.8 + 0.004 * k);
                    if (k == steps / 2) {
                        eager.setLr(1e-3);
                        graphed.setLr(1e-3);
                    }
                    Text2Data.runStep(eager, gc, a, batch[1], batch[0], batch[2], Loss.MSE).close();
                    in.data().copy_(batch[0]);
                    in.cond().copy_(batch[1]);
                    in.label().copy_(batch[2]);
                    step.replay(gc).close();
                }
                graphed.checkSkippedSteps();
                for (String n : a.params.keySet()) {
                    assertThat(FusedOptimizerTest.worstRelative(List.of(b.params.get(n)), List.of(a.params.get(n))))
                            .as("parameter %s after %d steps", n, steps)
                            .isLessThanOrEqualTo(1e-5);
                }
                assertThat(FusedOptimizerTest.worstRelative(List.of(b.params.get("W1")), List.of(beforeCapture.get("W1"))))
                        .as("the replays stepped").isGreaterThan(1e-4);
            }
        }
    }

    @Test
    void aReplayWithANanInputIsSkippedReportedAndChangesNothing() {
        try (Batch in = TestModels.randomBatch("cuda:0", ScalarType.Float, 16, 8, 4); Model m = new Model();
             Constraint c = new Constraint(m.params, OptimizerSpec.adam(5e-3), 1.0, 1.0, Engine.FUSED);
             CapturedStep step = CapturedStep.capture(c, 0.1, m, in.cond(), in.data(), in.label(), Loss.MSE)) {
            step.replay(0.1).close();
            c.checkSkippedSteps();
            Map<String, Tensor> before = TestModels.snapshot(m.params);
            try (PointerScope scope = new PointerScope()) {
                in.data().select(0, 3).select(0, 1).fill_(new Scalar(Double.NaN));
            }
            step.replay(0.1).close();
            assertThatThrownBy(c::checkSkippedSteps).isInstanceOf(NonFiniteException.class)
                    .hasMessageContaining("skipped");
            TestModels.assertUnchanged(m.params, before);
        }
    }

    @Test
    void aModelThatReadsAValueOnTheHostIsRefusedNamingTheCauseAndChangesNothing() {
        try (Batch in = TestModels.randomBatch("cuda:0", ScalarType.Float, 16, 8, 4); Model m = new Model();
             Constraint c = new Constraint(m.params, OptimizerSpec.adam(5e-3), 1.0, 1.0, Engine.FUSED)) {
            Text2Data.runStep(c, 0.1, m, in.cond(), in.data(), in.label(), Loss.MSE).close();
            c.checkSkippedSteps();
            double[] seen = new double[1];
            ConditionalModel reads = (d, cd) -> {
                Tensor out = m.forward(d, cd);
                try (PointerScope scope = new PointerScope()) {
                    seen[0] = out.abs().max().item_double(); // a host read: a synchronisation
                }
                return out;
            };
            Map<String, Tensor> before = TestModels.snapshot(m.params);
            Checkpoint.OptimizerState state = c.optimizerState(); // copies
            assertThatThrownBy(() -> CapturedStep.capture(c, 0.1, reads, in.cond(), in.data(), in.label(), Loss.MSE))
                    .isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("could not be captured")
                    .hasMessageContaining("must not synchronise with the host");
            TestModels.assertUnchanged(m.params, before);
            try (Checkpoint.OptimizerState now = c.optimizerState()) {
                CheckpointAssert.assertSameState(state.perParam(), now.perParam(), "after the refused capture");
            }
            state.close();
            // the device and libtorch are usable afterwards: an eager step, then a capture of the plain model
            Text2Data.runStep(c, 0.1, m, in.cond(), in.data(), in.label(), Loss.MSE).close();
            c.checkSkippedSteps();
            try (CapturedStep step = CapturedStep.capture(c, 0.1, m, in.cond(), in.data(), in.label(), Loss.MSE)) {
                step.replay(0.1).close();
                c.checkSkippedSteps();
            }
        }
    }

    @Test
    void aReplayAfterTheOptimizerStateWasReleasedIsRefusedAndChangesNothing(@TempDir Path dir) throws IOException {
        try (Batch in = TestModels.randomBatch("cuda:0", ScalarType.Float, 16, 8, 4); Model m = new Model();
             Constraint c = new Constraint(m.params, OptimizerSpec.adam(5e-3), 1.0, 1.0, Engine.FUSED)) {
            Path fresh = dir.resolve("fresh.ckpt");
            Checkpoint.save(fresh, c); // before any step: no optimizer state
            try (CapturedStep step = CapturedStep.capture(c, 0.1, m, in.cond(), in.data(), in.label(), Loss.MSE)) {
                // the capture made the state (step 0); a checkpoint without state releases it, and the graph
                // would write into the freed buffers
                try (Checkpoint ck = Checkpoint.read(fresh)) {
                    ck.restore(c);
                }
                Map<String, Tensor> before = TestModels.snapshot(m.params);
                assertThatThrownBy(() -> step.replay(0.1)).isInstanceOf(IllegalStateException.class)
                        .hasMessageContaining("optimizer state was released since the capture")
                        .hasMessageContaining("Nothing was replayed");
                TestModels.assertUnchanged(m.params, before);
            }
            Text2Data.runStep(c, 0.1, m, in.cond(), in.data(), in.label(), Loss.MSE).close(); // the constraint steps on, eagerly
            c.checkSkippedSteps();
        }
    }

    @Test
    void replaysReadTheStaticInputsAfterTheCallerClosedItsHandles() {
        int steps = 20;
        Tensor data = TestModels.random(400, CUDA, ScalarType.Float, 16, 8);
        Tensor cond = TestModels.random(401, CUDA, ScalarType.Float, 16, 4);
        Tensor label = TestModels.random(402, CUDA, ScalarType.Float, 16, 8);
        Tensor[] copy = {data.clone(), cond.clone(), label.clone()}; // the eager side's batch
        List<Tensor> churn = new ArrayList<>();
        try (Model a = new Model(); Model b = new Model();
             Constraint eager = new Constraint(a.params, OptimizerSpec.adam(5e-3), 1.0, 1.0, Engine.FUSED);
             Constraint graphed = new Constraint(b.params, OptimizerSpec.adam(5e-3), 1.0, 1.0, Engine.FUSED);
             CapturedStep step = CapturedStep.capture(graphed, 0.1, b, cond, data, label, Loss.MSE)) {
            // what the garbage collector does to a handle nobody references: without the captured step's own
            // references the memory is freed, the tensors below take it, and the replays read NaN
            data.releaseReference();
            cond.releaseReference();
            label.releaseReference();
            for (int k = 0; k < 64; k++) {
                for (Tensor t : copy) {
                    Tensor nan = t.clone();
                    nan.fill_(new Scalar(Double.NaN));
                    churn.add(nan);
                }
            }
            for (int k = 0; k < steps; k++) {
                Text2Data.runStep(eager, 0.1, a, copy[1], copy[0], copy[2], Loss.MSE).close();
                step.replay(0.1).close();
            }
            graphed.checkSkippedSteps();
            for (String n : a.params.keySet()) {
                assertThat(FusedOptimizerTest.worstRelative(List.of(b.params.get(n)), List.of(a.params.get(n))))
                        .as("parameter %s after %d steps", n, steps)
                        .isLessThanOrEqualTo(1e-5);
            }
        } finally {
            churn.forEach(Tensor::close);
            for (Tensor t : copy) {
                t.close();
            }
        }
    }

    @Test
    void aReplayAfterAStaticInputWasResizedIsRefusedAndChangesNothing() {
        try (Batch in = TestModels.randomBatch("cuda:0", ScalarType.Float, 16, 8, 4); Model m = new Model();
             Constraint c = new Constraint(m.params, OptimizerSpec.adam(5e-3), 1.0, 1.0, Engine.FUSED);
             CapturedStep step = CapturedStep.capture(c, 0.1, m, in.cond(), in.data(), in.label(), Loss.MSE)) {
            step.replay(0.1).close();
            Map<String, Tensor> before = TestModels.snapshot(m.params);
            try (PointerScope scope = new PointerScope()) {
                in.data().resize_(new long[] {64, 8}); // a larger batch: reallocated, the old memory freed
            }
            assertThatThrownBy(() -> step.replay(0.1)).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("the static input 'data' changed its shape or strides since the capture")
                    .hasMessageContaining("Nothing was replayed");
            c.checkSkippedSteps();
            TestModels.assertUnchanged(m.params, before);
        }
    }
}
