package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/** The reference's API surface beyond runStep: steps by hand, step(closure), param groups, diagnostics. */
class ConstraintApiTest {
    private static final double G = 1.241462456078726;

    private static Tensor leaf(double... v) {
        return Tensor.create(v).requires_grad_(true);
    }

    @Test
    void stepWithClosureEqualsRunStep() {
        try (TorchScriptModel a = TestModels.model(); TorchScriptModel b = TestModels.model(); Batch batch = TestModels.batch();
             Constraint optA = new Constraint(a.namedParameters(), OptimizerSpec.adam(0.01), 1, 1, Engine.PLAIN);
             Constraint optB = new Constraint(b.namedParameters(), OptimizerSpec.adam(0.01), 1, 1, Engine.PLAIN)) {
            for (int s = 0; s < 3; s++) {
                Text2Data.runStep(optA, G, a, batch.cond(), batch.data(), batch.label(), Loss.MSE).close();
                optB.zeroGrad();
                Tensor g = Loss.MSE.apply(b.forward(batch.data(), null), batch.label());
                g.backward();
                optB.step(() -> {
                    Tensor f = Loss.MSE.apply(b.forward(batch.data(), batch.cond()), batch.label());
                    f.backward();
                    return f;
                }, g.item_double(), G);
            }
            TestModels.assertUnchanged(a.namedParameters(), b.namedParameters());
        }
    }

    @Test
    void handStepsFollowTheFormula() {
        // one tensor, alpha = 2, beta = 1, g - gc = 0.5: phi = min(1, |c|^2 = 2) = 1
        Tensor p = leaf(0, 0);
        try (Constraint opt = new Constraint(List.of(p), OptimizerSpec.sgd(0.1), 2, 1, Engine.PLAIN)) {
            p.mutable_grad().put(Tensor.create(1.0, 1.0));
            opt.firstStep(true);
            assertThat(p.grad().sum().item_double()).isZero(); // zeroed in place, still defined
            p.grad().copy_(Tensor.create(-1.0, 0.0));          // <g, c> = -1
            assertThat(opt.secondStep(1.5, 1.0)).isEqualTo(1);
            // lam = (1 - (-1)) / (1e-8 + 2) ~ 1: g = (-1, 0) + lam (1, 1)
            double lam = 2 / (1e-8 + 2);
            assertThat(p.grad().select(0, 0).item_double()).isCloseTo(-1 + lam, within(1e-15));
            assertThat(p.grad().select(0, 1).item_double()).isCloseTo(lam, within(1e-15));
            opt.stepBase();
            assertThat(p.detach().select(0, 1).item_double()).isCloseTo(-0.1 * lam, within(1e-15));
        }
    }

    @Test
    void aParameterWithoutAnUnconditionalGradientIsNotProjected() {
        Tensor used = leaf(1, 2);
        Tensor condOnly = leaf(3);
        try (Constraint opt = new Constraint(List.of(used, condOnly), OptimizerSpec.sgd(0.1), 1, 1, Engine.PLAIN)) {
            used.mutable_grad().put(Tensor.create(1.0, 0.0));
            opt.firstStep(true); // condOnly has no gradient here: the reference would raise KeyError later
            used.grad().copy_(Tensor.create(-1.0, 0.0));
            condOnly.mutable_grad().put(Tensor.create(5.0));
            assertThat(opt.secondStep(10, 0)).isEqualTo(1);
            assertThat(condOnly.grad().item_double()).isEqualTo(5.0);
        }
    }

    @Test
    void secondStepBeforeFirstStepIsAnError() {
        Tensor p = leaf(1);
        try (Constraint opt = new Constraint(List.of(p), OptimizerSpec.sgd(0.1))) {
            assertThatThrownBy(() -> opt.secondStep(1, 1)).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("before firstStep");
        }
    }

    @Test
    void nonFiniteGradientNamesTheParameter() {
        Tensor w = leaf(1, 1);
        Map<String, Tensor> named = new LinkedHashMap<>();
        named.put("encoder.w", w);
        try (Constraint opt = new Constraint(named, OptimizerSpec.sgd(0.1), 1, 1, Engine.PLAIN)) {
            w.mutable_grad().put(Tensor.create(1.0, 1.0));
            opt.firstStep(true);
            w.grad().copy_(Tensor.create(Double.NaN, 0.0));
            assertThatThrownBy(() -> opt.secondStep(2, 1)).isInstanceOf(NonFiniteException.class)
                    .hasMessageContaining("parameter 'encoder.w'").hasMessageContaining("NaN");
            assertThat(w.detach().sum().item_double()).isEqualTo(2.0);
        }
    }

    @Test
    void learningRateChangesReachTheBaseOptimizer() {
        Tensor p = leaf(0);
        try (Constraint opt = new Constraint(List.of(p), OptimizerSpec.sgd(0.1))) {
            assertThat(opt.paramGroups()).hasSize(1);
            assertThat(opt.lr()).isEqualTo(0.1);
            opt.paramGroups().get(0).setLr(0.5);
            assertThat(opt.lr()).isEqualTo(0.5);
            p.mutable_grad().put(Tensor.create(1.0));
            opt.stepBase();
            assertThat(p.detach().item_double()).isEqualTo(-0.5);
            opt.setLr(0.25);
            opt.stepBase();
            assertThat(p.detach().item_double()).isEqualTo(-0.75);
        }
    }

    @Test
    void adamWithCustomBetasFollowsPyTorchsFormula() {
        double lr = 0.1, b1 = 0.5, b2 = 0.8, eps = 1e-8;
        Tensor p = leaf(0);
        try (Constraint opt = new Constraint(List.of(p), OptimizerSpec.adam(lr).betas(b1, b2))) {
            double m = 0, v = 0, x = 0;
            double[] grads = {1.0, -2.0, 0.5};
            for (int t = 1; t <= grads.length; t++) {
                p.mutable_grad().put(Tensor.create(grads[t - 1]));
                opt.stepBase();
                m = b1 * m + (1 - b1) * grads[t - 1];
                v = b2 * v + (1 - b2) * grads[t - 1] * grads[t - 1];
                double denom = Math.sqrt(v) / Math.sqrt(1 - Math.pow(b2, t)) + eps;
                x -= lr / (1 - Math.pow(b1, t)) * m / denom;
                assertThat(p.detach().item_double()).as("step %d", t).isCloseTo(x, within(1e-12));
            }
        }
    }

    @Test
    void everyBaseOptimizerSteps() {
        for (OptimizerSpec spec : List.of(OptimizerSpec.sgd(0.1).momentum(0.9).nesterov(true),
                OptimizerSpec.adam(0.1).amsgrad(true), OptimizerSpec.adamw(0.1).weightDecay(0.1),
                OptimizerSpec.rmsprop(0.1).momentum(0.5).centered(true), OptimizerSpec.adagrad(0.1).lrDecay(0.01))) {
            Tensor p = leaf(1, -1);
            try (Constraint opt = new Constraint(List.of(p), spec)) {
                p.mutable_grad().put(Tensor.create(1.0, 1.0));
                opt.stepBase();
                assertThat(p.detach().select(0, 0).item_double()).as(spec.toString()).isLessThan(1.0);
            }
        }
        assertThatThrownBy(() -> OptimizerSpec.adam(0.1).betas(1.0, 0.9)).hasMessageContaining("betas");
        assertThatThrownBy(() -> OptimizerSpec.sgd(-1)).hasMessageContaining("lr must be a finite number >= 0");
        assertThatThrownBy(() -> new Constraint(List.of(leaf(1)), OptimizerSpec.sgd(0.1).nesterov(true)))
                .hasMessageContaining("nesterov needs a positive momentum");
    }

    @Test
    void gradNormPerLayerSumsWeightAndBias() {
        Tensor w1 = leaf(3, 4), b1 = leaf(0), w2 = leaf(1);
        try (Constraint opt = new Constraint(List.of(w1, b1, w2), OptimizerSpec.sgd(0.1))) {
            w1.mutable_grad().put(Tensor.create(3.0, 4.0));
            b1.mutable_grad().put(Tensor.create(-2.0));
            Map<Integer, Double> norms = opt.gradNormPerLayer();
            assertThat(norms).containsEntry(0, 7.0).containsEntry(1, 0.0);
        }
    }

    @Test
    void lambdaModelsAndEveryLossWork() {
        Tensor w = leaf(0.5, -0.5);
        ConditionalModel model = (x, c) -> c == null ? x.mul(w) : x.mul(w).add(c);
        Tensor x = Tensor.create(new double[] {1, 2, 3, 4}, 2, 2);
        Tensor c = Tensor.create(new double[] {0.1, 0.2, 0.3, 0.4}, 2, 2);
        for (Loss loss : List.of(Loss.MSE, Loss.L1, Loss.SMOOTH_L1, Loss.CROSS_ENTROPY)) {
            Tensor y = loss == Loss.CROSS_ENTROPY ? Tensor.create(0L, 1L) : Tensor.create(new double[] {0, 1, 1, 0}, 2, 2);
            try (Constraint opt = new Constraint(List.of(w), OptimizerSpec.sgd(0.01));
                 StepResult r = Text2Data.runStep(opt, 0.1, model, c, x, y, loss)) {
                assertThat(r.projectedTensors()).isEqualTo(1);
                assertThat(r.uncondLoss()).isFinite();
                assertThat(r.condLoss()).isFinite();
            }
        }
        Tensor badLabels = Tensor.create(0L, 1L, 1L);
        assertThatThrownBy(() -> Loss.CROSS_ENTROPY.apply(x, badLabels)).hasMessageContaining("class-index labels must have shape [2]");
        assertThatThrownBy(() -> Loss.named("huber")).hasMessageContaining("unknown loss 'huber'");
    }

}
