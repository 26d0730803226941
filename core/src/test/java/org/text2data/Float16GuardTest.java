package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowable;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Stream;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * A float16 base step whose update overflows is refused before anything changes: the parameters, their
 * gradients, the optimizer's state (moments, step counts, momentum buffers) and its learning rate are as
 * they were, for every base optimizer; and the check does not change a step it lets through. The base
 * step is taken with {@link Constraint#stepBase()} on gradients set by hand (the projection plays no part).
 */
class Float16GuardTest {
    /**
     * A learning rate at which every optimizer's update (about lr, or lr times the gradient) takes the float16
     * parameter's -5e4 past -65504; below 65504 itself, which libtorch's SGD cannot convert to float16.
     */
    private static final double HUGE = 5e4;
    private static final double SANE = 0.1;

    static Stream<Arguments> optimizers() {
        return Stream.of(
                Arguments.of(OptimizerSpec.adam(SANE)),
                Arguments.of(OptimizerSpec.adamw(SANE)),
                Arguments.of(OptimizerSpec.sgd(SANE).momentum(0.9)),
                Arguments.of(OptimizerSpec.rmsprop(SANE)),
                Arguments.of(OptimizerSpec.adagrad(SANE)));
    }

    /**
     * A float16 parameter and a float32 one, the same values each time; the float16 parameter's small
     * values show the sane steps (float16's spacing at 5e4 is 32), its -5e4 overflows at {@link #HUGE}.
     */
    private static Map<String, Tensor> params() {
        Map<String, Tensor> named = new LinkedHashMap<>();
        named.put("head.w", torch.tensor(1.0f, 2.0f, -5e4f, 0.5f).to(torch.ScalarType.Half).requires_grad_(true));
        named.put("body.b", torch.tensor(0.25f, -3.0f).requires_grad_(true));
        return named;
    }

    /**
     * Sets every parameter's gradient to {@code scale} times a fixed pattern without zeros (a zero gradient
     * is 0 / 0 in float16 Adam, whose eps rounds to 0), in the parameter's dtype.
     */
    private static void grads(Map<String, Tensor> named, double scale) {
        try (PointerScope scope = new PointerScope()) {
            for (Tensor p : named.values()) {
                Tensor g = torch.linspace(new org.bytedeco.pytorch.Scalar(0.5), new org.bytedeco.pytorch.Scalar(1.5),
                        p.numel()).mul(new org.bytedeco.pytorch.Scalar(scale)).to(p.scalar_type());
                g.retainReference();
                p.mutable_grad().put(g);
            }
        }
    }

    private static Constraint constraint(Map<String, Tensor> named, OptimizerSpec spec) {
        return new Constraint(named, spec, 1, 1, Engine.PLAIN);
    }

    /** The two optimizers hold the same state, bit for bit, and the same learning rates. */
    private static void assertSameState(Constraint a, Constraint b) {
        try (Checkpoint.OptimizerState sa = Checkpoint.readOptimizer(a.baseOptimizer(), 2);
             Checkpoint.OptimizerState sb = Checkpoint.readOptimizer(b.baseOptimizer(), 2)) {
            assertSameState(sa, sb);
        }
    }

    private static void assertSameState(Checkpoint.OptimizerState sa, Checkpoint.OptimizerState sb) {
        assertThat(sa.groups()).extracting(Checkpoint.Group::lr).isEqualTo(sb.groups().stream().map(Checkpoint.Group::lr).toList());
        for (int i = 0; i < sa.perParam().size(); i++) {
            assertSameState(sa.perParam().get(i), sb.perParam().get(i), i);
        }
    }

    private static void assertSameState(Checkpoint.ParamState x, Checkpoint.ParamState y, int i) {
        assertThat(x == null).as("parameter %d has no state", i).isEqualTo(y == null);
        if (x != null) {
            assertThat(x.ints()).as("parameter %d", i).isEqualTo(y.ints());
            assertThat(x.tensors().keySet()).as("parameter %d", i).isEqualTo(y.tensors().keySet());
            x.tensors().forEach((k, t) -> assertThat(torch.equal(t, y.tensors().get(k)))
                    .as("state '%s' of parameter %d", k, i).isTrue());
        }
    }

    @ParameterizedTest
    @MethodSource("optimizers")
    void aRefusedFirstStepLeavesNoOptimizerState(OptimizerSpec spec) {
        Map<String, Tensor> named = params();
        Map<String, Tensor> twinNamed = params();
        try (Constraint opt = constraint(named, spec.lr(HUGE)); Constraint twin = constraint(twinNamed, spec);
             Checkpoint.OptimizerState s0 = Checkpoint.readOptimizer(opt.baseOptimizer(), 2)) {
            if (spec.type() != OptimizerSpec.Type.ADAGRAD) { // Adagrad makes its state (zero sums) when built
                assertThat(s0.perParam()).as("a new optimizer's state").containsOnlyNulls();
            }
            grads(named, 1.0);
            Map<String, Tensor> before = TestModels.snapshot(named);
            Map<String, Tensor> gradsBefore = new LinkedHashMap<>();
            named.forEach((k, v) -> gradsBefore.put(k, v.grad().clone()));
            Throwable refused = catchThrowable(opt::stepBase);
            assertThat(refused).isInstanceOf(NonFiniteException.class);
            try (Checkpoint.OptimizerState s = Checkpoint.readOptimizer(opt.baseOptimizer(), 2)) {
                assertSameState(s, s0); // no state where there was none: no moments, no step count
            }
            assertThat(opt.lr()).isEqualTo(HUGE);
            TestModels.assertUnchanged(named, before); // the float32 parameter too
            named.forEach((k, v) -> assertThat(torch.equal(v.grad(), gradsBefore.get(k))).as("gradient of %s", k).isTrue());
            assertThat(refused).hasMessageContaining("step 1").hasMessageContaining("float16 parameter 'head.w'")
                    .hasMessageContaining("nothing was updated");
            // the next step, at a sane rate and with other gradients, is a fresh optimizer's first step
            opt.setLr(SANE);
            grads(named, 0.25);
            opt.stepBase();
            grads(twinNamed, 0.25);
            twin.stepBase();
            TestModels.assertUnchanged(named, twinNamed);
            assertSameState(opt, twin);
        }
    }

    @ParameterizedTest
    @MethodSource("optimizers")
    void aRefusedLaterStepLeavesTheOptimizerStateAndLearningRateAsTheyWere(OptimizerSpec spec) {
        Map<String, Tensor> named = params();
        Map<String, Tensor> twinNamed = params();
        try (Constraint opt = constraint(named, spec); Constraint twin = constraint(twinNamed, spec)) {
            grads(named, 1.0);
            opt.stepBase();
            opt.setLr(HUGE);
            grads(named, 1.0);
            Map<String, Tensor> before = TestModels.snapshot(named);
            try (Checkpoint.OptimizerState s1 = Checkpoint.readOptimizer(opt.baseOptimizer(), 2)) {
                assertThat(s1.perParam()).as("state after a good step").doesNotContainNull();
                Throwable refused = catchThrowable(opt::stepBase);
                assertThat(refused).isInstanceOf(NonFiniteException.class);
                try (Checkpoint.OptimizerState s2 = Checkpoint.readOptimizer(opt.baseOptimizer(), 2)) {
                    assertSameState(s2, s1);
                }
                assertThat(opt.lr()).isEqualTo(HUGE);
                TestModels.assertUnchanged(named, before);
                assertThat(refused).hasMessageContaining("step 2").hasMessageContaining("'head.w'");
            }
            // on from there, as if the refused step had never been tried
            opt.setLr(SANE);
            grads(named, 0.25);
            opt.stepBase();
            grads(twinNamed, 1.0);
            twin.stepBase();
            grads(twinNamed, 0.25);
            twin.stepBase();
            TestModels.assertUnchanged(named, twinNamed);
            assertSameState(opt, twin);
        }
    }

    @ParameterizedTest
    @MethodSource("optimizers")
    void theCheckDoesNotChangeTheStepsItLetsThrough(OptimizerSpec spec) {
        Map<String, Tensor> checked = params();
        Map<String, Tensor> unchecked = params();
        try (Constraint a = constraint(checked, spec); Constraint b = constraint(unchecked, spec)) {
            b.setCheckFinite(false);
            double[] scales = {1.0, -0.5, 0.25, 2.0};
            for (int s = 0; s < scales.length; s++) {
                double lr = s == 2 ? SANE / 4 : SANE; // a learning rate set between steps reaches the check's step too
                a.setLr(lr);
                b.setLr(lr);
                grads(checked, scales[s]);
                grads(unchecked, scales[s]);
                a.stepBase();
                b.stepBase();
                TestModels.assertUnchanged(checked, unchecked);
                assertSameState(a, b);
            }
        }
    }

    @ParameterizedTest
    @MethodSource("optimizers")
    void aParameterWithoutGradientIsLeftAlone(OptimizerSpec spec) {
        Map<String, Tensor> named = params();
        try (Constraint opt = constraint(named, spec.lr(HUGE));
             Checkpoint.OptimizerState s0 = Checkpoint.readOptimizer(opt.baseOptimizer(), 2)) {
            grads(named, 1.0);
            named.get("head.w").mutable_grad().put(new Tensor()); // only the float32 one has a gradient: it may step
            Map<String, Tensor> before = TestModels.snapshot(named);
            opt.stepBase();
            assertThat(torch.equal(named.get("head.w").detach(), before.get("head.w"))).isTrue();
            assertThat(torch.equal(named.get("body.b").detach(), before.get("body.b"))).isFalse();
            try (Checkpoint.OptimizerState s = Checkpoint.readOptimizer(opt.baseOptimizer(), 2)) {
                assertSameState(s.perParam().get(0), s0.perParam().get(0), 0); // the float16 one, without gradient
                assertThat(s.perParam().get(1)).as("state of the float32 parameter").isNotNull();
            }
        }
    }

    @org.junit.jupiter.api.Test
    void aStepThatLibtorchRefusesChangesNothing() {
        // SGD cannot convert a learning rate beyond float16's range to float16; the float32 parameter comes first
        Map<String, Tensor> named = new LinkedHashMap<>();
        Map<String, Tensor> p = params();
        named.put("body.b", p.get("body.b"));
        named.put("head.w", p.get("head.w"));
        try (Constraint opt = constraint(named, OptimizerSpec.sgd(1e6).momentum(0.9));
             Checkpoint.OptimizerState s0 = Checkpoint.readOptimizer(opt.baseOptimizer(), 2)) {
            grads(named, 1.0);
            Map<String, Tensor> before = TestModels.snapshot(named);
            assertThatThrownBy(opt::stepBase).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("step 1").hasMessageContaining("sgd").hasMessageContaining("Half")
                    .hasMessageContaining("nothing was updated").hasMessageNotContaining("frame #");
            TestModels.assertUnchanged(named, before);
            try (Checkpoint.OptimizerState s = Checkpoint.readOptimizer(opt.baseOptimizer(), 2)) {
                assertSameState(s, s0);
            }
        }
    }
}
