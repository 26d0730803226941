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
        int blas = LibTorch.blasThreads();
        int threads = org.bytedeco.pytorch.global.torch.get_num_threads();
        CliTest.Run a = CliTest.cli("demo", "--quick", "--out", tmp.resolve("a").toString());
        assertThat(a.code()).as(a.err()).isZero();
        // the demo runs both pools on one thread, and gives them back as they were
        assertThat(LibTorch.blasThreads()).isEqualTo(blas);
        assertThat(org.bytedeco.pytorch.global.torch.get_num_threads()).isEqualTo(threads);
        CliTest.Run b = CliTest.cli("demo", "--quick", "--out", tmp.resolve("b").toString(),
                "--report", tmp.resolve("b-report.json").toString());
        assertThat(b.code()).as(b.err()).isZero();
        String ra = Files.readString(tmp.resolve("a").resolve("report.json"));
        String rb = Files.readString(tmp.resolve("b-report.json"));
        assertThat(ra).isEqualTo(rb);
        JsonObject report = JsonParser.parseString(ra).getAsJsonObject();
        JsonObject methods = report.getAsJsonObject("methods");
        assertThat(methods.keySet()).containsExactly("conditional_only", "pretrain_finetune", "text2data", "ceiling",
                "floor");
        int seeds = report.getAsJsonObject("config").get("seeds").getAsInt();
        for (String m : methods.keySet()) {
            JsonObject r = methods.getAsJsonObject(m);
            for (String key : List.of("unseen_accuracy", "seen_accuracy", "quality_mmd")) {
                JsonObject v = r.getAsJsonObject(key);
                assertThat(v.keySet()).as(m + " " + key).containsExactly("mean", "per_seed");
                assertThat(v.getAsJsonArray("per_seed")).hasSize(seeds);
                double mean = 0;
                for (var e : v.getAsJsonArray("per_seed")) {
                    mean += e.getAsDouble() / seeds;
                }
                assertThat(v.get("mean").getAsDouble()).as(m + " " + key).isCloseTo(mean,
                        org.assertj.core.data.Offset.offset(1e-12));
                if (!key.equals("quality_mmd")) {
                    assertThat(v.get("mean").getAsDouble()).isBetween(0.0, 1.0);
                }
            }
        }
        assertThat(methods.getAsJsonObject("text2data").getAsJsonObject("max_g_over_constraint")
                .get("mean").getAsDouble()).isPositive();
        for (var e : report.getAsJsonObject("estimator_validation_accuracy").entrySet()) {
            assertThat(e.getValue().getAsDouble()).as(e.getKey()).isGreaterThanOrEqualTo(0.95);
        }
        for (String plot : List.of("accuracy.png", "g.png", "samples.png")) {
            assertThat(Files.size(tmp.resolve("a").resolve(plot))).isPositive();
        }
        assertThat(a.out()).contains("text2data").contains("unseen combinations");
        assertThat(a.err()).contains("estimators: level recovered on real series").contains("pretrained");
        CliTest.Run c = CliTest.cli("demo", "--quick", "--seed", "8", "--seeds", "1", "--out", tmp.resolve("c").toString());
        assertThat(c.code()).as(c.err()).isZero();
        assertThat(Files.readString(tmp.resolve("c").resolve("report.json"))).as("another seed, another report")
                .isNotEqualTo(ra);
    }

    /**
     * The evaluations during training draw their sampling noise from the same generator as the training: how many
     * samples they take must not change the trained models, so the final scores are the same with 2 and with 3.
     */
    @Test
    void howMuchIsEvaluatedDuringTrainingChangesNoTrainedModel(@TempDir Path tmp) throws Exception {
        org.text2data.demo.DemoConfig q = org.text2data.demo.DemoConfig.quick().with(null, 1, null, null, null);
        JsonObject[] methods = new JsonObject[2];
        for (int k = 0; k < 2; k++) {
            int evalSamples = 2 + k;
            org.text2data.demo.DemoConfig c = new org.text2data.demo.DemoConfig(q.name(), q.trainSeries(), q.seen(),
                    q.hidden(), q.blocks(), q.batchSize(), q.pretrainSteps(), q.finetuneSteps(), q.ceilingSteps(), q.lr(),
                    q.condDropout(), q.relax(), q.unseenPrompts(), q.samplesPerPrompt(), q.evaluations(), evalSamples,
                    q.guidance(), q.estimatorSeries(), q.estimatorSteps(), q.seeds(), q.seed());
            Path report = tmp.resolve("report-" + evalSamples + ".json");
            new org.text2data.demo.Demo(c, org.text2data.train.TrainingListener.NONE, line -> { })
                    .run(report, tmp.resolve("plots-" + evalSamples));
            methods[k] = JsonParser.parseString(Files.readString(report)).getAsJsonObject().getAsJsonObject("methods");
        }
        for (String m : List.of("conditional_only", "pretrain_finetune", "text2data", "ceiling")) {
            for (String key : List.of("unseen_accuracy", "seen_accuracy", "quality_mmd")) {
                assertThat(methods[1].getAsJsonObject(m).get(key)).as(m + " " + key)
                        .isEqualTo(methods[0].getAsJsonObject(m).get(key));
            }
        }
    }

    @Test
    void badDemoFlagsWriteNothing(@TempDir Path tmp) {
        Path out = tmp.resolve("o");
        Map<List<String>, String> cases = new java.util.LinkedHashMap<>();
        cases.put(List.of("--relax", "0"), "relax factor must be a positive finite number, got 0.0");
        cases.put(List.of("--relax", "NaN"), "relax factor must be a positive finite number, got NaN");
        cases.put(List.of("--relax", "-1"), "relax factor must be a positive finite number, got -1.0");
        cases.put(List.of("--guidance", "-1"), "guidance scale must be a finite number >= 0, got -1.0");
        cases.put(List.of("--seeds", "0"), "seeds must lie in 1..20, got 0");
        cases.put(List.of("--seen", "3"), "seen combinations must lie in 4..84");
        cases.put(List.of("--seen", "500"), "seen combinations must lie in 4..84");
        // --quick has 600 training series: at most 60 seen combinations (10 series each), not the 100 the prompts allow
        cases.put(List.of("--quick", "--seen", "61"), "seen combinations must lie in 4..60");
        cases.put(List.of("--seeds", "two"), "--seeds");
        cases.put(List.of("--full"), "--full");
        cases.put(List.of("--frobnicate"), "--frobnicate");
        for (Map.Entry<List<String>, String> c : cases.entrySet()) {
            List<String> all = new java.util.ArrayList<>(List.of("demo"));
            all.addAll(c.getKey());
            all.addAll(List.of("--out", out.toString()));
            CliTest.Run r = CliTest.cli(all.toArray(String[]::new));
            assertThat(r.code()).as(String.join(" ", c.getKey())).isNotZero();
            assertThat(r.err()).as(String.join(" ", c.getKey())).contains(c.getValue()).doesNotContain("estimators");
            assertThat(out).as(String.join(" ", c.getKey())).doesNotExist();
        }
    }

    @Test
    void unwritableOrCollidingDemoOutputsAreRefusedBeforeTraining(@TempDir Path tmp) throws Exception {
        Path file = Files.writeString(tmp.resolve("a-file"), "keep");
        Path dir = Files.createDirectory(tmp.resolve("out"));
        Map<String[], String> cases = new java.util.LinkedHashMap<>();
        cases.put(new String[] {"--out", file.toString()}, "--out " + file + " is a file, not a folder");
        cases.put(new String[] {"--out", file.resolve("sub").toString()}, "cannot create it, " + file + " is a file, not a folder");
        cases.put(new String[] {"--out", "/proc/t2d-demo"}, "--out /proc/t2d-demo: cannot write in /proc: ");
        cases.put(new String[] {"--out", dir.toString(), "--report", dir.resolve("g.png").toString()},
                "--report " + dir.resolve("g.png") + " is the file the demo writes its plot g.png to");
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
                    .doesNotContain("estimators"); // refused before any training
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
    void demoHelpStatesThePresetsDefaults() {
        // the help text repeats the presets' numbers: it must say what DemoConfig does
        CliTest.Run r = CliTest.cli("demo", "--help");
        assertThat(r.code()).as(r.err()).isZero();
        String help = r.out().replaceAll("\\s+", " ");
        org.text2data.demo.DemoConfig s = org.text2data.demo.DemoConfig.standard();
        org.text2data.demo.DemoConfig q = org.text2data.demo.DemoConfig.quick();
        assertThat(List.of(q.seed(), q.relax(), q.guidance())).isEqualTo(List.of(s.seed(), s.relax(), s.guidance()));
        assertThat(help).contains("seeds S, S+1, ... (default: " + s.seed() + ")")
                .contains("how many seeds (default: " + s.seeds() + "; --quick: " + q.seeds() + ")")
                .contains("series come from (default: " + s.seen() + "; --quick: " + q.seen() + ")")
                .contains("unconditional loss (default: " + plain(s.relax()) + ")")
                .contains("plain conditional (default: " + plain(s.guidance()) + ")");
    }

    /** 1.0 as 1, 0.5 as 0.5: a number as the help text writes it. */
    private static String plain(double v) {
        return java.math.BigDecimal.valueOf(v).stripTrailingZeros().toPlainString();
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
