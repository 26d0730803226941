package org.text2data.conformance;

import java.io.IOException;
import java.io.Reader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.text2data.Batch;
import org.text2data.ConditionalModel;
import org.text2data.Constraint;
import org.text2data.diffusion.Denoiser;
import org.text2data.Engine;
import org.text2data.LibTorch;
import org.text2data.Loss;
import org.text2data.OptimizerSpec;
import org.text2data.StepResult;
import org.text2data.Text2Data;
import org.text2data.TorchScriptModel;

/**
 * Runs the conformance fixtures made by the Python reference (the format of
 * {@code shared/conformance/README.md}) through this library and compares with the reference's tolerances.
 */
public final class Conformance {

    /** Which way a trajectory case is loaded. */
    public enum Via {
        /** The projection fixtures: gradients straight into the engine. */
        PROJECTION,
        /** The denoiser built in Java from the fixture's {@code init} state dict, batch from the JSON. */
        JAVA_MODEL,
        /** The TorchScript file and the {@code torch.save} batch beside the JSON. */
        TORCHSCRIPT;

        @Override
        public String toString() {
            return switch (this) {
                case PROJECTION -> "projection";
                case JAVA_MODEL -> "java-model";
                case TORCHSCRIPT -> "torchscript";
            };
        }
    }

    /**
     * Where the unconditional loss handed to the projection comes from, in a trajectory case.
     * The projection fixtures always hand the fixture's {@code g_value}: {@link #RECORDED}.
     */
    public enum GSource {
        /** End to end: {@code runStep} computes {@code g} here, as a user's run does. */
        COMPUTED,
        /**
         * The fixture's recorded {@code g_values[s]} is handed to {@code secondStep} at step {@code s}
         * (the gradients are still computed here). Isolates the projection and optimizer arithmetic from
         * the loss's last bits, which legitimately differ between devices.
         */
        RECORDED;

        @Override
        public String toString() {
            return this == COMPUTED ? "g computed" : "g recorded";
        }
    }

    /** A case's verdict. */
    public enum Verdict {
        /** Within the tolerance. */
        OK,
        /** Outside the tolerance, or an error. */
        FAIL,
        /**
         * An end-to-end trajectory outside the tolerance only because it sits on the barrier: at some step
         * {@code g - g_constraint} here and in the fixture lie on either side of zero (within the case's
         * tolerance of each other), so the projection switches on where the reference's did not, or off
         * where it did; the same run with the fixture's {@code g} handed over at exactly those steps, and
         * the computed {@code g} everywhere else, is within the tolerance. Counted as passed.
         */
        BARRIER;

        @Override
        public String toString() {
            return this == OK ? "ok" : name();
        }
    }

    /**
     * One case run on one engine one way.
     *
     * @param caseName the fixture case's name
     * @param engine the engine's name, with the device ({@code plain}, {@code fused-cpu}, {@code plain-cuda}, ...), and
     *               {@code +fused} where libtext2data's fused optimizer took the steps
     * @param via how the case was loaded
     * @param g where the projection's unconditional loss came from
     * @param verdict within the tolerance, not, or on the barrier
     * @param worstError the largest relative error over every compared value (NaN after an error)
     * @param detail where the worst error was, the barrier's step and values, or the error's message
     */
    public record Result(String caseName, String engine, Via via, GSource g, Verdict verdict, double worstError,
                         String detail) {
        /** Within the tolerance, or on the barrier ({@link Verdict#BARRIER}); false for a failure. */
        public boolean passed() {
            return verdict != Verdict.FAIL;
        }

        /** One line for the runner's output: verdict, case, engine, way, g's source, worst error, detail. */
        public String line() {
            return String.format("%-7s %-28s %-11s %-12s %-10s  max rel err %.2e%s", verdict, caseName,
                    engine, via, g, worstError, detail.isEmpty() ? "" : "  " + detail);
        }
    }

    private final Path dir;
    private final String device;

    /** The fixtures of {@code dir}, run on the CPU. */
    public Conformance(Path dir) {
        this(dir, "cpu");
    }

    /** The fixtures of {@code dir}, with every tensor and model on {@code device} ({@code cpu}, {@code cuda}). */
    public Conformance(Path dir, String device) {
        this.dir = dir;
        this.device = device;
    }

    /** Every case of the directory on each engine; each result is also handed to {@code sink} as it comes. */
    public List<Result> runAll(List<Engine> engines, Consumer<Result> sink) throws IOException {
        LibTorch.ensureLoaded();
        List<Result> all = new ArrayList<>();
        Consumer<Result> both = r -> {
            all.add(r);
            sink.accept(r);
        };
        JsonArray projection = read("projection.json");
        JsonArray runStep = read("run_step.json");
        for (Engine engine : engines) {
            for (JsonElement c : projection) {
                both.accept(runProjection(c.getAsJsonObject(), engine));
            }
            for (JsonElement c : runStep) {
                for (Via via : new Via[] {Via.JAVA_MODEL, Via.TORCHSCRIPT}) {
                    both.accept(runTrajectory(c.getAsJsonObject(), engine, via, GSource.COMPUTED));
                    both.accept(runTrajectory(c.getAsJsonObject(), engine, via, GSource.RECORDED));
                    if (device.equals("cpu")) { // end to end again, runStep's two passes at the same time
                        both.accept(runTrajectory(c.getAsJsonObject(), engine, via, GSource.COMPUTED, true));
                    }
                }
            }
        }
        return all;
    }

    private JsonArray read(String name) throws IOException {
        Path f = dir.resolve(name);
        if (!Files.isRegularFile(f)) {
            throw new IOException("fixture file not found: " + f);
        }
        try (Reader r = Files.newBufferedReader(f)) {
            JsonElement root = JsonParser.parseReader(r);
            if (!root.isJsonObject() || !root.getAsJsonObject().has("cases")) {
                throw new IOException("fixture file " + f + " has no \"cases\" list");
            }
            return root.getAsJsonObject().getAsJsonArray("cases");
        } catch (com.google.gson.JsonParseException e) {
            throw new IOException("fixture file " + f + " is not valid JSON: " + e.getMessage(), e);
        }
    }

    /** One call of the second step, straight on the engine through the public API. */
    public Result runProjection(JsonObject c, Engine engine) {
        String name = c.get("name").getAsString();
        boolean f64 = "float64".equals(c.get("dtype").getAsString());
        double tol = f64 ? 1e-9 : 1e-5;
        try (PointerScope scope = new PointerScope()) {
            JsonArray ts = c.getAsJsonArray("tensors");
            List<Tensor> params = new ArrayList<>();
            for (JsonElement e : ts) {
                JsonObject t = e.getAsJsonObject();
                params.add(tensor(t.getAsJsonArray("constraint_grad"), shape(t.getAsJsonArray("shape")), f64)
                        .mul(new org.bytedeco.pytorch.Scalar(0.0)).requires_grad_(true));
            }
            String engineName;
            double worst = 0;
            try (Constraint opt = new Constraint(params, OptimizerSpec.sgd(0.0), c.get("alpha").getAsDouble(),
                    c.get("beta").getAsDouble(), engine)) {
                engineName = label(opt.engineName());
                for (int i = 0; i < params.size(); i++) {
                    JsonObject t = ts.get(i).getAsJsonObject();
                    params.get(i).mutable_grad().put(tensor(t.getAsJsonArray("constraint_grad"), shape(t.getAsJsonArray("shape")), f64));
                }
                opt.firstStep(true);
                for (int i = 0; i < params.size(); i++) {
                    JsonObject t = ts.get(i).getAsJsonObject();
                    params.get(i).grad().copy_(tensor(t.getAsJsonArray("grad"), shape(t.getAsJsonArray("shape")), f64));
                }
                Tensor gValue = tensor(c.get("g_value").getAsDouble(), f64);
                opt.secondStep(gValue, c.get("g_constraint").getAsDouble());
                for (int i = 0; i < params.size(); i++) {
                    JsonObject t = ts.get(i).getAsJsonObject();
                    Tensor expected = tensor(t.getAsJsonArray("expected"), shape(t.getAsJsonArray("shape")), f64);
                    worst = Math.max(worst, relError(params.get(i).grad(), expected));
                }
            }
            return new Result(name, engineName, Via.PROJECTION, GSource.RECORDED, worst <= tol ? Verdict.OK : Verdict.FAIL,
                    worst, "");
        } catch (RuntimeException e) {
            if (Boolean.getBoolean("text2data.debug")) e.printStackTrace();
            return new Result(name, engine.toString(), Via.PROJECTION, GSource.RECORDED, Verdict.FAIL, Double.NaN,
                    "error: " + e.getMessage());
        }
    }

    /** {@link #runTrajectory(JsonObject, Engine, Via, GSource)} end to end ({@link GSource#COMPUTED}). */
    public Result runTrajectory(JsonObject c, Engine engine, Via via) {
        return runTrajectory(c, engine, via, GSource.COMPUTED);
    }

    /**
     * A run of {@code steps} constrained steps, compared step by step ({@code g_values},
     * {@code cond_losses_after_step}) and at the end ({@code final}), with the unconditional loss handed to
     * the projection computed here ({@code runStep}, end to end) or taken from the fixture.
     *
     * <p>An end-to-end run outside the tolerance gets the verdict {@link Verdict#BARRIER} instead of
     * {@link Verdict#FAIL} only when both hold: (1) at one step or more, {@code alpha * (g - g_constraint)} is
     * positive here and not in the fixture, or the other way round (the projection's excess switches
     * sides: with a zero conditional gradient, as the denoiser's {@code null} has, {@code lam} is zero on one
     * side and positive on the other, and Adam turns a positive gradient into a step of up to its learning
     * rate); (2) a third
     * run, identical but for the fixture's {@code g} handed over at those steps only, is within the
     * tolerance, its computed {@code g} included, so everything else agrees. The line names the first such
     * step and {@code g - g_constraint} there, here and in the fixture.
     */
    public Result runTrajectory(JsonObject c, Engine engine, Via via, GSource g) {
        return runTrajectory(c, engine, via, g, false);
    }

    /**
     * {@link #runTrajectory(JsonObject, Engine, Via, GSource)}, where {@code concurrentPasses} runs each
     * {@code runStep}'s two passes at the same time ({@link Constraint#setConcurrentPasses}; the engine's name then
     * ends in {@code +concurrent}). It changes only the end-to-end run: with the recorded g the steps are written out.
     */
    public Result runTrajectory(JsonObject c, Engine engine, Via via, GSource g, boolean concurrentPasses) {
        String name = c.get("name").getAsString();
        boolean f64 = "float64".equals(c.get("dtype").getAsString());
        double tol = f64 ? 1e-9 : 1e-4;
        try {
            Run run = trajectory(c, engine, via, g == GSource.RECORDED ? Handed.RECORDED : Handed.COMPUTED,
                    concurrentPasses);
            if (run.missing != null) {
                return new Result(name, run.engineName, via, g, Verdict.FAIL, Double.NaN, "no parameter " + run.missing);
            }
            if (run.worst <= tol) {
                return new Result(name, run.engineName, via, g, Verdict.OK, run.worst, "");
            }
            if (g == GSource.COMPUTED && !run.flips.isEmpty()) {
                Run repaired = trajectory(c, engine, via, Handed.RECORDED_AT_FLIPS, false);
                if (repaired.missing == null && repaired.worst <= tol) {
                    Flip f = run.flips.get(0);
                    return new Result(name, run.engineName, via, g, Verdict.BARRIER, run.worst, String.format(
                            "%s; on the barrier: at step %d g - g_constraint = %+.3e here, %+.3e in the fixture; "
                            + "with the fixture's g at step%s %s: max rel err %.2e",
                            run.detail, f.step, f.here, f.fixture, repaired.flips.size() == 1 ? "" : "s",
                            repaired.flipSteps(), repaired.worst));
                }
            }
            return new Result(name, run.engineName, via, g, Verdict.FAIL, run.worst, run.detail);
        } catch (RuntimeException e) {
            return new Result(name, engine + (concurrentPasses ? "+concurrent" : ""), via, g, Verdict.FAIL, Double.NaN,
                    "error: " + e.getMessage());
        }
    }

    /** What {@code secondStep} gets: the computed g, the fixture's, or the fixture's where the two switch sides. */
    private enum Handed { COMPUTED, RECORDED, RECORDED_AT_FLIPS }

    /** A step where {@code alpha * (g - g_constraint)} is positive on one side only (values: g - g_constraint). */
    private record Flip(int step, double here, double fixture) {
    }

    /** One trajectory run's outcome. */
    private static final class Run {
        String engineName;
        double worst;
        String detail = "";
        String missing;
        final List<Flip> flips = new ArrayList<>();

        void see(double err, String where) {
            if (err > worst || (Double.isNaN(err) && !Double.isNaN(worst))) { // a NaN is the worst there is
                worst = err;
                detail = "worst at " + where;
            }
        }

        String flipSteps() {
            return flips.stream().map(f -> String.valueOf(f.step)).collect(java.util.stream.Collectors.joining(","));
        }
    }

    private Run trajectory(JsonObject c, Engine engine, Via via, Handed handed, boolean concurrentPasses) {
        boolean f64 = "float64".equals(c.get("dtype").getAsString());
        Run run = new Run();
        try (PointerScope scope = new PointerScope()) {
            JsonObject m = c.getAsJsonObject("model");
            JsonObject b = c.getAsJsonObject("batch");
            ConditionalModel model;
            Map<String, Tensor> params;
            Batch batch;
            TorchScriptModel ts = null;
            if (via == Via.TORCHSCRIPT) {
                ts = TorchScriptModel.load(dir.resolve(m.get("torchscript").getAsString()));
                batch = Batch.load(dir.resolve(b.get("torch_save").getAsString()));
                if (!device.equals("cpu")) {
                    ts.to(device);
                    batch = batch.to(device);
                }
                model = ts;
                params = ts.namedParameters();
            } else {
                Denoiser d = new Denoiser(m.get("d").getAsInt(), m.get("c").getAsInt(), m.get("h").getAsInt(),
                        m.get("layers").getAsInt());
                try (org.bytedeco.pytorch.Device dev = new org.bytedeco.pytorch.Device(device)) {
                    d.to(dev, f64 ? torch.ScalarType.Double : torch.ScalarType.Float, false);
                }
                Map<String, Tensor> init = new LinkedHashMap<>();
                for (Map.Entry<String, JsonElement> e : m.getAsJsonObject("init").entrySet()) {
                    init.put(e.getKey(), named(e.getValue().getAsJsonObject(), f64));
                }
                d.loadStateDict(init);
                model = d;
                params = d.namedParameters();
                batch = new Batch(named(b.getAsJsonObject("data"), f64), named(b.getAsJsonObject("cond"), f64),
                        named(b.getAsJsonObject("label"), f64));
            }
            JsonObject o = c.getAsJsonObject("optimizer");
            OptimizerSpec spec = OptimizerSpec.of(o.get("type").getAsString(), o.get("lr").getAsDouble());
            if (o.has("weight_decay")) {
                spec = spec.weightDecay(o.get("weight_decay").getAsDouble());
            }
            if (o.has("momentum")) {
                spec = spec.momentum(o.get("momentum").getAsDouble());
            }
            Loss loss = Loss.named(c.has("loss") ? c.get("loss").getAsString() : "mse");
            double gConstraint = c.get("g_constraint").getAsDouble();
            double alpha = c.get("alpha").getAsDouble();
            int steps = c.get("steps").getAsInt();
            JsonObject expected = c.getAsJsonObject("expected");
            JsonArray gValues = expected.getAsJsonArray("g_values");
            JsonArray condAfter = expected.getAsJsonArray("cond_losses_after_step");
            try (Constraint opt = new Constraint(params, spec, alpha, c.get("beta").getAsDouble(), engine)) {
                // "+fused" where libtext2data's fused optimizer takes the steps, not libtorch's
                run.engineName = label(opt.engineName()) + (opt.isFused() ? "+fused" : "")
                        + (concurrentPasses ? "+concurrent" : "");
                opt.setConcurrentPasses(concurrentPasses);
                for (int s = 0; s < steps; s++) {
                    double recorded = gValues.get(s).getAsDouble();
                    double computed;
                    if (handed == Handed.COMPUTED) {
                        try (StepResult r = Text2Data.runStep(opt, gConstraint, model, batch.cond(), batch.data(),
                                batch.label(), loss)) {
                            computed = r.uncondLoss();
                        }
                    } else {
                        computed = stepHanding(opt, model, batch, loss, gConstraint, alpha, recorded, handed);
                    }
                    if ((alpha * (computed - gConstraint) > 0) != (alpha * (recorded - gConstraint) > 0)) {
                        run.flips.add(new Flip(s, computed - gConstraint, recorded - gConstraint));
                    }
                    run.see(rel(computed, recorded), "g_values[" + s + "]");
                    double after;
                    try (PointerScope inner = new PointerScope(); NoGradGuard ng = new NoGradGuard()) {
                        after = loss.apply(model.forward(batch.data(), batch.cond()), batch.label()).item_double();
                    }
                    run.see(rel(after, condAfter.get(s).getAsDouble()), "cond_losses_after_step[" + s + "]");
                }
                for (Map.Entry<String, JsonElement> e : expected.getAsJsonObject("final").entrySet()) {
                    Tensor actual = params.get(e.getKey());
                    if (actual == null) {
                        run.missing = e.getKey();
                        return run;
                    }
                    run.see(relError(actual, named(e.getValue().getAsJsonObject(), f64)), "final " + e.getKey());
                }
            } finally {
                if (ts != null) {
                    ts.close();
                }
            }
            return run;
        }
    }

    /**
     * {@code runStep}'s sequence written out, handing {@code secondStep} the fixture's g ({@code recorded}), or,
     * for {@link Handed#RECORDED_AT_FLIPS}, the computed one except where the two lie on either side of the
     * barrier. Returns the g computed here.
     */
    private static double stepHanding(Constraint opt, ConditionalModel model, Batch batch, Loss loss,
                                      double gConstraint, double alpha, double recorded, Handed handed) {
        try (PointerScope scope = new PointerScope()) {
            opt.zeroGrad();
            Tensor g = loss.apply(model.forward(batch.data(), null), batch.label());
            g.backward();
            opt.firstStep(true);
            Tensor f = loss.apply(model.forward(batch.data(), batch.cond()), batch.label());
            f.backward();
            double computed = g.item_double();
            boolean flipped = (alpha * (computed - gConstraint) > 0) != (alpha * (recorded - gConstraint) > 0);
            if (handed == Handed.RECORDED || flipped) {
                opt.secondStep(recorded, gConstraint);
            } else {
                opt.secondStep(g.detach(), gConstraint);
            }
            opt.stepBase();
            return computed;
        }
    }

    /** The engine's name, with the device where the name does not already say it ({@code plain-cuda}). */
    private String label(String engine) {
        return device.equals("cpu") || engine.endsWith(device) ? engine : engine + "-" + device;
    }

    /** max |a - b| / max(max |b|, tiny): the tensor's norm-wise relative error, in float64. */
    static double relError(Tensor actual, Tensor expected) {
        Tensor a = actual.detach().to(torch.ScalarType.Double);
        Tensor b = expected.to(torch.ScalarType.Double);
        double diff = a.sub(b).abs().max().item_double();
        double scale = b.numel() == 0 ? 0 : b.abs().max().item_double();
        return diff == 0 ? 0 : diff / Math.max(scale, Double.MIN_NORMAL);
    }

    private static double rel(double a, double b) {
        double d = Math.abs(a - b);
        return d == 0 ? 0 : d / Math.max(Math.abs(b), Double.MIN_NORMAL);
    }

    private static long[] shape(JsonArray a) {
        long[] s = new long[a.size()];
        for (int i = 0; i < s.length; i++) {
            s[i] = a.get(i).getAsLong();
        }
        return s;
    }

    private Tensor named(JsonObject o, boolean f64) {
        return tensor(o.getAsJsonArray("values"), shape(o.getAsJsonArray("shape")), f64);
    }

    private Tensor tensor(JsonArray values, long[] shape, boolean f64) {
        double[] v = new double[values.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = values.get(i).getAsDouble();
        }
        return placed(Tensor.create(v, shape), f64);
    }

    private Tensor tensor(double v, boolean f64) {
        return placed(Tensor.create(new double[] {v}, new long[0]), f64);
    }

    private Tensor placed(Tensor t, boolean f64) {
        torch.ScalarType type = f64 ? torch.ScalarType.Double : torch.ScalarType.Float;
        if (device.equals("cpu")) {
            return f64 ? t : t.to(type);
        }
        try (org.bytedeco.pytorch.Device d = new org.bytedeco.pytorch.Device(device)) {
            return t.to(d, type);
        }
    }
}
