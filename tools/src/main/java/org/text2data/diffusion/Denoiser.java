package org.text2data.diffusion;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.text2data.ConditionalModel;
import org.text2data.LibTorch;
import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The small conditional denoiser of the conformance fixtures, as a bytedeco {@link Module}:
 *
 * <pre>
 *   null: [c]   cin: Linear(c, h)   inp: Linear(d, h)   hid.i: Linear(h, h), i &lt; layers   out: Linear(h, d)
 *   forward(x, cond): e = cond, or null broadcast to [batch, c] when cond is null
 *                     z = silu(inp(x) + cin(e)); z = silu(hid.i(z)) for each i; return out(z)
 * </pre>
 *
 * Parameter names and order are the Python state dict's.
 */
public final class Denoiser extends Module implements ConditionalModel {

    private final int d;
    private final int c;
    private final int h;
    private final Tensor nullCond;
    private final LinearImpl cin;
    private final LinearImpl inp;
    private final LinearImpl[] hid;
    private final LinearImpl out;
    private final Map<String, Tensor> named = new LinkedHashMap<>();

    /** A float32 denoiser with libtorch's default initialisation (seed it with {@code torch.manual_seed}). */
    public Denoiser(int d, int c, int h, int layers) {
        this(d, d, c, h, layers);
    }

    /**
     * The same network with an input of {@code dIn} features and an output of {@code dOut} (a diffusion
     * model feeds the noisy sample and a time embedding, and predicts the noise).
     */
    public Denoiser(int dIn, int dOut, int c, int h, int layers) {
        LibTorch.ensureLoaded();
        if (dIn <= 0 || dOut <= 0 || c <= 0 || h <= 0 || layers < 0) {
            throw new IllegalArgumentException("denoiser sizes must be positive (layers >= 0), got dIn=" + dIn
                    + " dOut=" + dOut + " c=" + c + " h=" + h + " layers=" + layers);
        }
        int d = dIn;
        this.d = dOut;
        this.c = c;
        this.h = h;
        // own handles throughout: references into the module's tables move when it grows
        nullCond = new Tensor(register_parameter("null", torch.randn(c)));
        cin = register_module("cin", new LinearImpl(c, h));
        inp = register_module("inp", new LinearImpl(d, h));
        hid = new LinearImpl[layers];
        for (int i = 0; i < layers; i++) {
            hid[i] = register_module("hid_" + i, new LinearImpl(h, h));
        }
        out = register_module("out", new LinearImpl(h, dOut));
        named.put("null", nullCond);
        put("cin", cin);
        put("inp", inp);
        for (int i = 0; i < layers; i++) {
            put("hid." + i, hid[i]);
        }
        put("out", out);
    }

    private void put(String prefix, LinearImpl l) {
        named.put(prefix + ".weight", new Tensor(l.weight()));
        named.put(prefix + ".bias", new Tensor(l.bias()));
    }

    @Override
    public Tensor forward(Tensor x, Tensor cond) {
        Tensor e = cond != null ? cond : nullCond.expand(x.size(0), c);
        Tensor z = torch.silu(inp.forward(x).add(cin.forward(e)));
        for (LinearImpl l : hid) {
            z = torch.silu(l.forward(z));
        }
        return out.forward(z);
    }

    /** Parameters by their Python state-dict names ({@code null}, {@code cin.weight}, ..., {@code out.bias}). */
    public Map<String, Tensor> namedParameters() {
        return Collections.unmodifiableMap(named);
    }

    /** The parameters in state-dict order. */
    public List<Tensor> parameterList() {
        return List.copyOf(named.values());
    }

    /**
     * Overwrites every parameter from a state dict (name to tensor of the same shape); the values are
     * copied into this model's tensors, converted to their dtype.
     *
     * @param state name to tensor
     * @throws IllegalArgumentException if a name is missing or a shape differs (nothing is copied then)
     */
    public void loadStateDict(Map<String, Tensor> state) {
        StateDicts.load(named, state);
    }

    /** Output features (the data dimension for the fixtures' denoiser). */
    public int dataDim() {
        return d;
    }

    public int condDim() {
        return c;
    }

    public int hidden() {
        return h;
    }
}
