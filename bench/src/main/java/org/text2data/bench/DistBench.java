package org.text2data.bench;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.text2data.Batch;
import org.text2data.Constraint;
import org.text2data.Engine;
import org.text2data.Loss;
import org.text2data.OptimizerSpec;
import org.text2data.Text2Data;
import org.text2data.dist.DataParallel;
import org.text2data.dist.ProcessGroup;

/**
 * Steps per second of data-parallel {@code runStep} (run by {@code bench/dist}, one JVM per rank):
 * {@code DistBench WORKLOAD STEPS STORE_FILE|none RANK WORLD_SIZE}. Every rank trains on its share of the
 * workload's batch (the global batch stays the same whatever the world size); rank 0 prints one line.
 * With {@code none}, a single process without any process group (the baseline).
 */
public final class DistBench {
    private DistBench() {
    }

    /** One rank (or the single process): see the class comment for the arguments. */
    public static void main(String[] args) throws Exception {
        String name = args[0];
        int steps = Integer.parseInt(args[1]);
        boolean single = args[2].equals("none");
        int rank = Integer.parseInt(args[3]);
        int world = Integer.parseInt(args[4]);
        torch.globalContext().setFlushDenormal(true); // as StepBench: no denormal slow path
        Workloads.Workload w = Workloads.load(name);
        try (ProcessGroup pg = single ? null : ProcessGroup.file(Path.of(args[2]), rank, world,
                ProcessGroup.Kind.GLOO, Duration.ofSeconds(60));
             Constraint opt = new Constraint(w.params(), OptimizerSpec.adam(1e-4), 1, 1, Engine.AUTO);
             DataParallel dp = single ? null : new DataParallel(pg, opt)) {
            Batch all = new Batch(w.data(), w.cond(), w.label());
            Batch mine = single ? all : dp.shard(all);
            double gC = 0.5;
            int warm = Math.max(3, steps / 5);
            for (int s = 0; s < warm; s++) {
                Text2Data.runStep(opt, gC, w.model(), mine.cond(), mine.data(), mine.label(), Loss.MSE).close();
            }
            if (pg != null) {
                pg.barrier();
            }
            long t0 = System.nanoTime();
            for (int s = 0; s < steps; s++) {
                Text2Data.runStep(opt, gC, w.model(), mine.cond(), mine.data(), mine.label(), Loss.MSE).close();
            }
            if (pg != null) {
                pg.barrier();
            }
            double perStep = (System.nanoTime() - t0) / 1e9 / steps;
            String comm = "";
            if (pg != null) { // the two all-reduces alone, on buffers of the step's size
                long elems = dp.bytesPerStep() / 2 / 4;
                try (PointerScope scope = new PointerScope()) {
                    Tensor buf = torch.ones(elems);
                    for (int s = 0; s < warm; s++) {
                        pg.allReduceSum(buf);
                    }
                    long t1 = System.nanoTime();
                    for (int s = 0; s < steps; s++) {
                        pg.allReduceSum(buf);
                        pg.allReduceSum(buf);
                    }
                    comm = String.format(Locale.ROOT, ", all-reduce %.3f ms/step (%d bytes/step)",
                            (System.nanoTime() - t1) / 1e6 / steps, dp.bytesPerStep());
                }
            }
            if (rank == 0) {
                System.out.printf(Locale.ROOT, "%s: %d process%s, %d parameters, batch %d (%d per process), "
                                + "engine %s: %.2f ms/step, %.1f steps/s%s%n", name, world, world == 1 ? "" : "es",
                        w.parameterCount(), all.size(), mine.size(), opt.engineName(), perStep * 1e3, 1 / perStep,
                        comm);
            }
        }
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }
}
