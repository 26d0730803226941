package org.text2data.demo;

import java.util.Arrays;
import java.util.List;

/** Quality measures: MMD between samples and real series, and diversity within a prompt's samples. */
final class Metrics {
    private Metrics() {
    }

    /**
     * Squared maximum mean discrepancy between two samples with a Gaussian kernel whose bandwidth is the
     * median squared distance within {@code y} (the reference sample): about 0 for equal distributions.
     */
    static double mmd(float[][] x, float[][] y) {
        double[] d = new double[y.length * (y.length - 1) / 2];
        int k = 0;
        for (int i = 0; i < y.length; i++) {
            for (int j = i + 1; j < y.length; j++) {
                d[k++] = dist2(y[i], y[j]);
            }
        }
        Arrays.sort(d);
        double h = Math.max(d[d.length / 2], 1e-12);
        return mean(x, x, h, true) + mean(y, y, h, true) - 2 * mean(x, y, h, false);
    }

    /**
     * Within-prompt diversity: the mean distance between two samples of the same prompt, over the prompts,
     * divided by the same for real series of the same combinations (1: as varied as real series; 0: one series
     * repeated).
     */
    static double diversity(List<float[][]> generated, List<float[][]> real) {
        return meanPairDistance(generated) / meanPairDistance(real);
    }

    private static double meanPairDistance(List<float[][]> groups) {
        double s = 0;
        long n = 0;
        for (float[][] g : groups) {
            for (int i = 0; i < g.length; i++) {
                for (int j = i + 1; j < g.length; j++) {
                    s += Math.sqrt(dist2(g[i], g[j]));
                    n++;
                }
            }
        }
        return s / n;
    }

    private static double mean(float[][] a, float[][] b, double h, boolean same) {
        double s = 0;
        long n = 0;
        for (int i = 0; i < a.length; i++) {
            for (int j = 0; j < b.length; j++) {
                if (same && i == j) {
                    continue;
                }
                s += Math.exp(-dist2(a[i], b[j]) / h);
                n++;
            }
        }
        return s / n;
    }

    private static double dist2(float[] a, float[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            double d = a[i] - b[i];
            s += d * d;
        }
        return s;
    }
}
