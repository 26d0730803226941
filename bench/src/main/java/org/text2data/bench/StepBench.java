package org.text2data.bench;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
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
import org.text2data.Constraint;
import org.text2data.Engine;
import org.text2data.Loss;
import org.text2data.OptimizerSpec;
import org.text2data.Text2Data;

/**
 * The three timings per workload, as {@code bench/python/bench_ref.py} takes them (Adam, lr 1e-3, MSE,
 * float32, {@code gConstraint} = 0.9 x the initial unconditional loss, so the constraint is active):
 * <ul>
 *   <li>{@code runStep}: {@link Text2Data#runStep}, per engine;</li>
 *   <li>{@code plain}: zero the gradients, unconditional forward/backward, conditional forward/backward
 *       (gradients accumulate), the base Adam step: the same passes with no constraint, the floor of
 *       {@code runStep};</li>
 *   <li>{@code projection}: {@code firstStep(true)} + {@code secondStep(gValue, gConstraint)} alone, per
 *       engine, on the gradients of one unconditional backward pass, put back before every call (the
 *       put-back is a per-invocation setup, outside the timing).</li>
 * </ul>
 * Sample-time mode: the score we report is the median of the per-call times, as the Python side reports.
 */
@BenchmarkMode(Mode.SampleTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow", "-Xss4m"})
public class StepBench {

    /** Workload state shared by the three benchmarks. */
    @State(Scope.Benchmark)
    public abstract static class Base {
        @Param({"mlp-deep-small", "mlp-deep", "mlp-wide", "transformer-small"})
        public String workload;

        Workloads.Workload w;

        void load() {
            // as bench_ref.py does: denormals flushed to zero on both sides, or each mode's timing depends
            // on when its fixed-batch training drifts into them (bench/NOTES.md, "Denormals")
            org.bytedeco.pytorch.global.torch.globalContext().setFlushDenormal(true);
            w = Workloads.load(workload);
        }
    }

    @State(Scope.Benchmark)
    public static class StepState extends Base {
        /** Engines: run-jmh keeps those that exist here ({@code fused} only where its library loads). */
        @Param({"plain", "fused"})
        public String engine;

        Constraint opt;
        double gConstraint;

        @Setup(Level.Trial)
        public void setup() {
            load();
            gConstraint = 0.9 * w.uncondLoss();
            opt = new Constraint(w.params(), OptimizerSpec.adam(Workloads.LR), 1.0, 1.0, Engine.parse(engine));
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            opt.close();
        }
    }

    @State(Scope.Benchmark)
    public static class PlainState extends Base {
        Constraint opt; // used only for zeroGrad (in place, as PyTorch 1.13) and its base Adam

        @Setup(Level.Trial)
        public void setup() {
            load();
            opt = new Constraint(w.params(), OptimizerSpec.adam(Workloads.LR), 1.0, 1.0, Engine.PLAIN);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            opt.close();
        }
    }

    @State(Scope.Benchmark)
    public static class ProjectionState extends Base {
        @Param({"plain", "fused"})
        public String engine;

        Constraint opt;
        double gConstraint;
        Tensor gValue;
        final List<Tensor> saved = new ArrayList<>();

        @Setup(Level.Trial)
        public void setup() {
            load();
            gConstraint = 0.9 * w.uncondLoss();
            opt = new Constraint(w.params(), OptimizerSpec.adam(Workloads.LR), 1.0, 1.0, Engine.parse(engine));
            opt.zeroGrad();
            Tensor g = Loss.MSE.apply(w.model().forward(w.data(), null), w.label());
            g.backward();
            gValue = g.detach();
            for (Tensor p : w.params().values()) {
                saved.add(p.grad().clone());
            }
        }

        @Setup(Level.Invocation)
        public void restoreGradients() {
            try (PointerScope s = new PointerScope(); NoGradGuard g = new NoGradGuard()) {
                int i = 0;
                for (Tensor p : w.params().values()) {
                    p.grad().copy_(saved.get(i++));
                }
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            opt.close();
        }
    }

    @Benchmark
    public int runStep(StepState s) {
        return s.w.runStep(s.opt, s.gConstraint);
    }

    @Benchmark
    public void plain(PlainState s) {
        s.w.plainStep(s.opt);
    }

    @Benchmark
    public int projection(ProjectionState s) {
        s.opt.firstStep(true);
        return s.opt.secondStep(s.gValue, s.gConstraint);
    }
}
