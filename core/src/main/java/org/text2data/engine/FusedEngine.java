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
 * accumulates into. Without zeroing it copies.
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
    /** Kept constraint gradients c_p (owned handles), null where the parameter had no gradient. */
    private final Tensor[] kept;
    /** Buffers of released c_p, reused as the next zeroed gradient or copy target (owned handles). */
    private final Tensor[] spare;
    /** Data address, dtype code and element count of each spare buffer (known from when it was kept). */
    private final long[] spareAddress;
    private final int[] spareDtype;
    private final long[] spareNumel;
    /**
     * The gradient buffer firstStep installed for each parameter (0: none) and whether it is contiguous:
     * when secondStep finds that very buffer still in place (backward accumulates into it), its dtype,
     * size and device are known and need no asking.
     */
    private final long[] installedAddress;
    /** Our handle on each installed buffer: while we hold it, no other tensor can come to live at its address. */
    private final Tensor[] installed;
    private final long[] installedNumel;
    private final int[] installedDtype;
    /** Data address and element count of each kept c_p (they do not move while kept). */
    private final long[] keptAddress;
    private final int[] keptDtype;
    private final long[] keptNumel;
    private final boolean[] keptContiguous;
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
    /**
     * The release protocol ({@link #releaseGradients()}): per parameter a reusable owning handle through which c_p
     * is held (no wrapper allocated per step), whether its gradient exists in 1.13's terms (it existed when the step
     * began or came from the first pass), and a zero c_p kept for a parameter whose gradient existed but got nothing
     * from the first pass (rare; read-only to the kernels, so made once).
     */
    private final Tensor[] handle;
    private final boolean[] hadGrad;
    private final Tensor[] zeroKept;
    private boolean releasing;
    private Tensor stepStatus;
    private boolean hasKept;
    private boolean closed;

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
        this.kept = new Tensor[n];
        this.spare = new Tensor[n];
        this.spareAddress = new long[n];
        this.spareDtype = new int[n];
        this.spareNumel = new long[n];
        this.installedAddress = new long[n];
        this.installed = new Tensor[n];
        this.installedNumel = new long[n];
        this.installedDtype = new int[n];
        this.keptAddress = new long[n];
        this.keptDtype = new int[n];
        this.keptNumel = new long[n];
        this.keptContiguous = new boolean[n];
        this.slotParam = new int[n];
        this.handle = new Tensor[n];
        this.hadGrad = new boolean[n];
        this.zeroKept = new Tensor[n];
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
     */
    @Override
    public void firstStep(boolean zeroGrad) {
        ensureOpen();
        releaseKept();
        if (releasing && zeroGrad) {
            keepByHandle();
            return;
        }
        releasing = false;
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                Tensor g = params[i].grad();
                if (!g.defined()) {
                    forgetInstalled(i);
                    continue;
                }
                long address = dataAddress(g);
                long numel = g.numel();
                boolean ours = installed[i] != null && address != 0 && address == installedAddress[i]
                        && numel == installedNumel[i];
                int dtype = ours ? installedDtype[i] : dtypeCode(g.scalar_type());
                boolean contiguous = ours || g.is_contiguous();
                if (!contiguous) {
                    // A strided gradient (a non-contiguous parameter's gradient has its strides): the kernel
                    // reads contiguous memory, so c_p is a contiguous copy, and the gradient is zeroed in place.
                    forgetInstalled(i);
                    Tensor c = g.detach().contiguous();
                    c.retainReference();
                    if (zeroGrad) {
                        g.zero_();
                    }
                    kept[i] = c;
                    keptAddress[i] = dataAddress(c);
                    keptDtype[i] = dtype;
                    keptNumel[i] = numel;
                    keptContiguous[i] = true;
                    continue;
                }
                Tensor s = spare[i];
                boolean reuse = s != null && spareDtype[i] == dtype && spareNumel[i] == numel && contiguous
                        && s.is_same_size(g);
                Tensor c;
                if (zeroGrad) {
                    if (ours) {
                        c = installed[i]; // our handle on the gradient becomes c_p's
                        installed[i] = null;
                    } else {
                        forgetInstalled(i);
                        c = new Tensor(g); // an owning handle on the same tensor: no copy
                        c.retainReference();
                    }
                    Tensor z;
                    long zAddress;
                    if (reuse) {
                        z = s;
                        zAddress = spareAddress[i];
                        spare[i] = null;
                        zero(z, zAddress, numel, dtype);
                    } else {
                        z = torch.zeros_like(g);
                        z.retainReference();
                        zAddress = dataAddress(z);
                    }
                    params[i].mutable_grad().put(z); // the next backward accumulates into z
                    installed[i] = z;
                    installedAddress[i] = zAddress;
                    installedNumel[i] = numel;
                    installedDtype[i] = dtype;
                } else if (reuse) {
                    s.copy_(g);
                    c = s;
                    spare[i] = null;
                    address = spareAddress[i];
                } else {
                    c = g.detach().clone();
                    c.retainReference();
                    address = dataAddress(c);
                    contiguous = c.is_contiguous();
                }
                kept[i] = c;
                keptAddress[i] = address;
                keptDtype[i] = dtype;
                keptNumel[i] = numel;
                keptContiguous[i] = contiguous;
            }
        }
        hasKept = true;
    }

    /**
     * Releases every gradient (see {@link ProjectionEngine#releaseGradients()}): the next backward pass hands its
     * gradient buffers over instead of adding them into zeroed ones, so that neither the zeroing nor the addition
     * is done (on CUDA: two kernels per tensor and pass fewer). Which gradients existed is remembered, so that the
     * step's values are those of zeroing them (PyTorch 1.13, as the reference).
     */
    @Override
    public boolean releaseGradients() {
        ensureOpen();
        releaseKept();
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                boolean defined = params[i].grad().defined();
                hadGrad[i] = defined;
                if (defined) {
                    params[i].mutable_grad().reset();
                }
                forgetInstalled(i);
                if (spare[i] != null) {
                    spare[i].releaseReference();
                    spare[i] = null;
                }
            }
        }
        releasing = true;
        return true;
    }

    @Override
    public void endStep() {
        releasing = false;
    }

    /**
     * firstStep(true) after {@link #releaseGradients()}: each gradient the first pass produced becomes c_p under its
     * parameter's handle and is released; a parameter whose gradient existed but that the pass did not reach keeps
     * a zero c_p, as 1.13's zeroed gradient would have been kept.
     */
    private void keepByHandle() {
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                Tensor g = params[i].grad();
                if (!g.defined()) {
                    if (hadGrad[i]) {
                        keepZero(i);
                    }
                    continue;
                }
                hadGrad[i] = true;
                Tensor h = handle[i];
                if (h == null) {
                    h = new Tensor();
                    h.retainReference();
                    handle[i] = h;
                }
                h.put(g); // an owning reference to the gradient: no copy, no wrapper
                params[i].mutable_grad().reset(); // g is a view of the (now empty) field: use h from here on
                int dtype = dtypeCode(h.scalar_type());
                long numel = h.numel();
                if (numel > 1 && !h.is_contiguous()) { // the kernels read c_p contiguous: copy it (rare)
                    Tensor c = h.contiguous();
                    c.retainReference();
                    h.reset();
                    kept[i] = c;
                    keptAddress[i] = dataAddress(c);
                } else {
                    kept[i] = h;
                    keptAddress[i] = dataAddress(h);
                }
                keptDtype[i] = dtype;
                keptNumel[i] = numel;
                keptContiguous[i] = true;
            }
        }
        hasKept = true;
    }

    private void keepZero(int i) {
        Tensor z = zeroKept[i];
        if (z == null) {
            z = torch.zeros_like(params[i].detach()).contiguous();
            z.retainReference();
            zeroKept[i] = z;
        }
        kept[i] = z;
        keptAddress[i] = dataAddress(z);
        keptDtype[i] = dtypeCode(z.scalar_type());
        keptNumel[i] = z.numel();
        keptContiguous[i] = true;
    }

    /**
     * After {@link #releaseGradients()}, before a step uses the gradients: a parameter whose gradient exists in
     * 1.13's terms but that the second pass did not reach gets a zero gradient, which the step projects and the
     * optimizer steps, as the reference does. Ends the release protocol.
     */
    private void zeroMissingGradients() {
        if (!releasing) {
            return;
        }
        releasing = false;
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                if (hadGrad[i] && !params[i].grad().defined()) {
                    params[i].mutable_grad().put(torch.zeros_like(params[i].detach())); // as AccumulateGrad lays it out
                }
            }
        }
    }

    private void forgetInstalled(int i) {
        if (installed[i] != null) {
            installed[i].releaseReference();
            installed[i] = null;
        }
        installedAddress[i] = 0;
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
    public int secondStep(Tensor gValue, double gConstraint, double alpha, double beta, boolean checkFinite) {
        ensureOpen();
        zeroMissingGradients();
        int options = checkFinite ? text2data_h.T2D_CHECK_FINITE() : 0;
        int count = 0;
        try (PointerScope scope = new PointerScope()) {
            // strided gradients are projected in a contiguous copy, copied back after the kernel: rare
            Tensor[] copied = null;
            for (int i = 0; i < params.length; i++) {
                if (kept[i] == null) {
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
                if (gAddress != 0 && gAddress == installedAddress[i] && g.numel() == installedNumel[i]) {
                    // the buffer firstStep installed, accumulated into in place: its metadata is known
                    gDevice = cDevice;
                    gNumel = installedNumel[i];
                    gDtype = installedDtype[i];
                    gContiguous = true;
                } else {
                    gDevice = g.is_cuda() ? Math.max(device, 0) : -1;
                    gNumel = g.numel();
                    gDtype = dtypeCode(g.scalar_type());
                    gContiguous = g.is_contiguous();
                    if (!gContiguous && g.is_same_size(kept[i])) {
                        if (copied == null) {
                            copied = new Tensor[params.length];
                        }
                        copied[count] = g.detach().contiguous();
                        gAddress = dataAddress(copied[count]);
                        gContiguous = true;
                    }
                }
                table.set(ValueLayout.JAVA_LONG, base + OFF_GRAD, gAddress);
                table.set(ValueLayout.JAVA_LONG, base + OFF_CONSTRAINT, keptAddress[i]);
                table.set(ValueLayout.JAVA_LONG, base + OFF_NUMEL, gNumel);
                table.set(ValueLayout.JAVA_LONG, base + OFF_CNUMEL, keptNumel[i]);
                table.set(ValueLayout.JAVA_INT, base + OFF_DTYPE, gDtype);
                table.set(ValueLayout.JAVA_INT, base + OFF_CDTYPE, keptDtype[i]);
                table.set(ValueLayout.JAVA_INT, base + OFF_DEVICE, gDevice);
                table.set(ValueLayout.JAVA_INT, base + OFF_CDEVICE, cDevice);
                int flags = (gContiguous ? text2data_h.T2D_GRAD_CONTIGUOUS() : 0)
                        | (keptContiguous[i] ? text2data_h.T2D_CONSTRAINT_CONTIGUOUS() : 0);
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
     * @param states each parameter's optimizer state, one per parameter
     * @param o the optimizer and its options
     * @param gValue the unconditional loss, a one-element tensor on the parameters' device; unused (may be null)
     *     when {@code project} is false
     * @param gConstraint the bound on the unconditional loss
     * @param alpha the factor of the loss's excess over {@code gConstraint}
     * @param beta the factor of {@code n_p} that caps {@code phi_p}
     * @param project whether to project the gradients that have a kept constraint gradient
     * @return the number of tensors projected
     * @throws NonFiniteGradientException (host) if a value is not finite; nothing was written
     * @throws IllegalArgumentException if a gradient does not fit its parameter or its kept constraint gradient, or a
     *     parameter is not contiguous
     */
    public int optimizerStep(FusedOptimizer.ParamState[] states, FusedOptimizer.Options o, Tensor gValue,
                             double gConstraint, double alpha, double beta, boolean project) {
        ensureOpen();
        zeroMissingGradients();
        if (states.length != params.length) {
            throw new IllegalArgumentException(states.length + " optimizer states for " + params.length + " parameters");
        }
        int nStates = o.stateNames().length;
        int count = 0;
        int projected = 0;
        boolean ok = false;
        try (PointerScope scope = new PointerScope()) {
            Tensor[] copied = null; // strided gradients, stepped in a contiguous copy and copied back: rare
            for (int i = 0; i < params.length; i++) {
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
                long gAddress = dataAddress(g);
                boolean installedBuffer = gAddress != 0 && gAddress == installedAddress[i] && g.numel() == installedNumel[i];
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
                if (project && kept[i] != null) {
                    if (keptNumel[i] != numel || keptDtype[i] != dtype) {
                        throw new IllegalArgumentException("parameter '" + names[i] + "': its gradient does not fit its "
                                + "unconditional gradient (" + keptNumel[i] + " elements of dtype code " + keptDtype[i] + ")");
                    }
                    cAddress = keptContiguous[i] ? keptAddress[i] : dataAddress(kept[i].contiguous());
                    projected++;
                }
                FusedOptimizer.ParamState st = states[i];
                st.ensure(o, p);
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
                    gv = params[0].detach().new_zeros(new long[0]);
                } else if (!gv.is_cuda() || gv.numel() != 1) {
                    throw new IllegalArgumentException("gValue must be a one-element tensor on cuda:" + device);
                }
                rc = text2data_h.t2d_step_cuda(paramTable, count, optimizerOptions,
                        MemorySegment.ofAddress(dataAddress(gv)), dtypeCode(gv.scalar_type()), gConstraint, alpha, beta, 0,
                        MemorySegment.ofAddress(CudaStreams.current(device)), MemorySegment.ofAddress(statusAddress()),
                        MemorySegment.NULL);
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
            for (FusedOptimizer.ParamState st : states) {
                if (!ok) {
                    st.discardFresh(); // a refused first step leaves no state behind, as before the call
                }
                st.fresh = false;
            }
        }
        return projected;
    }

    /** The device address of the CUDA step status, created (zeroed) at the first call. */
    private long statusAddress() {
        if (stepStatus == null) {
            Tensor s = params[0].detach().new_zeros(new long[] {t2d_step_status.sizeof() / 8},
                    new org.bytedeco.pytorch.TensorOptions(torch.ScalarType.Long));
            s.retainReference();
            stepStatus = s;
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

    private static final int FLOAT = torch.ScalarType.Float.value;
    private static final int DOUBLE = torch.ScalarType.Double.value;
    private static final int BFLOAT16 = torch.ScalarType.BFloat16.value;
    private static final int HALF = torch.ScalarType.Half.value;

    /** The tensor's data address (0 for a tensor without storage, e.g. an empty one). */
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

    /** Moves kept c_p into the spare slots (their buffers are reused), so nothing is kept. */
    private void releaseKept() {
        for (int i = 0; i < kept.length; i++) {
            if (kept[i] == handle[i] && kept[i] != null) {
                handle[i].reset(); // drop the reference: the memory goes back to libtorch
                kept[i] = null;
            } else if (kept[i] != null && kept[i] == zeroKept[i]) {
                kept[i] = null;
            } else if (kept[i] != null) {
                if (spare[i] != null) {
                    spare[i].releaseReference();
                }
                spare[i] = kept[i];
                spareAddress[i] = keptContiguous[i] ? keptAddress[i] : 0;
                spareDtype[i] = keptContiguous[i] ? keptDtype[i] : -1; // a non-contiguous buffer is never reused
                spareNumel[i] = keptNumel[i];
                kept[i] = null;
            }
        }
        hasKept = false;
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        releaseKept();
        for (int i = 0; i < installed.length; i++) {
            forgetInstalled(i);
        }
        for (int i = 0; i < spare.length; i++) {
            for (Tensor[] held : new Tensor[][] {spare, handle, zeroKept}) {
                if (held[i] != null) {
                    held[i].releaseReference();
                    held[i] = null;
                }
            }
        }
        if (stepStatus != null) {
            stepStatus.releaseReference();
            stepStatus = null;
        }
        arena.close();
    }

    private void ensureOpen() {
        if (closed) {
            throw new IllegalStateException("engine is closed");
        }
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

        /** The cudaStream_t of libtorch's current stream on the device (0, the legacy default stream, if unknown). */
        static long current(int device) {
            if (GET_CURRENT == null) {
                return 0L;
            }
            try {
                Object s = GET_CURRENT.invoke(null, (byte) device);
                try (Pointer cudaStream = (Pointer) s; Pointer raw = (Pointer) STREAM.invoke(s)) {
                    return raw == null ? 0L : raw.address();
                }
            } catch (ReflectiveOperationException | LinkageError e) {
                throw new IllegalStateException("cannot read libtorch's current CUDA stream: " + e, e);
            }
        }

        static String unavailableReason() {
            return REASON;
        }
    }
}
