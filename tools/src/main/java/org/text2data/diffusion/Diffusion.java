package org.text2data.diffusion;

import java.util.Random;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.text2data.Batch;
import org.text2data.ConditionalModel;
import org.text2data.LibTorch;
import org.text2data.train.BatchTransform;

/**
 * A small DDPM (denoising diffusion) over fixed-length vectors, for classifier-free conditional
 * generation: the network sees {@code [x_t | time embedding]} and predicts the noise; with a null
 * condition it is the unconditional model that Text2Data pretrains.
 *
 * <p>Its {@link #transform()} noises training rows (data = clean series, label ignored) at random
 * times: the result is a batch whose label is the noise, ready for {@code Loss.MSE} in pretraining,
 * finetuning and {@code runStep}. Randomness: times from a seeded {@link Random}, noise from libtorch's
 * global generator (seed it with {@code torch.manual_seed}).
 */
public final class Diffusion {
    private final int steps;
    private final int timeDim;
    private final double[] beta;
    private final double[] alphaBar;
    private final Random random;
    private boolean predictsClean;

    /** {@code steps} noise levels with a linear beta schedule from {@code betaStart} to {@code betaEnd}. */
    public Diffusion(int steps, double betaStart, double betaEnd, int timeDim, long seed) {
        LibTorch.ensureLoaded();
        if (steps < 2 || timeDim < 2 || timeDim % 2 != 0) {
            throw new IllegalArgumentException("diffusion needs steps >= 2 and an even timeDim >= 2");
        }
        if (!(betaStart > 0 && betaEnd < 1 && betaStart <= betaEnd)) {
            throw new IllegalArgumentException("betas must satisfy 0 < betaStart <= betaEnd < 1");
        }
        this.steps = steps;
        this.timeDim = timeDim;
        this.beta = new double[steps];
        this.alphaBar = new double[steps];
        double prod = 1;
        for (int t = 0; t < steps; t++) {
            beta[t] = betaStart + (betaEnd - betaStart) * t / (steps - 1);
            prod *= 1 - beta[t];
            alphaBar[t] = prod;
        }
        this.random = new Random(seed);
    }

    /** 50 steps, the DDPM schedule rescaled to 50 steps, a 16-wide time embedding. */
    public static Diffusion small(long seed) {
        return new Diffusion(50, 2e-3, 0.35, 16, seed);
    }

    /**
     * Makes the network predict the clean series instead of the noise (the "x0" parameterisation): the label of
     * {@link #noised} becomes the clean rows, and {@link #sampleDdim} reads the output as the clean series. A small
     * network's estimate of the clean series then does not blow up at the noisiest times, as it can when it is
     * derived from a predicted noise.
     *
     * @return this
     */
    public Diffusion predictingClean() {
        predictsClean = true;
        return this;
    }

    /**
     * Width of the time embedding that follows the series in the network's input.
     *
     * @return the embedding's width
     */
    public int timeDim() {
        return timeDim;
    }

    /** Width of the network's input for series of {@code length}. */
    public int inputDim(int length) {
        return length + timeDim;
    }

    public int steps() {
        return steps;
    }

    /** Sinusoidal embedding of the times {@code t} ({@code [n, timeDim]}, float32). */
    Tensor timeEmbedding(int[] t) {
        int half = timeDim / 2;
        float[] e = new float[t.length * timeDim];
        for (int i = 0; i < t.length; i++) {
            for (int k = 0; k < half; k++) {
                double freq = Math.pow(steps, -(double) k / half) * Math.PI;
                e[i * timeDim + k] = (float) Math.sin(t[i] * freq);
                e[i * timeDim + half + k] = (float) Math.cos(t[i] * freq);
            }
        }
        return Tensor.create(e, t.length, timeDim);
    }

    /** Rows noised at random times: data {@code [x_t | emb(t)]}, label the noise (or the clean rows); cond kept. */
    public Batch noised(Batch rows) {
        Tensor x0 = rows.data();
        int n = (int) x0.size(0);
        int[] t = new int[n];
        float[] a = new float[n];
        float[] s = new float[n];
        for (int i = 0; i < n; i++) {
            t[i] = random.nextInt(steps);
            a[i] = (float) Math.sqrt(alphaBar[t[i]]);
            s[i] = (float) Math.sqrt(1 - alphaBar[t[i]]);
        }
        Tensor eps = torch.randn(x0.size(0), x0.size(1));
        Tensor xt = x0.mul(Tensor.create(a, n, 1)).add(eps.mul(Tensor.create(s, n, 1)));
        return new Batch(torch.cat(new TensorVector(xt, timeEmbedding(t)), 1), rows.cond(), predictsClean ? x0 : eps);
    }

    public BatchTransform transform() {
        return this::noised;
    }

    /**
     * Generates {@code n} series of {@code length} by ancestral sampling, conditioned on {@code cond}
     * ({@code [n, c]}) or unconditionally ({@code null}).
     */
    public Tensor sample(ConditionalModel net, Tensor cond, int n, int length) {
        return sample(net, cond, n, length, 1.0);
    }

    /**
     * Generates {@code n} series of {@code length} by deterministic DDIM sampling ({@code eta = 0}) over the same
     * noise levels: from the initial noise, each step moves to the next level along the model's estimate of the
     * clean series, adding no fresh noise (so no noise is left over in the result); with classifier-free guidance
     * of scale {@code w} as in {@link #sample(ConditionalModel, Tensor, int, int, double)}.
     *
     * @param net the denoiser
     * @param cond the conditions ({@code [n, c]}) or null for unconditional samples
     * @param n how many series
     * @param length their length
     * @param w the guidance scale, a finite number {@code >= 0} (1: plain conditional)
     * @return {@code [n, length]} float32
     */
    public Tensor sampleDdim(ConditionalModel net, Tensor cond, int n, int length, double w) {
        return denoise(net, cond, n, length, w, true);
    }

    /**
     * The same with classifier-free guidance of scale {@code w}: the noise estimate is
     * {@code eps(x, null) + w * (eps(x, cond) - eps(x, null))}; {@code w = 1} is plain conditional sampling.
     */
    public Tensor sample(ConditionalModel net, Tensor cond, int n, int length, double w) {
        return denoise(net, cond, n, length, w, false);
    }

    /** From noise to series: DDIM steps ({@code ddim}) or ancestral DDPM steps, with guidance of scale {@code w}. */
    private Tensor denoise(ConditionalModel net, Tensor cond, int n, int length, double w, boolean ddim) {
        if (!Double.isFinite(w) || w < 0) {
            throw new IllegalArgumentException("guidance scale must be a finite number >= 0, got " + w);
        }
        try (NoGradGuard ng = new NoGradGuard()) {
            Tensor x = torch.randn(n, length);
            for (int t = steps - 1; t >= 0; t--) {
                try (PointerScope scope = new PointerScope()) {
                    int[] ts = new int[n];
                    java.util.Arrays.fill(ts, t);
                    Tensor in = torch.cat(new TensorVector(x, timeEmbedding(ts)), 1);
                    Tensor out = net.forward(in, cond);
                    if (cond != null && w != 1.0) {
                        Tensor u = net.forward(in, null);
                        out = u.add(out.sub(u).mul(new Scalar(w)));
                    }
                    double a = Math.sqrt(alphaBar[t]);
                    double sd = Math.sqrt(1 - alphaBar[t]);
                    // the network's output is the clean series or the noise; each follows from the other
                    Tensor eps = predictsClean ? x.sub(out.mul(new Scalar(a))).div(new Scalar(sd)) : out;
                    Tensor next;
                    if (ddim) { // to the next level along the estimate of the clean series, no fresh noise
                        Tensor x0 = predictsClean ? out : x.sub(out.mul(new Scalar(sd))).div(new Scalar(a));
                        next = t == 0 ? x0 : x0.mul(new Scalar(Math.sqrt(alphaBar[t - 1])))
                                .add(eps.mul(new Scalar(Math.sqrt(1 - alphaBar[t - 1]))));
                    } else { // the posterior mean, plus fresh noise but at the last step
                        Tensor mean = x.sub(eps.mul(new Scalar(beta[t] / sd))).div(new Scalar(Math.sqrt(1 - beta[t])));
                        next = t > 0 ? mean.add(torch.randn(n, length).mul(new Scalar(Math.sqrt(beta[t])))) : mean;
                    }
                    next.retainReference();
                    x.close();
                    x = next;
                }
            }
            return x;
        }
    }
}
