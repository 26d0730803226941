package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.bytedeco.javacpp.Pointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/** A long run does not grow native memory: every step frees what it made, without help from the GC. */
class NativeMemoryTest {

    /** Resident memory minus what the JVM has committed for its heap and its own areas: native memory. */
    private static long nativeKiB() throws IOException {
        long rss = -1;
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                rss = Long.parseLong(line.replaceAll("\\D+", ""));
            }
        }
        var mem = java.lang.management.ManagementFactory.getMemoryMXBean();
        long jvm = mem.getHeapMemoryUsage().getCommitted() + mem.getNonHeapMemoryUsage().getCommitted();
        return rss - jvm / 1024;
    }

    @Test
    void nativeMemorySettlesOverThousandsOfSteps() throws Exception {
        torch.manual_seed(1);
        Denoiser model = new Denoiser(16, 8, 64, 3);
        Tensor data = torch.randn(64, 16);
        Tensor cond = torch.randn(64, 8);
        Tensor label = torch.randn(64, 16);
        try (Constraint opt = new Constraint(model.namedParameters(), OptimizerSpec.adam(1e-3), 1, 1, Engine.AUTO)) {
            long[] rss = new long[4];
            long[] tracked = new long[4];
            for (int phase = 0; phase < 4; phase++) {
                for (int s = 0; s < 1000; s++) {
                    try (StepResult r = Text2Data.runStep(opt, 0.5, model, cond, data, label, Loss.MSE)) {
                        if (s == 999) {
                            assertThat(r.condLoss()).isFinite();
                        }
                    }
                }
                rss[phase] = nativeKiB();
                tracked[phase] = Pointer.totalBytes();
                System.out.println("native memory after " + (phase + 1) * 1000 + " steps: " + rss[phase] + " KiB");
            }
            // phase 0 warms allocators up; after it, 3000 more steps may not add more than 16 MiB
            assertThat(rss[3] - rss[0]).as("native KiB (RSS less JVM committed) after each 1000 steps: %s", java.util.Arrays.toString(rss))
                    .isLessThan(16 * 1024);
            assertThat(tracked[3]).as("JavaCPP tracked bytes: %s", java.util.Arrays.toString(tracked))
                    .isLessThanOrEqualTo(tracked[0] + 64 * 1024);
        }
    }
}
