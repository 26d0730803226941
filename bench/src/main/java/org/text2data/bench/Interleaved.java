package org.text2data.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.text2data.BenchAccess;
import org.text2data.Constraint;
import org.text2data.Engine;
import org.text2data.LibTorch;
import org.text2data.Loss;
import org.text2data.OptimizerSpec;
import org.text2data.Text2Data;
import org.text2data.engine.Engines;

/**
 * {@code runStep} against its floor, and the update pass against a copy, interleaved in one JVM, so that load
 * changes on a shared machine hit every variant alike (JMH runs each benchmark in its own fork, minutes apart).
 *
 * <p>Per workload, each variant has its own model loaded from the same weights, and its own {@link Constraint}
 * (Adam, lr 1e-3, MSE, float32, as {@link StepBench}):
 * <ul>
 *   <li>{@code runStep/E}: {@link Text2Data#runStep} on engine E; {@code runStep/E+concurrent} with its two passes at
 *       the same time ({@link Constraint#setConcurrentPasses});</li>
 *   <li>{@code plain}: zero the gradients, unconditional and conditional forward/backward, libtorch's Adam
 *       ({@link Constraint#stepBase()}): the same passes with no constraint, the floor of {@code runStep};</li>
 *   <li>{@code update/E}: on engine E, the call {@link Text2Data#runStep} makes after its two backward passes
 *       (the package-private {@code Constraint.constrainedStep}, through {@link BenchAccess}): with the fused
 *       optimizer one native pass that projects and updates, else {@code secondStep} + {@code stepBase}.
 *       Before each call, untimed: the kept gradient and the conditional gradient are put back
 *       ({@code firstStep(true)} between two {@code copy_}s), and {@code gValue} = 1e6 keeps the constraint
 *       active, so every call does the full update;</li>
 *   <li>{@code copy}: {@code dst.copy_(src)} over a copy of every parameter tensor: 8 bytes per float32
 *       parameter (read and write), the bandwidth yardstick of the update pass. A fused Adam step must move
 *       44 bytes per float32 parameter (bench/NOTES.md, "Interleaved"). The copy runs on libtorch's intra-op
 *       pool (one thread under {@code LibTorch}'s thread rule), the fused kernel on its own (every available core
 *       from 2^18 parameters on): on a multi-core machine the ratio can exceed 1.</li>
 * </ul>
 * Blocks: each block runs every variant {@code calls} times in a row, the variants' order rotating from block
 * to block, after an untimed pause ({@code --pause-ms}, 200 by default; see {@link #settle}); {@code --blocks} of
 * them, or more while they took under {@code --budget} seconds. Reported per variant: the median of the block
 * medians and their range; per block, the ratio
 * {@code runStep/E} over {@code plain} and {@code update/E} over {@code copy}, with the median and range of
 * those ratios. Denormals are flushed to zero, as in {@link StepBench}.
 *
 * <p>With {@code --threads B:T,...} every variant runs once per thread configuration (OpenBLAS threads B,
 * libtorch intra-op threads T, set untimed before every call, so a block runs each configuration on the one it
 * names), all interleaved (bench/threads).
 *
 * <p>Usage: {@code Interleaved [--workloads a,b] [--engines fused,plain|available] [--variants runStep,plain,update,copy]
 * [--blocks 5] [--calls 3] [--warmup 3] [--budget S] [--pause-ms 200] [--threads B:T,B:T] [--json FILE]}; engines default to the default
 * engine ({@link Engine#AUTO}: fused where its library loads), {@code available} is every engine that loads and the
 * default one with concurrent passes ({@code fused+concurrent}); {@code E+concurrent} names that for any engine.
 */
public final class Interleaved {

    /** One timed operation; {@link #prepare()} runs untimed before each call. */
    interface Variant {
        /** Untimed work before a call (nothing by default). */
        default void prepare() {
        }

        void call();
    }

    private Interleaved() {
    }

    /**
     * Runs the variants of each workload and prints one line per workload (and writes {@code --json}).
     *
     * @param args the options of the class comment
     * @throws IOException if the JSON file cannot be written
     */
    public static void main(String[] args) throws IOException {
        List<String> workloads = new ArrayList<>(Workloads.CONFIGS.keySet());
        List<String> engines = List.of(Engines.fusedAvailable() ? "fused" : "plain");
        List<String> kinds = List.of("runStep", "plain", "update", "copy");
        int blocks = 5;
        int calls = 3;
        int warmup = 3;
        double budget = 0;
        long settleMs = 200;
        List<String> threads = List.of();
        Path json = null;
        for (int i = 0; i < args.length; i++) {
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (args[i]) {
                case "--workloads" -> workloads = List.of(v.split(","));
                case "--engines" -> engines = v.equals("available")
                        ? (Engines.fusedAvailable() ? List.of("fused", "fused+concurrent", "plain")
                                : List.of("plain", "plain+concurrent")) : List.of(v.split(","));
                case "--variants" -> kinds = List.of(v.split(","));
                case "--blocks" -> blocks = Integer.parseInt(v);
                case "--calls" -> calls = Integer.parseInt(v);
                case "--warmup" -> warmup = Integer.parseInt(v);
                case "--budget" -> budget = Double.parseDouble(v);
                case "--pause-ms" -> settleMs = Long.parseLong(v);
                case "--threads" -> threads = List.of(v.split(","));
                case "--json" -> json = Path.of(v);
                default -> throw new IllegalArgumentException("unknown option " + args[i]
                        + "; usage: Interleaved [--workloads a,b] [--engines fused,plain] [--variants runStep,plain,update,copy]"
                        + " [--blocks N] [--calls K] [--warmup W] [--budget S] [--pause-ms P] [--threads B:T,B:T]"
                        + " [--json FILE]");
            }
            i++;
        }
        LibTorch.ensureLoaded();
        torch.globalContext().setFlushDenormal(true);
        JsonObject root = new JsonObject();
        JsonObject env = new JsonObject();
        env.addProperty("available_processors", Runtime.getRuntime().availableProcessors());
        env.addProperty("torch_threads", LibTorch.torchThreads());
        env.addProperty("openblas_threads", LibTorch.blasThreads());
        env.addProperty("blocks", blocks);
        env.addProperty("calls_per_block", calls);
        env.addProperty("warmup_calls", warmup);
        env.addProperty("budget_s", budget);
        env.addProperty("pause_ms", settleMs);
        root.add("environment", env);
        System.out.printf(Locale.ROOT, "# cores %d, libtorch threads %d, OpenBLAS threads %d (-1: left as it was); "
                        + "%d blocks%s x %d calls per variant after a %d ms pause, %d warm-up calls%n",
                Runtime.getRuntime().availableProcessors(), LibTorch.torchThreads(), LibTorch.blasThreads(), blocks,
                budget > 0 ? String.format(Locale.ROOT, " (more while under %.0f s)", budget) : "", calls, settleMs, warmup);
        Plan plan = new Plan(blocks, calls, warmup, budget, settleMs);
        JsonObject out = new JsonObject();
        for (String w : workloads) {
            out.add(w, run(w, engines, kinds, threads, plan));
        }
        root.add("workloads", out);
        if (json != null) {
            Files.writeString(json, new GsonBuilder().setPrettyPrinting().create().toJson(root));
        }
    }

    /**
     * How long to measure: {@code blocks} blocks, more while the blocks so far took under {@code budget} seconds (up
     * to {@link #MAX_BLOCKS} in all), {@code calls} timed calls per variant and block, each variant's after a
     * pause of {@code pauseMs} ({@link #settle}; 0: none, as in a training loop), after {@code warmup} untimed calls
     * per variant at the start. A budget gives a workload of short steps the many blocks its noise
     * needs, and one of long steps no more than its minimum.
     */
    private record Plan(int blocks, int calls, int warmup, double budget, long pauseMs) {
    }

    private static final int MAX_BLOCKS = 200;

    private static JsonObject run(String workload, List<String> engines, List<String> kinds, List<String> threads,
                                  Plan plan) {
        if (!threads.isEmpty()) { // every variant once per thread configuration, all interleaved
            Map<String, Variant> all = new LinkedHashMap<>();
            List<AutoCloseable> toClose = new ArrayList<>();
            for (String cfg : threads) {
                int b = Integer.parseInt(cfg.substring(0, cfg.indexOf(':')));
                int t = Integer.parseInt(cfg.substring(cfg.indexOf(':') + 1));
                variants(workload, engines, kinds, toClose).forEach((n, v) -> all.put(n + "@b" + b + "t" + t, new Variant() {
                    @Override
                    public void prepare() {
                        setThreads(b, t);
                        v.prepare();
                    }

                    @Override
                    public void call() {
                        v.call();
                    }
                }));
            }
            Map<String, double[]> bm = measure(all, toClose, plan);
            JsonObject o = summarise(workload, bm, List.of());
            JsonObject ratios = o.getAsJsonObject("ratios");
            StringBuilder line = new StringBuilder(String.format(Locale.ROOT, "%-18s", workload));
            for (String n : bm.keySet()) {
                String base = n.substring(0, n.indexOf('@'));
                String cfg0 = threads.get(0).replace(":", "t");
                String ref = base + "@b" + cfg0;
                if (!n.equals(ref)) {
                    ratio(ratios, line, n + " over " + ref, bm.get(n), bm.get(ref));
                }
                if (base.startsWith("runStep/")) {
                    String plain = "plain" + n.substring(n.indexOf('@'));
                    ratio(ratios, line, n + " over " + plain, bm.get(n), bm.get(plain));
                }
            }
            System.out.println(line);
            return o;
        }
        List<AutoCloseable> toClose = new ArrayList<>();
        return summarise(workload, measure(variants(workload, engines, kinds, toClose), toClose, plan),
                engines);
    }

    /** libtorch's intra-op threads and OpenBLAS's (the instance libtorch's GEMMs call), at once. */
    private static void setThreads(int blas, int torchThreads) {
        torch.set_num_threads(torchThreads);
        if (!LibTorch.setBlasThreads(blas)) {
            throw new IllegalStateException("cannot set OpenBLAS to " + blas + " thread(s): OpenBLAS was not found "
                    + "among the libraries libtorch loaded, so the OpenBLAS thread counts this benchmark compares "
                    + "would not be the ones measured");
        }
    }

    private static Map<String, Variant> variants(String workload, List<String> engines, List<String> kinds,
                                                 List<AutoCloseable> toClose) {
        Map<String, Variant> variants = new LinkedHashMap<>();
        for (String kind : kinds) {
            switch (kind) {
                case "runStep" -> {
                    for (String e : engines) {
                        variants.put("runStep/" + e, runStep(workload, e, toClose));
                    }
                }
                case "plain" -> variants.put("plain", plain(workload, toClose));
                case "update" -> {
                    for (String e : engines) {
                        if (!e.endsWith(CONCURRENT)) { // the update after the passes: the same whatever ran them
                            variants.put("update/" + e, update(workload, Engine.parse(e), toClose));
                        }
                    }
                }
                case "copy" -> variants.put("copy", copy(workload, toClose));
                default -> throw new IllegalArgumentException("unknown variant " + kind
                        + ", expected runStep, plain, update or copy");
            }
        }
        return variants;
    }

    /** The block medians of every variant, in ms; closes the variants' constraints and tensors at the end. */
    private static Map<String, double[]> measure(Map<String, Variant> variants, List<AutoCloseable> toClose, Plan plan) {
        List<String> names = new ArrayList<>(variants.keySet());
        for (String n : names) {
            for (int i = 0; i < plan.warmup(); i++) {
                time(variants.get(n));
            }
        }
        Map<String, List<Double>> medians = new LinkedHashMap<>();
        names.forEach(n -> medians.put(n, new ArrayList<>()));
        long start = System.nanoTime();
        for (int b = 0; b < plan.blocks() || (b < MAX_BLOCKS && System.nanoTime() - start < plan.budget() * 1e9); b++) {
            for (int k = 0; k < names.size(); k++) {
                String n = names.get((k + b) % names.size()); // rotate the order from block to block
                settle(plan.pauseMs());
                double[] t = new double[plan.calls()];
                for (int c = 0; c < t.length; c++) {
                    t[c] = time(variants.get(n));
                }
                medians.get(n).add(median(t));
            }
        }
        Map<String, double[]> blockMedians = new LinkedHashMap<>();
        medians.forEach((n, m) -> blockMedians.put(n, m.stream().mapToDouble(Double::doubleValue).toArray()));
        for (AutoCloseable c : toClose) {
            try {
                c.close();
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        }
        return blockMedians;
    }

    private static JsonObject summarise(String workload, Map<String, double[]> blockMedians, List<String> engines) {
        long params = parameterCount(workload);
        JsonObject o = new JsonObject();
        o.addProperty("parameters", params);
        JsonObject vs = new JsonObject();
        StringBuilder line = new StringBuilder(String.format(Locale.ROOT, "%-18s", workload));
        blockMedians.forEach((n, b) -> {
            vs.add(n, stats(b));
            line.append(String.format(Locale.ROOT, "  %s %s", n, range(b)));
        });
        o.add("variants", vs);
        JsonObject ratios = new JsonObject();
        for (String e : engines) {
            ratio(ratios, line, "runStep/" + e + " over plain", blockMedians.get("runStep/" + e), blockMedians.get("plain"));
        }
        double[] copy = blockMedians.get("copy");
        if (copy != null) {
            double[] gbs = new double[copy.length];
            for (int i = 0; i < copy.length; i++) {
                gbs[i] = COPY_BYTES * params / (copy[i] * 1e6);
            }
            o.addProperty("copy_bytes_per_parameter", COPY_BYTES);
            o.add("copy_gb_per_s", stats(gbs));
            o.addProperty("adam_bytes_per_parameter", ADAM_BYTES);
            for (String e : engines) {
                double[] u = blockMedians.get("update/" + e);
                if (u != null) {
                    // the fraction of the copy's bandwidth the update pass reaches for the bytes a fused Adam step
                    // must move: (ADAM_BYTES / t_update) / (COPY_BYTES / t_copy), per block
                    double[] frac = new double[u.length];
                    for (int i = 0; i < u.length; i++) {
                        frac[i] = (ADAM_BYTES / u[i]) / (COPY_BYTES / copy[i]);
                    }
                    ratios.add("update/" + e + " bandwidth over copy", stats(frac));
                    line.append(String.format(Locale.ROOT, "  update/%s at %s of the copy's bandwidth", e, range(frac)));
                }
            }
        }
        o.add("ratios", ratios);
        System.out.println(line);
        return o;
    }

    private static long parameterCount(String workload) {
        return Workloads.load(workload).parameterCount(); // the variants' models are private to them
    }

    /** Bytes per float32 parameter: a copy reads and writes each once. */
    static final int COPY_BYTES = 8;
    /**
     * Bytes per float32 parameter a fused projection + Adam step must move: the reductions read g and c (8),
     * the update reads p, g, c, exp_avg, exp_avg_sq (20) and writes p, g (the projected gradient, left in
     * {@code p.grad} as PyTorch users expect), exp_avg, exp_avg_sq (16).
     */
    static final int ADAM_BYTES = 44;

    private static void ratio(JsonObject ratios, StringBuilder line, String name, double[] a, double[] b) {
        if (a == null || b == null) {
            return;
        }
        double[] r = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            r[i] = a[i] / b[i];
        }
        ratios.add(name, stats(r));
        line.append(String.format(Locale.ROOT, "  %s %s", name, range(r)));
    }

    private static JsonObject stats(double[] v) {
        JsonObject s = new JsonObject();
        s.addProperty("median", round(median(v)));
        s.addProperty("min", round(Arrays.stream(v).min().orElse(Double.NaN)));
        s.addProperty("max", round(Arrays.stream(v).max().orElse(Double.NaN)));
        JsonArray all = new JsonArray();
        for (double x : v) {
            all.add(round(x));
        }
        s.add("blocks", all);
        return s;
    }

    private static String range(double[] v) {
        return String.format(Locale.ROOT, "%.4g [%.4g-%.4g]", median(v), Arrays.stream(v).min().orElse(Double.NaN),
                Arrays.stream(v).max().orElse(Double.NaN));
    }

    static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        int n = s.length;
        return n == 0 ? Double.NaN : n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    }

    private static double round(double v) {
        return Double.isFinite(v) ? Math.round(v * 10000) / 10000.0 : Double.NaN;
    }

    /**
     * Untimed, before each variant's calls in a block: lets the previous variant's idle OpenBLAS threads stop
     * spinning. OpenBLAS's workers spin for about 2^28 cycles (0.1 s here) after their last job before they sleep,
     * and a variant with concurrent passes, which runs its GEMMs on the two pass threads, would otherwise pay for
     * the spinning worker of the variant before it on one of the two cores (measured: mlp-deep's concurrent
     * runStep 1.18x plain in blocks of 3 calls, 0.73x with {@code OPENBLAS_THREAD_TIMEOUT=4}). A training loop
     * that only takes such steps never pays it; every variant waits alike. The price: after the pause a step runs
     * colder than in a loop (bench/NOTES.md, "The CPU targets with more blocks"); without concurrent variants, {@code
     * --pause-ms 0} measures the loop.
     */
    private static void settle(long ms) {
        if (ms <= 0) {
            return;
        }
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Milliseconds of one call, its preparation untimed. */
    private static double time(Variant v) {
        v.prepare();
        long t0 = System.nanoTime();
        v.call();
        return (System.nanoTime() - t0) / 1e6;
    }

    private static final String CONCURRENT = "+concurrent";

    /** {@code runStep} on an engine, {@code E+concurrent} with concurrent passes. */
    private static Variant runStep(String workload, String engine, List<AutoCloseable> toClose) {
        Workloads.Workload w = Workloads.load(workload);
        double gConstraint = 0.9 * w.uncondLoss();
        boolean concurrent = engine.endsWith(CONCURRENT);
        Engine e = Engine.parse(concurrent ? engine.substring(0, engine.length() - CONCURRENT.length()) : engine);
        Constraint opt = new Constraint(w.params(), OptimizerSpec.adam(Workloads.LR), 1.0, 1.0, e);
        opt.setConcurrentPasses(concurrent);
        toClose.add(opt);
        return () -> w.runStep(opt, gConstraint);
    }

    private static Variant plain(String workload, List<AutoCloseable> toClose) {
        Workloads.Workload w = Workloads.load(workload);
        Constraint opt = new Constraint(w.params(), OptimizerSpec.adam(Workloads.LR), 1.0, 1.0, Engine.PLAIN);
        toClose.add(opt);
        return () -> w.plainStep(opt);
    }

    private static Variant update(String workload, Engine engine, List<AutoCloseable> toClose) {
        Workloads.Workload w = Workloads.load(workload);
        Constraint opt = new Constraint(w.params(), OptimizerSpec.adam(Workloads.LR), 1.0, 1.0, engine);
        toClose.add(opt);
        // g - gConstraint far above any dot product: the projection always runs (a 0-dim tensor, as runStep's)
        Tensor gValue = torch.scalar_tensor(new Scalar(1e6), new TensorOptions(torch.ScalarType.Float));
        toClose.add(gValue);
        List<Tensor> params = opt.parameters();
        List<Tensor> uncond = new ArrayList<>();
        List<Tensor> cond = new ArrayList<>();
        for (List<Tensor> saved : List.of(uncond, cond)) { // the clones live outside any PointerScope
            try (PointerScope s = new PointerScope()) {
                opt.zeroGrad();
                Loss.MSE.apply(w.model().forward(w.data(), saved == uncond ? null : w.cond()), w.label()).backward();
            }
            for (Tensor p : params) {
                Tensor c = p.grad().clone();
                saved.add(c);
                toClose.add(c);
            }
        }
        return new Variant() {
            @Override
            public void prepare() {
                try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
                    for (int i = 0; i < params.size(); i++) {
                        params.get(i).grad().copy_(uncond.get(i));
                    }
                    opt.firstStep(true); // the unconditional gradient becomes the kept one
                    for (int i = 0; i < params.size(); i++) {
                        params.get(i).grad().copy_(cond.get(i));
                    }
                }
            }

            @Override
            public void call() {
                BenchAccess.constrainedStep(opt, gValue, 0.0);
            }
        };
    }

    private static Variant copy(String workload, List<AutoCloseable> toClose) {
        Workloads.Workload w = Workloads.load(workload);
        List<Tensor> src = new ArrayList<>(w.params().values());
        List<Tensor> dst = new ArrayList<>();
        try (NoGradGuard g = new NoGradGuard()) {
            for (Tensor t : src) {
                Tensor c = t.detach().clone();
                dst.add(c);
                toClose.add(c);
            }
        }
        return () -> {
            try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
                for (int i = 0; i < src.size(); i++) {
                    dst.get(i).copy_(src.get(i));
                }
            }
        };
    }
}
