package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.text2data.engine.CudaGraph;
import org.text2data.engine.Engines;
import org.text2data.engine.FusedEngine;

/**
 * What a captured step does without a GPU: it refuses, naming the cause, and changes nothing (parameters, their
 * gradients and the optimizer state stay bit for bit); the native capture calls fail with a message instead of
 * crashing. Capturing and replaying on a GPU is checked by bench/gpu/java-check.sh.
 */
class CapturedStepTest {

    @BeforeAll
    static void nativeLibraryLoads() {
        assertThat(Engines.fusedAvailable()).as(String.valueOf(Engines.fusedUnavailableReason())).isTrue();
    }

    private static TestModels.SmallModel model() {
        return new TestModels.SmallModel(ScalarType.Float);
    }

    /** The batch every test tries to capture with (the capture is refused before it is read). */
    private static final Batch IN = TestModels.randomBatch("cpu", ScalarType.Float, 8, 4, 3);
    private static final Tensor DATA = IN.data();
    private static final Tensor COND = IN.cond();
    private static final Tensor LABEL = IN.label();

    /** Every parameter, gradient and fused optimizer state tensor, cloned, and the step counts. */
    private static final class Snapshot {
        final java.util.List<Tensor> tensors = new java.util.ArrayList<>();
        final java.util.List<Long> counts = new java.util.ArrayList<>();

        Snapshot(TestModels.SmallModel m, Constraint c) {
            try (PointerScope scope = new PointerScope()) {
                for (Tensor p : m.params.values()) {
                    keep(p.detach().clone());
                    keep(p.grad().defined() ? p.grad().clone() : torch.zeros(new long[] {0}));
                }
                for (org.text2data.engine.ParamState st : c.paramStates()) {
                    counts.add(st.steps());
                    java.util.Map<String, Tensor> state = c.isFused() ? st.view(c.fusedOptions(), new java.util.HashMap<>()) : null;
                    if (state != null) {
                        state.values().forEach(t -> keep(t.clone()));
                    }
                }
                counts.add(c.steps());
            }
        }

        private void keep(Tensor t) {
            t.retainReference();
            tensors.add(t);
        }
    }

    private static Snapshot snapshot(TestModels.SmallModel m, Constraint c) {
        return new Snapshot(m, c);
    }

    private static void assertUnchanged(Snapshot before, TestModels.SmallModel m, Constraint c) {
        Snapshot after = snapshot(m, c);
        assertThat(after.counts).isEqualTo(before.counts);
        assertThat(after.tensors).hasSameSizeAs(before.tensors);
        for (int i = 0; i < before.tensors.size(); i++) {
            assertThat(torch.equal(before.tensors.get(i), after.tensors.get(i))).as("snapshot tensor %d", i).isTrue();
        }
    }

    @Test
    void parametersOnTheCpuAreRefusedNamingTheCauseAndNothingChanges() {
        try (TestModels.SmallModel m = model();
             Constraint c = new Constraint(m.params, OptimizerSpec.adam(0.01), 1.0, 1.0, Engine.FUSED)) {
            assertThat(c.isFused()).isTrue();
            Text2Data.runStep(c, 0.1, m, COND, DATA, LABEL, Loss.MSE).close(); // state, gradients and a step exist
            Snapshot before = snapshot(m, c);
            assertThatThrownBy(() -> CapturedStep.capture(c, 0.1, m, COND, DATA, LABEL, Loss.MSE))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("cannot be captured as a CUDA graph")
                    .hasMessageContaining("on the CPU")
                    .hasMessageContaining("nothing was changed");
            assertUnchanged(before, m, c);
            // still usable as before
            try (StepResult r = Text2Data.runStep(c, 0.1, m, COND, DATA, LABEL, Loss.MSE)) {
                assertThat(Double.isFinite(r.uncondLoss())).isTrue();
            }
        }
    }

    @Test
    void libtorchsOptimizerIsRefusedBecauseItsStepCountsLiveOnTheHost() {
        try (TestModels.SmallModel m = model();
             Constraint c = new Constraint(m.params, OptimizerSpec.adam(0.01).fused(false), 1.0, 1.0, Engine.FUSED)) {
            Snapshot before = snapshot(m, c);
            assertThatThrownBy(() -> CapturedStep.capture(c, 0.1, m, COND, DATA, LABEL, Loss.MSE))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("fused optimizer");
            assertUnchanged(before, m, c);
        }
    }

    @Test
    void badInputsAreRefusedAsRunStepRefusesThem() {
        Tensor shortLabel = IN.label().narrow(0, 0, 5);
        try (TestModels.SmallModel m = model();
             Constraint c = new Constraint(m.params, OptimizerSpec.adam(0.01), 1.0, 1.0, Engine.FUSED)) {
            Snapshot before = snapshot(m, c);
            assertThatThrownBy(() -> CapturedStep.capture(null, 0.1, m, COND, DATA, LABEL, Loss.MSE))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("optimizer is null");
            assertThatThrownBy(() -> CapturedStep.capture(c, 0.1, null, COND, DATA, LABEL, Loss.MSE))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("model is null");
            assertThatThrownBy(() -> CapturedStep.capture(c, -1.0, m, COND, DATA, LABEL, Loss.MSE))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("gConstraint");
            assertThatThrownBy(() -> CapturedStep.capture(c, 0.1, m, COND, DATA, shortLabel, Loss.MSE))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("label batch size");
            assertUnchanged(before, m, c);
        }
    }

    @Test
    void aClosedConstraintIsRefused() {
        try (TestModels.SmallModel m = model()) {
            Constraint c = new Constraint(m.params, OptimizerSpec.adam(0.01), 1.0, 1.0, Engine.FUSED);
            c.close();
            assertThatThrownBy(() -> CapturedStep.capture(c, 0.1, m, COND, DATA, LABEL, Loss.MSE))
                    .isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
        }
    }

    /** The engine's capture calls on a machine without a GPU: a message, never a crash. */
    @Test
    void theNativeCaptureCallsFailCleanlyWithoutAGpu() {
        assertThatThrownBy(() -> CudaGraph.beginCapture(0L))
                .isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("starting a stream capture failed")
                .hasMessageMatching("(?s).*(legacy default stream cannot be captured|built without CUDA).*");
        assertThatThrownBy(() -> CudaGraph.endCapture(0L))
                .isInstanceOf(IllegalStateException.class).hasMessageContaining("ending the stream capture failed");
        CudaGraph.discardCapture(0L); // ignores the error
        try (TestModels.SmallModel m = model();
             FusedEngine fe = new FusedEngine(m.params.values().toArray(new Tensor[0]))) {
            assertThatThrownBy(fe::createPlan)
                    .isInstanceOf(IllegalStateException.class).hasMessageContaining("on the host");
        }
        FusedEngine.destroyPlan(java.lang.foreign.MemorySegment.NULL); // nothing to free: no crash
    }

    @Test
    void aStaticInputResizedOrGivenOtherMemoryIsNamedWithWhatChanged() {
        String[] names = {"cond", "data", "label"};
        try (PointerScope scope = new PointerScope()) {
            Tensor[] in = {COND.clone(), DATA.clone(), LABEL.clone()};
            long[] addresses = new long[3];
            long[][] shapes = new long[3][];
            long[][] strides = new long[3][];
            for (int i = 0; i < 3; i++) {
                addresses[i] = Tensors.address(in[i]);
                shapes[i] = in[i].shape();
                strides[i] = Tensors.strides(in[i]);
            }
            assertThat(CapturedStep.inputChange(names, in, addresses, shapes, strides)).isNull();
            in[1].copy_(DATA.mul(new org.bytedeco.pytorch.Scalar(2.0))); // refilled in place: what replays expect
            assertThat(CapturedStep.inputChange(names, in, addresses, shapes, strides)).isNull();

            in[2].resize_(new long[] {16, 4}); // larger: reallocated
            assertThat(CapturedStep.inputChange(names, in, addresses, shapes, strides))
                    .startsWith("'label' changed its shape or strides since the capture")
                    .contains("shape [8, 4], strides [4, 1] then; shape [16, 4], strides [4, 1] now");
            in[2] = LABEL.clone();
            in[0].set_(COND.clone()); // same shape, other memory
            assertThat(CapturedStep.inputChange(names, in, addresses, shapes, strides))
                    .isEqualTo("'cond' was given other memory since the capture (set_, or a resize_ that reallocated it)");
        }
    }
}
