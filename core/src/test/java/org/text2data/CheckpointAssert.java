package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** Bitwise comparisons of parameters and optimizer state, for the checkpoint tests. */
final class CheckpointAssert {
    private CheckpointAssert() {
    }

    /** Same parameters, optimizer state and loop position, bit for bit. */
    static void assertSameCheckpoint(Checkpoint a, Checkpoint b, String what) {
        assertThat(b.parameterNames()).as(what).isEqualTo(a.parameterNames());
        for (String n : a.parameterNames()) {
            assertBitwise(a.parameters().get(n), b.parameters().get(n), what + ": parameter " + n);
        }
        assertSameState(a.optimizerState(), b.optimizerState(), what);
        assertThat(b.loopState()).as(what + ": loop position").isEqualTo(a.loopState());
    }

    static void assertSameState(List<Checkpoint.ParamState> a, List<Checkpoint.ParamState> b, String what) {
        assertThat(b).as(what + ": optimizer state size").hasSameSizeAs(a);
        for (int i = 0; i < a.size(); i++) {
            Checkpoint.ParamState x = a.get(i);
            Checkpoint.ParamState y = b.get(i);
            assertThat(y == null).as(what + ": state of parameter #" + i + " present").isEqualTo(x == null);
            if (x == null) {
                continue;
            }
            assertThat(y.ints()).as(what + ": step counts of parameter #" + i).isEqualTo(x.ints());
            assertThat(y.tensors().keySet()).as(what + ": fields of parameter #" + i).isEqualTo(x.tensors().keySet());
            for (Map.Entry<String, Tensor> e : x.tensors().entrySet()) {
                assertBitwise(e.getValue(), y.tensors().get(e.getKey()), what + ": " + e.getKey() + " of parameter #" + i);
            }
        }
    }

    /** Same dtype, shape and bits (NaN-safe: compares the raw bytes). */
    static void assertBitwise(Tensor a, Tensor b, String what) {
        assertThat(Tensors.dtype(b)).as(what + " dtype").isEqualTo(Tensors.dtype(a));
        assertThat(b.shape()).as(what + " shape").isEqualTo(a.shape());
        assertThat(torch.equal(a.detach().cpu().contiguous().flatten().view(torch.ScalarType.Byte),
                b.detach().cpu().contiguous().flatten().view(torch.ScalarType.Byte))).as(what + " bits").isTrue();
    }

    /** Copies of the live parameters. */
    static List<Tensor> snapshot(Constraint opt) {
        List<Tensor> out = new ArrayList<>();
        for (Tensor p : opt.parameters()) {
            out.add(p.detach().clone());
        }
        return out;
    }

    static void assertParametersAre(Constraint opt, List<Tensor> expected, String what) {
        for (int i = 0; i < expected.size(); i++) {
            assertBitwise(expected.get(i), opt.parameters().get(i), what + ": parameter " + opt.parameterNames().get(i));
        }
    }

    /** The base optimizer's live state. */
    static Checkpoint.OptimizerState state(Constraint opt) {
        return opt.optimizerState();
    }
}
