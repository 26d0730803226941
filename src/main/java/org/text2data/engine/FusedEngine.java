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
    /** Kept constraint gradients c_p (owned handles), null where the parameter had no gradient. */
    private final Tensor[] kept;
    /** Buffers of released c_p, reused as the next zeroed gradient or copy target (owned handles). */
    private final Tensor[] spare;
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
    private boolean hasKept;
    private boolean closed;

    /**
     * Creates an engine for these parameters, which must all live on the host or all on one CUDA device.
     *
     * @throws IllegalStateException if libtext2data cannot be loaded
     * @throws IllegalArgumentException if the parameters are on several devices or an unsupported one
     */
    public FusedEngine(Tensor[] params) {
        NativeLibrary.require();
        this.params = params.clone();
        int n = params.length;
        this.kept = new Tensor[n];
        this.spare = new Tensor[n];
        this.keptAddress = new long[n];
        this.keptDtype = new int[n];
        this.keptNumel = new long[n];
        this.keptContiguous = new boolean[n];
        this.slotParam = new int[n];
        this.device = commonDevice(this.params);
        this.arena = Arena.ofShared();
        this.table = arena.allocate(DESC_SIZE * Math.max(1, n), 16);
    }

    private static int commonDevice(Tensor[] params) {
        int common = Integer.MIN_VALUE;
        for (int i = 0; i < params.length; i++) {
            int d;
            try (Device dev = params[i].device()) {
                if (dev.is_cpu()) {
                    d = -1;
                } else if (dev.is_cuda()) {
                    d = dev.has_index() ? dev.index() : 0;
                } else {
                    throw new IllegalArgumentException("parameter " + i + " is on an unsupported device for the fused engine");
                }
            }
            if (common == Integer.MIN_VALUE) {
                common = d;
            } else if (common != d) {
                throw new IllegalArgumentException("parameters are on several devices (parameter " + i + " is on "
                        + deviceName(d) + ", parameter 0 on " + deviceName(common) + ")");
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

    /** The device of the parameters: -1 for the host, k for CUDA device k. */
    public int device() {
        return device;
    }

    @Override
    public void firstStep(boolean zeroGrad) {
        ensureOpen();
        releaseKept();
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                Tensor g = params[i].grad();
                if (!g.defined()) {
                    continue;
                }
                Tensor c;
                if (zeroGrad) {
                    // Swap: the current gradient becomes c_p (a new owning handle on the same tensor,
                    // no copy); the parameter gets a zeroed buffer that the next backward accumulates into.
                    c = new Tensor(g);
                    c.retainReference();
                    Tensor reuse = reusable(spare[i], g);
                    if (reuse != null) {
                        spare[i] = null;
                        reuse.zero_();
                        params[i].mutable_grad().put(reuse);
                        reuse.releaseReference(); // the gradient field holds the buffer now
                    } else {
                        params[i].mutable_grad().put(torch.zeros_like(g)); // handle freed with the scope
                    }
                } else {
                    Tensor buf = reusable(spare[i], g);
                    if (buf != null) {
                        spare[i] = null;
                        buf.copy_(g);
                        c = buf;
                    } else {
                        c = g.detach().clone();
                        c.retainReference();
                    }
                }
                keep(i, c);
            }
        }
        hasKept = true;
    }

    /** A spare buffer usable for g (same dtype, size, device, contiguous), or null. */
    private static Tensor reusable(Tensor buffer, Tensor g) {
        if (buffer == null) {
            return null;
        }
        boolean ok = buffer.scalar_type().value == g.scalar_type().value && buffer.is_same_size(g) && buffer.is_cuda() == g.is_cuda()
                && buffer.is_contiguous() && g.is_contiguous();
        return ok ? buffer : null;
    }

    private void keep(int i, Tensor c) {
        kept[i] = c;
        keptAddress[i] = dataAddress(c);
        keptDtype[i] = dtypeCode(c.scalar_type());
        keptNumel[i] = c.numel();
        keptContiguous[i] = c.is_contiguous();
    }

    @Override
    public int secondStep(Tensor gValue, double gConstraint, double alpha, double beta, boolean checkFinite) {
        ensureOpen();
        int options = checkFinite ? text2data_h.T2D_CHECK_FINITE() : 0;
        int count = 0;
        try (PointerScope scope = new PointerScope()) {
            for (int i = 0; i < params.length; i++) {
                if (kept[i] == null) {
                    continue; // no unconditional gradient: c_p = 0, g_p unchanged (documented deviation)
                }
                Tensor g = params[i].grad();
                if (!g.defined()) {
                    continue;
                }
                long base = DESC_SIZE * count;
                long gAddress = dataAddress(g);
                int gDevice = g.is_cuda() ? Math.max(device, 0) : -1;
                int cDevice = device < 0 ? -1 : device;
                table.set(ValueLayout.JAVA_LONG, base + OFF_GRAD, gAddress);
                table.set(ValueLayout.JAVA_LONG, base + OFF_CONSTRAINT, keptAddress[i]);
                table.set(ValueLayout.JAVA_LONG, base + OFF_NUMEL, g.numel());
                table.set(ValueLayout.JAVA_LONG, base + OFF_CNUMEL, keptNumel[i]);
                table.set(ValueLayout.JAVA_INT, base + OFF_DTYPE, dtypeCode(g.scalar_type()));
                table.set(ValueLayout.JAVA_INT, base + OFF_CDTYPE, keptDtype[i]);
                table.set(ValueLayout.JAVA_INT, base + OFF_DEVICE, gDevice);
                table.set(ValueLayout.JAVA_INT, base + OFF_CDEVICE, cDevice);
                int flags = (g.is_contiguous() ? text2data_h.T2D_GRAD_CONTIGUOUS() : 0)
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
        }
        return count;
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
        message = "fused projection failed (code " + rc + "): " + (param >= 0 ? "parameter " + param + ": " + detail : message);
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
    private static long dataAddress(Tensor t) {
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
            if (kept[i] != null) {
                if (spare[i] != null) {
                    spare[i].releaseReference();
                }
                spare[i] = kept[i];
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
        for (int i = 0; i < spare.length; i++) {
            if (spare[i] != null) {
                spare[i].releaseReference();
                spare[i] = null;
            }
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
