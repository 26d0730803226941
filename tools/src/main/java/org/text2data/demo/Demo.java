package org.text2data.demo;

import java.io.IOException;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
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
import org.text2data.ConditionalModel;
import org.text2data.Constraint;
import org.text2data.Engine;
import org.text2data.LibTorch;
import org.text2data.Loss;
import org.text2data.OptimizerSpec;
import org.text2data.diffusion.Diffusion;
import org.text2data.diffusion.FilmDenoiser;
import org.text2data.train.BatchTransform;
import org.text2data.train.Finetuning;
import org.text2data.train.LossSurvey;
import org.text2data.train.LrSchedule;
import org.text2data.train.Pretraining;
import org.text2data.train.TrainConfig;
import org.text2data.train.TrainingListener;

/**
 * Text2Data's claim put to a test: a conditional diffusion model of generated waveforms, with labels for a few
 * combinations of the described factors only, trained three ways (conditional-only on the labelled series;
 * pretrain on all + plain finetune; pretrain on all + Text2Data finetune) with the same optimizer, schedule and
 * budget, between a ceiling (every series labelled) and a floor (unconditional samples). Each is scored for
 * controllability (the accuracy, per factor, of the level asked for, on combinations seen in the labels and on
 * unseen ones) and quality (MMD to real series, diversity within a prompt), over several seeds.
 */
public final class Demo {

    /** The methods, in report order. */
    public static final List<String> METHODS = List.of("conditional_only", "pretrain_finetune", "text2data",
            "ceiling", "floor");

    /**
     * The methods whose g is reported against g_constraint (max g / g_constraint, the g plot): the plain and the
     * Text2Data finetune of the same pretrained model, in report order.
     */
    public static final List<String> G_METHODS = List.of("pretrain_finetune", "text2data");

    /** What one method scored on one seed. */
    record Score(double[] seenPerFactor, double[] unseenPerFactor, double mmd, double diversity,
                 List<double[]> curve, List<double[]> gCurve, List<Double> stepG) {
        double seen() {
            return Arrays.stream(seenPerFactor).average().orElseThrow();
        }

        double unseen() {
            return Arrays.stream(unseenPerFactor).average().orElseThrow();
        }
    }

    /** Everything one seed produced. */
    record SeedRun(long seed, int labelled, double gConstraint, double realMmd, Map<String, Score> scores,
                   List<Prompt> prompts, List<float[][]> real, Map<String, List<float[][]>> samples) {
    }

    /** A prompt: the levels asked for, their words, and whether the labels contain that combination. */
    record Prompt(int[] levels, String text, boolean seen) {
    }

    /**
     * The demo's results.
     *
     * @param config the settings
     * @param validation the estimators' accuracy per factor on real series
     * @param chance the accuracy per factor of a generator that ignores the prompt
     * @param runs one entry per seed
     */
    public record Report(DemoConfig config, double[] validation, double[] chance, List<SeedRun> runs) {

        /** The report as JSON; no timings, so the same seed gives the same text. */
        public String toJson() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("config", config);
            Map<String, Object> data = new LinkedHashMap<>();
            data.put("series", config.trainSeries());
            data.put("length", Waveforms.LENGTH);
            data.put("factors", levelsJson());
            data.put("combinations", Waveforms.combinations());
            data.put("seen_combinations", config.seen());
            data.put("labelled_series", stat(r -> r.labelled()));
            m.put("data", data);
            m.put("estimator_validation_accuracy", perFactor(validation));
            m.put("chance_accuracy", withMean(chance));
            m.put("g_constraint", stat(SeedRun::gConstraint));
            m.put("real_series_mmd", stat(SeedRun::realMmd));
            Map<String, Object> methods = new LinkedHashMap<>();
            for (String name : METHODS) {
                Map<String, Object> x = new LinkedHashMap<>();
                x.put("unseen_accuracy", stat(r -> r.scores().get(name).unseen()));
                x.put("seen_accuracy", stat(r -> r.scores().get(name).seen()));
                x.put("quality_mmd", stat(r -> r.scores().get(name).mmd()));
                x.put("diversity", stat(r -> r.scores().get(name).diversity()));
                Map<String, Object> uf = new LinkedHashMap<>();
                Map<String, Object> sf = new LinkedHashMap<>();
                for (int f = 0; f < Waveforms.FACTORS.size(); f++) {
                    int ff = f;
                    uf.put(Waveforms.FACTORS.get(f), stat(r -> r.scores().get(name).unseenPerFactor()[ff]));
                    sf.put(Waveforms.FACTORS.get(f), stat(r -> r.scores().get(name).seenPerFactor()[ff]));
                }
                x.put("unseen_accuracy_per_factor", uf);
                x.put("seen_accuracy_per_factor", sf);
                if (G_METHODS.contains(name)) {
                    x.put("max_g_over_constraint", stat(r -> maxG(r, name)));
                }
                methods.put(name, x);
            }
            m.put("methods", methods);
            return new GsonBuilder().setPrettyPrinting().serializeSpecialFloatingPointValues().create().toJson(m) + "\n";
        }

        /** Mean and per-seed values of {@code f} over the seeds. */
        Map<String, Object> stat(java.util.function.ToDoubleFunction<SeedRun> f) {
            double[] v = runs.stream().mapToDouble(f).toArray();
            Map<String, Object> s = new LinkedHashMap<>();
            s.put("mean", Arrays.stream(v).average().orElseThrow());
            s.put("per_seed", v);
            return s;
        }

        /** The mean over seeds of a method's score. */
        public double mean(String method, String what) {
            return runs.stream().mapToDouble(r -> value(r, method, what)).average().orElseThrow();
        }

        /** The smallest and largest over seeds of a method's score. */
        public double[] range(String method, String what) {
            double[] v = runs.stream().mapToDouble(r -> value(r, method, what)).toArray();
            return new double[] {Arrays.stream(v).min().orElseThrow(), Arrays.stream(v).max().orElseThrow()};
        }

        private static double value(SeedRun r, String method, String what) {
            Score s = r.scores().get(method);
            return switch (what) {
                case "unseen" -> s.unseen();
                case "seen" -> s.seen();
                case "mmd" -> s.mmd();
                case "diversity" -> s.diversity();
                case "g" -> maxG(r, method);
                default -> throw new IllegalArgumentException(what);
            };
        }

        private static double maxG(SeedRun r, String method) {
            return r.scores().get(method).gCurve().stream().mapToDouble(p -> p[1] / r.gConstraint()).max()
                    .orElse(Double.NaN);
        }

        private static Map<String, Object> perFactor(double[] v) {
            Map<String, Object> m = new LinkedHashMap<>();
            for (int f = 0; f < v.length; f++) {
                m.put(Waveforms.FACTORS.get(f), v[f]);
            }
            return m;
        }

        private static Map<String, Object> withMean(double[] v) {
            Map<String, Object> m = perFactor(v);
            m.put("mean", Arrays.stream(v).average().orElseThrow());
            return m;
        }

        private static Map<String, Object> levelsJson() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("shape", Waveforms.SHAPES);
            m.put("cycles", Waveforms.CYCLES);
            m.put("amplitude", Waveforms.AMPLITUDES);
            m.put("trend", Waveforms.SLOPES);
            return m;
        }
    }

    private final DemoConfig cfg;
    private final TrainingListener listener;
    private final Consumer<String> log;
    private final TextEncoder encoder = new TextEncoder(Waveforms.vocabulary());

    /**
     * A demo with these settings.
     *
     * @param cfg sizes and hyperparameters
     * @param listener told of every training step (progress)
     * @param log receives one line per stage and result
     */
    public Demo(DemoConfig cfg, TrainingListener listener, Consumer<String> log) {
        this.cfg = cfg;
        this.listener = listener;
        this.log = log;
    }

    /** The plots {@link #run} writes into its folder. */
    public static final List<String> PLOTS = List.of("accuracy.png", "g.png", "samples.png");

    /**
     * Runs every seed; writes {@code report} and the {@link #PLOTS} into {@code plotDir} (each atomically).
     * Runs libtorch on one thread, and OpenBLAS too where the library chose its thread count (not the user, with
     * {@code -Dtext2data.blasThreads}), both restored afterwards: the demo's matrices are tiny, a second spinning
     * thread only loses on a busy machine, and the result is the same on every run.
     */
    public Report run(Path report, Path plotDir) throws IOException {
        LibTorch.ensureLoaded();
        int threads = torch.get_num_threads();
        torch.set_num_threads(1);
        int blas = LibTorch.blasThreads();
        boolean ownBlas = blas > 0 && System.getProperty("text2data.blasThreads") == null && LibTorch.setBlasThreads(1);
        try {
            double[] validation;
            double[] chance = new double[Waveforms.LEVELS.length];
            for (int f = 0; f < chance.length; f++) {
                chance[f] = 1.0 / Waveforms.LEVELS[f];
            }
            List<SeedRun> runs = new ArrayList<>();
            try (Estimators est = Estimators.train(cfg.estimatorSeries(), 2000, cfg.estimatorSteps(),
                    cfg.seed() + 1000)) {
                validation = est.validation();
                log.accept(String.format(java.util.Locale.ROOT,
                        "estimators: level recovered on real series: shape %.1f%%, cycles %.1f%%, amplitude %.1f%%, "
                                + "trend %.1f%% (required: %.0f%% each)", 100 * validation[0], 100 * validation[1],
                        100 * validation[2], 100 * validation[3], 100 * Estimators.REQUIRED_ACCURACY));
                for (int f = 0; f < validation.length; f++) {
                    if (validation[f] < Estimators.REQUIRED_ACCURACY) {
                        throw new IllegalStateException(String.format(java.util.Locale.ROOT, "the %s estimator "
                                + "recovers %.1f%% of real series' levels, below the %.0f%% required: its scores would "
                                + "mean nothing", Waveforms.FACTORS.get(f), 100 * validation[f],
                                100 * Estimators.REQUIRED_ACCURACY));
                    }
                }
                for (int s = 0; s < cfg.seeds(); s++) {
                    runs.add(runSeed(cfg.seed() + s, est));
                }
            }
            Report rep = new Report(cfg, validation, chance, runs);
            Files.createDirectories(plotDir);
            writeAtomically(report, rep.toJson());
            try {
                DemoPlots.write(rep, plotDir);
            } catch (java.awt.AWTError | UnsatisfiedLinkError e) {
                log.accept("plots skipped: this JVM cannot draw (" + e.getMessage() + "); install fonts/fontconfig");
            }
            return rep;
        } finally {
            torch.set_num_threads(threads);
            if (ownBlas) {
                LibTorch.setBlasThreads(blas);
            }
        }
    }

    private SeedRun runSeed(long seed, Estimators est) {
        Random rnd = new Random(seed);
        List<Waveforms.Series> train = Waveforms.generate(cfg.trainSeries(), rnd);
        int[] seenCombos = Waveforms.seenCombinations(cfg.seen(), rnd);
        java.util.Set<Integer> seenSet = new java.util.HashSet<>();
        for (int c : seenCombos) {
            seenSet.add(c);
        }
        List<Waveforms.Series> labelledRows = train.stream()
                .filter(s -> seenSet.contains(Waveforms.combinationOf(s.levels()))).toList();
        List<Prompt> prompts = new ArrayList<>();
        for (int c : seenCombos) {
            int[] lv = Waveforms.levelsOf(c);
            prompts.add(new Prompt(lv, Waveforms.describe(lv, rnd), true));
        }
        List<Integer> unseen = new ArrayList<>();
        for (int c = 0; c < Waveforms.combinations(); c++) {
            if (!seenSet.contains(c)) {
                unseen.add(c);
            }
        }
        java.util.Collections.shuffle(unseen, rnd);
        for (int c : unseen.subList(0, cfg.unseenPrompts())) {
            int[] lv = Waveforms.levelsOf(c);
            prompts.add(new Prompt(lv, Waveforms.describe(lv, rnd), false));
        }
        // real series for each prompt: the reference for quality, twice (the second measures MMD's own noise)
        List<float[][]> real = new ArrayList<>();
        List<float[][]> real2 = new ArrayList<>();
        for (Prompt p : prompts) {
            real.add(realFor(p, rnd));
            real2.add(realFor(p, rnd));
        }
        double realMmd = Metrics.mmd(flat(real2), flat(real));
        log.accept(String.format(java.util.Locale.ROOT, "seed %d: %d series, %d labelled (%.1f%%, from %d of %d "
                        + "combinations); prompts: %d seen, %d unseen combinations x %d samples", seed, train.size(),
                labelledRows.size(), 100.0 * labelledRows.size() / train.size(), cfg.seen(), Waveforms.combinations(),
                cfg.seen(), cfg.unseenPrompts(), cfg.samplesPerPrompt()));

        // the label is a placeholder: the diffusion's transform replaces it
        Tensor trainValues = values(train);
        Tensor labelledValues = values(labelledRows);
        Batch all = Batch.unlabelled(trainValues, trainValues);
        Batch allLabelled = new Batch(trainValues, encoder.encode(texts(train)), trainValues);
        Batch labelled = new Batch(labelledValues, encoder.encode(texts(labelledRows)), labelledValues);
        Diffusion gDiffusion = Diffusion.small(seed + 77).predictingClean();
        torch.manual_seed(seed + 77);
        Tensor gValues = values(train.subList(0, Math.min(512, train.size())));
        Batch gRows = gDiffusion.noised(Batch.unlabelled(gValues, gValues));
        int length = Waveforms.LENGTH;
        int timeDim = gDiffusion.timeDim();

        // 1. pretrain on everything, unconditionally
        torch.manual_seed(seed);
        try (FilmDenoiser pretrained = new FilmDenoiser(length, timeDim, encoder.dim(), cfg.hidden(), cfg.blocks())) {
            Pretraining.Result pre;
            Diffusion diffusion = Diffusion.small(seed).predictingClean();
            try (Constraint opt = new Constraint(pretrained.namedParameters(), OptimizerSpec.adam(cfg.lr()), 1, 1, Engine.AUTO)) {
                pre = Pretraining.run(opt, pretrained, all, Loss.MSE, stage(cfg.pretrainSteps(), seed),
                        diffusion.transform(), listener);
            }
            double g0 = gEval(pretrained, gRows);
            double gConstraint = Pretraining.relaxed(g0, cfg.relax());
            log.accept(String.format(java.util.Locale.ROOT, "seed %d: pretrained, last epoch loss %.4f; on the %d "
                            + "evaluation rows g = %.4f -> g_constraint %.4f (relax %.2f)", seed,
                    pre.epochLosses().get(pre.epochLosses().size() - 1), gRows.size(), g0, gConstraint, cfg.relax()));

            Map<String, Score> scores = new LinkedHashMap<>();
            Map<String, List<float[][]>> samples = new LinkedHashMap<>();
            int budget = cfg.pretrainSteps() + cfg.finetuneSteps();
            // 2. conditional-only: the same model from scratch on the labelled rows, the whole budget
            torch.manual_seed(seed + 1);
            scores.put("conditional_only", train("conditional_only", new FilmDenoiser(length, timeDim, encoder.dim(),
                            cfg.hidden(), cfg.blocks()), labelled, budget, 0, 0, Finetuning.Mode.PLAIN, seed + 1, prompts,
                    real, est, gRows, samples));
            // 3, 4. pretrained + plain finetune, pretrained + Text2Data: the same start, the same steps
            for (Finetuning.Mode mode : List.of(Finetuning.Mode.PLAIN, Finetuning.Mode.TEXT2DATA)) {
                torch.manual_seed(seed + 2);
                FilmDenoiser m = copyOf(pretrained, length, timeDim);
                String name = mode == Finetuning.Mode.PLAIN ? "pretrain_finetune" : "text2data";
                scores.put(name, train(name, m, labelled, cfg.finetuneSteps(), cfg.pretrainSteps(), gConstraint, mode,
                        seed + 2, prompts, real, est, gRows, samples));
            }
            // 5. the ceiling: pretrained + plain finetune with every series labelled, for its own number of steps
            //    (a reference, not a competitor: more steps than the finetunes)
            torch.manual_seed(seed + 2);
            FilmDenoiser top = copyOf(pretrained, length, timeDim);
            scores.put("ceiling", train("ceiling", top, allLabelled, cfg.ceilingSteps(), cfg.pretrainSteps(), gConstraint,
                    Finetuning.Mode.PLAIN, seed + 2, prompts, real, est, gRows, samples));
            // 6. the floor: the pretrained model's unconditional samples, scored against the prompts
            torch.manual_seed(seed + 3);
            scores.put("floor", score("floor", pretrained, false, prompts, real, est, List.of(), List.of(), List.of(),
                    samples));
            return new SeedRun(seed, labelledRows.size(), gConstraint, realMmd, scores, prompts, real, samples);
        }
    }

    /** A new denoiser (its weights drawn, then replaced) holding the pretrained one's weights; closed if that fails. */
    private FilmDenoiser copyOf(FilmDenoiser pretrained, int length, int timeDim) {
        FilmDenoiser m = new FilmDenoiser(length, timeDim, encoder.dim(), cfg.hidden(), cfg.blocks());
        try {
            m.loadStateDict(pretrained.namedParameters());
            return m;
        } catch (RuntimeException | Error e) {
            m.close();
            throw e;
        }
    }

    /** A stage's loop settings: Adam's rate decays along a cosine to a tenth over {@code steps}. */
    private TrainConfig stage(int steps, long seed) {
        return new TrainConfig().epochs(Integer.MAX_VALUE / 4).maxSteps(steps).batchSize(cfg.batchSize()).seed(seed)
                .schedule(LrSchedule.cosine(0.1));
    }

    /**
     * Trains {@code model} on {@code data} for {@code steps} (offset: steps taken before, for the curves), with
     * per-row condition dropout, evaluating the unseen prompts and g {@link DemoConfig#evaluations} times; then
     * scores it.
     */
    private Score train(String name, FilmDenoiser model, Batch data, int steps, int offset, double gConstraint,
                        Finetuning.Mode mode, long seed, List<Prompt> prompts, List<float[][]> real, Estimators est,
                        Batch gRows, Map<String, List<float[][]>> samples) {
        try {
            Diffusion diffusion = Diffusion.small(seed).predictingClean();
            Random dropRnd = new Random(seed ^ 0x9E3779B97F4A7C15L);
            BatchTransform transform = rows -> dropCondition(diffusion.noised(rows), dropRnd);
            List<Prompt> unseen = prompts.stream().filter(p -> !p.seen()).toList();
            List<double[]> curve = new ArrayList<>();
            List<double[]> gCurve = new ArrayList<>();
            int every = Math.max(1, steps / cfg.evaluations());
            java.util.function.ToDoubleFunction<ConditionalModel> evaluator = m -> {
                // The evaluation's sampling noise comes from libtorch's global generator, as the training's does:
                // its state is put back afterwards, so that how often and how much is evaluated changes no training step.
                org.bytedeco.pytorch.Generator global = torch.getDefaultCPUGenerator();
                Tensor state = global.get_state();
                try {
                    long step = offset + (long) (curve.size() + 1) * every;
                    List<float[][]> gen = generate(m, unseen, cfg.evalSamples(), true);
                    double acc = Arrays.stream(accuracy(unseen, gen, est)).average().orElseThrow();
                    curve.add(new double[] {Math.min(step, offset + steps), acc});
                    gCurve.add(new double[] {Math.min(step, offset + steps), gEval(m, gRows)});
                    return 1 - acc;
                } finally {
                    global.set_state(state);
                    state.close();
                    global.close();
                }
            };
            Finetuning.Result r;
            try (Constraint opt = new Constraint(model.namedParameters(), OptimizerSpec.adam(cfg.lr()), 1, 1, Engine.AUTO)) {
                r = Finetuning.run(opt, gConstraint, model, data, Loss.MSE, stage(steps, seed).evalEvery(every), mode,
                        transform, evaluator, named(name, listener));
            }
            torch.manual_seed(seed + 3);
            List<Double> stepG = r.steps().stream().map(Finetuning.Step::g).toList();
            return score(name, model, true, prompts, real, est, curve, gCurve, stepG, samples);
        } finally {
            model.close(); // its native memory, whatever happened
        }
    }

    /**
     * {@code listener} with every call (step, evaluation, warning) passed on under the stage {@code name}: the
     * demo's methods all finetune, and the progress shown names the method.
     */
    static TrainingListener named(String name, TrainingListener listener) {
        return new TrainingListener() {
            @Override
            public void onStep(String stage, long step, long totalSteps, double g, double f) {
                listener.onStep(name, step, totalSteps, g, f);
            }

            @Override
            public void onEval(String stage, long step, double score) {
                listener.onEval(name, step, score);
            }

            @Override
            public void onWarning(String stage, long step, String message) {
                listener.onWarning(name, step, message);
            }
        };
    }

    /** Zeroes the condition of each row with probability {@link DemoConfig#condDropout}: the null condition. */
    private Batch dropCondition(Batch b, Random rnd) {
        if (b.cond() == null || cfg.condDropout() == 0) {
            return b;
        }
        int n = (int) b.size();
        float[] keep = new float[n];
        for (int i = 0; i < n; i++) {
            keep[i] = rnd.nextDouble() < cfg.condDropout() ? 0 : 1;
        }
        return new Batch(b.data(), b.cond().mul(Tensor.create(keep, n, 1)), b.label());
    }

    private Score score(String name, ConditionalModel model, boolean conditional, List<Prompt> prompts,
                        List<float[][]> real, Estimators est, List<double[]> curve, List<double[]> gCurve,
                        List<Double> stepG, Map<String, List<float[][]>> samples) {
        List<float[][]> gen = generate(model, prompts, cfg.samplesPerPrompt(), conditional);
        List<Prompt> seenP = new ArrayList<>();
        List<Prompt> unseenP = new ArrayList<>();
        List<float[][]> seenG = new ArrayList<>();
        List<float[][]> unseenG = new ArrayList<>();
        for (int i = 0; i < prompts.size(); i++) {
            (prompts.get(i).seen() ? seenP : unseenP).add(prompts.get(i));
            (prompts.get(i).seen() ? seenG : unseenG).add(gen.get(i));
        }
        Score s = new Score(accuracy(seenP, seenG, est), accuracy(unseenP, unseenG, est), Metrics.mmd(flat(gen),
                flat(real)), Metrics.diversity(gen, real), List.copyOf(curve), List.copyOf(gCurve), stepG);
        samples.put(name, gen);
        log.accept(String.format(java.util.Locale.ROOT, "  %-18s accuracy unseen %.3f  seen %.3f   MMD %.4f   "
                + "diversity %.2f", name, s.unseen(), s.seen(), s.mmd(), s.diversity()));
        return s;
    }

    /** {@code n} samples per prompt, in one batch; unconditional when {@code conditional} is false. */
    private List<float[][]> generate(ConditionalModel model, List<Prompt> prompts, int n, boolean conditional) {
        try (PointerScope scope = new PointerScope()) {
            List<String> texts = new ArrayList<>();
            for (Prompt p : prompts) {
                for (int k = 0; k < n; k++) {
                    texts.add(p.text());
                }
            }
            Diffusion d = Diffusion.small(0).predictingClean();
            Tensor x = d.sampleDdim(model, conditional ? encoder.encode(texts) : null, texts.size(), Waveforms.LENGTH,
                    cfg.guidance());
            float[][] rows = rows(x);
            List<float[][]> out = new ArrayList<>();
            for (int p = 0; p < prompts.size(); p++) {
                out.add(Arrays.copyOfRange(rows, p * n, (p + 1) * n));
            }
            return out;
        }
    }

    /** Per factor, the fraction of samples whose estimated level is the one their prompt asked for. */
    private static double[] accuracy(List<Prompt> prompts, List<float[][]> gen, Estimators est) {
        double[] acc = new double[Waveforms.FACTORS.size()];
        List<float[]> all = new ArrayList<>();
        List<int[]> want = new ArrayList<>();
        for (int p = 0; p < prompts.size(); p++) {
            for (float[] y : gen.get(p)) {
                all.add(y);
                want.add(prompts.get(p).levels());
            }
        }
        int[][] got = est.predict(all);
        for (int i = 0; i < got.length; i++) {
            for (int f = 0; f < acc.length; f++) {
                acc[f] += got[i][f] == want.get(i)[f] ? 1.0 / got.length : 0;
            }
        }
        return acc;
    }

    /** The unconditional loss on the fixed noised evaluation rows. */
    private static double gEval(ConditionalModel m, Batch gRows) {
        return LossSurvey.of(m, gRows, Loss.MSE, (int) gRows.size()).mean();
    }

    private float[][] realFor(Prompt p, Random rnd) {
        float[][] r = new float[cfg.samplesPerPrompt()][];
        for (int k = 0; k < r.length; k++) {
            r[k] = Waveforms.series(p.levels(), rnd).values();
        }
        return r;
    }

    static float[][] flat(List<float[][]> groups) {
        return groups.stream().flatMap(Arrays::stream).toArray(float[][]::new);
    }

    private static Tensor values(List<Waveforms.Series> s) {
        float[] all = new float[s.size() * Waveforms.LENGTH];
        for (int i = 0; i < s.size(); i++) {
            System.arraycopy(s.get(i).values(), 0, all, i * Waveforms.LENGTH, Waveforms.LENGTH);
        }
        return Tensor.create(all, s.size(), Waveforms.LENGTH);
    }

    private static List<String> texts(List<Waveforms.Series> s) {
        return s.stream().map(Waveforms.Series::text).toList();
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
}
