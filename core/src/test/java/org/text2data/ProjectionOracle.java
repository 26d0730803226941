package org.text2data;

/**
 * The tests' one float64 oracle of the projection, written from the formula (see the conformance README),
 * independently of both engines:
 *
 * <pre>
 *   n = ||c||^2,  phi = min(excess, beta * n),  lam = max(0, (phi - &lt;g, c&gt;) / (1e-8 + n)),  g' = g + lam * c
 * </pre>
 *
 * with {@code excess = alpha * (gValue - gConstraint)}; and, for the fused optimizers, the optimizer update that
 * follows, as PyTorch defines it (torch.optim's Adam, AdamW and SGD), written from their documented formulas.
 */
public final class ProjectionOracle {
    private ProjectionOracle() {
    }

    /** {@code lam} for gradient {@code g} and constraint gradient {@code c} (same length). */
    public static double lam(double[] g, double[] c, double excess, double beta) {
        double n = 0;
        double dot = 0;
        for (int k = 0; k < c.length; k++) {
            n += c[k] * c[k];
            dot += g[k] * c[k];
        }
        return Math.max(0, (Math.min(excess, beta * n) - dot) / (1e-8 + n));
    }

    /**
     * One Adam (or AdamW, {@code decoupled}) step of parameter {@code p} in place, with its state {@code m},
     * {@code v} and (AMSGrad, else null) {@code vmax}, from gradient {@code g}; {@code step} is the step number
     * being taken (1 for the first).
     */
    public static void adam(double[] p, double[] g, double[] m, double[] v, double[] vmax, long step, double lr,
                            double beta1, double beta2, double eps, double weightDecay, boolean decoupled) {
        double bc1 = 1 - Math.pow(beta1, step);
        double bc2 = 1 - Math.pow(beta2, step);
        for (int k = 0; k < p.length; k++) {
            double grad = g[k];
            if (decoupled) {
                p[k] *= 1 - lr * weightDecay;
            } else {
                grad += weightDecay * p[k];
            }
            m[k] = beta1 * m[k] + (1 - beta1) * grad;
            v[k] = beta2 * v[k] + (1 - beta2) * grad * grad;
            double second = v[k];
            if (vmax != null) {
                vmax[k] = Math.max(vmax[k], v[k]);
                second = vmax[k];
            }
            p[k] -= lr / bc1 * m[k] / (Math.sqrt(second) / Math.sqrt(bc2) + eps);
        }
    }

    /**
     * One SGD step of {@code p} in place from gradient {@code g}, with momentum buffer {@code buf} (null without
     * momentum; at the first step, {@code first}, the buffer becomes the gradient, as torch.optim.SGD does).
     */
    public static void sgd(double[] p, double[] g, double[] buf, boolean first, double lr, double momentum,
                           double dampening, boolean nesterov, double weightDecay) {
        for (int k = 0; k < p.length; k++) {
            double d = g[k] + weightDecay * p[k];
            if (buf != null) {
                buf[k] = first ? d : momentum * buf[k] + (1 - dampening) * d;
                d = nesterov ? d + momentum * buf[k] : buf[k];
            }
            p[k] -= lr * d;
        }
    }

    /** The projected gradient {@code g + lam * c}, as a new array. */
    public static double[] project(double[] g, double[] c, double excess, double beta) {
        double lam = lam(g, c, excess, beta);
        double[] out = new double[g.length];
        for (int k = 0; k < g.length; k++) {
            out[k] = g[k] + lam * c[k];
        }
        return out;
    }
}
