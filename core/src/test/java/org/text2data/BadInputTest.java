package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Map;

import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Every bad input gets a clear exception and changes nothing: parameters stay bitwise equal, and the
 * optimizer state is untouched (the next good step lands exactly where it would have without the bad one).
 */
class BadInputTest {
    private static final double G = 1.241462456078726;

    private TorchScriptModel model;
    private Batch batch;
    private Constraint opt;
    private int goodSteps;

    @BeforeEach
    void setUp() {
        model = TestModels.model();
        batch = TestModels.batch();
        opt = new Constraint(model.namedParameters(), OptimizerSpec.adam(0.01), 1, 1, Engine.AUTO);
        // one good step first, so that the optimizer has state to protect
        Text2Data.runStep(opt, G, model, batch.cond(), batch.data(), batch.label(), Loss.MSE).close();
        goodSteps = 1;
    }

    @AfterEach
    void tearDown() {
        opt.close();
        model.close();
    }

    /** Runs {@code bad}, expects {@code type} with a message containing {@code words}, and checks nothing changed. */
    private void rejects(Runnable bad, Class<? extends Throwable> type, String... words) {
        Map<String, Tensor> before = TestModels.snapshot(model.namedParameters());
        assertThatThrownBy(bad::run).isInstanceOf(type).message().contains(words);
        TestModels.assertUnchanged(model.namedParameters(), before);
        // optimizer state untouched: the next step equals a step of a twin that never saw the bad input
        try (TorchScriptModel twin = TestModels.model();
             Constraint twinOpt = new Constraint(twin.namedParameters(), OptimizerSpec.adam(0.01), 1, 1, Engine.AUTO)) {
            goodSteps++;
            for (int i = 0; i < goodSteps; i++) {
                Text2Data.runStep(twinOpt, G, twin, batch.cond(), batch.data(), batch.label(), Loss.MSE).close();
            }
            Text2Data.runStep(opt, G, model, batch.cond(), batch.data(), batch.label(), Loss.MSE).close();
            TestModels.assertUnchanged(model.namedParameters(), twin.namedParameters());
        }
    }

    @Test
    void predictionLabelShapeMismatch() {
        Tensor label = batch.label().narrow(1, 0, 2);
        rejects(() -> Text2Data.runStep(opt, G, model, batch.cond(), batch.data(), label, Loss.MSE),
                IllegalArgumentException.class, "prediction shape [16, 4]", "label shape [16, 2]");
    }

    @Test
    void condBatchSizeMismatch() {
        Tensor cond = batch.cond().narrow(0, 0, 5);
        rejects(() -> Text2Data.runStep(opt, G, model, cond, batch.data(), batch.label(), Loss.MSE),
                IllegalArgumentException.class, "cond batch size 5", "data batch size 16");
    }

    @Test
    void labelBatchSizeMismatch() {
        Tensor label = batch.label().narrow(0, 0, 3);
        rejects(() -> Text2Data.runStep(opt, G, model, batch.cond(), batch.data(), label, Loss.MSE),
                IllegalArgumentException.class, "label batch size 3");
    }

    @Test
    void dtypeMismatchBetweenModelAndData() {
        Tensor data = batch.data().to(torch.ScalarType.Float);
        rejects(() -> Text2Data.runStep(opt, G, model, batch.cond(), data, batch.label(), Loss.MSE),
                IllegalArgumentException.class, "data is float32", "parameters are float64");
    }

    @Test
    void deviceMismatchBetweenModelAndLabel() {
        Tensor label = batch.label().to(new Device("meta"), torch.ScalarType.Double);
        rejects(() -> Text2Data.runStep(opt, G, model, batch.cond(), batch.data(), label, Loss.MSE),
                IllegalArgumentException.class, "label is on meta", "parameters are on cpu");
    }

    @Test
    void nanLossIsRefusedBeforeAnyUpdate() {
        Tensor label = batch.label().clone();
        label.select(0, 0).select(0, 0).fill_(new org.bytedeco.pytorch.Scalar(Double.NaN));
        rejects(() -> Text2Data.runStep(opt, G, model, batch.cond(), batch.data(), label, Loss.MSE),
                NonFiniteException.class, "unconditional loss is NaN");
    }

    @Test
    void infiniteDataIsRefusedBeforeAnyUpdate() {
        Tensor data = batch.data().clone();
        data.select(0, 3).fill_(new org.bytedeco.pytorch.Scalar(Double.POSITIVE_INFINITY));
        rejects(() -> Text2Data.runStep(opt, G, model, batch.cond(), data, batch.label(), Loss.MSE),
                NonFiniteException.class, "loss is");
    }

    @Test
    void negativeOrNonFiniteGConstraint() {
        rejects(() -> Text2Data.runStep(opt, -1, model, batch.cond(), batch.data(), batch.label(), Loss.MSE),
                IllegalArgumentException.class, "gConstraint must be a finite number >= 0, got -1.0");
        rejects(() -> Text2Data.runStep(opt, Double.NaN, model, batch.cond(), batch.data(), batch.label(), Loss.MSE),
                IllegalArgumentException.class, "gConstraint", "NaN");
        rejects(() -> Text2Data.runStep(opt, Double.POSITIVE_INFINITY, model, batch.cond(), batch.data(),
                batch.label(), Loss.MSE), IllegalArgumentException.class, "Infinity");
    }

    @Test
    void nullCondIsExplained() {
        rejects(() -> Text2Data.runStep(opt, G, model, null, batch.data(), batch.label(), Loss.MSE),
                IllegalArgumentException.class, "cond is null");
    }

    @Test
    void badAlphaBeta() {
        assertThatThrownBy(() -> opt.setAlpha(-0.5)).hasMessageContaining("alpha must be a finite number >= 0");
        assertThatThrownBy(() -> opt.setBeta(Double.NaN)).hasMessageContaining("beta must be a finite number >= 0");
        assertThatThrownBy(() -> new Constraint(model.parameters(), OptimizerSpec.adam(0.01), Double.POSITIVE_INFINITY, 1))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("alpha");
        assertThat(opt.alpha()).isEqualTo(1.0);
        assertThat(opt.beta()).isEqualTo(1.0);
    }

    @Test
    void useAfterClose() {
        opt.close();
        assertThatThrownBy(() -> Text2Data.runStep(opt, G, model, batch.cond(), batch.data(), batch.label(), Loss.MSE))
                .isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
        assertThatThrownBy(() -> opt.firstStep(true)).isInstanceOf(IllegalStateException.class);
        assertThatThrownBy(opt::baseOptimizer).isInstanceOf(IllegalStateException.class);
        opt.close(); // idempotent
        model.close();
        assertThatThrownBy(() -> model.forward(batch.data(), null)).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("closed");
    }
}
