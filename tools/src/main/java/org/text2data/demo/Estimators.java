package org.text2data.demo;

import java.nio.FloatBuffer;
import java.util.List;
import java.util.Map;
import java.util.Random;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.text2data.Constraint;
import org.text2data.Engine;
import org.text2data.OptimizerSpec;

/**
 * The per-factor estimators that score controllability: one small classifier (features: the series, its first
 * differences and the magnitudes of its detrended spectrum; an MLP with one head per factor) trained on series
 * fresh from the generator, and validated on other fresh series: it must recover the true level of each factor
 * for at least {@link #REQUIRED_ACCURACY} of them before anything is scored with it.
 */
final class Estimators implements AutoCloseable {

    /** The accuracy on real series each factor's estimator must reach. */
    static final double REQUIRED_ACCURACY = 0.95;

    private static final int FEATURES = Waveforms.LENGTH + (Waveforms.LENGTH - 1) + Waveforms.LENGTH / 2;
    private static final int HIDDEN = 192;
    /** The heads' outputs, one per level of each factor. */
    private static final int OUTPUTS = java.util.Arrays.stream(Waveforms.LEVELS).sum();
    /** cos and sin of {@code 2 pi k t / LENGTH}, {@code [k - 1][t]} for k = 1 .. LENGTH / 2: the spectrum's basis. */
    private static final double[][] COS = new double[Waveforms.LENGTH / 2][Waveforms.LENGTH];
    private static final double[][] SIN = new double[Waveforms.LENGTH / 2][Waveforms.LENGTH];

    static {
        int n = Waveforms.LENGTH;
        for (int k = 1; k <= n / 2; k++) {
            for (int t = 0; t < n; t++) {
                double a = 2 * Math.PI * k * t / n;
                COS[k - 1][t] = Math.cos(a);
                SIN[k - 1][t] = Math.sin(a);
            }
        }
    }

    private final Module net = new Module();
    private final LinearImpl l1;
    private final LinearImpl l2;
    private final LinearImpl head;
    private double[] validation;

    private Estimators() {
        l1 = net.register_module("l1", new LinearImpl(FEATURES, HIDDEN));
        l2 = net.register_module("l2", new LinearImpl(HIDDEN, HIDDEN));
        head = net.register_module("head", new LinearImpl(HIDDEN, OUTPUTS));
    }

    /**
     * Trains the estimators on {@code trainSeries} generated series and measures their accuracy per factor on
     * {@code validationSeries} others (see {@link #validation()}).
     */
    static Estimators train(int trainSeries, int validationSeries, int steps, long seed) {
        Random rnd = new Random(seed);
        List<Waveforms.Series> train = Waveforms.generate(trainSeries, rnd);
        List<Waveforms.Series> valid = Waveforms.generate(validationSeries, rnd);
        torch.manual_seed(seed);
        Estimators e = new Estimators();
        // trained on roughened and smoothed copies of the series (extra noise up to 0.2, a moving average over up to 5
        // points): generated series differ from real ones in such texture, and the estimators should judge the levels
        Tensor x = features(train.stream().map(s -> augment(s.values(), rnd)).toList());
        Tensor y = oneHot(train);
        Map<String, Tensor> params = new java.util.LinkedHashMap<>();
        for (LinearImpl l : new LinearImpl[] {e.l1, e.l2, e.head}) {
            params.put("w" + params.size(), new Tensor(l.weight()));
            params.put("b" + params.size(), new Tensor(l.bias()));
        }
        int batch = 128;
        try (Constraint opt = new Constraint(params, OptimizerSpec.adam(2e-3), 1, 1, Engine.AUTO)) {
            for (int s = 0; s < steps; s++) {
                try (PointerScope scope = new PointerScope()) {
                    int[] idx = new int[batch];
                    for (int i = 0; i < batch; i++) {
                        idx[i] = rnd.nextInt(train.size());
                    }
                    Tensor index = Tensor.create(java.util.Arrays.stream(idx).asLongStream().toArray(), batch);
                    opt.setLr(2e-3 * (0.05 + 0.95 * 0.5 * (1 + Math.cos(Math.PI * s / steps))));
                    opt.zeroGrad();
                    Tensor logits = e.logits(x.index_select(0, index));
                    loss(logits, y.index_select(0, index)).backward();
                    opt.stepBase();
                }
            }
        }
        e.validation = new double[Waveforms.FACTORS.size()];
        int[][] pred = e.predict(valid.stream().map(Waveforms.Series::values).toList());
        for (int i = 0; i < valid.size(); i++) {
            for (int f = 0; f < e.validation.length; f++) {
                e.validation[f] += pred[i][f] == valid.get(i).levels()[f] ? 1.0 / valid.size() : 0;
            }
        }
        return e;
    }

    private static float[] augment(float[] y, Random rnd) {
        float[] out = y.clone();
        int half = rnd.nextInt(3); // a moving average over 1, 3 or 5 points
        for (int t = 0; t < y.length; t++) {
            double sum = 0;
            int n = 0;
            for (int k = Math.max(0, t - half); k <= Math.min(y.length - 1, t + half); k++) {
                sum += y[k];
                n++;
            }
            out[t] = (float) (sum / n);
        }
        double noise = 0.2 * rnd.nextDouble();
        for (int t = 0; t < y.length; t++) {
            out[t] += (float) (noise * rnd.nextGaussian());
        }
        return out;
    }

    /** Accuracy per factor on the validation series (fractions of series whose level was recovered). */
    double[] validation() {
        return validation.clone();
    }

    /** The estimated level of each factor, per series ({@code [n][factors]}). */
    int[][] predict(List<float[]> series) {
        int[][] out = new int[series.size()][Waveforms.FACTORS.size()];
        try (PointerScope scope = new PointerScope(); NoGradGuard ng = new NoGradGuard()) {
            Tensor logits = logits(features(series)).contiguous();
            FloatBuffer b = logits.createBuffer();
            float[] row = new float[OUTPUTS];
            for (int i = 0; i < series.size(); i++) {
                b.get(row);
                int off = 0;
                for (int f = 0; f < Waveforms.LEVELS.length; f++) {
                    int best = 0;
                    for (int l = 1; l < Waveforms.LEVELS[f]; l++) {
                        if (row[off + l] > row[off + best]) {
                            best = l;
                        }
                    }
                    out[i][f] = best;
                    off += Waveforms.LEVELS[f];
                }
            }
        }
        return out;
    }

    private Tensor logits(Tensor x) {
        return head.forward(torch.silu(l2.forward(torch.silu(l1.forward(x)))));
    }

    /** The sum over factors of each head's cross-entropy with the one-hot labels. */
    private static Tensor loss(Tensor logits, Tensor oneHot) {
        Tensor total = null;
        int off = 0;
        for (int n : Waveforms.LEVELS) {
            Tensor ce = torch.log_softmax(logits.narrow(1, off, n), 1).mul(oneHot.narrow(1, off, n)).sum()
                    .neg().div(new org.bytedeco.pytorch.Scalar((double) logits.size(0)));
            total = total == null ? ce : total.add(ce);
            off += n;
        }
        return total;
    }

    private static Tensor oneHot(List<Waveforms.Series> s) {
        float[] y = new float[s.size() * OUTPUTS];
        for (int i = 0; i < s.size(); i++) {
            int off = 0;
            for (int f = 0; f < Waveforms.LEVELS.length; f++) {
                y[i * OUTPUTS + off + s.get(i).levels()[f]] = 1;
                off += Waveforms.LEVELS[f];
            }
        }
        return Tensor.create(y, s.size(), OUTPUTS);
    }

    /** The classifier's input: the values, their first differences, and |DFT| of the detrended series. */
    static Tensor features(List<float[]> series) {
        int n = Waveforms.LENGTH;
        float[] all = new float[series.size() * FEATURES];
        for (int i = 0; i < series.size(); i++) {
            float[] y = series.get(i);
            int o = i * FEATURES;
            for (int t = 0; t < n; t++) {
                all[o + t] = y[t];
            }
            for (int t = 1; t < n; t++) {
                all[o + n + t - 1] = 2 * (y[t] - y[t - 1]);
            }
            // least-squares line out, then the magnitude of the spectrum at 1 .. n/2 cycles
            double mx = (n - 1) / 2.0;
            double my = 0;
            for (float v : y) {
                my += v;
            }
            my /= n;
            double sxy = 0;
            double sxx = 0;
            for (int t = 0; t < n; t++) {
                sxy += (t - mx) * (y[t] - my);
                sxx += (t - mx) * (t - mx);
            }
            double slope = sxy / sxx;
            double[] r = new double[n];
            for (int t = 0; t < n; t++) {
                r[t] = y[t] - my - slope * (t - mx);
            }
            for (int k = 1; k <= n / 2; k++) {
                double re = 0;
                double im = 0;
                for (int t = 0; t < n; t++) {
                    re += r[t] * COS[k - 1][t];
                    im -= r[t] * SIN[k - 1][t];
                }
                all[o + 2 * n - 1 + k - 1] = (float) (4 * Math.hypot(re, im) / n);
            }
        }
        return Tensor.create(all, series.size(), FEATURES);
    }

    @Override
    public void close() {
        net.close();
    }
}
