package org.text2data.demo;

import java.awt.Graphics2D;
import java.awt.Rectangle;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Consumer;

import com.google.gson.GsonBuilder;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.text2data.Batch;
import org.text2data.Constraint;
import org.text2data.diffusion.Denoiser;
import org.text2data.Engine;
import org.text2data.LibTorch;
import org.text2data.Loss;
import org.text2data.OptimizerSpec;
import org.text2data.diffusion.Diffusion;
import org.text2data.train.Finetuning;
import org.text2data.train.LrSchedule;
import org.text2data.train.Pretraining;
import org.text2data.train.TrainConfig;
import org.text2data.train.TrainingListener;

/**
 * The whole method on a small, generated, low-resource time-series set: a conditional diffusion model
 * trained three ways (conditional-only on the labelled 10%; pretrain on all + plain finetune;
 * pretrain on all + Text2Data finetune), each scored for controllability and quality.
 */
public final class Demo {

    /** Scores of one method. */
    public record MethodResult(String method, double controllabilityError, double qualityDistance,
                               Double maxGOverGConstraint) {
    }

    /** Everything the demo measured; its JSON is the report (no timings: same seed, same report). */
    public record Report(DemoConfig config, int vocabulary, int labelled, double gConstraint,
                         double realControllabilityFloor, double realQualityFloor, List<MethodResult> methods) {
        public String toJson() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("config", config);
            m.put("labelled_examples", labelled);
            m.put("vocabulary", vocabulary);
            m.put("g_constraint", gConstraint);
            m.put("real_data_floor", Map.of("controllability_error", realControllabilityFloor,
                    "quality_distance", realQualityFloor));
            Map<String, Object> methodsJson = new LinkedHashMap<>();
            for (MethodResult r : methods) {
                Map<String, Object> x = new LinkedHashMap<>();
                x.put("controllability_error", r.controllabilityError());
                x.put("quality_distance", r.qualityDistance());
                if (r.maxGOverGConstraint() != null) {
                    x.put("max_g_over_g_constraint", r.maxGOverGConstraint());
                }
                methodsJson.put(r.method(), x);
            }
            m.put("methods", methodsJson);
            return new GsonBuilder().setPrettyPrinting().serializeSpecialFloatingPointValues().create().toJson(m);
        }
    }

    private final DemoConfig cfg;
    private final TrainingListener listener;
    private final Consumer<String> log;

    public Demo(DemoConfig cfg, TrainingListener listener, Consumer<String> log) {
        this.cfg = cfg;
        this.listener = listener;
        this.log = log;
    }

    /** Runs the demo; writes {@code report} and the plots into {@code plotDir} (nothing half-written). */
    public Report run(Path report, Path plotDir) throws IOException {
        LibTorch.ensureLoaded();
        Random rnd = new Random(cfg.seed());
        List<TimeSeries.Series> train = TimeSeries.generate(cfg.trainSeries(), cfg.length(), rnd);
        List<TimeSeries.Series> test = TimeSeries.generate(cfg.testSeries(), cfg.length(), rnd);
        List<TimeSeries.Prompt> prompts = pickPrompts(TimeSeries.prompts(rnd), cfg.prompts(), rnd);
        TextEncoder encoder = new TextEncoder(TimeSeries.vocabulary());
        int nLabelled = cfg.labelled();
        List<TimeSeries.Series> labelledRows = train.subList(0, nLabelled); // generation order is random already
        log.accept(String.format("data: %d series (%d with a description, %.0f%%), %d held out; %d prompts x %d samples; "
                        + "vocabulary %d words", train.size(), nLabelled, 100 * cfg.labelledFraction(), test.size(),
                prompts.size(), cfg.samplesPerPrompt(), encoder.dim()));

        Batch all = Batch.unlabelled(values(train), values(train));
        Batch labelled = new Batch(values(labelledRows), encoder.encode(texts(labelledRows)), values(labelledRows));
        Diffusion diffusion = Diffusion.small(cfg.seed());
        int dIn = diffusion.inputDim(cfg.length());
        float[][] testValues = test.stream().map(TimeSeries.Series::values).toArray(float[][]::new);

        // 1. pretrain on everything, unconditionally
        torch.manual_seed(cfg.seed());
        Denoiser pretrained = new Denoiser(dIn, cfg.length(), encoder.dim(), cfg.hidden(), cfg.layers());
        Pretraining.Result pre;
        try (Constraint opt = new Constraint(pretrained.namedParameters(), OptimizerSpec.adam(cfg.lr()), 1, 1, Engine.AUTO)) {
            pre = Pretraining.run(opt, pretrained, all, Loss.MSE, new TrainConfig().epochs(cfg.pretrainEpochs())
                    .batchSize(cfg.batchSize()).seed(cfg.seed()).schedule(LrSchedule.cosine(0.1)),
                    diffusion.transform(), listener);
        }
        double gConstraint = pre.gConstraint(cfg.relax());
        log.accept(String.format("pretrained: lowest epoch loss %.5f -> g_constraint %.5f (relax %.2f)",
                pre.minLoss(), gConstraint, cfg.relax()));

        List<MethodResult> results = new ArrayList<>();
        Map<String, Finetuning.Result> curves = new LinkedHashMap<>();
        Map<String, List<float[][]>> samples = new LinkedHashMap<>();
        TrainConfig ft = new TrainConfig().epochs(cfg.finetuneEpochs()).batchSize(Math.min(cfg.batchSize(), 32))
                .seed(cfg.seed() + 1);

        // 2. conditional-only on the labelled rows, from scratch, with as many steps as pretrain + finetune
        torch.manual_seed(cfg.seed() + 2);
        Denoiser scratch = new Denoiser(dIn, cfg.length(), encoder.dim(), cfg.hidden(), cfg.layers());
        long budget = new TrainConfig().epochs(cfg.pretrainEpochs()).batchSize(cfg.batchSize()).totalSteps(train.size())
                + ft.totalSteps(nLabelled);
        TrainConfig condOnly = new TrainConfig().epochs(Integer.MAX_VALUE / 4).maxSteps(budget)
                .batchSize(Math.min(cfg.batchSize(), 32)).seed(cfg.seed() + 2).schedule(LrSchedule.cosine(0.1))
                .condDropout(0.1); // classifier-free training, so that guidance has an unconditional branch to use
        results.add(finetuneAndScore("conditional_only", scratch, 0, condOnly, Finetuning.Mode.PLAIN, cfg.lr(),
                labelled, diffusion, encoder, prompts, testValues, curves, samples, false));

        // 3. pretrain + plain finetune;  4. pretrain + Text2Data finetune: the same start
        for (Finetuning.Mode mode : List.of(Finetuning.Mode.PLAIN, Finetuning.Mode.TEXT2DATA)) {
            torch.manual_seed(cfg.seed() + 3);
            Denoiser m = new Denoiser(dIn, cfg.length(), encoder.dim(), cfg.hidden(), cfg.layers());
            m.loadStateDict(pretrained.namedParameters());
            String name = mode == Finetuning.Mode.PLAIN ? "pretrain_finetune" : "text2data";
            results.add(finetuneAndScore(name, m, gConstraint, ft, mode, cfg.finetuneLr(), labelled, diffusion,
                    encoder, prompts, testValues, curves, samples, mode == Finetuning.Mode.TEXT2DATA));
        }

        double floorControl = Metrics.controllabilityFloor(test);
        float[][] half1 = new float[testValues.length / 2][];
        float[][] half2 = new float[testValues.length - half1.length][];
        System.arraycopy(testValues, 0, half1, 0, half1.length);
        System.arraycopy(testValues, half1.length, half2, 0, half2.length);
        double floorQuality = Metrics.mmd(half1, half2);
        Report rep = new Report(cfg, encoder.dim(), nLabelled, gConstraint, floorControl, floorQuality, results);

        Files.createDirectories(plotDir);
        writeAtomically(report, rep.toJson());
        try {
            trainingPlot(pre, curves, gConstraint, plotDir.resolve("training.png"));
            samplesPlot(prompts, test, samples, plotDir.resolve("samples.png"));
        } catch (java.awt.AWTError | UnsatisfiedLinkError e) {
            log.accept("plots skipped: this JVM cannot draw (" + e.getMessage() + "); install fonts/fontconfig");
        }
        return rep;
    }

    private MethodResult finetuneAndScore(String name, Denoiser model, double gConstraint, TrainConfig tc,
                                          Finetuning.Mode mode, double lr, Batch labelled, Diffusion diffusion,
                                          TextEncoder encoder, List<TimeSeries.Prompt> prompts, float[][] testValues,
                                          Map<String, Finetuning.Result> curves, Map<String, List<float[][]>> samples,
                                          boolean reportRatio) {
        Finetuning.Result r;
        try (Constraint opt = new Constraint(model.namedParameters(), OptimizerSpec.adam(lr), cfg.alpha(), cfg.beta(),
                Engine.AUTO)) {
            TrainingListener named = (stage, step, total, g, f) -> listener.onStep(name, step, total, g, f);
            r = Finetuning.run(opt, gConstraint, model, labelled, Loss.MSE, tc, mode, diffusion.transform(), null, named);
        }
        curves.put(name, r);
        List<float[][]> gen = new ArrayList<>();
        for (int p = 0; p < prompts.size(); p++) {
            try (PointerScope scope = new PointerScope()) {
                List<String> texts = new ArrayList<>();
                for (int k = 0; k < cfg.samplesPerPrompt(); k++) {
                    texts.add(prompts.get(p).text());
                }
                Tensor x = diffusion.sample(model, encoder.encode(texts), cfg.samplesPerPrompt(), cfg.length(), cfg.guidance());
                gen.add(rows(x));
            }
            listener.onStep(name + " sampling", p + 1, prompts.size(), Double.NaN, Double.NaN);
        }
        samples.put(name, gen);
        float[][] allGen = gen.stream().flatMap(java.util.Arrays::stream).toArray(float[][]::new);
        double control = Metrics.controllabilityError(prompts, gen);
        double quality = Metrics.mmd(allGen, testValues);
        log.accept(String.format("%-18s controllability error %.4f   quality (MMD) %.4f%s", name, control, quality,
                reportRatio ? String.format("   max g/g_constraint %.3f", r.maxGRatio()) : ""));
        return new MethodResult(name, control, quality, reportRatio ? r.maxGRatio() : null);
    }

    private static List<TimeSeries.Prompt> pickPrompts(List<TimeSeries.Prompt> all, int n, Random rnd) {
        List<TimeSeries.Prompt> copy = new ArrayList<>(all);
        java.util.Collections.shuffle(copy, rnd);
        return List.copyOf(copy.subList(0, n));
    }

    private static Tensor values(List<TimeSeries.Series> s) {
        int len = s.get(0).values().length;
        float[] all = new float[s.size() * len];
        for (int i = 0; i < s.size(); i++) {
            System.arraycopy(s.get(i).values(), 0, all, i * len, len);
        }
        return Tensor.create(all, s.size(), len);
    }

    private static List<String> texts(List<TimeSeries.Series> s) {
        return s.stream().map(TimeSeries.Series::text).toList();
    }

    private static float[][] rows(Tensor x) {
        Tensor c = x.contiguous().to(torch.ScalarType.Float);
        int n = (int) c.size(0);
        int len = (int) c.size(1);
        FloatBuffer b = c.createBuffer();
        float[][] out = new float[n][len];
        for (int i = 0; i < n; i++) {
            b.get(out[i]);
        }
        return out;
    }

    static void writeAtomically(Path file, String text) throws IOException {
        Files.createDirectories(file.toAbsolutePath().getParent());
        org.text2data.AtomicFile.write(file, tmp -> Files.writeString(tmp, text));
    }

    private static void trainingPlot(Pretraining.Result pre, Map<String, Finetuning.Result> curves, double gc,
                                     Path file) throws IOException {
        BufferedImage img = Charts.canvas(1500, 420);
        Graphics2D g = Charts.graphics(img);
        double[] preLoss = pre.stepLosses().stream().mapToDouble(Double::doubleValue).toArray();
        int w = Math.max(5, preLoss.length / 50);
        Charts.panel(g, new Rectangle(0, 0, 500, 420), "pretraining (unconditional loss)", "step", "loss", List.of(
                Charts.Line.of("loss (smoothed)", Charts.smooth(preLoss, w), Charts.GRAY),
                new Charts.Line("g_constraint", new double[] {0, preLoss.length - 1}, new double[] {gc, gc},
                        Charts.BLACK, true)), true);
        List<Charts.Line> gLines = new ArrayList<>();
        List<Charts.Line> fLines = new ArrayList<>();
        int len = 1;
        java.awt.Color[] colors = {Charts.GREEN, Charts.ORANGE, Charts.BLUE};
        int k = 0;
        for (Map.Entry<String, Finetuning.Result> e : curves.entrySet()) {
            java.awt.Color col = colors[k++ % colors.length];
            double[] gs = e.getValue().steps().stream().mapToDouble(Finetuning.Step::g).toArray();
            double[] fs = e.getValue().steps().stream().mapToDouble(Finetuning.Step::f).toArray();
            int sw = Math.max(5, gs.length / 40);
            if (!e.getKey().equals("conditional_only")) {
                gLines.add(Charts.Line.of(e.getKey(), Charts.smooth(gs, sw), col));
                len = Math.max(len, gs.length);
            }
            fLines.add(Charts.Line.of(e.getKey(), Charts.smooth(fs, sw), col));
        }
        gLines.add(new Charts.Line("g_constraint", new double[] {0, len - 1}, new double[] {gc, gc}, Charts.BLACK, true));
        Charts.panel(g, new Rectangle(500, 0, 500, 420), "finetuning: unconditional loss g", "step", "g", gLines, true);
        Charts.panel(g, new Rectangle(1000, 0, 500, 420), "finetuning: conditional loss f", "step", "f", fLines, true);
        g.dispose();
        Charts.write(img, file);
    }

    private static void samplesPlot(List<TimeSeries.Prompt> prompts, List<TimeSeries.Series> test,
                                    Map<String, List<float[][]>> samples, Path file) throws IOException {
        int rows = Math.min(4, prompts.size());
        List<String> cols = new ArrayList<>(List.of("real"));
        cols.addAll(samples.keySet());
        int cw = 300;
        int ch = 170;
        BufferedImage img = Charts.canvas(cw * cols.size(), ch * rows + 10);
        Graphics2D g = Charts.graphics(img);
        for (int r = 0; r < rows; r++) {
            TimeSeries.Prompt p = prompts.get(r);
            List<float[]> real = test.stream().filter(s -> java.util.Arrays.equals(s.levels(), p.levels()))
                    .map(TimeSeries.Series::values).limit(3).toList();
            for (int c = 0; c < cols.size(); c++) {
                float[][] gen = c == 0 ? null : samples.get(cols.get(c)).get(r);
                List<float[]> series = c == 0 ? real : java.util.Arrays.asList(gen).subList(0, Math.min(3, gen.length));
                List<Charts.Line> lines = new ArrayList<>();
                java.awt.Color col = c == 0 ? Charts.GRAY : Charts.BLUE;
                for (float[] s : series) {
                    double[] y = new double[s.length];
                    for (int i = 0; i < s.length; i++) {
                        y[i] = s[i];
                    }
                    lines.add(Charts.Line.of(null, y, col));
                }
                if (lines.isEmpty()) {
                    lines.add(Charts.Line.of(null, new double[] {0, 0}, Charts.GRAY));
                }
                String title = cols.get(c) + (c == 0 ? ": " + p.text() : "");
                Charts.panel(g, new Rectangle(c * cw, r * ch, cw, ch), title, null, null, lines, false);
            }
        }
        g.dispose();
        Charts.write(img, file);
    }
}
