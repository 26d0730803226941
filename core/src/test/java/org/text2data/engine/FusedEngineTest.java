package org.text2data.engine;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.Reader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.function.Consumer;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Holds {@link FusedEngine} (CPU) to {@link PlainEngine} and to the Python reference's fixtures. */
class FusedEngineTest {

    private static final long[][] SHAPES = {
        {0}, {1}, {3}, {7, 13}, {1000}, {65535}, {65537}, {5, 0, 3}, {31, 33}, {2048, 700}, {4}
    };

    @BeforeAll
    static void nativeLibraryLoads() {
        assertThat(NativeLibrary.unavailableReason()).isNull();
        assertThat(NativeLibrary.isAvailable()).isTrue();
    }

    // ------------------------------------------------------------------ helpers

    static Tensor tensor(double[] values, long[] shape, ScalarType type) {
        try (DoublePointer p = new DoublePointer(values)) {
            Tensor blob = torch.from_blob(p, shape, new TensorOptions(ScalarType.Double));
            Tensor t = blob.to(type).clone(); // clone: own memory, not the Java buffer
            t.retainReference();
            return t;
        }
    }

    static double[] values(Tensor t) {
        Tensor d = t.detach().to(ScalarType.Double).contiguous();
        double[] out = new double[(int) d.numel()];
        if (out.length > 0) {
            d.data_ptr_double().get(out);
        }
        return out;
    }

    static double[] random(Random r, long n, double scale, double shift) {
        double[] v = new double[(int) n];
        for (int i = 0; i < v.length; i++) {
            v[i] = r.nextGaussian() * scale + shift;
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

    static Tensor param(long[] shape, ScalarType type) {
        Tensor p = torch.zeros(shape, new TensorOptions(type));
        p.requires_grad_(true);
        p.retainReference();
        return p;
    }

    static void setGrad(Tensor p, Tensor g) {
        p.mutable_grad().put(g);
    }

    static long address(Tensor t) {
        try (Pointer p = t.data_ptr()) {
            return p.address();
        }
    }

    static Tensor scalar(double v, ScalarType type) {
        return tensor(new double[] {v}, new long[] {}, type);
    }

    /**
     * Runs both engines over identical parameter lists: grads c (first step, zeroGrad), then g added to the
     * zeroed gradient (as a backward would), then the second step. Null c: no gradient in the first step.
     */
    static void compare(List<double[]> cs, List<double[]> gs, List<long[]> shapes, ScalarType type, double gValue,
                        double gConstraint, double alpha, double beta, double tol) {
        try (PointerScope scope = new PointerScope()) {
            int n = shapes.size();
            Tensor[] pa = new Tensor[n];
            Tensor[] pb = new Tensor[n];
            for (int i = 0; i < n; i++) {
                pa[i] = param(shapes.get(i), type);
                pb[i] = param(shapes.get(i), type);
                if (cs.get(i) != null) {
                    setGrad(pa[i], tensor(cs.get(i), shapes.get(i), type));
                    setGrad(pb[i], tensor(cs.get(i), shapes.get(i), type));
                }
            }
            try (Records rp = new Records(n); Records rf = new Records(n);
                 PlainEngine plain = new PlainEngine(pa); FusedEngine fused = new FusedEngine(pb)) {
                assertThat(fused.name()).isEqualTo("fused-cpu");
                plain.firstStep(rp.all, true);
                fused.firstStep(rf.all, true);
                assertThat(fused.hasConstraintGrads()).isTrue();
                int expectedCount = 0;
                for (int i = 0; i < n; i++) {
                    if (cs.get(i) != null) {
                        assertThat(java.util.Arrays.stream(values(pb[i].grad())).allMatch(x -> x == 0.0)).as("grad %d zeroed", i).isTrue();
                        pa[i].grad().add_(tensor(gs.get(i), shapes.get(i), type));
                        pb[i].grad().add_(tensor(gs.get(i), shapes.get(i), type));
                        expectedCount++;
                    } else {
                        assertThat(pb[i].grad().defined()).isFalse();
                        setGrad(pa[i], tensor(gs.get(i), shapes.get(i), type));
                        setGrad(pb[i], tensor(gs.get(i), shapes.get(i), type));
                    }
                }
                // float64 reference from the (dtype-rounded) inputs
                double excess = alpha * (values(scalar(gValue, type))[0] - gConstraint);
                double[][] exact = new double[n][];
                for (int i = 0; i < n; i++) {
                    double[] g = values(pb[i].grad());
                    exact[i] = g;
                    if (cs.get(i) != null) {
                        double[] c = values(tensor(cs.get(i), shapes.get(i), type));
                        exact[i] = org.text2data.ProjectionOracle.project(g, c, excess, beta);
                    }
                }
                int ca = plain.secondStep(rp.all, scalar(gValue, type), gConstraint, alpha, beta, false);
                int cb = fused.secondStep(rf.all, scalar(gValue, type), gConstraint, alpha, beta, false);
                assertThat(cb).isEqualTo(ca).isEqualTo(expectedCount);
                for (int i = 0; i < n; i++) {
                    assertClose(values(pb[i].grad()), exact[i], tol, "parameter " + i + " against float64");
                    // The plain engine reduces in float32: on the 1.4M-element tensor its lam is off by ~5e-5
                    // (measured; the fused engine accumulates in double and meets the float64 check above).
                    double plainTol = type == ScalarType.Float ? 2e-4 : tol;
                    assertClose(values(pb[i].grad()), values(pa[i].grad()), plainTol, "parameter " + i + " against plain");
                    if (cs.get(i) == null) {
                        assertThat(values(pb[i].grad())).as("unprojected parameter %d", i)
                                .containsExactly(values(tensor(gs.get(i), shapes.get(i), type)));
                    }
                }
            }
            for (int i = 0; i < n; i++) {
                pa[i].releaseReference();
                pb[i].releaseReference();
            }
        }
    }

    /** Element-wise relative comparison (see the floor below). */
    static void assertClose(double[] got, double[] want, double tol, String what) {
        assertThat(got).as(what).hasSameSizeAs(want);
        double scale = 0;
        for (double w : want) {
            scale = Math.max(scale, Math.abs(w));
        }
        for (int k = 0; k < got.length; k++) {
            double err = Math.abs(got[k] - want[k]);
            // relative to the element, floored at a tenth of the tensor's largest magnitude: elements where
            // g and lam*c cancel carry the rounding error of their terms, not of their small sum
            double allowed = tol * Math.max(Math.abs(want[k]), 0.1 * scale) + 1e-300;
            if (!(err <= allowed)) {
                throw new AssertionError(what + ": element " + k + " is " + got[k] + ", expected " + want[k]
                        + " (error " + err + ", allowed " + allowed + ")");
            }
        }
    }

    // ------------------------------------------------------------------ against the plain engine

    @ParameterizedTest(name = "{0}, violated={1}")
    @CsvSource({"Float, true", "Float, false", "Double, true", "Double, false"})
    void matchesPlainEngineOnManyShapes(String dtype, boolean violated) {
        ScalarType type = ScalarType.valueOf(dtype);
        Random r = new Random(42 + (violated ? 1 : 0) + dtype.hashCode());
        List<long[]> shapes = new ArrayList<>();
        List<double[]> cs = new ArrayList<>();
        List<double[]> gs = new ArrayList<>();
        for (int i = 0; i < SHAPES.length; i++) {
            long n = numel(SHAPES[i]);
            shapes.add(SHAPES[i]);
            double[] c = random(r, n, 1.0, 0.0);
            double[] g = random(r, n, 1.0, 0.0);
            for (int k = 0; k < n; k++) {
                g[k] -= 0.3 * c[k]; // against the constraint: projection does something
            }
            // The last parameter had no gradient in the first step: it is not projected.
            cs.add(i == SHAPES.length - 1 ? null : c);
            gs.add(g);
        }
        double gValue = violated ? 3.0 : 0.5;
        double gConstraint = 1.0;
        compare(cs, gs, shapes, type, gValue, gConstraint, 1.0, 1.0, type == ScalarType.Double ? 1e-12 : 1e-5);
    }

    @Test
    void matchesPlainEngineOnHundredsOfTensors() {
        Random r = new Random(7);
        List<long[]> shapes = new ArrayList<>();
        List<double[]> cs = new ArrayList<>();
        List<double[]> gs = new ArrayList<>();
        for (int i = 0; i < 300; i++) {
            long[] shape = {r.nextInt(40), 1 + r.nextInt(50)};
            shapes.add(shape);
            cs.add(random(r, numel(shape), 0.5 + r.nextDouble(), 0.1));
            gs.add(random(r, numel(shape), 1.0, -0.2));
        }
        compare(cs, gs, shapes, ScalarType.Float, 2.0, 0.5, 0.7, 1.3, 1e-5);
        compare(cs, gs, shapes, ScalarType.Double, 2.0, 0.5, 0.7, 1.3, 1e-12);
    }

    // ------------------------------------------------------------------ against the Python reference

    @Test
    void matchesTheProjectionFixtures() throws Exception {
        Path file = org.text2data.Fixtures.dir().resolve("projection.json");
        Assumptions.assumeTrue(Files.exists(file), "fixtures not copied");
        JsonObject root;
        try (Reader in = Files.newBufferedReader(file)) {
            root = JsonParser.parseReader(in).getAsJsonObject();
        }
        int caseIndex = 0;
        for (JsonElement ce : root.getAsJsonArray("cases")) {
            JsonObject c = ce.getAsJsonObject();
            ScalarType type = c.get("dtype").getAsString().equals("float64") ? ScalarType.Double : ScalarType.Float;
            double tol = type == ScalarType.Double ? 1e-9 : 1e-5;
            JsonArray ts = c.getAsJsonArray("tensors");
            try (PointerScope scope = new PointerScope()) {
                Tensor[] params = new Tensor[ts.size()];
                for (int i = 0; i < ts.size(); i++) {
                    JsonObject t = ts.get(i).getAsJsonObject();
                    long[] shape = longs(t.getAsJsonArray("shape"));
                    params[i] = param(shape, type);
                    setGrad(params[i], tensor(doubles(t.getAsJsonArray("constraint_grad")), shape, type));
                }
                try (Records rf = new Records(params.length); FusedEngine fused = new FusedEngine(params)) {
                    fused.firstStep(rf.all, true);
                    for (int i = 0; i < ts.size(); i++) {
                        JsonObject t = ts.get(i).getAsJsonObject();
                        params[i].grad().add_(tensor(doubles(t.getAsJsonArray("grad")), longs(t.getAsJsonArray("shape")), type));
                    }
                    int count = fused.secondStep(rf.all, scalar(c.get("g_value").getAsDouble(), type),
                            c.get("g_constraint").getAsDouble(), c.get("alpha").getAsDouble(), c.get("beta").getAsDouble(), true);
                    assertThat(count).isEqualTo(ts.size());
                    for (int i = 0; i < ts.size(); i++) {
                        double[] expected = doubles(ts.get(i).getAsJsonObject().getAsJsonArray("expected"));
                        assertClose(values(params[i].grad()), expected, tol, "case " + caseIndex + " tensor " + i);
                    }
                }
                for (Tensor p : params) {
                    p.releaseReference();
                }
            }
            caseIndex++;
        }
        assertThat(caseIndex).isPositive();
    }

    private static long[] longs(JsonArray a) {
        long[] v = new long[a.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = a.get(i).getAsLong();
        }
        return v;
    }

    private static double[] doubles(JsonArray a) {
        double[] v = new double[a.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = a.get(i).getAsDouble();
        }
        return v;
    }

    // ------------------------------------------------------------------ the no-copy swap

    @Test
    void firstStepSwapsBuffersAndBackwardAccumulatesIntoTheFreshOne() {
        try (PointerScope scope = new PointerScope()) {
            Tensor p = param(new long[] {4, 5}, ScalarType.Double);
            p.detach().copy_(torch.randn(4, 5).to(ScalarType.Double));
            try (Records rf = new Records(1); FusedEngine fused = new FusedEngine(new Tensor[] {p})) {
                for (int step = 0; step < 3; step++) {
                    p.mul(p).sum().backward(); // grad = 2p
                    double[] c = values(p.grad());
                    long before = address(p.grad());
                    fused.firstStep(rf.all, true);
                    long fresh = address(p.grad());
                    assertThat(fresh).as("new gradient buffer").isNotEqualTo(before);
                    assertThat(values(p.grad())).containsOnly(0.0);
                    p.mul(new org.bytedeco.pytorch.Scalar(3.0)).sum().backward(); // accumulates 3 into the fresh buffer, in place
                    assertThat(address(p.grad())).as("backward accumulated in place").isEqualTo(fresh);
                    assertThat(values(p.grad())).containsOnly(3.0);
                    // gValue large, so phi = |c|^2: lam = (|c|^2 - <3, c>)/(1e-8 + |c|^2)
                    double[] three = new double[c.length];
                    java.util.Arrays.fill(three, 3.0);
                    double lam = org.text2data.ProjectionOracle.lam(three, c, 1e9, 1.0);
                    fused.secondStep(rf.all, scalar(1e9, ScalarType.Double), 0.0, 1.0, 1.0, false);
                    double[] g = values(p.grad());
                    for (int k = 0; k < g.length; k++) {
                        assertThat(g[k]).isCloseTo(3 + lam * c[k], org.assertj.core.data.Offset.offset(1e-12));
                    }
                    // what the optimizer would do, then the next step starts from a zero gradient again
                    p.grad().zero_();
                    if (step > 0) {
                        // the previous step's c_p buffer is reused as the next zeroed gradient
                        assertThat(fresh).isNotEqualTo(0L);
                    }
                }
            }
            p.releaseReference();
        }
    }

    @Test
    void swapReusesThePreviousConstraintBuffer() {
        try (PointerScope scope = new PointerScope()) {
            Tensor p = param(new long[] {10}, ScalarType.Float);
            try (Records rf = new Records(1); FusedEngine fused = new FusedEngine(new Tensor[] {p})) {
                setGrad(p, torch.ones(10).to(ScalarType.Float));
                long a = address(p.grad());
                fused.firstStep(rf.all, true);
                long b = address(p.grad());
                p.grad().add_(torch.ones(10).to(ScalarType.Float));
                fused.secondStep(rf.all, scalar(5, ScalarType.Float), 0, 1, 1, false);
                fused.firstStep(rf.all, true); // the old c_p (buffer a) becomes the gradient, b is kept
                assertThat(address(p.grad())).isEqualTo(a);
                assertThat(values(p.grad())).containsOnly(0.0);
                fused.firstStep(rf.all, true);
                assertThat(address(p.grad())).isEqualTo(b);
            }
            p.releaseReference();
        }
    }

    @Test
    void withoutZeroGradTheGradientIsCopiedAndLeftAlone() {
        try (PointerScope scope = new PointerScope()) {
            Tensor p = param(new long[] {6}, ScalarType.Double);
            Tensor q = param(new long[] {6}, ScalarType.Double);
            double[] c = {1, -2, 3, 0.5, 0, 2};
            setGrad(p, tensor(c, new long[] {6}, ScalarType.Double));
            setGrad(q, tensor(c, new long[] {6}, ScalarType.Double));
            long before = address(p.grad());
            try (Records rf = new Records(1); Records rp = new Records(1);
                 FusedEngine fused = new FusedEngine(new Tensor[] {p}); PlainEngine plain = new PlainEngine(new Tensor[] {q})) {
                fused.firstStep(rf.all, false);
                plain.firstStep(rp.all, false);
                assertThat(address(p.grad())).isEqualTo(before);
                assertThat(values(p.grad())).containsExactly(c);
                double[] g = {0.5, 1, -1, 2, 3, -4};
                p.grad().add_(tensor(g, new long[] {6}, ScalarType.Double));
                q.grad().add_(tensor(g, new long[] {6}, ScalarType.Double));
                fused.secondStep(rf.all, scalar(4, ScalarType.Double), 1, 1, 1, false);
                plain.secondStep(rp.all, scalar(4, ScalarType.Double), 1, 1, 1, false);
                assertClose(values(p.grad()), values(q.grad()), 1e-14, "projected");
                // again, reusing the copy buffer
                fused.firstStep(rf.all, false);
                plain.firstStep(rp.all, false);
                fused.secondStep(rf.all, scalar(4, ScalarType.Double), 1, 1, 1, false);
                plain.secondStep(rp.all, scalar(4, ScalarType.Double), 1, 1, 1, false);
                assertClose(values(p.grad()), values(q.grad()), 1e-14, "projected twice");
            }
            p.releaseReference();
            q.releaseReference();
        }
    }

    // ------------------------------------------------------------------ bad input changes nothing

    /** Three float32 parameters with kept gradients and current gradients; mutate, then expect a failure. */
    void expectRejected(Consumer<Tensor[]> breakIt, Class<? extends Throwable> type, String... messageParts) {
        try (PointerScope scope = new PointerScope()) {
            Tensor[] ps = {param(new long[] {4, 5}, ScalarType.Float), param(new long[] {4, 5}, ScalarType.Float),
                param(new long[] {3}, ScalarType.Float)};
            for (Tensor p : ps) {
                setGrad(p, torch.randn(p.numel()).reshape(shapeOf(p)).to(ScalarType.Float));
            }
            try (Records rf = new Records(ps.length); FusedEngine fused = new FusedEngine(ps)) {
                fused.firstStep(rf.all, true);
                for (Tensor p : ps) {
                    p.grad().add_(torch.randn(p.numel()).reshape(shapeOf(p)).to(ScalarType.Float));
                }
                breakIt.accept(ps);
                double[][] before = new double[ps.length][];
                for (int i = 0; i < ps.length; i++) {
                    before[i] = values(ps[i].grad());
                }
                var thrown = assertThatThrownBy(() -> fused.secondStep(rf.all, scalar(100, ScalarType.Float), 0, 1, 1, false)).isInstanceOf(type);
                for (String part : messageParts) {
                    thrown.hasMessageContaining(part);
                }
                for (int i = 0; i < ps.length; i++) {
                    assertThat(values(ps[i].grad())).as("gradient %d unchanged", i).containsExactly(before[i]);
                }
            }
            for (Tensor p : ps) {
                p.releaseReference();
            }
        }
    }

    private static long[] shapeOf(Tensor p) {
        long[] s = new long[(int) p.dim()];
        for (int d = 0; d < s.length; d++) {
            s[d] = p.size(d);
        }
        return s;
    }

    @Test
    void nonContiguousGradientsAreProjectedLikeThePlainEngine() {
        try (PointerScope scope = new PointerScope()) {
            Tensor[] pa = {param(new long[] {4, 5}, ScalarType.Double), param(new long[] {3}, ScalarType.Double)};
            Tensor[] pb = {param(new long[] {4, 5}, ScalarType.Double), param(new long[] {3}, ScalarType.Double)};
            Tensor c0 = torch.randn(5, 4).to(ScalarType.Double).t(); // strided, as a strided parameter's gradient is
            Tensor c1 = torch.randn(3).to(ScalarType.Double);
            Tensor g0 = torch.randn(5, 4).to(ScalarType.Double).t();
            Tensor g1 = torch.randn(3).to(ScalarType.Double);
            try (Records rp = new Records(2); Records rf = new Records(2);
                 PlainEngine plain = new PlainEngine(pa); FusedEngine fused = new FusedEngine(pb)) {
                for (int k = 0; k < 2; k++) { // the second round finds the first round's buffers in place
                    Tensor[][] sets = {pa, pb};
                    for (Tensor[] ps : sets) {
                        setGrad(ps[0], c0.clone());
                        setGrad(ps[1], c1.clone());
                    }
                    assertThat(pb[0].grad().is_contiguous()).isFalse();
                    plain.firstStep(rp.all, true);
                    fused.firstStep(rf.all, true);
                    for (Tensor[] ps : sets) {
                        ps[0].grad().add_(g0);
                        ps[1].grad().add_(g1);
                    }
                    assertThat(pb[0].grad().is_contiguous()).isFalse();
                    assertThat(plain.secondStep(rp.all, scalar(100, ScalarType.Double), 0, 1, 1, true)).isEqualTo(2);
                    assertThat(fused.secondStep(rf.all, scalar(100, ScalarType.Double), 0, 1, 1, true)).isEqualTo(2);
                    for (int i = 0; i < 2; i++) {
                        assertClose(values(pb[i].grad()), values(pa[i].grad()), 1e-12, "parameter " + i);
                    }
                    assertThat(values(pb[0].grad())).isNotEqualTo(values(g0)); // projected, not left alone
                }
            }
            for (int i = 0; i < 2; i++) {
                pa[i].releaseReference();
                pb[i].releaseReference();
            }
        }
    }

    @Test
    void errorsNameTheParameter() {
        try (PointerScope scope = new PointerScope()) {
            Tensor[] ps = {param(new long[] {3}, ScalarType.Float), param(new long[] {3}, ScalarType.Float)};
            for (Tensor p : ps) {
                setGrad(p, torch.randn(3).to(ScalarType.Float));
            }
            try (Records rf = new Records(ps.length);
                 FusedEngine fused = new FusedEngine(ps, new String[] {"enc.weight", "enc.bias"})) {
                fused.firstStep(rf.all, true);
                setGrad(ps[1], torch.randn(3).to(ScalarType.Double));
                assertThatThrownBy(() -> fused.secondStep(rf.all, scalar(1, ScalarType.Float), 0, 1, 1, true))
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("parameter 'enc.bias'")
                        .hasMessageContaining("float64");
            }
            for (Tensor p : ps) {
                p.releaseReference();
            }
        }
    }

    @Test
    void gradientOfAnotherDtypeIsRejected() {
        expectRejected(ps -> setGrad(ps[2], torch.randn(3).to(ScalarType.Double)),
                IllegalArgumentException.class, "parameter '#2'", "float64", "float32");
    }

    @Test
    void gradientOfAnotherSizeIsRejected() {
        expectRejected(ps -> setGrad(ps[1], torch.randn(7).to(ScalarType.Float)),
                IllegalArgumentException.class, "parameter '#1'", "7 elements");
    }

    @Test
    void unsupportedDtypeIsRejected() {
        expectRejected(ps -> setGrad(ps[2], torch.ones(3).to(ScalarType.Long)),
                IllegalArgumentException.class, "parameter '#2'", "unsupported");
    }

    @Test
    void nonFiniteGradientIsReportedLikeThePlainEngine() {
        try (PointerScope scope = new PointerScope()) {
            Tensor[] ps = {param(new long[] {8}, ScalarType.Float), param(new long[] {8}, ScalarType.Float)};
            for (Tensor p : ps) {
                setGrad(p, torch.randn(8).to(ScalarType.Float));
            }
            try (Records rf = new Records(ps.length); FusedEngine fused = new FusedEngine(ps)) {
                fused.firstStep(rf.all, true);
                ps[0].grad().add_(torch.randn(8).to(ScalarType.Float));
                ps[1].grad().add_(tensor(new double[] {1, 2, Double.NaN, 4, 5, 6, 7, 8}, new long[] {8}, ScalarType.Float));
                assertThatThrownBy(() -> fused.secondStep(rf.all, scalar(100, ScalarType.Float), 0, 1, 1, true))
                        .isInstanceOf(NonFiniteGradientException.class)
                        .hasMessage("its gradient holds a NaN or an infinity")
                        .satisfies(e -> assertThat(((NonFiniteGradientException) e).tensorIndex()).isEqualTo(1));
                // without the check, NaN propagates as with libtorch ops
                assertThat(fused.secondStep(rf.all, scalar(100, ScalarType.Float), 0, 1, 1, false)).isEqualTo(2);
            }
            for (Tensor p : ps) {
                p.releaseReference();
            }
        }
    }

    @Test
    void noKeptGradientsMeansNothingIsProjected() {
        try (PointerScope scope = new PointerScope()) {
            Tensor p = param(new long[] {3}, ScalarType.Float);
            try (Records rf = new Records(1); FusedEngine fused = new FusedEngine(new Tensor[] {p})) {
                assertThat(fused.hasConstraintGrads()).isFalse();
                fused.firstStep(rf.all, true); // no gradient at all: nothing kept
                setGrad(p, torch.ones(3).to(ScalarType.Float));
                assertThat(fused.secondStep(rf.all, scalar(1, ScalarType.Float), 0, 1, 1, false)).isZero();
                assertThat(values(p.grad())).containsOnly(1.0);
            }
            p.releaseReference();
        }
    }

    @Test
    void theStateAddressesACapturedStepChecksChangeExactlyWhenItsStateIsReleased() {
        // CapturedStep.replay refuses when the optimizer state the graph uses moved since the capture (the graph
        // would write into freed memory): the comparison it makes, on the host
        FusedOptimizer.Options adam = new FusedOptimizer.Options(FusedOptimizer.Kind.ADAM, 0.1, 0.9, 0.999, 1e-8, 0.0,
                false, 0.0, 0.0, false);
        try (PointerScope scope = new PointerScope()) {
            Tensor p = param(new long[] {5}, ScalarType.Float);
            Tensor q = param(new long[] {2, 3}, ScalarType.Float);
            Tensor r = param(new long[] {4}, ScalarType.Float);
            try (Records rf = new Records(3); FusedEngine fused = new FusedEngine(new Tensor[] {p, q, r})) {
                setGrad(p, torch.ones(5).to(ScalarType.Float));
                setGrad(q, torch.ones(2, 3).to(ScalarType.Float));
                fused.optimizerStep(rf.all, adam, null, 0, 1, 1, false); // r has no gradient: no state, not stepped
                long[] captured = fused.stateAddresses(rf.all);
                assertThat(captured).hasSize(12);
                assertThat(captured[0]).isNotZero(); // step, exp_avg, exp_avg_sq of p; no max_exp_avg_sq
                assertThat(captured[1]).isNotZero();
                assertThat(captured[2]).isNotZero();
                assertThat(captured[3]).isZero();
                assertThat(java.util.Arrays.copyOfRange(captured, 8, 12)).containsOnly(0L);
                assertThat(fused.sameStateAddresses(rf.all, captured)).isTrue();

                fused.optimizerStep(rf.all, adam, null, 0, 1, 1, false); // steps write in place
                assertThat(fused.sameStateAddresses(rf.all, captured)).isTrue();
                assertThat(fused.sameStateAddresses(rf.all, java.util.Arrays.copyOf(captured, 8))).isFalse();

                setGrad(r, torch.ones(4).to(ScalarType.Float)); // state made since for r: not the graph's
                fused.optimizerStep(rf.all, adam, null, 0, 1, 1, false);
                assertThat(fused.stateAddresses(rf.all)[8]).isNotZero();
                assertThat(fused.sameStateAddresses(rf.all, captured)).isTrue();

                rf.all[1].load(adam, 0, null, q); // a checkpoint without state for q: the graph's buffers freed
                assertThat(fused.sameStateAddresses(rf.all, captured)).isFalse();
            }
            p.releaseReference();
            q.releaseReference();
            r.releaseReference();
        }
    }

    @Test
    void theStepScalarsAreWrittenWhereTheNativeStructHasThem() {
        // a captured step's lr, gConstraint, alpha and beta, read by t2d_step_cuda_planned as a t2d_step_scalars
        try (PointerScope scope = new PointerScope()) {
            Tensor p = param(new long[] {3}, ScalarType.Float);
            try (FusedEngine fused = new FusedEngine(new Tensor[] {p})) {
                Tensor s = fused.newStepScalars();
                double[] v = {1e-3, 0.75, 2.0, 0.5};
                for (int k = 0; k < 4; k++) {
                    FusedEngine.writeStepScalar(s, k, v[k]);
                }
                java.lang.foreign.MemorySegment m = java.lang.foreign.MemorySegment.ofAddress(FusedEngine.dataAddress(s))
                        .reinterpret(org.text2data.ffi.t2d_step_scalars.sizeof());
                assertThat(org.text2data.ffi.t2d_step_scalars.lr(m)).isEqualTo(1e-3);
                assertThat(org.text2data.ffi.t2d_step_scalars.g_constraint(m)).isEqualTo(0.75);
                assertThat(org.text2data.ffi.t2d_step_scalars.alpha(m)).isEqualTo(2.0);
                assertThat(org.text2data.ffi.t2d_step_scalars.beta(m)).isEqualTo(0.5);
                s.releaseReference();
            }
            p.releaseReference();
        }
    }

    /** One record per parameter, as a Constraint makes them, closed with the try block that made them. */
    static final class Records implements AutoCloseable {
        final ParamState[] all;

        Records(int n) {
            all = new ParamState[n];
            for (int i = 0; i < n; i++) {
                all[i] = new ParamState();
            }
        }

        @Override
        public void close() {
            for (ParamState st : all) {
                st.close();
            }
        }
    }

    @Test
    void theRecordsHoldTheKeptGradientsNotTheEngine() {
        // c_p is kept by one engine and used by another, built afresh: only the records carry it from one to the
        // other (an engine keeping c_p itself would hand the second one nothing, and it would project nothing)
        try (PointerScope scope = new PointerScope()) {
            Tensor p = param(new long[] {6}, ScalarType.Double);
            Tensor q = param(new long[] {6}, ScalarType.Double);
            double[] c = {1, -2, 3, 0.5, 0, 2};
            double[] g = {0.5, 1, -1, 2, 3, -4};
            setGrad(p, tensor(c, new long[] {6}, ScalarType.Double));
            setGrad(q, tensor(c, new long[] {6}, ScalarType.Double));
            try (Records rf = new Records(1); Records rp = new Records(1);
                 PlainEngine plain = new PlainEngine(new Tensor[] {q})) {
                try (FusedEngine first = new FusedEngine(new Tensor[] {p})) {
                    first.firstStep(rf.all, true);
                }
                plain.firstStep(rp.all, true);
                assertThat(rf.all[0].keeps()).isTrue();
                assertThat(values(rf.all[0].kept)).containsExactly(c);
                assertThat(values(rp.all[0].kept)).containsExactly(c);
                p.grad().add_(tensor(g, new long[] {6}, ScalarType.Double));
                q.grad().add_(tensor(g, new long[] {6}, ScalarType.Double));
                try (FusedEngine second = new FusedEngine(new Tensor[] {p})) {
                    assertThat(second.secondStep(rf.all, scalar(4, ScalarType.Double), 1, 1, 1, true)).isEqualTo(1);
                }
                assertThat(plain.secondStep(rp.all, scalar(4, ScalarType.Double), 1, 1, 1, true)).isEqualTo(1);
                assertThat(values(p.grad())).isNotEqualTo(g); // projected
                assertClose(values(p.grad()), values(q.grad()), 1e-14, "projected with the records' c_p");
                // closing a record releases everything it holds
                rf.all[0].close();
                assertThat(rf.all[0].keeps()).isFalse();
                assertThat(rf.all[0].installed).isNull();
                assertThat(rf.all[0].spare).isNull();
            }
            p.releaseReference();
            q.releaseReference();
        }
    }

    @Test
    void recordsThatAreNotOnePerParameterAreRefused() {
        try (PointerScope scope = new PointerScope()) {
            Tensor p = param(new long[] {3}, ScalarType.Float);
            try (Records two = new Records(2); FusedEngine fused = new FusedEngine(new Tensor[] {p});
                 PlainEngine plain = new PlainEngine(new Tensor[] {p})) {
                assertThatThrownBy(() -> fused.firstStep(two.all, true)).isInstanceOf(IllegalArgumentException.class)
                        .hasMessageContaining("2 per-parameter states for 1 parameters");
                assertThatThrownBy(() -> plain.firstStep(new ParamState[1], true))
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("parameter #0");
            }
            p.releaseReference();
        }
    }

    @Test
    void closedEngineRefusesWork() {
        FusedEngine fused = new FusedEngine(new Tensor[0]);
        fused.close();
        fused.close();
        assertThatThrownBy(() -> fused.firstStep(new ParamState[0], true)).isInstanceOf(IllegalStateException.class);
    }
}
