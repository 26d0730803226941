package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.bytedeco.pytorch.global.torch_cuda;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * runStep on a GPU with the fused optimizer makes no host synchronisation (skipped without a GPU;
 * bench/gpu/java-check.sh runs it): with about a second of matrix products queued on the device before it, the
 * call returns long before that work ends. A step that waited for the device anywhere (an {@code item()}, a
 * host copy, a finiteness check read on the host) would return only after it.
 */
class HostSyncCudaTest {

    @BeforeAll
    static void needsAGpu() {
        assumeTrue(LibTorch.cudaAvailable(), "no CUDA device: host synchronisations are checked on a GPU only");
    }

    private static final Device CUDA = new Device("cuda:0");

    private static Tensor onGpu(long seed, long... shape) {
        torch.manual_seed(seed);
        Tensor t = torch.randn(shape, new TensorOptions(ScalarType.Float)).to(CUDA, ScalarType.Float)
                .mul(new Scalar(0.3)).detach();
        t.retainReference();
        return t;
    }

    /** Queues {@code n} products of a 4096x4096 matrix on the current stream and returns at once. */
    private static void busy(Tensor m, int n) {
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < n; i++) {
                m.matmul(m);
            }
        }
    }

    @Test
    void runStepReturnsWhileEarlierDeviceWorkStillRuns() {
        Map<String, Tensor> params = new LinkedHashMap<>();
        params.put("W1", onGpu(1, 64, 256));
        params.put("nullEmb", onGpu(2, 256));
        params.put("condW", onGpu(3, 16, 256));
        params.put("W2", onGpu(4, 256, 64));
        params.values().forEach(p -> p.requires_grad_(true));
        ConditionalModel model = (data, cond) -> {
            Tensor h = data.matmul(params.get("W1"));
            h = cond == null ? h.add(params.get("nullEmb")) : h.add(cond.matmul(params.get("condW")));
            return h.tanh().matmul(params.get("W2"));
        };
        Tensor data = onGpu(5, 128, 64);
        Tensor cond = onGpu(6, 128, 16);
        Tensor label = onGpu(7, 128, 64);
        Tensor m = onGpu(8, 4096, 4096);
        try (Constraint c = new Constraint(params, OptimizerSpec.adam(1e-3), 1.0, 1.0, Engine.FUSED)) {
            assertThat(c.isFused()).isTrue();
            assertThat(c.engineName()).isEqualTo("fused-cuda");
            for (int i = 0; i < 5; i++) { // state made, kernels loaded, allocator warm
                Text2Data.runStep(c, 0.05, model, cond, data, label, Loss.MSE).close();
            }
            c.checkSkippedSteps();
            // about a second of device work, measured with the host waiting for it
            int n = 4;
            long busyNs;
            while (true) {
                torch_cuda.device_synchronize();
                long t0 = System.nanoTime();
                busy(m, n);
                torch_cuda.device_synchronize();
                busyNs = System.nanoTime() - t0;
                if (busyNs >= 800_000_000L || n >= 1 << 14) {
                    break;
                }
                n *= 2;
            }
            assertThat(busyNs).as("%d products of 4096x4096 take long enough to see a wait", n)
                    .isGreaterThanOrEqualTo(400_000_000L);

            torch_cuda.device_synchronize();
            long t0 = System.nanoTime();
            busy(m, n);
            long queued = System.nanoTime();
            Text2Data.runStep(c, 0.05, model, cond, data, label, Loss.MSE).close();
            long returned = System.nanoTime();
            torch_cuda.device_synchronize();
            long done = System.nanoTime();
            System.out.printf("HostSyncCudaTest: %d products take %.0f ms; queued in %.1f ms, runStep returned "
                    + "after %.1f ms, the device finished after %.0f ms%n", n, busyNs / 1e6, (queued - t0) / 1e6,
                    (returned - queued) / 1e6, (done - t0) / 1e6);
            assertThat(done - t0).as("the queued work ran while the host went on").isGreaterThanOrEqualTo(busyNs / 2);
            assertThat(returned - t0).as("runStep returned before the device work queued before it ended "
                    + "(it waited for the device: a host synchronisation)").isLessThan((done - t0) / 2);
            c.checkSkippedSteps();
        } finally {
            params.values().forEach(Tensor::releaseReference);
            for (Tensor t : new Tensor[] {data, cond, label, m}) {
                t.releaseReference();
            }
        }
    }
}
