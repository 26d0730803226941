package org.text2data;

/**
 * The tests' one float64 oracle of the projection, written from the formula (see the conformance README),
 * independently of both engines:
 *
 * <pre>
 *   n = ||c||^2,  phi = min(excess, beta * n),  lam = max(0, (phi - &lt;g, c&gt;) / (1e-8 + n)),  g' = g + lam * c
 * </pre>
 *
 * with {@code excess = alpha * (gValue - gConstraint)}.
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
