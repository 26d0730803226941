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
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import com.google.gson.GsonBuilder;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.text2data.CapturedStep;
import org.text2data.Constraint;
import org.text2data.diffusion.Denoiser;
import org.text2data.Engine;
import org.text2data.LibTorch;
import org.text2data.Loss;
import org.text2data.OptimizerSpec;
import org.text2data.StepResult;
import org.text2data.Text2Data;
import org.text2data.engine.Engines;

/**
 * The step benchmark of {@code bench/gpu/java-check.sh}, without JMH (the GPU machine has no Maven to build it):
 * per workload of {@link Workloads}, on one device, the wall time per step, synchronised with the device after
 * every call, of
 * <ul>
 *   <li>{@code runStep-<engine>}: {@link Text2Data#runStep} per available engine;</li>
 *   <li>{@code captured}: on CUDA with the fused engine, {@link CapturedStep#replay} of runStep captured as a CUDA
 *       graph (skipped, with the reason, where the capture fails, and with {@code --no-captured});</li>
 *   <li>{@code plain}: zero the gradients, unconditional and conditional forward/backward, the base Adam step
 *       (no constraint): the floor of {@code runStep}, as {@code bench/python/bench_ref.py}'s baseline;</li>
 *   <li>{@code passes} and {@code passes-2threads}: the two forward/backward passes alone
 *       ({@code torch::autograd::grad}, no optimizer), in turn on this thread, and at the same time, the
 *       unconditional one on a second thread (the question behind {@link Constraint#setConcurrentPasses}, which
 *       runs on the CPU only: on CUDA libtorch runs every backward on one device thread, so only the forwards
 *       could overlap; skipped with {@code --no-passes}).</li>
 * </ul>
 * As {@code bench_ref.py}: Adam lr 1e-3, MSE, float32, {@code gConstraint} = 0.9 x the initial unconditional
 * loss, each mode on its own copy of the initial weights ({@code $T2D_BENCH_WEIGHTS}, written by
 * {@code bench_ref.py --weights-dir}, else libtorch's seeded initialisation), modes timed round-robin after
 * warm-up rounds, denormals flushed.
 *
 * <pre>
 * GpuStepBench [--device cuda|cpu] [--workloads a,b] [--warmup K] [--iters M | --budget SEC] [--json FILE]
 *              [--no-captured] [--no-passes]
 * GpuStepBench --info        # Java, libtorch build, CUDA (or why not), the fused engine
 * </pre>
 */
public final class GpuStepBench {

    private GpuStepBench() {
    }

    /** One timed mode: a step and the device to wait for after it. */
    private interface Step {
        void run();
    }

    /**
     * Runs the benchmark (options above) and prints one line per mode and the ratios; {@code --json FILE} also
     * writes the summaries, in the layout of {@code bench_ref.py --json}.
     */
    public static void main(String[] args) throws IOException {
        LibTorch.ensureLoaded();
        String device = LibTorch.cudaAvailable() ? "cuda" : "cpu";
        String workloads = String.join(",", Workloads.CONFIGS.keySet());
        int warmup = 5;
        Integer iters = null;
        double budget = 2.0;
        Path json = null;
        boolean withCaptured = true;
        boolean withPasses = true;
        if (args.length == 1 && args[0].equals("--info")) {
            info();
            return;
        }
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (a) {
                case "--device" -> { device = v; i++; }
                case "--workloads" -> { workloads = v; i++; }
                case "--warmup" -> { warmup = Integer.parseInt(v); i++; }
                case "--iters" -> { iters = Integer.parseInt(v); i++; }
                case "--budget" -> { budget = Double.parseDouble(v); i++; }
                case "--json" -> { json = Path.of(v); i++; }
                case "--no-captured" -> withCaptured = false;
                case "--no-passes" -> withPasses = false;
                default -> throw new IllegalArgumentException("unknown option " + a
                        + " (--device, --workloads, --warmup, --iters, --budget, --json, --no-captured, --no-passes)");
            }
        }
        if (device.startsWith("cuda") && !LibTorch.cudaAvailable()) {
            throw new IllegalStateException("--device " + device + ": no CUDA device is usable here");
        }
        torch.globalContext().setFlushDenormal(true);
        List<String> engines = new ArrayList<>(List.of("plain"));
        if (Engines.fusedAvailable()) {
            engines.add("fused");
        } else {
            System.out.println("fused engine not available: " + Engines.fusedUnavailableReason());
        }
        System.out.printf(Locale.ROOT, "device %s, engines %s, libtorch threads %d, weights %s%n", device, engines,
                LibTorch.torchThreads(), Workloads.weightsDir() == null ? "seeded (no $T2D_BENCH_WEIGHTS)"
                        : Workloads.weightsDir());
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("device", device);
        out.put("engines", engines);
        Map<String, Object> all = new LinkedHashMap<>();
        out.put("workloads", all);
        boolean cuda = device.startsWith("cuda");
        for (String name : workloads.split(",")) {
            Map<String, Step> modes = new LinkedHashMap<>();
            List<AutoCloseable> open = new ArrayList<>();
            long tensors = 0;
            long params = 0;
            for (String engine : engines) {
                Workloads.Workload w = onDevice(Workloads.load(name), device);
                tensors = w.params().size();
                params = w.parameterCount();
                double gc = 0.9 * w.uncondLoss();
                Constraint opt = new Constraint(w.params(), OptimizerSpec.adam(Workloads.LR), 1.0, 1.0, Engine.parse(engine));
                open.add(opt);
                modes.put("runStep-" + engine, () -> w.runStep(opt, gc));
            }
            if (cuda && engines.contains("fused") && withCaptured) {
                Workloads.Workload wc = onDevice(Workloads.load(name), device);
                double gc = 0.9 * wc.uncondLoss();
                Constraint opt = new Constraint(wc.params(), OptimizerSpec.adam(Workloads.LR), 1.0, 1.0, Engine.FUSED);
                open.add(opt);
                try {
                    CapturedStep captured = CapturedStep.capture(opt, gc, wc.model(), wc.cond(), wc.data(), wc.label(),
                            Loss.MSE);
                    open.add(0, captured); // closed before its constraint
                    modes.put("captured", () -> {
                        try (StepResult r = captured.replay(gc)) {
                            r.projectedTensors();
                        }
                    });
                } catch (RuntimeException e) {
                    System.out.println("captured step not measured: " + e.getMessage());
                }
            }
            Workloads.Workload w = onDevice(Workloads.load(name), device);
            Constraint base = new Constraint(w.params(), OptimizerSpec.adam(Workloads.LR), 1.0, 1.0, Engine.PLAIN);
            open.add(base);
            modes.put("plain", () -> w.plainStep(base));
            if (withPasses) {
                Passes passes = new Passes(onDevice(Workloads.load(name), device));
                open.add(passes);
                modes.put("passes", passes::inTurn);
                modes.put("passes-2threads", passes::atOnce);
            }
            System.out.printf(Locale.ROOT, "%s: %d parameter tensors, %d parameters, data %s%n", name, tensors,
                    params, Arrays.toString(w.data().shape()));
            Map<String, Map<String, Object>> res = time(modes, warmup, iters, budget, cuda);
            for (Map.Entry<String, Map<String, Object>> e : res.entrySet()) {
                Map<String, Object> r = e.getValue();
                System.out.printf(Locale.ROOT, "  %-16s median %9.3f ms  [min %.3f, p25 %.3f, p75 %.3f, max %.3f]  n=%d%n",
                        e.getKey(), r.get("median_ms"), r.get("min_ms"), r.get("p25_ms"), r.get("p75_ms"),
                        r.get("max_ms"), r.get("iters"));
            }
            for (String engine : engines) {
                System.out.printf(Locale.ROOT, "  runStep-%s / plain = %.3f%n", engine,
                        (double) res.get("runStep-" + engine).get("median_ms") / (double) res.get("plain").get("median_ms"));
            }
            if (res.containsKey("captured")) {
                System.out.printf(Locale.ROOT, "  captured / plain = %.3f%n",
                        (double) res.get("captured").get("median_ms") / (double) res.get("plain").get("median_ms"));
            }
            if (res.containsKey("passes-2threads")) {
                System.out.printf(Locale.ROOT, "  passes-2threads / passes = %.3f%n",
                        (double) res.get("passes-2threads").get("median_ms") / (double) res.get("passes").get("median_ms"));
            }
            Map<String, Object> entry = new LinkedHashMap<>();
            entry.put("param_tensors", tensors);
            entry.put("params", params);
            entry.putAll(res);
            all.put(name, entry);
            for (AutoCloseable c : open) {
                try {
                    c.close();
                } catch (Exception e) { // a CapturedStep's close waits for the device: report what it found
                    System.out.println("closing " + c.getClass().getSimpleName() + " failed: " + e);
                }
            }
        }
        if (json != null) {
            Files.writeString(json, new GsonBuilder().setPrettyPrinting().create().toJson(out));
        }
    }

    /**
     * What this JVM sees, one {@code key: value} per line, for java-check.sh: Java, the libtorch build, CUDA (and
     * why not), the fused engine and its native library.
     */
    static void info() {
        System.out.println("java: " + Runtime.version() + " (" + System.getProperty("java.home") + ")");
        boolean cudaBuild = org.bytedeco.pytorch.presets.torch.class.getResource("/org/bytedeco/pytorch/"
                + org.bytedeco.javacpp.Loader.getPlatform() + "-gpu/libtorch_cuda.so") != null;
        System.out.println("libtorch: " + (cudaBuild ? "CUDA build (linux-x86_64-gpu)" : "CPU build"));
        boolean cuda = LibTorch.cudaAvailable();
        System.out.println("cuda available: " + cuda + (cuda ? ", " + torch.cuda_device_count() + " device(s)"
                : " (" + LibTorch.cudaUnavailableReason() + ")"));
        System.out.println("fused engine: " + (Engines.fusedAvailable() ? "available, " + org.text2data.engine.NativeLibrary.loadedFrom()
                : "not available (" + Engines.fusedUnavailableReason() + ")"));
        if (cuda && Engines.fusedAvailable()) {
            try (PointerScope s = new PointerScope(); Device dev = new Device("cuda")) {
                Tensor p = torch.ones(8).to(dev, torch.ScalarType.Float).requires_grad_(true);
                try (Constraint opt = new Constraint(List.of(p), OptimizerSpec.sgd(0.1), 1.0, 1.0, Engine.FUSED)) {
                    System.out.println("fused engine on cuda: " + opt.engineName());
                }
            }
        }
    }

    /**
     * The two passes of a step without the rest: each computes its loss's gradients with respect to the parameters
     * ({@code torch::autograd::grad}, as {@code Constraint.setConcurrentPasses} does), and they are dropped. On a
     * second thread, the unconditional pass launches onto that thread's current stream: the default stream, as on
     * this one (the benchmark changes no stream).
     */
    private static final class Passes implements AutoCloseable {
        private final Workloads.Workload w;
        private final TensorVector inputs;
        private final ExecutorService worker = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(null, () -> {
                torch.globalContext().setFlushDenormal(true); // as the main thread (per thread: a new one does not)
                r.run();
            }, "bench-unconditional-pass", 8L << 20);
            t.setDaemon(true);
            return t;
        });

        Passes(Workloads.Workload w) {
            this.w = w;
            this.inputs = new TensorVector(w.params().values().toArray(new Tensor[0]));
        }

        private void pass(Tensor cond) {
            try (PointerScope scope = new PointerScope()) {
                Tensor l = Loss.MSE.apply(w.model().forward(w.data(), cond), w.label());
                torch.grad(new TensorVector(l), inputs, new TensorVector(), new BoolOptional(), false, true);
            }
        }

        void inTurn() {
            pass(null);
            pass(w.cond());
        }

        void atOnce() {
            Future<?> f = worker.submit(() -> pass(null));
            pass(w.cond());
            try {
                f.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted", e);
            } catch (ExecutionException e) {
                throw new IllegalStateException("the unconditional pass failed: " + e.getCause(), e.getCause());
            }
        }

        @Override
        public void close() throws InterruptedException {
            worker.shutdownNow();
            worker.awaitTermination(1, java.util.concurrent.TimeUnit.MINUTES); // idle: every call waits for it
            inputs.close(); // its references keep the parameters (on CUDA, device memory) alive
        }
    }

    /** The workload with its model, parameters and batch on {@code device} (float32). */
    static Workloads.Workload onDevice(Workloads.Workload w, String device) {
        if (device.equals("cpu")) {
            return w;
        }
        try (Device dev = new Device(device)) {
            Workloads.Config cfg = w.config();
            Map<String, Tensor> params;
            org.text2data.ConditionalModel model;
            if (w.model() instanceof Denoiser d) {
                d.to(dev, torch.ScalarType.Float, false);
                model = d;
                params = d.namedParameters();
            } else {
                Map<String, Tensor> state = new LinkedHashMap<>();
                for (Map.Entry<String, Tensor> e : w.params().entrySet()) {
                    state.put(e.getKey(), e.getValue().detach().to(dev, torch.ScalarType.Float));
                }
                TransformerDenoiser t = new TransformerDenoiser(cfg.d(), cfg.c(), cfg.h(), cfg.layers(), cfg.heads(),
                        cfg.seq(), cfg.ff(), state);
                model = t;
                params = t.namedParameters();
            }
            return new Workloads.Workload(cfg, model, params, w.data().to(dev, torch.ScalarType.Float),
                    w.cond().to(dev, torch.ScalarType.Float), w.label().to(dev, torch.ScalarType.Float), w.fromFiles());
        }
    }

    /** Round-robin: one call of each mode per round, each followed by a device synchronisation. */
    private static Map<String, Map<String, Object>> time(Map<String, Step> modes, int warmup, Integer iters,
                                                         double budget, boolean cuda) {
        for (int i = 0; i < warmup; i++) {
            for (Step s : modes.values()) {
                s.run();
                sync(cuda);
            }
        }
        Map<String, List<Double>> times = new LinkedHashMap<>();
        modes.keySet().forEach(k -> times.put(k, new ArrayList<>()));
        long start = System.nanoTime();
        int rounds = 0;
        while (true) {
            for (Map.Entry<String, Step> e : modes.entrySet()) {
                long t0 = System.nanoTime();
                e.getValue().run();
                sync(cuda);
                times.get(e.getKey()).add((System.nanoTime() - t0) / 1e6);
            }
            rounds++;
            double elapsed = (System.nanoTime() - start) / 1e9;
            if (iters != null ? rounds >= iters : rounds >= 500 || (rounds >= 5 && elapsed >= budget * modes.size())) {
                break;
            }
        }
        Map<String, Map<String, Object>> res = new LinkedHashMap<>();
        times.forEach((k, v) -> res.put(k, summary(v)));
        return res;
    }

    private static void sync(boolean cuda) {
        if (cuda) {
            torch.cuda_synchronize();
        }
    }

    private static Map<String, Object> summary(List<Double> t) {
        double[] s = t.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("median_ms", quantile(s, 0.5));
        m.put("min_ms", s[0]);
        m.put("p25_ms", quantile(s, 0.25));
        m.put("p75_ms", quantile(s, 0.75));
        m.put("max_ms", s[s.length - 1]);
        m.put("iters", s.length);
        return m;
    }

    private static double quantile(double[] sorted, double q) {
        double pos = q * (sorted.length - 1);
        int lo = (int) Math.floor(pos);
        int hi = Math.min(lo + 1, sorted.length - 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }
}
