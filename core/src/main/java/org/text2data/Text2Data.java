package org.text2data;

import java.util.Arrays;
import java.util.List;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;

/** Text2Data's constrained finetuning step. */
public final class Text2Data {
    private Text2Data() {
    }

    /**
     * One constrained finetuning step on a labelled batch, as the reference's {@code run_step}:
     * <ol>
     *   <li>zero all gradients;</li>
     *   <li>{@code g = loss(model(data, null), label)}; backward; the constraint keeps these gradients;</li>
     *   <li>{@code f = loss(model(data, cond), label)}; backward;</li>
     *   <li>per tensor, add just enough of the kept gradient that the unconditional loss is not given
     *       up beyond {@code gConstraint} (see {@link Constraint#secondStep});</li>
     *   <li>the base optimizer steps.</li>
     * </ol>
     * Inputs are checked first (shapes, batch sizes, dtypes, devices); a bad input, or a NaN or infinite
     * loss or gradient, throws before any parameter or optimizer state changes.
     *
     * <p>The fused engine does not zero the gradients in steps 1 and 2: it releases them (PyTorch 2's
     * {@code zero_grad(set_to_none=True)}) so that each backward pass hands over its gradient buffers instead of
     * adding them into zeroed ones, and keeps the unconditional ones by handle, without a copy. The values are those
     * of zeroing, which the reference relies on: a gradient that existed stays defined (a parameter no pass of this
     * step reaches keeps a zero gradient, which is projected and stepped). Afterwards each parameter's gradient is
     * its projected conditional gradient, as with zeroing. With a {@link GradientSync} the gradients are zeroed.
     *
     * <p>With {@link Constraint#setConcurrentPasses concurrent passes} steps 2 and 3 run at the same time, on a worker
     * thread and the caller's; their gradients are held apart and handed to the step in this order, with the same
     * values. If both passes fail, the unconditional pass's failure is thrown.
     *
     * @param optimizer   the constraint optimizer over the model's parameters
     * @param gConstraint the barrier's target for the unconditional loss (finite, &gt;= 0), as in
     *                    {@link Constraint#secondStep}
     * @param model       the model; its passes must reach {@code optimizer}'s parameters
     * @param cond        the condition of the labelled batch ({@code [batch, ...]}); never null here
     * @param data        the model inputs ({@code [batch, ...]}, floating point)
     * @param label       the targets ({@code [batch, ...]})
     * @param loss        the loss of (prediction, label); must return a one-element tensor
     * @return the losses (as tensors: reading them is the caller's choice) and how many tensors were projected
     * @throws IllegalArgumentException if an argument is null or invalid, the inputs disagree in batch size,
     *                                  device or dtype, a loss is not a one-element tensor, or the model's passes
     *                                  reach none of {@code optimizer}'s parameters
     * @throws NonFiniteException       if a loss or gradient is NaN or infinite, or the base step makes a float16
     *                                  parameter so (with finiteness checks on)
     * @throws java.util.ConcurrentModificationException if another thread is inside a call on {@code optimizer}
     * @throws IllegalStateException    if {@code optimizer} is closed
     */
    public static StepResult runStep(Constraint optimizer, double gConstraint, ConditionalModel model,
                                     Tensor cond, Tensor data, Tensor label, Loss loss) {
        if (optimizer == null) {
            throw new IllegalArgumentException("optimizer is null");
        }
        optimizer.enter(); // one step at a time: another thread inside this Constraint is refused here
        Throwable failure = null;
        ConcurrentPasses.Pass[] both = null; // with concurrent passes: their gradients, until handed over
        try {
            Constraint.checkGConstraint(gConstraint);
            if (model == null || loss == null) {
                throw new IllegalArgumentException(model == null ? "model is null" : "loss is null");
            }
            checkBatch(optimizer.parameters().get(0), cond, data, label);
            // the fused optimizer on a GPU checks on the device and skips a non-finite step there: no host read
            boolean check = optimizer.checkFinite() && !optimizer.checksOnDevice();
            GradientSync sync = optimizer.gradientSync(); // null: one process
            // Once per model: do its passes reach the parameters this Constraint steps? (Another model's
            // would train nothing here, silently, while its own gradients accumulated.)
            boolean verify = !optimizer.verified(model);
            ConcurrentPasses concurrent = optimizer.passes(); // null: the passes run in turn
            try (PointerScope scope = new PointerScope()) {
                optimizer.beginStep(); // the gradients zeroed, or released where the engine can (same values)
                // Both passes at once (each holds its gradients apart until the step takes them), or in turn; in turn
                // too where no parameter can take a gradient (the error is then the one a backward pass gives)
                Constraint.PassInputs inputs = concurrent == null ? null : optimizer.passInputs();
                both = inputs == null ? null : concurrent.run(model, data, cond, label, loss, inputs.inputs(),
                        check && sync == null);
                long[] stamps = verify && both == null ? optimizer.gradStamps() : null;
                boolean reached;
                Tensor gValue;
                if (both != null) {
                    reached = verify && (both[0].reachedAny() || both[1].reachedAny());
                    optimizer.installGradients(both[0].grads(), inputs.index());
                    both[0].closeGrads(); // handed over: the vector's own memory goes now, not after the update
                    gValue = both[0].loss();
                } else {
                    Tensor g = passLoss(model, data, null, label, loss, check && sync == null);
                    g.backward();
                    reached = verify && !Arrays.equals(stamps, optimizer.gradStamps());
                    gValue = g.detach();
                }
                if (sync != null) { // averaged over all processes, then checked: every process fails alike
                    gValue = sync.reduce(gValue, data.size(0), optimizer.parameters());
                    if (check) {
                        requireFinite("unconditional", gValue);
                    }
                }
                optimizer.firstStep(true);
                Tensor fValue;
                if (both != null) {
                    optimizer.installGradients(both[1].grads(), inputs.index());
                    both[1].closeGrads();
                    fValue = both[1].loss();
                } else {
                    if (verify && !reached) {
                        stamps = optimizer.gradStamps();
                    }
                    Tensor f = passLoss(model, data, cond, label, loss, check && sync == null);
                    f.backward();
                    reached = reached || (verify && !Arrays.equals(stamps, optimizer.gradStamps()));
                    fValue = f.detach();
                }
                if (verify) {
                    if (!reached) {
                        List<String> names = optimizer.parameterNames();
                        throw new IllegalArgumentException("no parameter of this Constraint received a gradient from "
                                + "the model's unconditional or conditional pass: the model's parameters are not the ones "
                                + "this Constraint optimizes (its " + names.size() + " parameters begin with '" + names.get(0)
                                + "'); build the Constraint from this model's parameters. Nothing was updated.");
                    }
                    optimizer.setVerified(model);
                }
                if (sync != null) {
                    fValue = sync.reduce(fValue, data.size(0), optimizer.parameters());
                    if (check) {
                        requireFinite("conditional", fValue);
                    }
                }
                int projected = optimizer.constrainedStep(gValue, gConstraint);
                gValue.retainReference(); // both outlive the scope: the caller owns them
                fValue.retainReference();
                return new StepResult(gValue, fValue, projected, optimizer.checksOnDevice() ? optimizer : null);
            }
        } catch (Throwable e) { // a checked exception a model throws undeclared too
            failure = e;
            throw e;
        } finally {
            if (both != null) {
                both[0].closeGrads();
                both[1].closeGrads();
            }
            endStep(optimizer, failure);
        }
    }

    /**
     * Ends a step however it ended, and always leaves the constraint: a failure of {@code endStep} itself (it may
     * allocate zero gradients) is attached to the step's own failure, which stays the one reported.
     */
    private static void endStep(Constraint optimizer, Throwable failure) {
        try {
            optimizer.endStep();
        } catch (RuntimeException | Error e) {
            if (failure == null) {
                throw e;
            }
            failure.addSuppressed(e);
        } finally {
            optimizer.exit();
        }
    }

    private static Tensor forward(ConditionalModel model, Tensor data, Tensor cond) {
        Tensor out = model.forward(data, cond);
        if (out == null || !out.defined()) {
            throw new IllegalArgumentException("the model returned no tensor for the "
                    + (cond == null ? "unconditional" : "conditional") + " pass");
        }
        return out;
    }

    /**
     * A pass's loss: {@code loss(model(data, cond), label)} (cond null: the unconditional pass), a one-element tensor,
     * and, with {@code check}, finite (one host read).
     */
    static Tensor passLoss(ConditionalModel model, Tensor data, Tensor cond, Tensor label, Loss loss, boolean check) {
        String which = cond == null ? "unconditional" : "conditional";
        Tensor l = scalarLoss(which, loss.apply(forward(model, data, cond), label));
        if (check) {
            requireFinite(which, l);
        }
        return l;
    }

    private static Tensor scalarLoss(String which, Tensor l) {
        if (l == null || !l.defined() || l.numel() != 1) {
            throw new IllegalArgumentException("the " + which + " loss must be a one-element tensor, got "
                    + (l == null || !l.defined() ? "nothing" : Tensors.describe(l)));
        }
        return l;
    }

    static void requireFinite(String which, Tensor l) {
        double v = l.item_double();
        if (!Double.isFinite(v)) {
            throw new NonFiniteException("the " + which + " loss is " + v + "; nothing was updated");
        }
    }

    /** Batch sizes, dtypes and devices agree with each other and with the parameters. */
    static void checkBatch(Tensor param, Tensor cond, Tensor data, Tensor label) {
        require(data, "data");
        require(label, "label");
        require(cond, "cond");
        long n = data.size(0);
        if (label.size(0) != n) {
            throw new IllegalArgumentException("label batch size " + label.size(0) + " does not match data batch size "
                    + n + " (label " + Arrays.toString(label.shape()) + ", data " + Arrays.toString(data.shape()) + ")");
        }
        if (cond.size(0) != n) {
            throw new IllegalArgumentException("cond batch size " + cond.size(0) + " does not match data batch size "
                    + n + " (cond " + Arrays.toString(cond.shape()) + ", data " + Arrays.toString(data.shape()) + ")");
        }
        requireLike(param, data, "data");
        requireLike(param, cond, "cond");
        requireLike(param, label, "label");
        if (!data.is_floating_point()) {
            throw new IllegalArgumentException("data must be floating point, got " + Tensors.describe(data));
        }
    }

    /**
     * Same device as the parameters, and, when floating point, the same dtype. Runs every step, so it
     * compares flags and codes and builds strings only for the message.
     */
    private static void requireLike(Tensor param, Tensor x, String name) {
        boolean sameDevice = x.is_cpu() == param.is_cpu() && x.is_cuda() == param.is_cuda()
                && x.is_meta() == param.is_meta() && (!x.is_cuda() || Tensors.device(x).equals(Tensors.device(param)));
        if (!sameDevice) {
            throw new IllegalArgumentException(name + " is on " + Tensors.device(x)
                    + " but the model's parameters are on " + Tensors.device(param));
        }
        if (x.is_floating_point() && x.scalar_type().value != param.scalar_type().value) {
            throw new IllegalArgumentException(name + " is " + Tensors.dtype(x)
                    + " but the model's parameters are " + Tensors.dtype(param) + " (convert one to the other)");
        }
    }

    private static void require(Tensor t, String name) {
        if (t == null || !t.defined()) {
            throw new IllegalArgumentException(name + " is null" + (name.equals("cond")
                    ? ": runStep needs the labelled batch's condition (the unconditional pass is taken for you)" : ""));
        }
        if (t.dim() < 1) {
            throw new IllegalArgumentException(name + " must have a batch dimension, got a 0-dim tensor");
        }
    }
}
