package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.text2data.TestModels.assertSameTensors;
import static org.text2data.TestModels.maxDiff;
import static org.text2data.TestModels.step;

import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;
import org.text2data.engine.Engines;

/**
 * The fused engine's runStep releases the gradients instead of zeroing them (each backward pass hands its buffers
 * over), and must give the values of zeroing them, as the reference does with PyTorch 1.13's zero_grad: a parameter
 * that only the unconditional pass reaches is still projected and stepped (its gradient is a kept zero), one that only
 * the conditional pass reaches is stepped unprojected from its second step on (a kept zero c), one that no pass
 * reaches is never stepped. Held to the plain engine, which zeroes, step by step: parameters, gradients (defined or
 * not, and their values) and the count of projected tensors.
 */
class ReleasedGradientsTest {

    @BeforeAll
    static void nativeLibraryLoads() {
        assertThat(Engines.fusedAvailable()).as(String.valueOf(Engines.fusedUnavailableReason())).isTrue();
    }

    /** W in both passes, nullEmb only in the unconditional one, condW only in the conditional one, unused in none. */
    private static TestModels.SmallModel model() {
        return new TestModels.SmallModel(ScalarType.Double);
    }

    private static Batch batch() {
        return TestModels.randomBatch("cpu", ScalarType.Double, 16, 4, 3);
    }

    @ParameterizedTest
    @ValueSource(strings = {"fused adam", "libtorch adam", "fused sgd", "libtorch sgd"})
    void releasedGradientsGiveTheValuesOfZeroedOnes(String setUp) {
        OptimizerSpec spec = setUp.endsWith("adam") ? OptimizerSpec.adam(0.05)
                : OptimizerSpec.sgd(0.05).momentum(0.9).weightDecay(0.01);
        boolean fusedOptimizer = setUp.startsWith("fused");
        try (Batch in = batch();
             TestModels.SmallModel fm = model(); TestModels.SmallModel pm = model();
             Constraint released = new Constraint(fm.params, spec.fused(fusedOptimizer), 1.0, 1.0, Engine.FUSED);
             Constraint zeroed = new Constraint(pm.params, spec.fused(false), 1.0, 1.0, Engine.PLAIN)) {
            assertThat(released.isFused()).isEqualTo(fusedOptimizer);
            double gc;
            try (StepResult r = step(zeroed, 0.0, pm, in)) {
                gc = 0.9 * r.uncondLoss(); // active in some steps; both sides take this first step alike
            }
            step(released, 0.0, fm, in).close();
            List<String> names = new ArrayList<>(fm.params.keySet());
            int projectedBoth = 0;
            for (int step = 0; step < 12; step++) {
                int a;
                int b;
                try (StepResult r = step(released, gc, fm, in)) {
                    a = r.projectedTensors();
                }
                try (StepResult r = step(zeroed, gc, pm, in)) {
                    b = r.projectedTensors();
                }
                assertThat(a).as("step %d: tensors projected", step).isEqualTo(b);
                projectedBoth += a;
                assertSameTensors(setUp + ", step " + step, fm.params, pm.params, 1e-12);
            }
            // the cases the test is about happened: nullEmb stepped though the conditional pass never reaches it,
            // unused never stepped, and the projection ran
            assertThat(projectedBoth).isPositive();
            try (TestModels.SmallModel start = model()) {
                assertThat(maxDiff(fm.params.get("nullEmb"), start.params.get("nullEmb"))).isGreaterThan(1e-6);
                assertThat(maxDiff(fm.params.get("unused"), start.params.get("unused"))).isZero();
                assertThat(fm.params.get("unused").grad().defined()).isFalse();
                assertThat(fm.params.get("nullEmb").grad().defined()).isTrue();
            }
        }
    }

    /**
     * Data parallelism: the sync averages every gradient that exists with the other processes' (here: one other
     * process whose gradients are all ones), so a gradient this process's pass did not reach must exist, zero, to
     * receive the average, as with zeroing. condW is not reached by the unconditional pass from step 2 on.
     */
    @Test
    void withAGradientSyncTheStepsAreThoseOfZeroing() {
        GradientSync otherProcessAllOnes = TestModels.otherProcessAllOnes();
        try (Batch in = batch();
             TestModels.SmallModel fm = model(); TestModels.SmallModel pm = model();
             Constraint fused = new Constraint(fm.params, OptimizerSpec.adam(0.05), 1.0, 1.0, Engine.FUSED);
             Constraint plain = new Constraint(pm.params, OptimizerSpec.adam(0.05), 1.0, 1.0, Engine.PLAIN)) {
            fused.setGradientSync(otherProcessAllOnes);
            plain.setGradientSync(otherProcessAllOnes);
            for (int step = 0; step < 6; step++) {
                int a;
                int b;
                try (StepResult r = step(fused, 0.5, fm, in)) {
                    a = r.projectedTensors();
                }
                try (StepResult r = step(plain, 0.5, pm, in)) {
                    b = r.projectedTensors();
                }
                assertThat(a).as("step %d: tensors projected", step).isEqualTo(b);
                for (String n : fm.params.keySet()) {
                    assertThat(maxDiff(fm.params.get(n), pm.params.get(n))).as("step %d, %s", step, n)
                            .isLessThanOrEqualTo(1e-12);
                }
            }
        }
    }

    @Test
    void aStepThatFailsMidwayLeavesTheZeroingProtocolForTheCallsThatFollow() {
        try (Batch in = batch();
             TestModels.SmallModel m = model();
             Constraint opt = new Constraint(m.params, OptimizerSpec.adam(0.05), 1.0, 1.0, Engine.FUSED)) {
            step(opt, 0.0, m, in).close();
            ConditionalModel failing = (x, c) -> {
                if (c != null) {
                    throw new IllegalStateException("conditional pass failed");
                }
                return m.forward(x, null);
            };
            assertThatThrownBy(() -> step(opt, 0.0, failing, in)).hasMessageContaining("conditional pass failed");
            // by hand, as the reference does it: zero_grad, backward, first_step(zero_grad=True), whose gradients
            // must now be zeroed and kept, not released
            try (PointerScope scope = new PointerScope()) {
                opt.zeroGrad();
                Loss.MSE.apply(m.forward(in.data(), null), in.label()).backward();
                opt.firstStep(true);
                for (String n : List.of("W", "nullEmb")) {
                    Tensor g = m.params.get(n).grad();
                    assertThat(g.defined()).as(n).isTrue();
                    assertThat(g.abs().max().item_double()).as(n).isZero();
                }
            }
        }
    }
    /**
     * A step refused before its first pass (a NaN loss) leaves every gradient that existed defined and zero, as the
     * plain engine's zeroing does: a parameter that no later pass reaches is still stepped by Adam's momentum, on
     * both engines alike. (Before, the refused step left such gradients released and forgot which had existed, and
     * the fused engine stopped stepping them: 0.08 off the plain engine three steps later.)
     */
    @Test
    void aRefusedStepLeavesTheGradientsThatZeroingLeaves() {
        try (Batch in = batch();
             TestModels.SmallModel fm = model(); TestModels.SmallModel pm = model();
             Constraint released = new Constraint(fm.params, OptimizerSpec.adam(0.05), 1.0, 1.0, Engine.FUSED);
             Constraint zeroed = new Constraint(pm.params, OptimizerSpec.adam(0.05), 1.0, 1.0, Engine.PLAIN);
             PointerScope scope = new PointerScope()) {
            boolean[] gate = {true}; // while on, 'unused' is reached by both passes
            ConditionalModel fg = (x, c) -> gate[0] ? fm.forward(x, c).add(fm.params.get("unused").sum()) : fm.forward(x, c);
            ConditionalModel pg = (x, c) -> gate[0] ? pm.forward(x, c).add(pm.params.get("unused").sum()) : pm.forward(x, c);
            step(released, 0.0, fg, in).close();
            step(zeroed, 0.0, pg, in).close();
            Tensor nanLabel = in.label().clone();
            nanLabel.select(0, 0).select(0, 0).fill_(new org.bytedeco.pytorch.Scalar(Double.NaN));
            Batch bad = new Batch(in.data(), in.cond(), nanLabel);
            assertThatThrownBy(() -> step(released, 0.0, fg, bad)).isInstanceOf(NonFiniteException.class);
            assertThatThrownBy(() -> step(zeroed, 0.0, pg, bad)).isInstanceOf(NonFiniteException.class);
            for (String n : fm.params.keySet()) {
                Tensor f = fm.params.get(n).grad();
                Tensor p = pm.params.get(n).grad();
                assertThat(f.defined()).as("after the refused step: gradient of %s defined", n).isEqualTo(p.defined());
                if (p.defined()) {
                    assertThat(maxDiff(f, p)).as("after the refused step: gradient of %s", n).isZero();
                }
            }
            gate[0] = false;
            for (int k = 0; k < 3; k++) {
                step(released, 0.0, fg, in).close();
                step(zeroed, 0.0, pg, in).close();
            }
            for (String n : fm.params.keySet()) {
                assertThat(maxDiff(fm.params.get(n), pm.params.get(n))).as("parameter %s, three steps later", n)
                        .isLessThanOrEqualTo(1e-12);
            }
        }
    }
}
