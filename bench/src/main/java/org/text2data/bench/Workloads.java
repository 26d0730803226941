package org.text2data.bench;

import java.io.IOException;
import java.io.Reader;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;

import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.text2data.ConditionalModel;
import org.text2data.Constraint;
import org.text2data.diffusion.Denoiser;
import org.text2data.LibTorch;
import org.text2data.Loss;
import org.text2data.StepResult;
import org.text2data.Text2Data;

/**
 * The benchmark workloads of {@code bench/python/workloads.py}, read from the raw float32 weights and
 * batch that {@code bench_ref.py --weights-dir DIR} writes (so Java and Python start from the same
 * weights and batch). The folder is {@code $T2D_BENCH_WEIGHTS} (or {@code -Dtext2data.bench.weights});
 * without the files, the model is built with libtorch's seeded default initialisation instead.
 */
public final class Workloads {

    /** name, kind, d, c, h or d_model, layers, batch (and for the transformer heads, seq, ff). */
    public record Config(String name, String kind, int d, int c, int h, int layers, int batch,
                         int heads, int seq, int ff) {
        long[] dataShape() {
            return kind.equals("transformer") ? new long[] {batch, seq, d} : new long[] {batch, d};
        }
    }

    public static final Map<String, Config> CONFIGS = new LinkedHashMap<>();

    /** The learning rate of every benchmark's Adam, as {@code bench_ref.py}'s. */
    public static final double LR = 1e-3;

    static {
        put(new Config("mlp-deep-small", "mlp", 16, 16, 64, 16, 32, 0, 0, 0));
        put(new Config("mlp-deep", "mlp", 64, 32, 256, 8, 256, 0, 0, 0));
        put(new Config("mlp-wide", "mlp", 64, 32, 2048, 3, 256, 0, 0, 0));
        put(new Config("transformer-small", "transformer", 16, 32, 64, 4, 64, 4, 16, 256));
    }

    private static void put(Config c) {
        CONFIGS.put(c.name(), c);
    }

    /**
     * A model, its named parameters (state-dict order) and its batch; the steps every benchmark times on it
     * (Adam, MSE, as {@code bench/python/bench_ref.py}) are here, so that they all time the same ones.
     */
    public record Workload(Config config, ConditionalModel model, Map<String, Tensor> params,
                           Tensor data, Tensor cond, Tensor label, boolean fromFiles) {
        public long parameterCount() {
            long n = 0;
            for (Tensor t : params.values()) {
                n += t.numel();
            }
            return n;
        }

        /**
         * The unconditional MSE loss of the batch under the current weights, without gradients: the benchmarks'
         * {@code gConstraint} is 0.9 x this, so that the constraint is active.
         */
        public double uncondLoss() {
            try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
                return Loss.MSE.apply(model.forward(data, null), label).item_double();
            }
        }

        /** One {@link Text2Data#runStep} on the batch (MSE); returns how many tensors it projected. */
        public int runStep(Constraint opt, double gConstraint) {
            try (StepResult r = Text2Data.runStep(opt, gConstraint, model, cond, data, label, Loss.MSE)) {
                return r.projectedTensors();
            }
        }

        /**
         * The floor of {@link #runStep}, as {@code bench_ref.py}'s baseline: zero the gradients (in place, as
         * PyTorch 1.13), unconditional then conditional forward/backward (the gradients accumulate), the base
         * optimizer's step ({@link Constraint#stepBase()}, no constraint).
         */
        public void plainStep(Constraint opt) {
            try (PointerScope scope = new PointerScope()) {
                opt.zeroGrad();
                Loss.MSE.apply(model.forward(data, null), label).backward();
                Loss.MSE.apply(model.forward(data, cond), label).backward();
                opt.stepBase();
            }
        }
    }

    private Workloads() {
    }

    public static Path weightsDir() {
        String p = System.getProperty("text2data.bench.weights", System.getenv("T2D_BENCH_WEIGHTS"));
        return p == null ? null : Path.of(p);
    }

    public static Workload load(String name) {
        LibTorch.ensureLoaded();
        Config cfg = CONFIGS.get(name);
        if (cfg == null) {
            throw new IllegalArgumentException("unknown workload '" + name + "', expected one of " + CONFIGS.keySet());
        }
        Path dir = weightsDir();
        Map<String, Tensor> state = null;
        Map<String, Tensor> batch = null;
        if (dir != null && Files.exists(dir.resolve(name + ".json")) && Files.exists(dir.resolve(name + ".bin"))) {
            try {
                JsonObject index;
                try (Reader r = Files.newBufferedReader(dir.resolve(name + ".json"))) {
                    index = JsonParser.parseReader(r).getAsJsonObject();
                }
                ByteBuffer raw = ByteBuffer.wrap(Files.readAllBytes(dir.resolve(name + ".bin")))
                        .order(ByteOrder.LITTLE_ENDIAN);
                state = read(index, "params", raw);
                batch = read(index, "batch", raw);
            } catch (IOException e) {
                throw new IllegalStateException("cannot read the weights of " + name + " in " + dir, e);
            }
        }
        torch.manual_seed(1234);
        ConditionalModel model;
        Map<String, Tensor> params;
        if (cfg.kind().equals("mlp")) {
            Denoiser m = new Denoiser(cfg.d(), cfg.c(), cfg.h(), cfg.layers());
            if (state != null) {
                m.loadStateDict(state);
            }
            model = m;
            params = m.namedParameters();
        } else {
            TransformerDenoiser m = new TransformerDenoiser(cfg.d(), cfg.c(), cfg.h(), cfg.layers(),
                    cfg.heads(), cfg.seq(), cfg.ff(), state);
            model = m;
            params = m.namedParameters();
        }
        if (batch == null) {
            batch = new LinkedHashMap<>();
            batch.put("data", torch.randn(cfg.dataShape()));
            batch.put("cond", torch.randn(cfg.batch(), cfg.c()));
            batch.put("label", torch.randn(cfg.dataShape()));
        }
        return new Workload(cfg, model, params, batch.get("data"), batch.get("cond"), batch.get("label"),
                state != null);
    }

    private static Map<String, Tensor> read(JsonObject index, String section, ByteBuffer raw) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (JsonElement el : index.getAsJsonArray(section)) {
            JsonObject e = el.getAsJsonObject();
            int numel = e.get("numel").getAsInt();
            int offset = e.get("offset").getAsInt();
            var shapeArr = e.getAsJsonArray("shape");
            long[] shape = new long[shapeArr.size()];
            for (int i = 0; i < shape.length; i++) {
                shape[i] = shapeArr.get(i).getAsLong();
            }
            float[] values = new float[numel];
            raw.slice(offset, numel * 4).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(values);
            try (FloatPointer fp = new FloatPointer(values)) {
                Tensor t = torch.from_blob(fp, shape).clone(); // float32 by default; clone owns its memory
                out.put(e.get("name").getAsString(), t);
            }
        }
        return out;
    }
}
