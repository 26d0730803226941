package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.text2data.train.Finetuning;
import org.text2data.train.LossSurvey;
import org.text2data.train.Pretraining;
import org.text2data.train.TrainConfig;
import org.text2data.train.TrainingListener;

/** The method end to end: the demo's report and plots, its determinism, estimate-g, and bad input. */
class DemoTest {

    @Test
    void quickDemoWritesTheSameReportTwice(@TempDir Path tmp) throws Exception {
        CliTest.Run a = CliTest.cli("demo", "--quick", "--out", tmp.resolve("a").toString());
        assertThat(a.code()).as(a.err()).isZero();
        CliTest.Run b = CliTest.cli("demo", "--quick", "--out", tmp.resolve("b").toString(),
                "--report", tmp.resolve("b-report.json").toString());
        assertThat(b.code()).as(b.err()).isZero();
        String ra = Files.readString(tmp.resolve("a").resolve("report.json"));
        String rb = Files.readString(tmp.resolve("b-report.json"));
        assertThat(ra).isEqualTo(rb);
        JsonObject methods = JsonParser.parseString(ra).getAsJsonObject().getAsJsonObject("methods");
        assertThat(methods.keySet()).containsExactly("conditional_only", "pretrain_finetune", "text2data");
        for (String m : methods.keySet()) {
            JsonObject r = methods.getAsJsonObject(m);
            assertThat(r.get("controllability_error").getAsDouble()).isFinite().isPositive();
            assertThat(r.get("quality_distance").getAsDouble()).isFinite();
        }
        assertThat(methods.getAsJsonObject("text2data").get("max_g_over_g_constraint").getAsDouble()).isPositive();
        assertThat(Files.size(tmp.resolve("a").resolve("training.png"))).isPositive();
        assertThat(Files.size(tmp.resolve("a").resolve("samples.png"))).isPositive();
        assertThat(a.out()).contains("text2data").contains("controllability error");
        assertThat(a.err()).contains("pretrain");
    }

    @Test
    void badDemoFlagsWriteNothing(@TempDir Path tmp) {
        Path out = tmp.resolve("o");
        for (String[] args : List.of(new String[] {"--relax", "0"}, new String[] {"--relax", "NaN"},
                new String[] {"--relax", "-1"}, new String[] {"--labelled", "0"}, new String[] {"--quick", "--full"},
                new String[] {"--frobnicate"})) {
            String[] all = new String[args.length + 3];
            all[0] = "demo";
            System.arraycopy(args, 0, all, 1, args.length);
            all[args.length + 1] = "--out";
            all[args.length + 2] = out.toString();
            CliTest.Run r = CliTest.cli(all);
            assertThat(r.code()).as(String.join(" ", args)).isNotZero();
            assertThat(r.err()).as(String.join(" ", args)).isNotBlank();
            assertThat(out).as(String.join(" ", args)).doesNotExist();
        }
        assertThat(CliTest.cli("demo", "--relax", "0", "--out", out.toString()).err())
                .contains("relax factor must be a positive finite number, got 0.0");
        assertThat(CliTest.cli("demo", "--labelled", "0.0001", "--out", out.toString()).err())
                .contains("zero labelled examples");
    }

    @Test
    void unwritableOrCollidingDemoOutputsAreRefusedBeforeTraining(@TempDir Path tmp) throws Exception {
        Path file = Files.writeString(tmp.resolve("a-file"), "keep");
        Path dir = Files.createDirectory(tmp.resolve("out"));
        Map<String[], String> cases = new java.util.LinkedHashMap<>();
        cases.put(new String[] {"--out", file.toString()}, "--out " + file + " is a file, not a folder");
        cases.put(new String[] {"--out", file.resolve("sub").toString()}, "cannot create it, " + file + " is a file, not a folder");
        cases.put(new String[] {"--out", "/proc/t2d-demo"}, "--out /proc/t2d-demo: cannot write in /proc: ");
        cases.put(new String[] {"--out", dir.toString(), "--report", dir.resolve("training.png").toString()},
                "--report " + dir.resolve("training.png") + " is the file the demo writes its plot training.png to");
        cases.put(new String[] {"--out", dir.toString(), "--report", dir.toString()}, "cannot write " + dir + ": it is a folder");
        cases.put(new String[] {"--out", dir.toString(), "--report", "/dev/null"}, "cannot write /dev/null: it is not a regular file");
        for (Map.Entry<String[], String> c : cases.entrySet()) {
            String[] args = new String[c.getKey().length + 2];
            args[0] = "demo";
            args[1] = "--quick";
            System.arraycopy(c.getKey(), 0, args, 2, c.getKey().length);
            CliTest.Run r = CliTest.cli(args);
            assertThat(r.code()).as(String.join(" ", args)).isEqualTo(1);
            assertThat(r.err()).as(String.join(" ", args)).contains("error: ").contains(c.getValue())
                    .doesNotContain("pretrain"); // refused before any training
            assertThat(Files.readString(file)).isEqualTo("keep");
            try (var files = Files.list(tmp)) {
                assertThat(files.toList()).containsExactlyInAnyOrder(file, dir);
            }
            try (var files = Files.list(dir)) {
                assertThat(files.toList()).isEmpty();
            }
        }
    }

    @Test
    void estimateGReportsTheLossAndASuggestion() {
        CliTest.Run r = CliTest.cli("estimate-g", "--model", TestModels.fixture("adam-f64.model.pt").toString(),
                "--data", TestModels.fixture("adam-f64.batch.pt").toString(), "--relax", "1.1");
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("over 16 rows").contains("mean").contains("p90").contains("suggested --g-constraint");
        // the mean over rows of the per-row MSE equals the batch MSE: the fixture's first g value
        try (TorchScriptModel m = TestModels.model(); Batch b = TestModels.batch()) {
            LossSurvey s = LossSurvey.of(m, b, Loss.MSE, 5);
            assertThat(s.mean()).isCloseTo(1.241462456078726, org.assertj.core.data.Offset.offset(1e-12));
            assertThat(s.min()).isLessThanOrEqualTo(s.p10());
            assertThat(s.p90()).isLessThanOrEqualTo(s.max());
            assertThat(s.suggestedGConstraint(1.1)).isCloseTo(1.1 * s.mean(), org.assertj.core.data.Offset.offset(1e-12));
        }
        assertThat(CliTest.cli("estimate-g", "--model", "nope.pt", "--data", "nope.pt").err()).contains("nope.pt");
        CliTest.Run bad = CliTest.cli("estimate-g", "--model", TestModels.fixture("adam-f64.model.pt").toString(),
                "--data", TestModels.fixture("adam-f64.batch.pt").toString(), "--relax", "Infinity");
        assertThat(bad.code()).isNotZero();
        assertThat(bad.err()).contains("relax factor must be a positive finite number");
    }

    @Test
    void trainingApiRefusesEmptyOrUnlabelledData() {
        try (TorchScriptModel m = TestModels.model(); Batch b = TestModels.batch();
             Constraint opt = new Constraint(m.namedParameters(), OptimizerSpec.adam(1e-3))) {
            Batch empty = b.slice(0, 0);
            assertThatThrownBy(() -> Pretraining.run(opt, m, empty, Loss.MSE, new TrainConfig(),
                    org.text2data.train.BatchTransform.identity(), TrainingListener.NONE))
                    .hasMessageContaining("empty");
            assertThatThrownBy(() -> Finetuning.run(opt, 1, m, empty, Loss.MSE, new TrainConfig(), Finetuning.Mode.TEXT2DATA,
                    org.text2data.train.BatchTransform.identity(), null, TrainingListener.NONE))
                    .hasMessageContaining("no labelled examples");
            assertThatThrownBy(() -> Finetuning.run(opt, 1, m, Batch.unlabelled(b.data(), b.label()), Loss.MSE,
                    new TrainConfig(), Finetuning.Mode.TEXT2DATA, org.text2data.train.BatchTransform.identity(), null,
                    TrainingListener.NONE)).hasMessageContaining("no conditions");
            assertThatThrownBy(() -> Pretraining.relaxed(1, 0)).hasMessageContaining("relax factor");
            assertThatThrownBy(() -> new TrainConfig().epochs(0)).hasMessageContaining("epochs must be positive");
        }
    }

    @Test
    void finetuningStopsEarlyWhenTheEvaluationStopsImproving() {
        try (TorchScriptModel m = TestModels.model(); Batch b = TestModels.batch();
             Constraint opt = new Constraint(m.namedParameters(), OptimizerSpec.adam(0.01))) {
            Finetuning.Result r = Finetuning.run(opt, 1.2, m, b, Loss.MSE, new TrainConfig().epochs(100).batchSize(8)
                            .evalEvery(5).patience(2), Finetuning.Mode.TEXT2DATA,
                    org.text2data.train.BatchTransform.identity(), model -> 1.0, TrainingListener.NONE);
            assertThat(r.stoppedEarly()).isTrue();
            assertThat(r.evals()).hasSize(3);
            assertThat(r.steps()).hasSize(15);
            assertThat(opt.lr()).isEqualTo(0.01); // the schedule's changes do not outlive the loop
        }
    }

    @Test
    void finetuningKeepsTheConstraintAndPlainFinetuningDoesNot() {
        // a conflict by construction: the unconditional prediction w*x wants w = 1, the conditional one
        // w*x + cond (cond = 1) wants w = 0; starting from w = 1, g = 0 and f = 1
        double[] lastG = new double[2];
        double[] maxRatio = new double[2];
        for (Finetuning.Mode mode : Finetuning.Mode.values()) {
            org.bytedeco.pytorch.Tensor w = org.bytedeco.pytorch.Tensor.create(1.0).requires_grad_(true);
            ConditionalModel model = (x, c) -> c == null ? x.mul(w) : x.mul(w).add(c);
            org.bytedeco.pytorch.Tensor ones = org.bytedeco.pytorch.global.torch.ones(8, 1)
                    .to(org.bytedeco.pytorch.global.torch.ScalarType.Double);
            Batch b = new Batch(ones, ones, ones);
            try (Constraint opt = new Constraint(java.util.List.of(w), OptimizerSpec.sgd(0.1))) {
                Finetuning.Result r = Finetuning.run(opt, 0.01, model, b, Loss.MSE, new TrainConfig().epochs(60),
                        mode, org.text2data.train.BatchTransform.identity(), null, TrainingListener.NONE);
                assertThat(r.steps()).hasSize(60);
                lastG[mode.ordinal()] = r.steps().get(59).g();
                maxRatio[mode.ordinal()] = r.maxGRatio();
                assertThat(r.steps().get(59).f()).isLessThan(r.steps().get(0).f());
            }
        }
        int t2d = Finetuning.Mode.TEXT2DATA.ordinal();
        int plain = Finetuning.Mode.PLAIN.ordinal();
        assertThat(lastG[plain]).as("plain finetuning gives the unconditional loss up").isGreaterThan(0.5);
        assertThat(lastG[t2d]).as("Text2Data holds it near g_constraint = 0.01").isLessThan(0.05);
        assertThat(maxRatio[t2d]).isLessThan(maxRatio[plain]);
    }
}
