package org.text2data.demo;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.text2data.train.TrainingListener;

/** The listener the demo hands to each finetune passes on every call, warnings included, under the method's name. */
class DemoListenerTest {

    @Test
    void stepsEvaluationsAndWarningsReachTheDemosListenerUnderTheMethodsName() {
        List<String> got = new ArrayList<>();
        TrainingListener outer = new TrainingListener() {
            @Override
            public void onStep(String stage, long step, long totalSteps, double g, double f) {
                got.add("step " + stage + " " + step + "/" + totalSteps + " " + g + " " + f);
            }

            @Override
            public void onEval(String stage, long step, double score) {
                got.add("eval " + stage + " " + step + " " + score);
            }

            @Override
            public void onWarning(String stage, long step, String message) {
                got.add("warning " + stage + " " + step + " " + message);
            }
        };
        TrainingListener named = Demo.named("pretrain_finetune", outer);
        named.onStep("finetune", 3, 10, 0.5, 0.25);
        named.onEval("finetune", 5, 0.75);
        named.onWarning("finetune", 7, "g runs away");
        assertThat(got).containsExactly("step pretrain_finetune 3/10 0.5 0.25", "eval pretrain_finetune 5 0.75",
                "warning pretrain_finetune 7 g runs away");
    }
}
