package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.lang.ref.WeakReference;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Nothing in the library keeps a view into a container the caller hands over and may let go: forked JVMs
 * with a 1 MB young generation and explicit garbage collections. {@code TensorVector.get(i)} (and a
 * {@code StringTensorDict}'s items) are views into the container's memory; a {@link Constraint} that kept
 * them would read freed memory once the garbage collector frees the container, and the JVM would die
 * (SIGSEGV in {@code TensorBase_is_cpu}, as a user's first try did). The forked JVM waits until the
 * container has been collected, fills the freed memory with zeros (small allocations of the same sizes
 * get the freed blocks back), then trains: a kept view would dereference a null {@code TensorImpl}.
 */
class NoViewsKeptTest {

    /** A user's bytedeco module: two linear layers, the condition added to the input, and a frozen scale. */
    static final class Net extends Module {
        final LinearImpl a;
        final LinearImpl b;
        final Tensor frozen;

        Net() {
            a = register_module("a", new LinearImpl(4, 16));
            b = register_module("b", new LinearImpl(16, 4));
            frozen = new Tensor(register_parameter("frozen", torch.ones(4), false));
        }

        Tensor forward(Tensor x, Tensor cond) {
            Tensor in = cond == null ? x : x.add(cond);
            return b.forward(torch.relu(a.forward(in))).mul(frozen);
        }
    }

    /** Run in the forked JVM: {@code args[0]} is how the parameters are handed over. */
    public static void main(String[] args) throws Exception {
        LibTorch.ensureLoaded();
        torch.manual_seed(3);
        Net net = new Net();
        Tensor data = torch.randn(32, 4);
        Tensor cond = torch.randn(32, 4);
        Tensor label = torch.randn(32, 4);
        Tensor before = net.a.weight().detach().clone();

        Constraint opt;
        WeakReference<Object> container;
        if (args[0].equals("views")) {
            // the obvious way with a TensorVector: views into it, and the vector left to the GC
            TensorVector v = net.parameters();
            List<Tensor> views = new ArrayList<>();
            for (long i = 0; i < v.size(); i++) {
                if (v.get(i).requires_grad()) {
                    views.add(v.get(i));
                }
            }
            container = new WeakReference<>(v);
            opt = new Constraint(views, OptimizerSpec.adam(1e-2));
        } else if (args[0].equals("vector")) {
            TensorVector v = net.parameters();
            container = new WeakReference<>(v);
            opt = new Constraint(v, OptimizerSpec.adam(1e-2));
        } else {
            Object dict = net.named_parameters();
            container = new WeakReference<>(dict);
            opt = new Constraint(net, OptimizerSpec.adam(1e-2));
        }
        for (int i = 0; i < 200 && container.get() != null; i++) {
            System.gc();
            Thread.sleep(10);
        }
        System.out.println("container collected: " + (container.get() == null));
        Thread.sleep(300); // JavaCPP's deallocator thread frees it after the collection
        List<BytePointer> scribble = new ArrayList<>();
        for (int size = 8; size <= 256; size += 8) {
            for (int k = 0; k < 200; k++) {
                scribble.add(new BytePointer(size).fill(0)); // takes the freed blocks back, zeroed
            }
        }
        double first = 0;
        double last = 0;
        for (int step = 0; step < 100; step++) {
            try (StepResult r = Text2Data.runStep(opt, 10.0, net::forward, cond, data, label, Loss.MSE)) {
                last = r.condLoss();
                first = step == 0 ? last : first;
            }
            if (step % 10 == 0) {
                System.gc();
            }
        }
        boolean moved = !torch.equal(net.a.weight().detach(), before);
        System.out.println("params " + opt.parameterNames() + " moved " + moved
                + " improved " + (last < first) + " scribbled " + scribble.size());
        opt.close();
    }

    static String fork(Path tmp, String mode) throws Exception {
        String output = ForkedJvm.runOk(ForkedJvm.command(NoViewsKeptTest.class,
                List.of("-XX:+UseSerialGC", "-Xmn1m", "-Xmx64m", "-XX:ErrorFile=" + tmp.resolve("hs_err_%p.log")), mode));
        assertThat(output).contains("container collected: true");
        return output;
    }

    @Test
    void viewsOfACollectedTensorVectorAreNotKept(@TempDir Path tmp) throws Exception {
        assertThat(fork(tmp, "views")).contains("params [#0, #1, #2, #3] moved true improved true");
    }

    @ParameterizedTest
    @ValueSource(strings = {"vector", "module"})
    void aModuleOrItsTensorVectorGivesTheParametersThatRequireGrad(String mode, @TempDir Path tmp) throws Exception {
        assertThat(fork(tmp, mode)).contains(mode.equals("module")
                ? "params [a.weight, a.bias, b.weight, b.bias] moved true improved true"
                : "params [#1, #2, #3, #4] moved true improved true"); // #0 is the frozen one
    }
}
