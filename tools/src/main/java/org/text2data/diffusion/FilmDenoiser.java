package org.text2data.diffusion;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.LinearOptions;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.text2data.ConditionalModel;
import org.text2data.LibTorch;

/**
 * A residual denoiser whose conditional pathway starts as the identity on the unconditional model: each block
 * is modulated by a FiLM scale and shift computed from the condition by bias-free layers, the last of them
 * initialised to zero. So, at initialisation, {@code forward(x, c) == forward(x, null)} for every {@code c},
 * and at any time a zero condition vector is the null condition (bias-free layers map 0 to 0), which makes
 * condition dropout a matter of zeroing rows.
 *
 * <pre>
 *   input [x | emb(t)]  (x: length values, emb(t): timeDim values, as {@link Diffusion} builds it)
 *   tt = silu(time(emb(t)))                       time conditioning, fed to every block
 *   e  = silu(cond(c))                            no bias; skipped when c is null
 *   z  = inp(x) + tt
 *   block k: a = hid.k(silu(z)) + tproj.k(tt)
 *            [gamma | beta] = film.k(e)           no bias, zero at initialisation
 *            z = z + a * (1 + gamma) + beta
 *   out(silu(z))
 * </pre>
 */
public final class FilmDenoiser extends Module implements ConditionalModel {

    private final int length;
    private final int timeDim;
    private final int h;
    private final LinearImpl time;
    private final LinearImpl cond;
    private final LinearImpl inp;
    private final LinearImpl[] hid;
    private final LinearImpl[] tproj;
    private final LinearImpl[] film;
    private final LinearImpl out;
    private final Map<String, Tensor> named = new LinkedHashMap<>();

    /**
     * A float32 denoiser with libtorch's default initialisation (seed it with {@code torch.manual_seed}) and
     * zero FiLM layers.
     *
     * @param length the series length (the output width, and the first {@code length} input columns)
     * @param timeDim the width of the time embedding that follows the series in the input
     * @param condDim the width of the condition vector
     * @param hidden the width of the blocks
     * @param blocks the number of residual blocks
     */
    public FilmDenoiser(int length, int timeDim, int condDim, int hidden, int blocks) {
        LibTorch.ensureLoaded();
        if (length <= 0 || timeDim <= 0 || condDim <= 0 || hidden <= 0 || blocks <= 0) {
            throw new IllegalArgumentException("denoiser sizes must be positive, got length=" + length + " timeDim="
                    + timeDim + " condDim=" + condDim + " hidden=" + hidden + " blocks=" + blocks);
        }
        this.length = length;
        this.timeDim = timeDim;
        this.h = hidden;
        time = linear("time", timeDim, hidden, true);
        cond = linear("cond", condDim, hidden, false);
        inp = linear("inp", length, hidden, true);
        hid = new LinearImpl[blocks];
        tproj = new LinearImpl[blocks];
        film = new LinearImpl[blocks];
        for (int k = 0; k < blocks; k++) {
            hid[k] = linear("hid." + k, hidden, hidden, true);
            tproj[k] = linear("tproj." + k, hidden, hidden, true);
            film[k] = linear("film." + k, hidden, 2 * hidden, false);
        }
        out = linear("out", hidden, length, true);
        try (NoGradGuard ng = new NoGradGuard()) {
            for (LinearImpl f : film) {
                f.weight().zero_();
            }
        }
    }

    private LinearImpl linear(String name, int in, int outFeatures, boolean bias) {
        LinearOptions o = new LinearOptions(in, outFeatures);
        o.bias().put(bias);
        // own handles throughout: references into the module's tables move when it grows
        LinearImpl l = register_module(name.replace('.', '_'), new LinearImpl(o));
        named.put(name + ".weight", new Tensor(l.weight()));
        if (bias) {
            named.put(name + ".bias", new Tensor(l.bias()));
        }
        return l;
    }

    @Override
    public Tensor forward(Tensor input, Tensor c) {
        Tensor x = input.narrow(1, 0, length);
        Tensor tt = torch.silu(time.forward(input.narrow(1, length, timeDim)));
        Tensor e = c == null ? null : torch.silu(cond.forward(c));
        Tensor z = inp.forward(x).add(tt);
        for (int k = 0; k < hid.length; k++) {
            Tensor a = hid[k].forward(torch.silu(z)).add(tproj[k].forward(tt));
            if (e != null) {
                Tensor gb = film[k].forward(e);
                a = a.mul(gb.narrow(1, 0, h).add(new org.bytedeco.pytorch.Scalar(1.0))).add(gb.narrow(1, h, h));
            }
            z = z.add(a);
        }
        return out.forward(torch.silu(z));
    }

    /**
     * The parameters by name ({@code time.weight}, ..., {@code film.0.weight}, ..., {@code out.bias}).
     *
     * @return an unmodifiable map, in registration order
     */
    public Map<String, Tensor> namedParameters() {
        return Collections.unmodifiableMap(named);
    }

    /**
     * Overwrites every parameter from a state dict of the same names and shapes (values copied).
     *
     * @param state name to tensor
     * @throws IllegalArgumentException if a name is missing or a shape differs (nothing is copied then)
     */
    public void loadStateDict(Map<String, Tensor> state) {
        StateDicts.load(named, state);
    }
}
