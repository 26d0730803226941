package org.text2data.engine;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.reflect.Method;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.text2data.ffi.t2d_optimizer;
import org.text2data.ffi.t2d_param;
import org.text2data.ffi.t2d_step_scalars;
import org.text2data.ffi.t2d_step_status;
import org.text2data.ffi.t2d_tensor;
import org.text2data.ffi.text2data_h;

/**
 * The fused engine: the second step is one call of libtext2data over all parameter tensors, which reads
 * and writes libtorch's tensor memory in place (data pointers in a preallocated descriptor table; no
 * copies, no Java arrays of data).
 *
 * <p>{@link #firstStep} keeps the gradients without copying when it zeroes them: the parameter's current
 * gradient tensor becomes its constraint gradient {@code c_p}, and the parameter gets a zeroed buffer as
 * its new gradient (the previous step's {@code c_p} buffer when it fits), which the next backward
 * accumulates into. Without zeroing it copies. {@code Text2Data.runStep} goes further: it begins the step with
 * {@link #releaseGradients}, so that each backward pass hands its gradient buffers over, and
 * {@code firstStep(true)} then keeps them as {@code c_p} by handle and releases the gradients (no zeroed buffer
 * is installed); the values are those of zeroing.
 *
 * <p>The engine keeps nothing per parameter: the kept {@code c_p}, the spare and installed buffers and the
 * optimizer state live in the caller's {@link ParamState} records, one per parameter, passed to every call.
 *
 * <p>On CUDA the kernel reads {@code gValue} on the device (no host synchronisation) and runs on
 * libtorch's current stream of the parameters' device. An engine is not thread-safe.
 */
public final class FusedEngine implements ProjectionEngine {

    private static final long DESC_SIZE = t2d_tensor.sizeof();
    private static final long OFF_GRAD = t2d_tensor.grad$offset();
    private static final long OFF_CONSTRAINT = t2d_tensor.constraint$offset();
    private static final long OFF_NUMEL = t2d_tensor.numel$offset();
    private static final long OFF_CNUMEL = t2d_tensor.constraint_numel$offset();
    private static final long OFF_DTYPE = t2d_tensor.dtype$offset();
    private static final long OFF_CDTYPE = t2d_tensor.constraint_dtype$offset();
    private static final long OFF_DEVICE = t2d_tensor.device$offset();
    private static final long OFF_CDEVICE = t2d_tensor.constraint_device$offset();
    private static final long OFF_FLAGS = t2d_tensor.flags$offset();
    private static final long OFF_RESERVED = t2d_tensor.reserved$offset();
    private static final int BOTH_CONTIGUOUS = text2data_h.T2D_GRAD_CONTIGUOUS() | text2data_h.T2D_CONSTRAINT_CONTIGUOUS();
    private static final Pattern TENSOR_INDEX = Pattern.compile("^tensor (\\d+): ");

    private final Tensor[] params;
    private final String[] names;
    /** Which parameter each row of the last step's table described. */
    private final int[] slotParam;
    /** -1: host; k >= 0: CUDA device k. */
    private final int device;
    private final Arena arena;
    private final MemorySegment table;
    /** The fused optimizer step's rows ({@code t2d_param}) and options ({@code t2d_optimizer}). */
    private final MemorySegment paramTable;
    private final MemorySegment optimizerOptions;
    /** CUDA: the device's t2d_step_status (five int64), created at the first fused step; null on the host. */
    private Tensor stepStatus;
    /** CUDA: a zero loss on the device for steps that project nothing (no gValue), made once. */
    private Tensor zeroLoss;
    /** Between {@link #releaseGradients} and the step that uses the gradients: the release protocol is on. */
    private boolean releasing;
    /** Whether the last {@link #firstStep} kept constraint gradients that have not been released since. */
    private boolean hasKept;
    private boolean closed;
    /** While a step is captured: the plan its fused step is enqueued with, and the device scalars it reads. */
    private MemorySegment plan = MemorySegment.NULL;
    private long scalarsAddress;

    /**
     * Creates an engine for these parameters, which must all live on the host or all on one CUDA device.
     * They are named {@code #0}, {@code #1}, ... in error messages.
     *
     * @param params the parameter tensors (the array is copied)
     * @throws IllegalStateException if libtext2data cannot be loaded
     * @throws IllegalArgumentException if the parameters are on several devices or an unsupported one
     */
    public FusedEngine(Tensor[] params) {
        this(params, Engines.defaultNames(params.length));
    }

    /**
     * {@link #FusedEngine(Tensor[])} with the parameters' names, used in error messages.
     *
     * @param params the parameter tensors (the array is copied)
     * @param names the parameters' names, one per tensor
     * @throws IllegalStateException if libtext2data cannot be loaded
     * @throws IllegalArgumentException if the parameters are on several devices or an unsupported one
     */
    public FusedEngine(Tensor[] params, String[] names) {
        NativeLibrary.require();
        this.params = params.clone();
        this.names = names.clone();
        int n = params.length;
        this.slotParam = new int[n];
        this.device = commonDevice(this.params, this.names);
        this.arena = Arena.ofShared();
        this.table = arena.allocate(DESC_SIZE * Math.max(1, n), 16);
        this.paramTable = arena.allocate(t2d_param.sizeof() * Math.max(1, n), 16);
        this.optimizerOptions = t2d_optimizer.allocate(arena);
    }

    private static int commonDevice(Tensor[] params, String[] names) {
        int common = Integer.MIN_VALUE;
        for (int i = 0; i < params.length; i++) {
            int d;
            try (Device dev = params[i].device()) {
                if (dev.is_cpu()) {
                    d = -1;
                } else if (dev.is_cuda()) {
                    d = dev.has_index() ? dev.index() : 0;
                } else {
                    throw new IllegalArgumentException("parameter '" + names[i] + "' is on " + dev.str().getString()
                            + ", a device the fused engine does not support (use Engine.PLAIN)");
                }
            }
            if (common == Integer.MIN_VALUE) {
                common = d;
            } else if (common != d) {
                throw new IllegalArgumentException("parameters are on several devices (parameter '" + names[i] + "' is on "
                        + deviceName(d) + ", parameter '" + names[0] + "' on " + deviceName(common) + ")");
            }
        }
        return common == Integer.MIN_VALUE ? -1 : common;
    }

    private static String deviceName(int d) {
        return d < 0 ? "cpu" : "cuda:" + d;
    }

    @Override
    public String name() {
        return device < 0 ? "fused-cpu" : "fused-cuda";
    }

    /**
     * The device of the parameters: -1 for the host, k for CUDA device k.
     *
     * @return the device index, or -1 for the host
     */
    public int device() {
        return device;
    }

    /**
     * In the steady state this only moves handles: the gradient is the buffer installed by the last
     * call (backward accumulated into it), so it becomes {@code c_p} under the handle we already hold,
     * and the previous {@code c_p}, zeroed, is installed in its place. No tensor is allocated, no
     * wrapper created (a bytedeco {@code new Tensor(t)} costs microseconds), no libtorch op dispatched.
     * After {@link #releaseGradients}, {@code firstStep(true)} keeps each gradient by handle and releases it
     * instead (see there).
     */
    @Override
    public void firstStep(ParamState[] states, boolean zeroGrad) {
        ensureOpen(states);
        releaseKept(states);
        if (releasing && zeroGrad) {
            keepByHandle(states);
            return;
        }
        releasing = false;
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                ParamState st = states[i];
                Tensor g = params[i].grad();
                if (!g.defined()) {
                    st.forgetInstalled();
                    continue;
                }
                long address = dataAddress(g);
                long numel = g.numel();
                boolean ours = st.installed != null && address != 0 && address == st.installedAddress
                        && numel == st.installedNumel;
                int dtype = ours ? st.installedDtype : dtypeCode(g.scalar_type());
                boolean contiguous = ours || g.is_contiguous();
                if (!contiguous) {
                    // A strided gradient (a non-contiguous parameter's gradient has its strides): the kernel
                    // reads contiguous memory, so c_p is a contiguous copy, and the gradient is zeroed in place.
                    st.forgetInstalled();
                    Tensor c = g.detach().contiguous();
                    c.retainReference();
                    if (zeroGrad) {
                        g.zero_();
                    }
                    st.keep(c, dataAddress(c), dtype, numel, true);
                    continue;
                }
                Tensor s = st.spare;
                boolean reuse = s != null && st.spareDtype == dtype && st.spareNumel == numel && contiguous
                        && s.is_same_size(g);
                Tensor c;
                if (zeroGrad) {
                    if (ours) {
                        c = st.installed; // our handle on the gradient becomes c_p's
                        st.installed = null;
                    } else {
                        st.forgetInstalled();
                        c = new Tensor(g); // an owning handle on the same tensor: no copy
                        c.retainReference();
                    }
                    Tensor z;
                    long zAddress;
                    if (reuse) {
                        z = s;
                        zAddress = st.spareAddress;
                        st.spare = null;
                        zero(z, zAddress, numel, dtype);
                    } else {
                        z = torch.zeros_like(g);
                        z.retainReference();
                        zAddress = dataAddress(z);
                    }
                    params[i].mutable_grad().put(z); // the next backward accumulates into z
                    st.installed = z;
                    st.installedAddress = zAddress;
                    st.installedNumel = numel;
                    st.installedDtype = dtype;
                } else if (reuse) {
                    s.copy_(g);
                    c = s;
                    st.spare = null;
                    address = st.spareAddress;
                } else {
                    c = g.detach().clone();
                    c.retainReference();
                    address = dataAddress(c);
                    contiguous = c.is_contiguous();
                }
                st.keep(c, address, dtype, numel, contiguous);
            }
        }
        hasKept = true;
    }

    /**
     * Releases every gradient (see {@link ProjectionEngine#releaseGradients}): the next backward pass hands its
     * gradient buffers over instead of adding them into zeroed ones, so that neither the zeroing nor the addition
     * is done (on CUDA: two kernels per tensor and pass fewer). Which gradients existed is remembered, so that the
     * step's values are those of zeroing them (PyTorch 1.13, as the reference).
     */
    @Override
    public boolean releaseGradients(ParamState[] states) {
        ensureOpen(states);
        releaseKept(states);
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                ParamState st = states[i];
                boolean defined = params[i].grad().defined();
                st.hadGrad = defined;
                if (defined) {
                    params[i].mutable_grad().reset();
                }
                st.forgetInstalled();
                st.releaseSpare();
            }
        }
        releasing = true;
        return true;
    }

    @Override
    public void endStep(ParamState[] states) {
        // a step that ended early leaves the gradients 1.13's zeroing would leave; not while a plan is in use (a
        // capture that failed: CapturedStep puts the user's gradients back, and a launch on an invalidated capture
        // would fail and hide the capture's own error)
        if (!closed && plan.equals(MemorySegment.NULL)) {
            zeroMissingGradients(states);
        }
        releasing = false;
    }

    /**
     * firstStep(true) after {@link #releaseGradients}: each gradient the first pass produced becomes c_p under its
     * parameter's handle and is released; a parameter whose gradient existed but that the pass did not reach keeps
     * a zero c_p, as 1.13's zeroed gradient would have been kept.
     */
    private void keepByHandle(ParamState[] states) {
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                ParamState st = states[i];
                Tensor g = params[i].grad();
                if (!g.defined()) {
                    if (st.hadGrad) {
                        keepZero(st, params[i]);
                    }
                    continue;
                }
                st.hadGrad = true;
                Tensor h = st.handle;
                if (h == null) {
                    h = new Tensor();
                    h.retainReference();
                    st.handle = h;
                }
                h.put(g); // an owning reference to the gradient: no copy, no wrapper
                params[i].mutable_grad().reset(); // g is a view of the (now empty) field: use h from here on
                int dtype = dtypeCode(h.scalar_type());
                long numel = h.numel();
                if (numel > 1 && !h.is_contiguous()) { // the kernels read c_p contiguous: copy it (rare)
                    Tensor c = h.contiguous();
                    c.retainReference();
                    h.reset();
                    st.keep(c, dataAddress(c), dtype, numel, true);
                } else {
                    st.keep(h, dataAddress(h), dtype, numel, true);
                }
            }
        }
        hasKept = true;
    }

    private static void keepZero(ParamState st, Tensor param) {
        Tensor z = st.zeroKept;
        if (z == null) {
            z = torch.zeros_like(param.detach()).contiguous();
            z.retainReference();
            st.zeroKept = z;
        }
        st.keep(z, dataAddress(z), dtypeCode(z.scalar_type()), z.numel(), true);
    }

    /**
     * After {@link #releaseGradients}, before a step uses the gradients: a parameter whose gradient exists in
     * 1.13's terms but that the second pass did not reach gets a zero gradient, which the step projects and the
     * optimizer steps, as the reference does. Ends the release protocol.
     */
    private void zeroMissingGradients(ParamState[] states) {
        if (!releasing) {
            return;
        }
        releasing = false;
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                if (states[i].hadGrad && !params[i].grad().defined()) {
                    params[i].mutable_grad().put(torch.zeros_like(params[i].detach())); // as AccumulateGrad lays it out
                }
            }
        }
    }

    /** Zeroes a contiguous buffer: on the host straight through its memory, on CUDA with libtorch. */
    private void zero(Tensor t, long address, long numel, int dtype) {
        if (device < 0 && address != 0) {
            MemorySegment.ofAddress(address).reinterpret(numel * elementSize(dtype)).fill((byte) 0);
        } else {
            t.zero_();
        }
    }

    private static long elementSize(int dtype) {
        return dtype == text2data_h.T2D_FLOAT64() ? 8 : dtype == text2data_h.T2D_FLOAT32() ? 4 : 2;
    }

    @Override
    public int secondStep(ParamState[] states, Tensor gValue, double gConstraint, double alpha, double beta,
                          boolean checkFinite) {
        ensureOpen(states);
        zeroMissingGradients(states);
        int options = checkFinite ? text2data_h.T2D_CHECK_FINITE() : 0;
        int count = 0;
        try (PointerScope scope = new PointerScope()) {
            // strided gradients are projected in a contiguous copy, copied back after the kernel: rare
            Tensor[] copied = null;
            for (int i = 0; i < params.length; i++) {
                ParamState st = states[i];
                if (st.kept == null) {
                    // no unconditional gradient: c_p = 0, g_p unchanged (documented deviation); the base
                    // optimizer still uses g_p, so it is checked here (one host read, only for such tensors)
                    if (checkFinite) {
                        requireFiniteUnprojected(i);
                    }
                    continue;
                }
                Tensor g = params[i].grad();
                if (!g.defined()) {
                    continue;
                }
                long base = DESC_SIZE * count;
                long gAddress = dataAddress(g);
                int cDevice = device < 0 ? -1 : device;
                int gDevice;
                long gNumel;
                int gDtype;
                boolean gContiguous;
                if (gAddress != 0 && gAddress == st.installedAddress && g.numel() == st.installedNumel) {
                    // the buffer firstStep installed, accumulated into in place: its metadata is known
                    gDevice = cDevice;
                    gNumel = st.installedNumel;
                    gDtype = st.installedDtype;
                    gContiguous = true;
                } else {
                    gDevice = g.is_cuda() ? Math.max(device, 0) : -1;
                    gNumel = g.numel();
                    gDtype = dtypeCode(g.scalar_type());
                    gContiguous = g.is_contiguous();
                    if (!gContiguous && g.is_same_size(st.kept)) {
                        if (copied == null) {
                            copied = new Tensor[params.length];
                        }
                        copied[count] = g.detach().contiguous();
                        gAddress = dataAddress(copied[count]);
                        gContiguous = true;
                    }
                }
                table.set(ValueLayout.JAVA_LONG, base + OFF_GRAD, gAddress);
                table.set(ValueLayout.JAVA_LONG, base + OFF_CONSTRAINT, st.keptAddress);
                table.set(ValueLayout.JAVA_LONG, base + OFF_NUMEL, gNumel);
                table.set(ValueLayout.JAVA_LONG, base + OFF_CNUMEL, st.keptNumel);
                table.set(ValueLayout.JAVA_INT, base + OFF_DTYPE, gDtype);
                table.set(ValueLayout.JAVA_INT, base + OFF_CDTYPE, st.keptDtype);
                table.set(ValueLayout.JAVA_INT, base + OFF_DEVICE, gDevice);
                table.set(ValueLayout.JAVA_INT, base + OFF_CDEVICE, cDevice);
                int flags = (gContiguous ? text2data_h.T2D_GRAD_CONTIGUOUS() : 0)
                        | (st.keptContiguous ? text2data_h.T2D_CONSTRAINT_CONTIGUOUS() : 0);
                table.set(ValueLayout.JAVA_INT, base + OFF_FLAGS, flags);
                table.set(ValueLayout.JAVA_INT, base + OFF_RESERVED, 0);
                slotParam[count] = i;
                count++;
            }
            int rc;
            if (device < 0) {
                if (gValue.is_cuda()) {
                    throw new IllegalArgumentException("gValue is on a CUDA device but the parameters are on the host");
                }
                rc = text2data_h.t2d_project_host(table, count, gValue.item_double(), gConstraint, alpha, beta,
                        options, MemorySegment.NULL);
            } else {
                if (!gValue.is_cuda()) {
                    throw new IllegalArgumentException("gValue must be on cuda:" + device + " with the parameters");
                }
                if (gValue.numel() != 1) {
                    throw new IllegalArgumentException("gValue must hold one element, it has " + gValue.numel());
                }
                long gvAddress = dataAddress(gValue);
                rc = text2data_h.t2d_project_cuda(table, count, MemorySegment.ofAddress(gvAddress),
                        dtypeCode(gValue.scalar_type()), gConstraint, alpha, beta, options,
                        MemorySegment.ofAddress(CudaStreams.current(device)), MemorySegment.NULL);
            }
            if (rc != text2data_h.T2D_OK()) {
                throw failure(rc);
            }
            if (copied != null) {
                for (int k = 0; k < count; k++) {
                    if (copied[k] != null) {
                        params[slotParam[k]].grad().copy_(copied[k]);
                    }
                }
            }
        }
        return count;
    }

    private static final long ROW_SIZE = t2d_param.sizeof();
    private static final long ROW_PARAM = t2d_param.param$offset();
    private static final long ROW_GRAD = t2d_param.grad$offset();
    private static final long ROW_CONSTRAINT = t2d_param.constraint$offset();
    private static final long[] ROW_STATE = {t2d_param.exp_avg$offset(), t2d_param.exp_avg_sq$offset(),
        t2d_param.max_exp_avg_sq$offset()};
    private static final long ROW_STEP = t2d_param.step$offset();
    private static final long ROW_NUMEL = t2d_param.numel$offset();
    private static final long ROW_DTYPE = t2d_param.dtype$offset();
    private static final long ROW_DEVICE = t2d_param.device$offset();
    private static final long ROW_FLAGS = t2d_param.flags$offset();
    private static final long ROW_RESERVED = t2d_param.reserved$offset();

    /**
     * The fused constrained optimizer step: one native call over every parameter that has a gradient, which
     * projects the gradient ({@code g += lam * c}, when {@code project} and the parameter has a kept constraint
     * gradient; else the gradient is used as it is) and updates the parameter and its optimizer state
     * ({@code states[i]}, created here at a parameter's first step) in the same pass over memory.
     *
     * <p>On the host the call is all or nothing: a NaN or an infinity in a gradient used (or in {@code gValue}
     * when a tensor is projected), or in half precision a value the update would store, throws
     * {@link NonFiniteGradientException} naming the parameter, and nothing at all was written (parameters,
     * gradients, state, step counts). On CUDA nothing waits for the device: such a step is skipped on the device and
     * counted in the step status ({@link #readStepStatus()}).
     *
     * @param states the per-parameter records, one per parameter: the optimizer state and the kept gradients
     * @param o the optimizer and its options
     * @param gValue the unconditional loss, a one-element tensor on the parameters' device; unused (may be null)
     *     when {@code project} is false
     * @param gConstraint the bound on the unconditional loss
     * @param alpha the factor of the loss's excess over {@code gConstraint}
     * @param beta the factor of {@code n_p} that caps {@code phi_p}
     * @param project whether to project the gradients that have a kept constraint gradient
     * @return the number of tensors projected
     * @throws NonFiniteGradientException (host) if a value is not finite; nothing was written
     * @throws IllegalArgumentException if a gradient does not fit its parameter or its kept constraint gradient, a
     *     parameter is not contiguous, or {@code states} is not one record per parameter
     * @throws IllegalStateException if this engine is closed, or a plan is in use ({@link #usePlan}) and a parameter
     *     that is stepped has no optimizer state yet
     */
    public int optimizerStep(ParamState[] states, FusedOptimizer.Options o, Tensor gValue,
                             double gConstraint, double alpha, double beta, boolean project) {
        ensureOpen(states);
        zeroMissingGradients(states);
        int nStates = o.stateCount();
        int count = 0;
        int projected = 0;
        boolean ok = false;
        try (PointerScope scope = new PointerScope()) {
            Tensor[] copied = null; // strided gradients, stepped in a contiguous copy and copied back: rare
            for (int i = 0; i < params.length; i++) {
                ParamState st = states[i];
                Tensor g = params[i].grad();
                if (!g.defined()) {
                    continue; // as libtorch: a parameter without a gradient is not stepped
                }
                Tensor p = params[i];
                long pAddress = dataAddress(p);
                long numel = p.numel();
                int dtype = dtypeCode(p.scalar_type());
                if (numel > 1 && !p.is_contiguous()) {
                    throw new IllegalArgumentException("parameter '" + names[i] + "' is not contiguous: the fused "
                            + "optimizer needs contiguous parameters (use OptimizerSpec.fused(false))");
                }
                if (p.is_cuda() != device >= 0) { // a move between GPUs is not seen here (a Device per call costs)
                    throw new IllegalArgumentException("parameter '" + names[i] + "' is on " + p.device().str().getString()
                            + " now, but this Constraint was made for " + (device < 0 ? "the CPU" : "cuda:" + device)
                            + ": make the Constraint after moving the model; nothing was changed");
                }
                st.requireStateFits(names[i], numel, dtype, p);
                long gAddress = dataAddress(g);
                boolean installedBuffer = gAddress != 0 && gAddress == st.installedAddress
                        && g.numel() == st.installedNumel && numel == st.installedNumel && dtype == st.installedDtype;
                if (!installedBuffer) {
                    if (g.numel() != numel || dtypeCode(g.scalar_type()) != dtype) {
                        throw new IllegalArgumentException("parameter '" + names[i] + "': its gradient "
                                + java.util.Arrays.toString(g.shape()) + " " + g.scalar_type() + " does not fit the parameter "
                                + java.util.Arrays.toString(p.shape()) + " " + p.scalar_type());
                    }
                    if (numel > 1 && !g.is_contiguous()) {
                        if (copied == null) {
                            copied = new Tensor[params.length];
                        }
                        copied[i] = g.detach().contiguous();
                        gAddress = dataAddress(copied[i]);
                    }
                }
                long cAddress = 0;
                if (project && st.kept != null) {
                    if (st.keptNumel != numel || st.keptDtype != dtype) {
                        throw new IllegalArgumentException("parameter '" + names[i] + "': its gradient does not fit its "
                                + "unconditional gradient (" + st.keptNumel + " elements of dtype code " + st.keptDtype + ")");
                    }
                    cAddress = st.keptContiguous ? st.keptAddress : dataAddress(st.kept.contiguous());
                    projected++;
                }
                st.ensure(o, p);
                if (st.fresh && !plan.equals(MemorySegment.NULL)) { // its zeroing would be captured and replayed
                    throw new IllegalStateException("parameter '" + names[i] + "' has no optimizer state before the "
                            + "capture: it received no gradient in the warm-up passes but does in the captured step");
                }
                long row = ROW_SIZE * count;
                paramTable.set(ValueLayout.JAVA_LONG, row + ROW_PARAM, pAddress);
                paramTable.set(ValueLayout.JAVA_LONG, row + ROW_GRAD, gAddress);
                paramTable.set(ValueLayout.JAVA_LONG, row + ROW_CONSTRAINT, cAddress);
                for (int k = 0; k < 3; k++) {
                    paramTable.set(ValueLayout.JAVA_LONG, row + ROW_STATE[k], k < nStates ? st.address(k) : 0L);
                }
                paramTable.set(ValueLayout.JAVA_LONG, row + ROW_STEP, st.stepAddress());
                paramTable.set(ValueLayout.JAVA_LONG, row + ROW_NUMEL, numel);
                paramTable.set(ValueLayout.JAVA_INT, row + ROW_DTYPE, dtype);
                paramTable.set(ValueLayout.JAVA_INT, row + ROW_DEVICE, device < 0 ? -1 : device);
                paramTable.set(ValueLayout.JAVA_INT, row + ROW_FLAGS, text2data_h.T2D_PARAM_CONTIGUOUS());
                paramTable.set(ValueLayout.JAVA_INT, row + ROW_RESERVED, 0);
                slotParam[count] = i;
                count++;
            }
            o.write(optimizerOptions);
            int rc;
            if (device < 0) {
                double gv = 0.0;
                if (projected > 0) {
                    if (gValue == null || gValue.is_cuda()) {
                        throw new IllegalArgumentException(gValue == null ? "gValue is null"
                                : "gValue is on a CUDA device but the parameters are on the host");
                    }
                    gv = gValue.item_double();
                }
                rc = text2data_h.t2d_step_host(paramTable, count, optimizerOptions, gv, gConstraint, alpha, beta, 0,
                        MemorySegment.NULL);
            } else {
                Tensor gv = gValue;
                if (gv == null) {
                    gv = zeroLoss();
                } else if (!gv.is_cuda() || gv.numel() != 1) {
                    throw new IllegalArgumentException("gValue must be a one-element tensor on cuda:" + device);
                }
                MemorySegment stream = MemorySegment.ofAddress(CudaStreams.current(device));
                MemorySegment status = MemorySegment.ofAddress(statusAddress());
                MemorySegment gvAddress = MemorySegment.ofAddress(dataAddress(gv));
                rc = plan.equals(MemorySegment.NULL)
                        ? text2data_h.t2d_step_cuda(paramTable, count, optimizerOptions, gvAddress,
                                dtypeCode(gv.scalar_type()), gConstraint, alpha, beta, 0, stream, status, MemorySegment.NULL)
                        : text2data_h.t2d_step_cuda_planned(plan, paramTable, count, optimizerOptions, gvAddress,
                                dtypeCode(gv.scalar_type()), MemorySegment.ofAddress(scalarsAddress), 0, stream, status);
            }
            if (rc != text2data_h.T2D_OK()) {
                throw failure(rc);
            }
            if (copied != null) {
                for (int i = 0; i < params.length; i++) {
                    if (copied[i] != null) {
                        params[i].grad().copy_(copied[i]);
                    }
                }
            }
            ok = true;
        } finally {
            for (ParamState st : states) {
                if (!ok) {
                    st.discardFresh(); // a refused first step leaves no state behind, as before the call
                }
                st.fresh = false;
            }
        }
        return projected;
    }

    /**
     * CUDA: makes a plan for fused steps over these parameters ({@code t2d_plan_create}: a pinned table and a device
     * workspace of their own, so that a stream capture can record the step). The caller owns it and frees it with
     * {@link #destroyPlan} once no graph that captured a step with it will be replayed.
     *
     * @return the plan
     * @throws IllegalStateException if the parameters are not on a CUDA device, or the plan cannot be made
     */
    public MemorySegment createPlan() {
        if (closed) {
            throw new IllegalStateException("engine is closed");
        }
        if (device < 0) {
            throw new IllegalStateException("a plan is for parameters on a CUDA device; these are on the host");
        }
        try (Arena a = Arena.ofConfined(); PointerScope scope = new PointerScope()) {
            MemorySegment rows = t2d_param.allocateArray(params.length, a);
            for (int i = 0; i < params.length; i++) {
                long row = ROW_SIZE * i;
                rows.set(ValueLayout.JAVA_LONG, row + ROW_NUMEL, params[i].numel());
                rows.set(ValueLayout.JAVA_INT, row + ROW_DTYPE, dtypeCode(params[i].scalar_type()));
                rows.set(ValueLayout.JAVA_INT, row + ROW_DEVICE, device);
            }
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            int rc = text2data_h.t2d_plan_create(rows, params.length, device, out);
            if (rc != text2data_h.T2D_OK()) {
                throw new IllegalStateException("cannot make a plan for the fused step (code " + rc + "): " + lastError());
            }
            return out.get(ValueLayout.ADDRESS, 0);
        }
    }

    /**
     * Frees a plan made by {@link #createPlan} (waits for the device).
     *
     * @param plan the plan, or {@code MemorySegment.NULL}
     */
    public static void destroyPlan(MemorySegment plan) {
        if (plan != null && !plan.equals(MemorySegment.NULL)) {
            text2data_h.t2d_plan_destroy(plan);
        }
    }

    /** Where lr, gConstraint, alpha and beta lie in a {@code t2d_step_scalars}, in doubles (the generated layout). */
    private static final int[] STEP_SCALAR_INDEX = {
        (int) (t2d_step_scalars.lr$offset() / Double.BYTES),
        (int) (t2d_step_scalars.g_constraint$offset() / Double.BYTES),
        (int) (t2d_step_scalars.alpha$offset() / Double.BYTES),
        (int) (t2d_step_scalars.beta$offset() / Double.BYTES)};

    /**
     * CUDA: the device scalars a planned step reads ({@code t2d_step_scalars}, zero), a float64 tensor on the
     * parameters' device; the caller owns the reference and writes them with {@link #writeStepScalar}.
     *
     * @return the scalars
     */
    public Tensor newStepScalars() {
        return retainedZeros(new long[] {t2d_step_scalars.sizeof() / Double.BYTES}, torch.ScalarType.Double);
    }

    /** A zero tensor on the parameters' device, of {@code dtype} (null: the first parameter's); see the other. */
    private Tensor retainedZeros(long[] shape, torch.ScalarType dtype) {
        return retainedZeros(params[0], shape, dtype);
    }

    /**
     * A zero tensor on {@code like}'s device, of {@code dtype} (null: {@code like}'s), whose reference the caller
     * owns.
     */
    static Tensor retainedZeros(Tensor like, long[] shape, torch.ScalarType dtype) {
        try (PointerScope scope = new PointerScope()) {
            Tensor p = like.detach();
            Tensor z = dtype == null ? p.new_zeros(shape)
                    : p.new_zeros(shape, new org.bytedeco.pytorch.TensorOptions(dtype));
            z.retainReference();
            return z;
        }
    }

    /**
     * Writes one of the device scalars (one small kernel, ordered on the current stream).
     *
     * @param scalars scalars from {@link #newStepScalars}
     * @param which 0: the learning rate, 1: gConstraint, 2: alpha, 3: beta
     * @param value the value
     */
    public static void writeStepScalar(Tensor scalars, int which, double value) {
        try (PointerScope scope = new PointerScope()) {
            scalars.select(0, STEP_SCALAR_INDEX[which]).fill_(new org.bytedeco.pytorch.Scalar(value));
        }
    }

    /**
     * Routes the fused steps that follow through a plan (CUDA): they read the learning rate, {@code gConstraint},
     * {@code alpha} and {@code beta} from the device scalars ({@link #newStepScalars}) and
     * enqueue nothing a stream capture cannot record. {@code MemorySegment.NULL} routes them back. While a plan is
     * in use, a step that would create a parameter's optimizer state is refused: a capture would replay its zeroing.
     *
     * @param plan a plan from {@link #createPlan}, or {@code MemorySegment.NULL}
     * @param scalars the device scalars from {@link #newStepScalars} (ignored without a plan, may be null then)
     */
    public void usePlan(MemorySegment plan, Tensor scalars) {
        this.plan = plan == null ? MemorySegment.NULL : plan;
        this.scalarsAddress = this.plan.equals(MemorySegment.NULL) || scalars == null ? 0L : dataAddress(scalars);
    }

    /**
     * Before a capture, right after warm-up passes: makes what a fused step would otherwise create at its first call,
     * whose zeroing a capture would record and every replay repeat. That is the optimizer state of every parameter
     * the captured step will step (one the warm-up's passes reached, or that had a gradient before them), the step
     * status and the zero loss.
     *
     * @param states the per-parameter records
     * @param o the optimizer and its options
     * @param hadGrad which parameters had a gradient before the warm-up
     */
    public void prepareCapture(ParamState[] states, FusedOptimizer.Options o, boolean[] hadGrad) {
        ensureOpen(states);
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                if (hadGrad[i] || states[i].hadGrad || params[i].grad().defined()) {
                    states[i].ensure(o, params[i]);
                    states[i].fresh = false;
                }
            }
            statusAddress();
            zeroLoss();
        }
    }

    /** CUDA: the zero loss handed to steps that project nothing (they read no gValue), made once. */
    private Tensor zeroLoss() {
        if (zeroLoss == null) {
            zeroLoss = retainedZeros(new long[0], null);
        }
        return zeroLoss;
    }

    /**
     * The addresses of every parameter's optimizer state (its step count, then its three buffers; 0 where there is
     * none): what a captured step's graph reads and writes.
     *
     * @param states the per-parameter records
     * @return four addresses per parameter
     */
    public long[] stateAddresses(ParamState[] states) {
        long[] a = new long[4 * states.length];
        for (int j = 0; j < a.length; j++) {
            a[j] = stateAddress(states, j);
        }
        return a;
    }

    /** Entry {@code j} of {@link #stateAddresses}: parameter j / 4's step count (j % 4 == 0) or state buffer. */
    private static long stateAddress(ParamState[] states, int j) {
        ParamState st = states[j / 4];
        return j % 4 == 0 ? st.stepAddress() : st.address(j % 4 - 1);
    }

    /**
     * Whether the optimizer state a captured graph uses is where {@link #stateAddresses} found it (a captured step
     * checks it before each replay; nothing is allocated). Buffers that did not exist then (address 0) are not
     * the graph's: state made for them since does not count.
     *
     * @param states the per-parameter records
     * @param addresses what {@link #stateAddresses} returned for them
     * @return true if every address is the same
     */
    public boolean sameStateAddresses(ParamState[] states, long[] addresses) {
        if (addresses.length != 4 * states.length) {
            return false;
        }
        for (int j = 0; j < addresses.length; j++) {
            if (moved(addresses[j], stateAddress(states, j))) {
                return false;
            }
        }
        return true;
    }

    private static boolean moved(long captured, long now) {
        return captured != 0 && captured != now;
    }

    /** The device address of the CUDA step status, created (zeroed) at the first call. */
    private long statusAddress() {
        if (stepStatus == null) {
            stepStatus = retainedZeros(new long[] {t2d_step_status.sizeof() / Long.BYTES}, torch.ScalarType.Long);
        }
        return dataAddress(stepStatus);
    }

    /**
     * CUDA: the fused steps' status, read from the device (one synchronisation): {@code calls}, {@code skipped},
     * {@code first_skipped} (1-based call number, 0 if none), the first skipped step's parameter index (-1 if none)
     * and reason ({@code T2D_NONFINITE_*}). Null on the host or before the first fused step.
     *
     * @return the five numbers, or null
     */
    public long[] readStepStatus() {
        if (stepStatus == null || closed) {
            return null;
        }
        try (PointerScope scope = new PointerScope()) {
            Tensor h = stepStatus.cpu();
            long[] v = new long[5];
            org.bytedeco.javacpp.LongPointer lp = new org.bytedeco.javacpp.LongPointer(h.data_ptr());
            for (int k = 0; k < 4; k++) {
                v[k] = lp.get(k);
            }
            long packed = v[3];
            int slot = (int) packed;          // first_tensor: the low half on little-endian machines
            v[3] = slot >= 0 && slot < params.length ? slotParam[slot] : -1;
            v[4] = packed >>> 32;             // first_reason
            if (v[2] == 0) {
                v[3] = -1;
                v[4] = 0;
            }
            return v;
        }
    }

    /** Throws if parameter i has a gradient holding a NaN or an infinity. */
    private void requireFiniteUnprojected(int i) {
        Tensor g = params[i].grad();
        if (g.defined() && g.numel() > 0 && !torch.isfinite(g.detach()).all().item_bool()) {
            throw new NonFiniteGradientException(i, "its gradient holds a NaN or an infinity");
        }
    }

    private RuntimeException failure(int rc) {
        String message = lastError();
        int slot = text2data_h.t2d_last_error_tensor();
        int param = slot >= 0 && slot < params.length ? slotParam[slot] : -1;
        Matcher m = TENSOR_INDEX.matcher(message);
        String detail = m.find() ? message.substring(m.end()) : message;
        if (rc == text2data_h.T2D_ERR_NONFINITE() && param >= 0) {
            return new NonFiniteGradientException(param, detail);
        }
        message = "fused projection failed (code " + rc + "): " + (param >= 0 ? "parameter '" + names[param] + "': " + detail : message);
        if (rc == text2data_h.T2D_ERR_CUDA_NOT_BUILT() || rc == text2data_h.T2D_ERR_CUDA_UNAVAILABLE()
                || rc == text2data_h.T2D_ERR_CUDA() || rc == text2data_h.T2D_ERR_OUT_OF_MEMORY()) {
            return new IllegalStateException(message);
        }
        return new IllegalArgumentException(message);
    }

    static String lastError() {
        MemorySegment s = text2data_h.t2d_last_error();
        return s.equals(MemorySegment.NULL) ? "" : s.reinterpret(Integer.MAX_VALUE).getString(0);
    }

    /** libtext2data's dtype code of a libtorch scalar type, or -1 (rejected by the kernel). */
    static int dtypeCode(torch.ScalarType t) {
        // bytedeco's ScalarType returned by native calls is not the enum constant itself: compare values.
        int v = t.value;
        if (v == FLOAT) {
            return text2data_h.T2D_FLOAT32();
        } else if (v == DOUBLE) {
            return text2data_h.T2D_FLOAT64();
        } else if (v == BFLOAT16) {
            return text2data_h.T2D_BFLOAT16();
        } else if (v == HALF) {
            return text2data_h.T2D_FLOAT16();
        }
        return -1;
    }

    /** The name libtorch gives the dtype of a libtext2data dtype code (for messages). */
    static String dtypeName(int code) {
        if (code == text2data_h.T2D_FLOAT32()) {
            return "Float";
        } else if (code == text2data_h.T2D_FLOAT64()) {
            return "Double";
        } else if (code == text2data_h.T2D_BFLOAT16()) {
            return "BFloat16";
        } else if (code == text2data_h.T2D_FLOAT16()) {
            return "Half";
        }
        return "unsupported dtype (code " + code + ")";
    }

    private static final int FLOAT = torch.ScalarType.Float.value;
    private static final int DOUBLE = torch.ScalarType.Double.value;
    private static final int BFLOAT16 = torch.ScalarType.BFloat16.value;
    private static final int HALF = torch.ScalarType.Half.value;

    /**
     * The tensor's data address (0 for a tensor without storage, e.g. an empty one).
     *
     * @param t a tensor
     * @return its data pointer's address
     */
    static long dataAddress(Tensor t) {
        Pointer p = t.data_ptr();
        if (p == null) {
            return 0L;
        }
        long address = p.address();
        p.close();
        return address;
    }

    @Override
    public boolean hasConstraintGrads() {
        return hasKept;
    }

    /** Stops keeping c_p (see {@link ParamState#releaseKept()}), so nothing is kept. */
    private void releaseKept(ParamState[] states) {
        for (ParamState st : states) {
            st.releaseKept();
        }
        hasKept = false;
    }

    /**
     * Releases the engine's own native resources (its tables, the CUDA step status and zero loss). The
     * per-parameter records are their owner's: closing them releases the gradient buffers and the optimizer state.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        hasKept = false;
        releasing = false;
        if (stepStatus != null) {
            stepStatus.releaseReference();
            stepStatus = null;
        }
        if (zeroLoss != null) {
            zeroLoss.releaseReference();
            zeroLoss = null;
        }
        arena.close();
    }

    /** Refuses a closed engine and records that are not one per parameter. */
    private void ensureOpen(ParamState[] states) {
        if (closed) {
            throw new IllegalStateException("engine is closed");
        }
        Engines.checkStates(states, params.length);
    }

    /**
     * The {@code cudaStream_t} of libtorch's current stream on a CUDA device (0 where CUDA classes are missing).
     *
     * @param device the CUDA device
     * @return the stream's handle
     */
    public static long currentStream(int device) {
        return CudaStreams.current(device);
    }

    /**
     * The {@code cudaStream_t} of a libtorch {@code CUDAStream} (read reflectively: its type is in bytedeco's CUDA
     * presets, which a CPU-only build lacks).
     *
     * @param cudaStream an {@code org.bytedeco.pytorch.cuda.CUDAStream}
     * @return the stream's handle
     */
    public static long streamHandle(Object cudaStream) {
        return CudaStreams.raw(cudaStream);
    }

    /** libtorch's current CUDA stream, found reflectively so that CPU-only builds need no CUDA classes. */
    static final class CudaStreams {
        private static final Method GET_CURRENT;
        private static final Method STREAM;
        private static final String REASON;

        static {
            Method get = null;
            Method stream = null;
            String reason = null;
            try {
                Class<?> cuda = Class.forName("org.bytedeco.pytorch.global.torch_cuda");
                get = cuda.getMethod("getCurrentCUDAStream", byte.class);
                stream = Class.forName("org.bytedeco.pytorch.cuda.CUDAStream").getMethod("stream");
            } catch (ReflectiveOperationException | LinkageError e) {
                reason = e.toString();
            }
            GET_CURRENT = get;
            STREAM = stream;
            REASON = reason;
        }

        private CudaStreams() {}

        /** The cudaStream_t of a libtorch CUDAStream. */
        static long raw(Object cudaStream) {
            if (STREAM == null) {
                throw new IllegalStateException("libtorch's CUDA streams are not available: " + REASON);
            }
            try (Pointer p = (Pointer) STREAM.invoke(cudaStream)) {
                return p == null ? 0L : p.address();
            } catch (ReflectiveOperationException | LinkageError e) {
                throw new IllegalStateException("cannot read a CUDA stream's handle: " + e, e);
            }
        }

        /** The cudaStream_t of libtorch's current stream on the device (0, the legacy default stream, if unknown). */
        static long current(int device) {
            if (GET_CURRENT == null) {
                return 0L;
            }
            try (Pointer s = (Pointer) GET_CURRENT.invoke(null, (byte) device)) {
                return raw(s);
            } catch (ReflectiveOperationException | LinkageError e) {
                throw new IllegalStateException("cannot read libtorch's current CUDA stream: " + e, e);
            }
        }

        static String unavailableReason() {
            return REASON;
        }
    }
}
