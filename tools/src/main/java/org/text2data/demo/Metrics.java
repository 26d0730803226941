package org.text2data.demo;

import java.util.Arrays;
import java.util.List;

/**
 * How the demo scores a generator: <b>controllability</b> (do generated series have the properties the
 * prompt asked for?) and <b>quality</b> (are they distributed like real series? MMD with a Gaussian
 * kernel).
 */
public final class Metrics {
    private Metrics() {
    }

    /** Estimated properties of a series: slope over the window, cycles, amplitude, noise level. */
    public record Estimate(double slope, double cycles, double amplitude, double noise) {
    }

    /** Least-squares line, then the strongest frequency of the rest, its amplitude, and what is left. */
    public static Estimate estimate(float[] y) {
        int n = y.length;
        double mx = 0;
        double my = 0;
        for (int t = 0; t < n; t++) {
            mx += (double) t / n;
            my += y[t];
        }
        mx /= n;
        my /= n;
        double sxy = 0;
        double sxx = 0;
        for (int t = 0; t < n; t++) {
            double x = (double) t / n - mx;
            sxy += x * (y[t] - my);
            sxx += x * x;
        }
        double slope = sxy / sxx;
        double[] r = new double[n];
        for (int t = 0; t < n; t++) {
            r[t] = y[t] - my - slope * ((double) t / n - mx);
        }
        int bestK = 1;
        double bestRe = 0;
        double bestIm = 0;
        double bestMag = -1;
        for (int k = 1; k <= n / 2 - 1; k++) {
            double re = 0;
            double im = 0;
            for (int t = 0; t < n; t++) {
                double a = 2 * Math.PI * k * t / n;
                re += r[t] * Math.cos(a);
                im -= r[t] * Math.sin(a);
            }
            double mag = Math.hypot(re, im);
            if (mag > bestMag) {
                bestMag = mag;
                bestK = k;
                bestRe = re;
                bestIm = im;
            }
        }
        double amp = 2 * bestMag / n;
        double resid = 0;
        for (int t = 0; t < n; t++) {
            double a = 2 * Math.PI * bestK * t / n;
            double fit = 2.0 / n * (bestRe * Math.cos(a) - bestIm * Math.sin(a));
            resid += (r[t] - fit) * (r[t] - fit);
        }
        return new Estimate(slope, bestK, amp, Math.sqrt(resid / n));
    }

    /**
     * Mean normalized distance between what was asked and what the series show, over the four
     * properties: slope / 3, log2(cycles) / 2, amplitude / 0.7, noise / 0.25 (each the span of its levels).
     */
    public static double controllabilityError(List<TimeSeries.Prompt> prompts, List<float[][]> generated) {
        double sum = 0;
        int count = 0;
        for (int p = 0; p < prompts.size(); p++) {
            TimeSeries.Prompt q = prompts.get(p);
            for (float[] y : generated.get(p)) {
                Estimate e = estimate(y);
                sum += (Math.abs(e.slope() - q.slope()) / 3
                        + Math.abs(log2(e.cycles()) - log2(q.cycles())) / 2
                        + Math.abs(e.amplitude() - q.amplitude()) / 0.7
                        + Math.abs(e.noise() - q.noise()) / 0.25) / 4;
                count++;
            }
        }
        return sum / count;
    }

    /** The same distance for real series against their own nominal levels: the floor no generator beats. */
    public static double controllabilityFloor(List<TimeSeries.Series> real) {
        double sum = 0;
        for (TimeSeries.Series s : real) {
            Estimate e = estimate(s.values());
            int[] lv = s.levels();
            sum += (Math.abs(e.slope() - TimeSeries.SLOPES[lv[0]]) / 3
                    + Math.abs(log2(e.cycles()) - log2(TimeSeries.CYCLES[lv[1]])) / 2
                    + Math.abs(e.amplitude() - TimeSeries.AMPLITUDES[lv[2]]) / 0.7
                    + Math.abs(e.noise() - TimeSeries.NOISES[lv[3]]) / 0.25) / 4;
        }
        return sum / real.size();
    }

    /**
     * Squared maximum mean discrepancy between two samples with a Gaussian kernel whose bandwidth is the
     * median distance within {@code y} (the reference sample): 0 for equal distributions.
     */
    public static double mmd(float[][] x, float[][] y) {
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

    private static double log2(double v) {
        return Math.log(v) / Math.log(2);
    }
}
