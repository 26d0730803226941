package org.text2data.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.text2data.LibTorch;
import org.text2data.engine.Engines;
import org.text2data.engine.ParamState;
import org.text2data.engine.ProjectionEngine;

/**
 * The projection engines against the machine, in one run (issue 3's yardsticks):
 * <ul>
 *   <li>{@code streamCopy}: a STREAM-like copy of 2 x 256 MB on two threads: the bandwidth to compare with
 *       (bytes moved = 2 x 256 MB per call: read and write);</li>
 *   <li>{@code secondStep}: the projection over the parameter list of a workload, the gradients restored
 *       before each call (outside the timing) so that every call really updates; the kernel moves
 *       20 bytes per float32 parameter (two passes when tensors outgrow the caches);</li>
 *   <li>{@code bothSteps}: {@code firstStep(true)} + {@code secondStep} as {@code runStep} calls them, all-in
 *       from Java (gathering the tensors, the swap, the kernel); each pair projects real work without any
 *       restore (the gradient after the swap is zero, so the constraint always pulls).</li>
 * </ul>
 * Lists: the conformance denoiser's parameter shapes of mlp-deep-small (39 tensors, 69,792 parameters)
 * and mlp-wide (13 tensors, 12.9M parameters), float32.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow"})
public class ProjectionBench {

    /** Shapes of the conformance denoiser: null [c], cin [h,c]+[h], inp [h,d]+[h], hid.i [h,h]+[h], out [d,h]+[d]. */
    static List<long[]> shapes(String list) {
        int d, c, h, layers;
        switch (list) {
            case "mlp-deep-small" -> { d = 16; c = 16; h = 64; layers = 16; }
            case "mlp-wide" -> { d = 64; c = 32; h = 2048; layers = 3; }
            default -> throw new IllegalArgumentException(list);
        }
        List<long[]> s = new ArrayList<>();
        s.add(new long[] {c});
        s.add(new long[] {h, c});
        s.add(new long[] {h});
        s.add(new long[] {h, d});
        s.add(new long[] {h});
        for (int i = 0; i < layers; i++) {
            s.add(new long[] {h, h});
            s.add(new long[] {h});
        }
        s.add(new long[] {d, h});
        s.add(new long[] {d});
        return s;
    }

    @State(Scope.Benchmark)
    public static class Lists {
        @Param({"mlp-deep-small", "mlp-wide"})
        public String list;

        @Param({"plain", "fused"})
        public String engine;

        Tensor[] params;
        Tensor[] saved;
        ProjectionEngine eng;
        ParamState[] states;
        Tensor gValue;

        @Setup(Level.Trial)
        public void setUp() {
            LibTorch.ensureLoaded();
            if (engine.equals("fused") && !Engines.fusedAvailable()) {
                throw new IllegalStateException("fused engine unavailable: " + Engines.fusedUnavailableReason());
            }
            torch.manual_seed(3);
            List<long[]> shapes = shapes(list);
            params = new Tensor[shapes.size()];
            saved = new Tensor[shapes.size()];
            for (int i = 0; i < params.length; i++) {
                params[i] = torch.randn(shapes.get(i)).requires_grad_(true);
                params[i].mutable_grad().put(torch.randn(shapes.get(i)));
                saved[i] = torch.randn(shapes.get(i));
            }
            eng = Engines.create(engine, params);
            states = records(params.length);
            eng.firstStep(states, true);
            gValue = torch.scalar_tensor(new Scalar(1e6), new TensorOptions(torch.ScalarType.Float));
        }

        /** The gradients of the conditional pass, back before each secondStep call. */
        @Setup(Level.Invocation)
        public void restore() {
            for (int i = 0; i < params.length; i++) {
                params[i].grad().copy_(saved[i]);
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            eng.close();
            for (ParamState st : states) {
                st.close();
            }
        }
    }

    @State(Scope.Benchmark)
    public static class Pairs {
        @Param({"mlp-deep-small", "mlp-wide"})
        public String list;

        @Param({"plain", "fused"})
        public String engine;

        Tensor[] params;
        ProjectionEngine eng;
        ParamState[] states;
        Tensor gValue;

        @Setup(Level.Trial)
        public void setUp() {
            LibTorch.ensureLoaded();
            torch.manual_seed(4);
            List<long[]> shapes = shapes(list);
            params = new Tensor[shapes.size()];
            for (int i = 0; i < params.length; i++) {
                params[i] = torch.randn(shapes.get(i)).requires_grad_(true);
                params[i].mutable_grad().put(torch.randn(shapes.get(i)));
            }
            eng = Engines.create(engine, params);
            states = records(params.length);
            gValue = torch.scalar_tensor(new Scalar(1e6), new TensorOptions(torch.ScalarType.Float));
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            eng.close();
            for (ParamState st : states) {
                st.close();
            }
        }
    }

    @State(Scope.Benchmark)
    public static class Stream {
        static final long BYTES = 256L << 20;
        Arena arena;
        MemorySegment a;
        MemorySegment b;
        ExecutorService pool;

        @Setup(Level.Trial)
        public void setUp() {
            arena = Arena.ofShared();
            a = arena.allocate(BYTES, 64);
            b = arena.allocate(BYTES, 64);
            a.fill((byte) 1);
            b.fill((byte) 2);
            pool = Executors.newFixedThreadPool(2);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            pool.shutdown();
            arena.close();
        }
    }

    /** One record per parameter, as a Constraint makes them. */
    static ParamState[] records(int n) {
        ParamState[] states = new ParamState[n];
        for (int i = 0; i < n; i++) {
            states[i] = new ParamState();
        }
        return states;
    }

    @Benchmark
    public int secondStep(Lists s) {
        return s.eng.secondStep(s.states, s.gValue, 0.0, 1.0, 1.0, true);
    }

    @Benchmark
    public int bothSteps(Pairs s) {
        s.eng.firstStep(s.states, true);
        return s.eng.secondStep(s.states, s.gValue, 0.0, 1.0, 1.0, true);
    }

    @Benchmark
    @OutputTimeUnit(TimeUnit.MILLISECONDS)
    public void streamCopy(Stream s) throws Exception {
        long half = Stream.BYTES / 2;
        Future<?> f = s.pool.submit(() -> MemorySegment.copy(s.a, 0, s.b, 0, half));
        MemorySegment.copy(s.a, half, s.b, half, half);
        f.get();
    }
}
