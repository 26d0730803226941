package org.text2data.engine;

import java.util.LinkedHashMap;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Everything kept for one parameter between calls, as PyTorch keeps {@code optimizer.state[p]}: the fused
 * optimizer's state and the gradient buffers of the projection. The {@code Constraint} owns one record per
 * parameter, creates them once and passes them to its engine on every call; the engines
 * ({@link PlainEngine}, {@link FusedEngine}) are functions over them and keep nothing per parameter.
 * {@link #close()} releases every tensor the record holds. A record belongs to one parameter and one engine kind
 * at a time, and is not thread-safe.
 *
 * <p>The optimizer state ({@link FusedOptimizer}): the step count (a one-element int64 tensor on the parameter's
 * device, which the kernel increments) and the state buffers ({@code exp_avg}, {@code exp_avg_sq},
 * {@code max_exp_avg_sq}, or {@code momentum_buffer}), created at the parameter's first fused step as libtorch
 * creates them.
 *
 * <p>The gradient buffers: the kept unconditional gradient {@code c_p} with its cached address, dtype, size and
 * contiguity; the spare buffer (a released {@code c_p}, reused as the next zeroed gradient); the gradient buffer
 * the fused engine installed in the parameter; the reusable handle through which a released gradient is kept;
 * whether the parameter's gradient exists in PyTorch 1.13's terms; and the zero {@code c_p} kept for a parameter
 * whose gradient existed but that the first pass did not reach.
 */
public final class ParamState implements AutoCloseable {

    // ---------------------------------------------------------------- the fused optimizer's state

    /** The optimizer's state buffers in the kernel's order (null until created). */
    final Tensor[] buffers = new Tensor[3];
    /** The step count, a one-element int64 tensor on the parameter's device (null before the first step). */
    Tensor step;
    /** The data addresses of {@link #buffers} (0: none) and of {@link #step}, read once when each is made. */
    private final long[] bufferAddress = new long[3];
    private long stepAddress;
    /** Whether the optimizer state was created by the call in progress (dropped again if it is refused). */
    boolean fresh;
    /** The parameter's shape and libtext2data dtype code when its optimizer state was made (null: no state). */
    private long[] stateShape;
    private int stateDtype;

    // ---------------------------------------------------------------- the projection's gradient buffers

    /** The kept constraint gradient c_p (an owned handle), null while none is kept. */
    Tensor kept;
    /** Data address, libtext2data dtype code and element count of {@link #kept} (they do not move while kept). */
    long keptAddress;
    int keptDtype;
    long keptNumel;
    /** Whether {@link #kept} is contiguous. */
    boolean keptContiguous;
    /** The buffer of a released c_p, reused as the next zeroed gradient or copy target (owned handle), or null. */
    Tensor spare;
    /** Data address, dtype code (-1: never reused) and element count of {@link #spare}, known from when it was kept. */
    long spareAddress;
    int spareDtype;
    long spareNumel;
    /**
     * The gradient buffer the fused engine's first step installed in the parameter (our handle on it: while we hold
     * it, no other tensor can come to live at its address), or null: when the second step finds that very buffer
     * still in place, its dtype, size and device are known and need no asking.
     */
    Tensor installed;
    /** Data address (0: none), element count and dtype code of {@link #installed}. */
    long installedAddress;
    long installedNumel;
    int installedDtype;
    /** The reusable owning handle through which a released gradient is kept as c_p (no wrapper per step), or null. */
    Tensor handle;
    /** Under the release protocol: whether the gradient exists in 1.13's terms (it existed, or the first pass made it). */
    boolean hadGrad;
    /** The zero c_p kept for a parameter whose gradient existed but got nothing from the first pass (made once). */
    Tensor zeroKept;

    /** Creates an empty record: no step taken, no gradient kept. */
    public ParamState() {
    }

    // ---------------------------------------------------------------- the optimizer state

    /** Creates the step count and the buffers {@code o} needs, zero, like {@code param}, where missing. */
    void ensure(FusedOptimizer.Options o, Tensor param) {
        int n = o.stateCount();
        if (step == null) {
            step = FusedEngine.retainedZeros(param, new long[0], torch.ScalarType.Long);
            stepAddress = FusedEngine.dataAddress(step);
            fresh = true;
        }
        for (int k = 0; k < n; k++) {
            if (buffers[k] == null) {
                if (k == 0) { // what the buffers are made for (requireStateFits)
                    stateShape = param.shape();
                    stateDtype = FusedEngine.dtypeCode(param.scalar_type());
                }
                Tensor b = torch.zeros_like(param.detach());
                b.retainReference();
                buffers[k] = b;
                bufferAddress[k] = FusedEngine.dataAddress(b);
                fresh = true;
            }
        }
    }

    /**
     * Refuses a parameter whose element count or dtype is no longer those its optimizer state's buffers were made
     * for (a {@code set_} or a {@code .data} swap between steps): the kernel would step its new memory with buffers
     * of the old size. libtorch's optimizers refuse it too (their buffers do not fit either). Nothing is changed.
     *
     * @param name the parameter's name, for the message
     * @param numel its element count now
     * @param dtype its libtext2data dtype code now
     * @param param the parameter, for the message
     * @throws IllegalArgumentException if the state does not fit
     */
    void requireStateFits(String name, long numel, int dtype, Tensor param) {
        if (buffers[0] == null || (dtype == stateDtype && numel == numelOf(stateShape))) {
            return; // no buffer (SGD without momentum keeps only the step count): nothing to fit, as in libtorch
        }
        throw new IllegalArgumentException("parameter '" + name + "' is " + java.util.Arrays.toString(param.shape())
                + " " + param.scalar_type() + " now, but its optimizer state was made for "
                + java.util.Arrays.toString(stateShape) + " " + FusedEngine.dtypeName(stateDtype) + ": a parameter's "
                + "size and dtype must stay as they were while it is optimized (make a new Constraint after changing "
                + "the model); nothing was changed");
    }

    private static long numelOf(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    /** Drops what {@link #ensure} created for a call that was refused: the optimizer state is as before the call. */
    void discardFresh() {
        if (fresh) {
            clearOptimizerState();
            fresh = false;
        }
    }

    /**
     * The step count (reads the device when the state lives on a GPU).
     *
     * @return the steps this parameter has taken
     */
    public long steps() {
        if (step == null) {
            return 0;
        }
        try (PointerScope scope = new PointerScope()) {
            return step.item_long();
        }
    }

    /**
     * The optimizer state as PyTorch names it, or null where PyTorch has none (before the first step; SGD without
     * momentum): integer fields ({@code step} for Adam and AdamW) and tensors (the live buffers, not copies).
     *
     * @param o the optimizer's options
     * @param ints receives the integer fields
     * @return the tensors by name, or null for no state
     */
    public Map<String, Tensor> view(FusedOptimizer.Options o, Map<String, Long> ints) {
        long s = steps();
        String[] names = o.stateNames();
        if (s == 0 || (names.length == 0 && !o.savesStep())) {
            return null;
        }
        if (o.savesStep()) {
            ints.put("step", s);
        }
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (int k = 0; k < names.length; k++) {
            out.put(names[k], buffers[k]);
        }
        return out;
    }

    /**
     * Replaces the optimizer state by a saved one (see {@link #view}): the saved buffers are copied into this
     * state's buffers in place (made, like {@code param}, where there are none yet), so that their addresses stay
     * those a captured step uses; a null {@code tensors} means no state (the buffers are released). The gradient
     * buffers are left as they are.
     *
     * @param o the optimizer's options
     * @param steps the saved step count (for SGD, which saves none: 1 when a momentum buffer is given)
     * @param tensors the saved buffers by name, or null for none
     * @param param the parameter
     */
    public void load(FusedOptimizer.Options o, long steps, Map<String, Tensor> tensors, Tensor param) {
        if (tensors == null) {
            clearOptimizerState();
            return;
        }
        if (buffers[0] != null && (stateDtype != FusedEngine.dtypeCode(param.scalar_type())
                || numelOf(stateShape) != param.numel())) {
            clearOptimizerState(); // made for the parameter's former size: remade below, like the parameter
        }
        ensure(o, param);
        fresh = false;
        String[] names = o.stateNames();
        try (PointerScope scope = new PointerScope()) {
            for (int k = 0; k < names.length; k++) {
                buffers[k].copy_(tensors.get(names[k]));
            }
            step.fill_(new Scalar(steps));
        }
    }

    /** The data address of optimizer buffer k (0 if there is none): found when it was made (loads copy into it). */
    long address(int k) {
        return bufferAddress[k];
    }

    /** The step count's data address, for a row's {@code step} field. */
    long stepAddress() {
        return stepAddress;
    }

    /** Releases the optimizer state's tensors: no step taken afterwards. */
    private void clearOptimizerState() {
        for (int k = 0; k < buffers.length; k++) {
            buffers[k] = release(buffers[k]);
            bufferAddress[k] = 0;
        }
        step = release(step);
        stepAddress = 0;
        stateShape = null;
    }

    // ---------------------------------------------------------------- the gradient buffers

    /** Keeps {@code c} (an owned handle) as c_p, with what the kernels need to know about its memory. */
    void keep(Tensor c, long address, int dtype, long numel, boolean contiguous) {
        kept = c;
        keptAddress = address;
        keptDtype = dtype;
        keptNumel = numel;
        keptContiguous = contiguous;
    }

    /** Forgets the installed gradient buffer (the parameter keeps it; we drop our handle). */
    void forgetInstalled() {
        installed = release(installed);
        installedAddress = 0;
    }

    /**
     * Stops keeping c_p: a gradient kept by handle is let go (its memory goes back to libtorch), the zero c_p stays
     * for reuse, any other buffer becomes the spare one (reused by the next step).
     */
    void releaseKept() {
        if (kept == null) {
            return;
        }
        if (kept == handle) {
            handle.reset(); // drop the reference: the memory goes back to libtorch
        } else if (kept != zeroKept) {
            release(spare);
            spare = kept;
            spareAddress = keptContiguous ? keptAddress : 0;
            spareDtype = keptContiguous ? keptDtype : -1; // a non-contiguous buffer is never reused
            spareNumel = keptNumel;
        }
        kept = null;
    }

    /** Drops the spare buffer. */
    void releaseSpare() {
        spare = release(spare);
    }

    /** Whether a constraint gradient is kept (for tests). */
    boolean keeps() {
        return kept != null;
    }

    private static Tensor release(Tensor t) {
        if (t != null) {
            t.releaseReference();
        }
        return null;
    }

    /** Releases every tensor the record holds (optimizer state and gradient buffers); the record is empty afterwards. */
    @Override
    public void close() {
        clearOptimizerState();
        releaseKept();
        forgetInstalled();
        spare = release(spare);
        handle = release(handle);
        zeroKept = release(zeroKept);
        hadGrad = false;
    }
}
