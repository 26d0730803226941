package org.text2data;

import org.text2data.diffusion.Denoiser;
import static org.assertj.core.api.Assertions.assertThat;

import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Soak test, outside the default suite ({@code mvn -Psoak verify}, see README): a forked JVM, with
 * JavaCPP's GC-based deallocation off, runs 100,000 steps ({@code -Dtext2data.soak.steps=N} changes it)
 * and samples, 20 times, the bytes glibc's malloc has handed out (libtorch's CPU memory; see
 * {@link NativeMemoryTest}) and the Java heap in use after a full collection. Both must settle: the
 * median growth from one sample to the next stays under 64 bytes a step for native memory and 8 bytes
 * a step for the heap (a leak of one small tensor or one wrapper object a step would exceed them), and
 * the last sample is within 32 MB (native) and 8 MB (heap) of the fifth.
 */
// -Dtext2data.soak.engine=FUSED runs one engine; text2data.* properties are passed to the forked JVM.
@Tag("soak")
class SoakTest {
    static final int SAMPLES = 20;

    /** Run in the forked JVM: {@code args[0]} the engine, {@code args[1]} the number of steps. */
    public static void main(String[] args) throws Throwable {
        LibTorch.ensureLoaded();
        torch.manual_seed(1);
        int steps = Integer.parseInt(args[1]);
        int every = steps / SAMPLES;
        Denoiser model = new Denoiser(16, 8, 64, 3);
        Tensor data = torch.randn(64, 16);
        Tensor cond = torch.randn(64, 8);
        Tensor label = torch.randn(64, 16);
        long start = System.nanoTime();
        try (Constraint opt = new Constraint(model.namedParameters(), OptimizerSpec.adam(1e-3), 1, 1,
                Engine.valueOf(args[0]))) {
            for (int s = 1; s <= steps; s++) {
                try (StepResult r = Text2Data.runStep(opt, 0.5, model, cond, data, label, Loss.MSE)) {
                    if (s % every == 0) {
                        double loss = r.condLoss();
                        if (!Double.isFinite(loss)) {
                            throw new AssertionError("loss is not finite at step " + s);
                        }
                        System.gc();
                        long heap = ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed();
                        System.out.println("sample " + s + " " + NativeMemoryTest.mallocInUse() + " " + heap + " "
                                + (System.nanoTime() - start) / 1_000_000 + "ms " + opt.engineName());
                    }
                }
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = Engine.class, names = {"PLAIN", "FUSED"})
    void nativeMemoryAndHeapSettleOverAHundredThousandSteps(Engine engine) throws Exception {
        String only = System.getProperty("text2data.soak.engine"); // e.g. FUSED: that engine alone
        Assumptions.assumeTrue(only == null || only.isBlank() || only.equalsIgnoreCase(engine.name()));
        int steps = Integer.getInteger("text2data.soak.steps", 100_000);
        List<String> jvmArgs = new ArrayList<>(List.of("-Xmx512m", "-Dorg.bytedeco.javacpp.nopointergc=true"));
        // the library's own settings (text2data.torchThreads, text2data.blasThreads) reach the forked JVM
        System.getProperties().stringPropertyNames().stream().filter(k -> k.startsWith("text2data."))
                .forEach(k -> jvmArgs.add("-D" + k + "=" + System.getProperty(k)));
        String output = ForkedJvm.runOk(new ProcessBuilder(ForkedJvm.command(SoakTest.class, jvmArgs, engine.name(),
                Integer.toString(steps))), 6, TimeUnit.HOURS);
        List<long[]> samples = new ArrayList<>();
        output.lines().filter(l -> l.startsWith("sample ")).forEach(l -> {
            System.out.println(engine + " " + l);
            String[] f = l.split(" ");
            samples.add(new long[] {Long.parseLong(f[1]), Long.parseLong(f[2]), Long.parseLong(f[3])});
        });
        assertThat(samples).hasSize(SAMPLES);
        long every = steps / SAMPLES;
        long nativeGrowth = medianGrowth(samples, 1);
        long heapGrowth = medianGrowth(samples, 2);
        System.out.printf("%s: %d steps, median growth per %d steps: native %d bytes, heap %d bytes%n",
                engine, steps, every, nativeGrowth, heapGrowth);
        assertThat(nativeGrowth).as("median native growth per %d steps", every).isLessThan(64 * every);
        assertThat(heapGrowth).as("median heap growth per %d steps", every).isLessThan(8 * every);
        long[] early = samples.get(4);
        long[] last = samples.get(SAMPLES - 1);
        assertThat(last[1] - early[1]).as("native growth from sample 5 to the last").isLessThan(32L << 20);
        assertThat(last[2] - early[2]).as("heap growth from sample 5 to the last").isLessThan(8L << 20);
    }

    private static long medianGrowth(List<long[]> samples, int column) {
        long[] growth = new long[samples.size() - 1];
        for (int i = 1; i < samples.size(); i++) {
            growth[i - 1] = samples.get(i)[column] - samples.get(i - 1)[column];
        }
        Arrays.sort(growth);
        return growth[growth.length / 2];
    }
}
