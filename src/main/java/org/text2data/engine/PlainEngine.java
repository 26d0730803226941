package org.text2data.engine;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

/**
 * The reference engine: the projection written with plain libtorch tensor operations, per tensor, in
 * the order the Python reference computes it. It stays the yardstick the fused engine is tested against.
 */
public final class PlainEngine implements ProjectionEngine {

    private final Tensor[] params;
    private final Tensor[] constraintGrads;
    private boolean kept;

    public PlainEngine(Tensor[] params) {
        this.params = params.clone();
        this.constraintGrads = new Tensor[params.length];
    }

    @Override
    public String name() {
        return "plain";
    }

    @Override
    public void firstStep(boolean zeroGrad) {
        releaseKept();
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                Tensor g = params[i].grad();
                if (g.defined()) {
                    Tensor c = g.detach().clone();
                    c.retainReference(); // outlives the scope
                    constraintGrads[i] = c;
                    if (zeroGrad) {
                        g.zero_();
                    }
                }
            }
        }
        kept = true;
    }

    @Override
    public int secondStep(Tensor gValue, double gConstraint, double alpha, double beta, boolean checkFinite) {
        try (PointerScope scope = new PointerScope();
             Scalar a = new Scalar(alpha);
             Scalar b = new Scalar(beta);
             Scalar gc = new Scalar(gConstraint);
             Scalar two = new Scalar(2.0);
             Scalar eps = new Scalar(1e-8)) {
            // alpha * (gValue - gConstraint): one 0-dim tensor, shared by every parameter.
            Tensor excess = gValue.detach().sub(gc).mul(a);
            int[] index = new int[params.length];
            Tensor[] grads = new Tensor[params.length];
            Tensor[] norms = new Tensor[params.length];
            Tensor[] dots = new Tensor[params.length];
            int m = 0;
            for (int i = 0; i < params.length; i++) {
                Tensor c = constraintGrads[i];
                if (c == null) {
                    continue; // documented deviation: no unconditional gradient, no projection
                }
                Tensor g = params[i].grad();
                if (!g.defined()) {
                    continue;
                }
                index[m] = i;
                grads[m] = g;
                norms[m] = c.norm().pow(two);
                dots[m] = g.mul(c).sum();
                m++;
            }
            if (checkFinite && m > 0) {
                requireFinite(index, norms, dots, m);
            }
            for (int k = 0; k < m; k++) {
                Tensor c = constraintGrads[index[k]];
                Tensor n = norms[k];
                Tensor phi = torch.minimum(excess, n.mul(b));
                Tensor lam = torch.relu(phi.sub(dots[k]).div(n.add(eps)));
                grads[k].add_(lam.mul(c));
            }
            return m;
        }
    }

    /** One host read for all tensors; only on failure a second pass finds the first offender. */
    private static void requireFinite(int[] index, Tensor[] norms, Tensor[] dots, int m) {
        TensorVector all = new TensorVector();
        for (int k = 0; k < m; k++) {
            all.push_back(norms[k]);
            all.push_back(dots[k]);
        }
        if (torch.isfinite(torch.stack(all)).all().item_bool()) {
            return;
        }
        for (int k = 0; k < m; k++) {
            boolean cOk = torch.isfinite(norms[k]).item_bool();
            if (!cOk || !torch.isfinite(dots[k]).item_bool()) {
                throw new NonFiniteGradientException(index[k], cOk
                        ? "its gradient holds a NaN or an infinity"
                        : "its unconditional (constraint) gradient holds a NaN or an infinity");
            }
        }
    }

    @Override
    public boolean hasConstraintGrads() {
        return kept;
    }

    @Override
    public void close() {
        releaseKept();
    }

    private void releaseKept() {
        for (int i = 0; i < constraintGrads.length; i++) {
            if (constraintGrads[i] != null) {
                constraintGrads[i].close();
                constraintGrads[i] = null;
            }
        }
        kept = false;
    }
}
