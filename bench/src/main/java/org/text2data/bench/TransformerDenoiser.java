package org.text2data.bench;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.text2data.ConditionalModel;

/**
 * The {@code transformer-small} denoiser of {@code bench/python/workloads.py}, written with plain libtorch
 * ops over leaf tensors so it reads the same state dict:
 * <pre>
 *   z = inp(x) + pos + cin(e)[:, None, :]     (e = cond, or null broadcast to [B, c])
 *   per block: z += proj(attn(ln1(z)));  z += fc2(gelu(fc1(ln2(z))))
 *   out(ln_f(z))
 * </pre>
 * attn: q, k, v from one Linear(dm, 3dm), split into heads, softmax(q k^T / sqrt(hd)) v, no mask;
 * gelu is the exact (erf) one; LayerNorm eps 1e-5.
 */
public final class TransformerDenoiser implements ConditionalModel {
    private final int c;
    private final int dm;
    private final int layers;
    private final int heads;
    private final Map<String, Tensor> p = new LinkedHashMap<>();

    /** With {@code state} null, weights are libtorch-random (seed first); else copied from it. */
    public TransformerDenoiser(int d, int c, int dm, int layers, int heads, int seq, int ff, Map<String, Tensor> state) {
        this.c = c;
        this.dm = dm;
        this.layers = layers;
        this.heads = heads;
        param(state, "null", c); // the module's own parameters first, as in its state dict
        param(state, "pos", seq, dm);
        linear(state, "cin", c, dm);
        linear(state, "inp", d, dm);
        for (int i = 0; i < layers; i++) {
            String b = "blocks." + i + ".";
            norm(state, b + "ln1", dm);
            linear(state, b + "qkv", dm, 3 * dm);
            linear(state, b + "proj", dm, dm);
            norm(state, b + "ln2", dm);
            linear(state, b + "fc1", dm, ff);
            linear(state, b + "fc2", ff, dm);
        }
        norm(state, "ln_f", dm);
        linear(state, "out", dm, d);
    }

    private void param(Map<String, Tensor> state, String name, long... shape) {
        Tensor t;
        if (state != null) {
            Tensor src = state.get(name);
            if (src == null) {
                throw new IllegalArgumentException("state dict has no '" + name + "'");
            }
            if (!java.util.Arrays.equals(src.shape(), shape)) {
                throw new IllegalArgumentException("'" + name + "' has shape " + java.util.Arrays.toString(src.shape())
                        + ", expected " + java.util.Arrays.toString(shape));
            }
            t = src.detach().clone();
        } else {
            t = torch.randn(shape).mul(new org.bytedeco.pytorch.Scalar(0.02));
        }
        t.requires_grad_(true);
        p.put(name, t);
    }

    private void linear(Map<String, Tensor> state, String name, int in, int out) {
        param(state, name + ".weight", out, in);
        param(state, name + ".bias", out);
    }

    private void norm(Map<String, Tensor> state, String name, int n) {
        param(state, name + ".weight", n);
        param(state, name + ".bias", n);
    }

    private Tensor lin(String name, Tensor x) {
        return torch.linear(x, p.get(name + ".weight"), new TensorOptional(p.get(name + ".bias")));
    }

    private Tensor ln(String name, Tensor x) {
        return torch.layer_norm(x, new long[] {dm}, new TensorOptional(p.get(name + ".weight")),
                new TensorOptional(p.get(name + ".bias")), 1e-5, true);
    }

    @Override
    public Tensor forward(Tensor x, Tensor cond) {
        long b = x.size(0);
        long s = x.size(1);
        int hd = dm / heads;
        Tensor e = cond != null ? cond : p.get("null").expand(b, c);
        Tensor z = lin("inp", x).add(p.get("pos")).add(lin("cin", e).unsqueeze(1));
        org.bytedeco.pytorch.Scalar sqrtHd = new org.bytedeco.pytorch.Scalar(Math.sqrt(hd));
        for (int i = 0; i < layers; i++) {
            String pre = "blocks." + i + ".";
            TensorVector qkv = lin(pre + "qkv", ln(pre + "ln1", z)).split(dm, -1);
            Tensor q = qkv.get(0).reshape(b, s, heads, hd).transpose(1, 2);
            Tensor k = qkv.get(1).reshape(b, s, heads, hd).transpose(1, 2);
            Tensor v = qkv.get(2).reshape(b, s, heads, hd).transpose(1, 2);
            Tensor att = torch.softmax(q.matmul(k.transpose(-2, -1)).div(sqrtHd), -1);
            Tensor a = att.matmul(v).transpose(1, 2).reshape(b, s, dm);
            z = z.add(lin(pre + "proj", a));
            z = z.add(lin(pre + "fc2", torch.gelu(lin(pre + "fc1", ln(pre + "ln2", z)))));
        }
        return lin("out", ln("ln_f", z));
    }

    /** Parameters by their state-dict names, in the Python module's order. */
    public Map<String, Tensor> namedParameters() {
        return Collections.unmodifiableMap(p);
    }
}
