package org.text2data.engine;

import java.util.Arrays;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

/**
 * The reference engine: the projection written with plain libtorch tensor operations, per tensor, in
 * the order the Python reference computes it. It stays the yardstick the fused engine is tested against.
 * The kept gradients are copies, held in the caller's {@link ParamState} records.
 */
public final class PlainEngine implements ProjectionEngine {

    private final Tensor[] params;
    private final String[] names;
    /** Whether the last {@link #firstStep} kept constraint gradients that have not been released since. */
    private boolean kept;

    /**
     * An engine for these parameters, named {@code #0}, {@code #1}, ... in messages.
     *
     * @param params the parameter tensors (the array is copied)
     */
    public PlainEngine(Tensor[] params) {
        this(params, Engines.defaultNames(params.length));
    }

    /**
     * An engine for these parameters, with their names (for messages).
     *
     * @param params the parameter tensors (the array is copied)
     * @param names the parameters' names, one per tensor (the array is copied)
     */
    public PlainEngine(Tensor[] params, String[] names) {
        this.params = params.clone();
        this.names = names.clone();
    }

    @Override
    public String name() {
        return "plain";
    }

    @Override
    public void firstStep(ParamState[] states, boolean zeroGrad) {
        Engines.checkStates(states, params.length);
        releaseKept(states);
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                Tensor g = params[i].grad();
                if (g.defined()) {
                    Tensor c = g.detach().clone();
                    c.retainReference(); // outlives the scope
                    states[i].kept = c;
                    if (zeroGrad) {
                        g.zero_();
                    }
                }
            }
        }
        kept = true;
    }

    @Override
    public int secondStep(ParamState[] states, Tensor gValue, double gConstraint, double alpha, double beta,
                          boolean checkFinite) {
        Engines.checkStates(states, params.length);
        try (PointerScope scope = new PointerScope();
             Scalar a = new Scalar(alpha);
             Scalar b = new Scalar(beta);
             Scalar gc = new Scalar(gConstraint);
             Scalar two = new Scalar(2.0);
             Scalar eps = new Scalar(1e-8)) {
            // alpha * (gValue - gConstraint): one 0-dim tensor, shared by every parameter, in float64 (as
            // the fused engine computes it), whatever gValue's dtype: parameters of several dtypes share it
            Tensor gv = gValue.detach().to(torch.ScalarType.Double);
            Tensor excess = gv.sub(gc).mul(a);
            int[] index = new int[params.length];
            Tensor[] grads = new Tensor[params.length];
            Tensor[] norms = new Tensor[params.length];
            Tensor[] dots = new Tensor[params.length];
            int m = 0;
            int[] unprojected = new int[params.length];
            Tensor[] unprojectedGrads = new Tensor[params.length];
            int u = 0;
            for (int i = 0; i < params.length; i++) {
                Tensor g = params[i].grad();
                if (!g.defined()) {
                    continue;
                }
                Tensor c = states[i].kept;
                if (c == null) {
                    // documented deviation: no unconditional gradient, no projection; the base optimizer
                    // still uses g, so it is still checked
                    unprojected[u] = i;
                    unprojectedGrads[u++] = g;
                    continue;
                }
                index[m] = i;
                grads[m] = g;
                // float32 and the half types reduce in float64, as the fused engine does: in their own type |c|^2
                // overflows for finite gradients (float32: values of about 1e19; float16: about 256), and in
                // float16 1e-8 + n rounds to n, so a zero c would give lam = 0 / 0
                try (PointerScope perTensor = new PointerScope()) { // the float64 copies go with each tensor
                    Tensor cr = reduced(c);
                    norms[m] = cr.norm().pow(two);
                    dots[m] = reduced(g).mul(cr).sum();
                    scope.attach(norms[m]); // the two 0-dim sums stay for the step
                    scope.attach(dots[m]);
                } catch (RuntimeException e) { // e.g. a gradient replaced by one of another shape
                    throw new IllegalArgumentException("parameter '" + names[i] + "': its gradient "
                            + Arrays.toString(g.shape()) + " " + g.scalar_type() + " does not fit its unconditional gradient "
                            + Arrays.toString(c.shape()) + " " + c.scalar_type() + ": " + firstLine(e.getMessage()), e);
                }
                m++;
            }
            if (checkFinite && m + u > 0) {
                requireFinite(gv, index, norms, dots, grads, states, m, unprojected, unprojectedGrads, u);
            }
            for (int k = 0; k < m; k++) {
                Tensor c = states[index[k]].kept;
                Tensor n = norms[k];
                Tensor phi = torch.minimum(excess, n.mul(b));
                Tensor lam = torch.relu(phi.sub(dots[k]).div(n.add(eps)));
                grads[k].add_(lam.mul(c));
            }
            return m;
        }
    }

    private static String firstLine(String s) {
        return s == null ? "" : s.lines().findFirst().orElse("");
    }

    private static final int DOUBLE = torch.ScalarType.Double.value;

    /** The tensor in float64 (itself when it is float64). */
    private static Tensor reduced(Tensor t) {
        return t.scalar_type().value == DOUBLE ? t : t.to(torch.ScalarType.Double);
    }

    /** One host read for all tensors; only on failure a second pass finds the first offender. */
    private void requireFinite(Tensor gValue, int[] index, Tensor[] norms, Tensor[] dots, Tensor[] grads,
                               ParamState[] states, int m, int[] unprojected, Tensor[] unprojectedGrads, int u) {
        TensorVector all = new TensorVector();
        if (m > 0) {
            all.push_back(torch.isfinite(gValue).all()); // (alpha * (gValue - gConstraint) may overflow: that is fine)
        }
        for (int k = 0; k < m; k++) {
            all.push_back(torch.isfinite(norms[k]));
            all.push_back(torch.isfinite(dots[k]));
        }
        for (int k = 0; k < u; k++) {
            all.push_back(torch.isfinite(unprojectedGrads[k]).all());
        }
        if (torch.stack(all).all().item_bool()) {
            return;
        }
        if (m > 0 && !torch.isfinite(gValue).all().item_bool()) {
            throw new NonFiniteGradientException(index[0], "g_value (the unconditional loss) is not finite ("
                    + gValue.item_double() + ")");
        }
        int first = Integer.MAX_VALUE;
        String why = null;
        for (int k = 0; k < m; k++) {
            boolean cOk = torch.isfinite(norms[k]).item_bool();
            if (!cOk || !torch.isfinite(dots[k]).item_bool()) {
                first = index[k];
                why = whyNotFinite(cOk, grads[k], states[index[k]].kept);
                break;
            }
        }
        for (int k = 0; k < u && unprojected[k] < first; k++) {
            if (!torch.isfinite(unprojectedGrads[k]).all().item_bool()) {
                first = unprojected[k];
                why = "its gradient holds a NaN or an infinity";
                break;
            }
        }
        throw new NonFiniteGradientException(first, why);
    }

    /**
     * What made a tensor's reductions non-finite: a NaN or an infinity in one of its gradients, or finite values so
     * large that a float64 sum of their squares or products overflows.
     */
    private static String whyNotFinite(boolean normFinite, Tensor g, Tensor c) {
        if (!normFinite) {
            return torch.isfinite(c).all().item_bool()
                    ? "the squared norm of its unconditional (constraint) gradient overflows (its values reach "
                            + c.abs().max().item_double() + ")"
                    : "its unconditional (constraint) gradient holds a NaN or an infinity";
        }
        return torch.isfinite(g).all().item_bool()
                ? "the dot product of its gradient with its unconditional gradient overflows (the gradient's values "
                        + "reach " + g.abs().max().item_double() + ")"
                : "its gradient holds a NaN or an infinity";
    }

    @Override
    public boolean hasConstraintGrads() {
        return kept;
    }

    /** Holds nothing of its own: the kept gradients are in the records, released by their owner. */
    @Override
    public void close() {
        kept = false;
    }

    /** Drops the kept copies (the plain engine reuses no buffer). */
    private void releaseKept(ParamState[] states) {
        for (ParamState st : states) {
            if (st.kept != null) {
                st.kept.close();
                st.kept = null;
            }
        }
        kept = false;
    }
}
