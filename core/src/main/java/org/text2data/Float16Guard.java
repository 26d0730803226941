package org.text2data;


import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InputArchive;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

/**
 * Refuses a base-optimizer step that would make a float16 parameter NaN or infinite, before the step
 * touches anything. libtorch's optimizers compute in the parameter's dtype, and in float16 their own
 * arithmetic overflows where the gradients are finite (Adam's {@code eps = 1e-8} rounds to 0, so a
 * moment over a squared gradient that underflowed to 0 divides by 0; an update beyond 65504 is
 * infinite). libtorch gives no access to an optimizer's state but its serialization, and loading an
 * archive into an optimizer overwrites the state it holds but never removes state that a step created,
 * so a step cannot be undone: it is rehearsed instead.
 *
 * <p>{@link #check} runs the step on a shadow: a throwaway optimizer of the same spec over copies of
 * the float16 parameters that have a gradient (with copies of their gradients), loaded with the live
 * optimizer's state and options (learning rates included: libtorch 2.10's {@code load} replaces each
 * group's options; {@code Float16GuardTest} changes the rate between steps) through an archive. libtorch
 * maps an archive's state to the parameters by their position in the param groups, as checkpoint
 * resumption relies on. The other parameters are given to the shadow as gradient-less views, which
 * libtorch's optimizers skip. If a copy comes out NaN or infinite, the step is refused; otherwise the
 * caller steps the live optimizer,
 * whose update is the shadow's, bit for bit (the same deterministic kernels on the same inputs).
 * The live parameters, gradients and optimizer are only read.
 */
final class Float16Guard {
    private static final int HALF = torch.ScalarType.Half.value;

    private final Tensor[] params;
    private final String[] names;
    /** Which parameters are float16 (read once: a step costs no dtype queries), and whether any is. */
    private final boolean[] half;
    private final boolean any;

    /** A guard over the constraint's own parameter handles and names (both kept, not copied). */
    Float16Guard(Tensor[] params, String[] names) {
        this.params = params;
        this.names = names;
        this.half = new boolean[params.length];
        boolean found = false;
        for (int i = 0; i < params.length; i++) {
            half[i] = params[i].scalar_type().value == HALF;
            found |= half[i];
        }
        this.any = found;
    }

    /**
     * Refuses the step that {@code live} would take now if it would make a float16 parameter NaN or
     * infinite. Free where no parameter is float16. Where one is, it costs a round trip of the live
     * optimizer's whole state through libtorch's serialization (in native memory, written and read back),
     * a copy of each float16 parameter that has a gradient and of its gradient, the shadow's own state
     * and one step of it over the float16 parameters, and one host read; all of it freed before returning.
     *
     * @param live the base optimizer, read and not changed
     * @param spec the spec {@code live} was built from
     * @param step the number the step would have, for the message
     * @throws NonFiniteException if the step would make a float16 parameter NaN or infinite
     * @throws IllegalStateException if libtorch refuses the step itself (a learning rate beyond float16's range,
     *                               say); nothing was updated
     */
    void check(Optimizer live, OptimizerSpec spec, long step) {
        if (!any) {
            return;
        }
        try (PointerScope scope = new PointerScope()) {
            Tensor[] copies;
            try {
                // independent tensors: the shadow's step cannot reach the live state
                copies = rehearse(Checkpoint.savedArchive(live), spec);
            } catch (RuntimeException e) { // libtorch's error: the live step would have met it too
                throw new IllegalStateException("step " + step + ": the base optimizer (" + spec.type()
                        + ") could not take this float16 step: " + ErrorMessages.of(e)
                        + "; the step was refused, nothing was updated", e);
            }
            int bad = firstNonFinite(copies);
            if (bad >= 0) {
                throw new NonFiniteException("step " + step + ": the base optimizer (" + spec.type()
                        + ") would make float16 parameter '" + names[bad] + "' NaN or infinite (its update overflows "
                        + "in float16; train in float32, or lower the learning rate or raise eps); the step was "
                        + "refused, nothing was updated");
            }
        }
    }

    /**
     * The shadow's step, in the caller's pointer scope: returns the stepped copies of the float16 parameters
     * (null where a parameter is not float16 or has no gradient).
     */
    private Tensor[] rehearse(InputArchive state, OptimizerSpec spec) {
        TensorVector shadowParams = new TensorVector();
        Tensor[] copies = new Tensor[params.length];
        for (int i = 0; i < params.length; i++) {
            Tensor g = params[i].grad();
            if (half[i] && g.defined()) {
                copies[i] = params[i].detach().clone();
                copies[i].mutable_grad().put(g.detach().clone());
                shadowParams.push_back(copies[i]);
            } else {
                shadowParams.push_back(params[i].detach()); // no gradient: the shadow's step skips it
            }
        }
        Optimizer shadow = spec.create(shadowParams); // freed with the caller's scope
        shadow.load(state); // the state and every group's options, learning rate included
        shadow.step();
        return copies;
    }

    /** The index of the first copy holding a NaN or an infinity, or -1 (one host read when all are finite). */
    private int firstNonFinite(Tensor[] copies) {
        TensorVector checks = new TensorVector();
        for (Tensor c : copies) {
            if (c != null) {
                checks.push_back(torch.isfinite(c).all());
            }
        }
        if (checks.empty() || torch.stack(checks).all().item_bool()) {
            return -1;
        }
        for (int i = 0; i < copies.length; i++) {
            if (copies[i] != null && !torch.isfinite(copies[i]).all().item_bool()) {
                return i;
            }
        }
        return -1;
    }
}
