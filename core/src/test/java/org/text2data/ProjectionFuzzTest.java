package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.text2data.engine.Engines;

/**
 * Property-based test of the constrained step on random input: random tensor counts, shapes (empty,
 * 0-dim, up to a few hundred thousand elements), dtypes (float32, float64, bfloat16, float16, mixed),
 * layouts (contiguous, transposed, gapped) of parameters and gradients, parameters with only one of the
 * two gradients or none, NaN and infinities in either pass. Each trial runs {@link Constraint#step} with
 * SGD on both engines and asserts: either a {@link NonFiniteException} exactly when a gradient the
 * optimizer would use is not finite, with every parameter bitwise unchanged; or parameters that match a
 * float64 oracle computed here from the formula (not from either engine), within the dtype's rounding.
 *
 * <p>Seeded: {@code -Dtext2data.fuzz.seed=S} and {@code -Dtext2data.fuzz.trials=N} (default 1 and 200);
 * a failure names the trial's seed, and {@code -Dtext2data.fuzz.seed=THAT -Dtext2data.fuzz.trials=1}
 * replays it.
 */
class ProjectionFuzzTest {
    private static final ScalarType[] DTYPES = {ScalarType.Float, ScalarType.Double, ScalarType.BFloat16, ScalarType.Half};
    private static final double LR = 0.1;

    /** One parameter of a trial: values, shape, dtype, layouts, and its two gradients (null: none). */
    record Spec(long[] shape, ScalarType dtype, int paramLayout, double[] p, double[] c, int cLayout, double[] g,
                int gLayout) {
    }

    record Trial(long seed, List<Spec> specs, double gValue, double gConstraint, double alpha, double beta) {
    }

    @Test
    void randomStepsGiveTheOracleOrAClearRefusal() {
        long base = Long.getLong("text2data.fuzz.seed", 1L);
        int trials = Integer.getInteger("text2data.fuzz.trials", 200);
        List<Engine> engines = new ArrayList<>(List.of(Engine.PLAIN));
        if (Engines.fusedAvailable()) {
            engines.add(Engine.FUSED);
        }
        int refused = 0;
        for (int t = 0; t < trials; t++) {
            long seed = base + t;
            Trial trial = generate(seed);
            try {
                boolean wasRefused = false;
                for (Engine engine : engines) {
                    wasRefused = run(trial, engine);
                }
                refused += wasRefused ? 1 : 0;
            } catch (AssertionError | RuntimeException e) {
                throw new AssertionError("fuzz trial with seed " + seed + " failed (replay with -Dtext2data.fuzz.seed="
                        + seed + " -Dtext2data.fuzz.trials=1): " + describe(trial) + ": " + e, e);
            }
        }
        System.out.println("projection fuzz: " + trials + " trials from seed " + base + ", " + refused + " refused");
        if (trials >= 100) {
            assertThat(refused).as("trials refused").isBetween(trials / 20, trials - trials / 4);
        }
    }

    // ------------------------------------------------------------------ generation

    static Trial generate(long seed) {
        Random r = new Random(seed);
        int n = 1 + r.nextInt(5);
        boolean mixed = r.nextInt(4) == 0;
        ScalarType common = DTYPES[r.nextInt(DTYPES.length)];
        double scale = new double[] {1e-3, 1, 20}[r.nextInt(3)];
        List<Spec> specs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            ScalarType dtype = mixed ? DTYPES[r.nextInt(DTYPES.length)] : common;
            long[] shape;
            boolean wide = dtype == ScalarType.Float || dtype == ScalarType.Double;
            if (wide && r.nextInt(40) == 0) {
                shape = new long[] {65_000 + r.nextInt(200_000)}; // several of the kernel's chunks, threads
            } else {
                shape = new long[r.nextInt(4)];
                for (int d = 0; d < shape.length; d++) {
                    shape[d] = r.nextInt(7); // 0 included: empty tensors
                }
            }
            int numel = (int) numel(shape);
            double[] p = random(r, numel, 1);
            double[] c = r.nextInt(5) == 0 ? null : random(r, numel, scale);
            double[] g = r.nextInt(8) == 0 ? null : random(r, numel, scale);
            specs.add(new Spec(shape, dtype, layout(r, shape), p, c, layout(r, shape), g, layout(r, shape)));
        }
        // a NaN or an infinity in one gradient of one tensor, in about one trial of five
        if (r.nextInt(5) == 0) {
            Spec s = specs.get(r.nextInt(n));
            double[] target = r.nextBoolean() ? s.c() : s.g();
            if (target != null && target.length > 0) {
                target[r.nextInt(target.length)] = new double[] {Double.NaN, Double.POSITIVE_INFINITY,
                    Double.NEGATIVE_INFINITY}[r.nextInt(3)];
            }
        }
        return new Trial(seed, specs, 3 * r.nextDouble(), 3 * r.nextDouble(), 2 * r.nextDouble(), 2 * r.nextDouble());
    }

    /** 0: contiguous; 1: last two dimensions transposed; 2: gaps after every row. */
    private static int layout(Random r, long[] shape) {
        int l = r.nextInt(3);
        if (l == 1 && shape.length < 2) {
            return shape.length == 0 ? 0 : 2;
        }
        return shape.length == 0 ? 0 : l;
    }

    private static double[] random(Random r, int n, double scale) {
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            v[i] = r.nextGaussian() * scale;
        }
        return v;
    }

    static long numel(long[] shape) {
        long n = 1;
        for (long s : shape) {
            n *= s;
        }
        return n;
    }

    // ------------------------------------------------------------------ tensors

    /** A tensor of these values (row-major), dtype and layout; always owning its own storage. */
    static Tensor make(double[] v, long[] shape, ScalarType dtype, int layout) {
        Tensor x = v.length == 0 ? torch.zeros(shape, new TensorOptions(ScalarType.Double))
                : Tensor.create(v).reshape(shape);
        x = x.to(dtype);
        if (layout == 1) {
            return x.transpose(-1, -2).contiguous().transpose(-1, -2);
        }
        if (layout == 2) {
            long[] wider = shape.clone();
            int last = shape.length - 1;
            wider[last] = 2 * shape[last] + 1;
            Tensor z = torch.zeros(wider, new TensorOptions(dtype));
            Tensor view = z.narrow(last, 0, shape[last]);
            view.copy_(x);
            return view;
        }
        return x.clone();
    }

    static double[] values(Tensor t) {
        Tensor d = t.detach().to(ScalarType.Double).contiguous();
        double[] out = new double[(int) d.numel()];
        if (out.length > 0) {
            d.data_ptr_double().get(out);
        }
        return out;
    }

    /** What a value becomes in the dtype. */
    static double[] rounded(double[] v, ScalarType dtype) {
        return v.length == 0 ? v : values(Tensor.create(v).to(dtype));
    }

    private static double eps(ScalarType t) {
        return switch (t) {
            case Double -> 0x1p-52;
            case Float -> 0x1p-23;
            case BFloat16 -> 0x1p-7;
            default -> 0x1p-10;
        };
    }

    private static double max(ScalarType t) {
        return switch (t) {
            case Double -> Double.MAX_VALUE;
            case Float, BFloat16 -> Float.MAX_VALUE;
            default -> 65504;
        };
    }

    // ------------------------------------------------------------------ one trial on one engine

    /** Runs the trial; returns whether it was (rightly) refused. */
    static boolean run(Trial trial, Engine engine) {
        try (PointerScope scope = new PointerScope()) {
            List<Spec> specs = trial.specs();
            int n = specs.size();
            Map<String, Tensor> named = new LinkedHashMap<>();
            Tensor[] ps = new Tensor[n];
            for (int i = 0; i < n; i++) {
                Spec s = specs.get(i);
                ps[i] = make(s.p(), s.shape(), s.dtype(), s.paramLayout()).detach().requires_grad_(true);
                named.put("layer" + i + ".w", ps[i]);
            }
            Map<String, Tensor> before = TestModels.snapshot(named);

            // float64 oracle from the values as the dtypes hold them
            double gValue = rounded(new double[] {trial.gValue()}, specs.get(0).dtype())[0];
            double excess = trial.alpha() * (gValue - trial.gConstraint());
            boolean expectRefusal = false;
            boolean overflowPossible = false;
            double[][] expected = new double[n][];
            double[] tolerance = new double[n];
            for (int i = 0; i < n; i++) {
                Spec s = specs.get(i);
                double[] p = rounded(s.p(), s.dtype());
                double[] c = s.c() == null ? null : rounded(s.c(), s.dtype());
                double[] g = s.g() == null ? (c == null ? null : new double[p.length]) : rounded(s.g(), s.dtype());
                if (g == null) {
                    expected[i] = p; // no gradient: SGD leaves it alone
                    continue;
                }
                if (!allFinite(g) || (c != null && !allFinite(c))) {
                    expectRefusal = true;
                    continue;
                }
                double lam = 0;
                double cNorm = 0;
                if (c != null) {
                    lam = ProjectionOracle.lam(g, c, excess, trial.beta());
                    double nn = 0;
                    for (double x : c) {
                        nn += x * x;
                    }
                    cNorm = Math.sqrt(nn);
                }
                double gNorm = 0;
                double pMax = 0;
                expected[i] = new double[p.length];
                for (int k = 0; k < p.length; k++) {
                    double gk = g[k] + (c == null ? 0 : lam * c[k]);
                    expected[i][k] = p[k] - LR * gk;
                    gNorm += g[k] * g[k];
                    pMax = Math.max(pMax, Math.abs(p[k]));
                    overflowPossible |= Math.abs(gk) > max(s.dtype()) / 4 || Math.abs(expected[i][k]) > max(s.dtype()) / 4;
                }
                // rounding of the dtype in g, lam * c (lam's own error is bounded by |g| / |c| per unit of c)
                // and p - lr * g', with room for the reductions' accumulated error
                tolerance[i] = 64 * eps(s.dtype()) * (pMax + LR * (Math.sqrt(gNorm) + lam * cNorm) + 1e-300);
            }

            try (Constraint opt = new Constraint(named, OptimizerSpec.sgd(LR), trial.alpha(), trial.beta(), engine)) {
                for (int i = 0; i < n; i++) {
                    Spec s = specs.get(i);
                    if (s.c() != null) {
                        ps[i].mutable_grad().put(make(s.c(), s.shape(), s.dtype(), s.cLayout()));
                    }
                }
                boolean refused;
                try {
                    opt.step(() -> {
                        for (int i = 0; i < n; i++) {
                            Spec s = specs.get(i);
                            if (s.g() == null) {
                                continue;
                            }
                            Tensor g = make(s.g(), s.shape(), s.dtype(), s.gLayout());
                            if (s.c() != null) {
                                ps[i].grad().add_(g); // as backward accumulates into the zeroed gradient
                            } else {
                                ps[i].mutable_grad().put(g);
                            }
                        }
                        return Tensor.create(0.0);
                    }, trial.gValue(), trial.gConstraint());
                    refused = false;
                } catch (NonFiniteException e) {
                    refused = true;
                    assertThat(e.getMessage()).as(engine + ": refusal message").containsPattern("'layer\\d+\\.w'");
                }
                if (refused || expectRefusal) {
                    assertThat(refused || overflowPossible).as(engine + ": refused").isEqualTo(expectRefusal || overflowPossible);
                    TestModels.assertUnchanged(named, before);
                    return true;
                }
                if (overflowPossible) {
                    return false;
                }
                for (int i = 0; i < n; i++) {
                    double[] got = values(ps[i]);
                    for (int k = 0; k < got.length; k++) {
                        double err = Math.abs(got[k] - expected[i][k]);
                        if (!(err <= tolerance[i])) {
                            throw new AssertionError(engine + ": parameter " + i + " element " + k + " is " + got[k]
                                    + ", the float64 oracle says " + expected[i][k] + " (error " + err + ", allowed "
                                    + tolerance[i] + ")");
                        }
                    }
                }
                return false;
            }
        }
    }

    private static boolean allFinite(double[] v) {
        for (double x : v) {
            if (!Double.isFinite(x)) {
                return false;
            }
        }
        return true;
    }

    private static String describe(Trial t) {
        StringBuilder b = new StringBuilder("gValue " + t.gValue() + ", gConstraint " + t.gConstraint() + ", alpha "
                + t.alpha() + ", beta " + t.beta() + ";");
        for (Spec s : t.specs()) {
            b.append(' ').append(java.util.Arrays.toString(s.shape())).append(' ').append(s.dtype())
                    .append(" layouts ").append(s.paramLayout()).append('/').append(s.cLayout()).append('/').append(s.gLayout())
                    .append(s.c() == null ? " no-c" : "").append(s.g() == null ? " no-g" : "").append(';');
        }
        return b.toString();
    }
}
