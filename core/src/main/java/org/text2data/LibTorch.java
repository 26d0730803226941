package org.text2data;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.Map;
import java.util.Optional;

import org.bytedeco.javacpp.Loader;
import org.bytedeco.pytorch.global.torch;

/**
 * Loads bytedeco's libtorch once, safely, and configures its thread pools.
 *
 * <p>Every entry point of the library calls {@link #ensureLoaded()} before touching a bytedeco class. An
 * application that touches bytedeco classes itself must make sure this runs first (bytedeco's own loading
 * crashes on an empty JavaCPP cache beside a system libtorch: docs/upstream-bytedeco-first-load.md): call it
 * in the main class's static initialiser, or run the JVM with {@code -javaagent:} the library's jar
 * ({@link Preload}).
 *
 * <p>What {@link #ensureLoaded()} changes for the whole process, and how to keep it from doing so:
 * <ul>
 * <li>JavaCPP's {@code maxPhysicalBytes} guard is set to 0 (off) unless
 *     {@code -Dorg.bytedeco.javacpp.maxPhysicalBytes} (or {@code maxphysicalbytes}) is set; set it to keep the
 *     guard. The guard reads the process's resident size on every native allocation JavaCPP tracks, a cost of
 *     microseconds per tensor; this library frees deterministically. Takes effect only if no JavaCPP
 *     {@code Pointer} was used before.</li>
 * <li>Thread pools: libtorch's intra-op pool gets one thread and OpenBLAS one per available core (the
 *     processors this process may run on: {@code taskset} and container limits count), the fastest choice
 *     measured for training steps on an otherwise idle machine (bench/NOTES.md); on cores shared with other busy
 *     processes, {@code -Dtext2data.blasThreads=1} is faster. Each pool keeps the user's choice where one is made:
 *     {@code -Dtext2data.torchThreads=N} or {@code OMP_NUM_THREADS} for libtorch, {@code -Dtext2data.blasThreads=N}
 *     or {@code OPENBLAS_NUM_THREADS} for OpenBLAS (N = 0 leaves that pool alone); where libtorch is given
 *     several threads, OpenBLAS gets one. {@code -Dtext2data.configureThreads=false} leaves both pools
 *     alone.</li>
 * <li>bytedeco's libtorch, OpenBLAS and libgomp are loaded from the JavaCPP cache (extracted there, all of
 *     them, on first use).</li>
 * </ul>
 */
public final class LibTorch {

    private static volatile boolean loaded;
    private static volatile int blasThreads = -1;

    private LibTorch() {
    }

    /**
     * Loads libtorch (idempotent, thread-safe), with the process-wide settings listed in the class comment.
     *
     * @throws IllegalStateException if a shared library that libtorch needs is missing (the CUDA runtime, for
     *                               the {@code -Pgpu} build); the message names it and says what to install.
     *                               A load failure that names no missing library is rethrown as its original
     *                               {@link LinkageError}.
     */
    public static void ensureLoaded() {
        if (loaded) {
            return;
        }
        synchronized (LibTorch.class) {
            if (loaded) {
                return;
            }
            try {
                SafeLoading.apply();
                Loader.load(torch.class);
            } catch (LinkageError e) {
                throw NativeLoadFailure.explain(e); // a missing CUDA library: named, with what to install
            }
            configureThreads();
            loaded = true;
        }
    }

    /**
     * The number of threads OpenBLAS was set to. Loads libtorch first.
     *
     * @return the thread count set, or -1 where OpenBLAS was left alone
     */
    public static int blasThreads() {
        ensureLoaded();
        return blasThreads;
    }

    /**
     * libtorch's intra-op thread count. Loads libtorch first.
     *
     * @return {@code torch.get_num_threads()}
     */
    public static int torchThreads() {
        ensureLoaded();
        return torch.get_num_threads();
    }

    /**
     * Sets OpenBLAS's thread count now, as {@code -Dtext2data.blasThreads} does when libtorch loads: for code that
     * knows its matrices are small, where a second spinning OpenBLAS thread only loses on a busy machine. Loads
     * libtorch first.
     *
     * @param n the thread count, {@code >= 1}
     * @return true if it was set (then {@link #blasThreads()} returns {@code n}); false where OpenBLAS was not found
     * @throws IllegalArgumentException if {@code n < 1}
     */
    public static synchronized boolean setBlasThreads(int n) {
        if (n < 1) {
            throw new IllegalArgumentException("OpenBLAS thread count must be >= 1, got " + n);
        }
        ensureLoaded();
        boolean set = applyBlasThreads(splits > 0 ? Math.max(1, n / 2) : n); // concurrent passes running: half
        if (set) {
            blasThreads = n;
        }
        return set;
    }

    /** Concurrent passes running now (see {@link #beginBlasSplit()}). */
    private static int splits;

    /**
     * Begins concurrent passes ({@link Constraint#setConcurrentPasses}): two threads each run a forward/backward
     * pass, so OpenBLAS, where this library sized it to {@code n > 1} threads, gets {@code n / 2} per caller until
     * the last {@link #endBlasSplit()} (two callers on {@code n} threads each fight for the cores: measured 1.2-2x
     * slower on 2 cores, bench/NOTES.md). {@link #blasThreads()} keeps saying {@code n}. Costs well under a
     * microsecond; nested and concurrent uses are counted.
     */
    static synchronized void beginBlasSplit() {
        if (splits++ == 0 && blasThreads > 1) {
            applyBlasThreads(blasThreads / 2);
        }
    }

    /** Ends what {@link #beginBlasSplit()} began: the last one restores OpenBLAS's thread count. */
    static synchronized void endBlasSplit() {
        if (splits > 0 && --splits == 0 && blasThreads > 1) {
            applyBlasThreads(blasThreads);
        }
    }

    /** OpenBLAS's {@code openblas_set_num_threads}, looked up once (empty where OpenBLAS is not loaded). */
    private static Optional<MethodHandle> blasSetter;

    /**
     * Calls OpenBLAS's setter (found once) with {@code n}; {@link #blasThreads} is the caller's to record. The caller
     * holds LibTorch's lock.
     */
    private static boolean applyBlasThreads(int n) {
        if (blasSetter == null) {
            blasSetter = findOpenBlasSetter();
        }
        if (blasSetter.isEmpty()) {
            return false;
        }
        try {
            blasSetter.get().invokeExact(n);
        } catch (Throwable t) {
            return false; // OpenBLAS left as it is; performance only
        }
        return true;
    }

    /**
     * Whether this libtorch build can use a CUDA device right now. Loads libtorch first.
     *
     * @return true if CUDA is available; false if not, or if asking fails
     */
    public static boolean cudaAvailable() {
        ensureLoaded();
        try {
            return torch.cuda_is_available();
        } catch (Throwable t) {
            return false;
        }
    }

    /**
     * Why {@link #cudaAvailable()} is false, in words a user can act on, or null where CUDA is available: this
     * libtorch is the CPU build (no {@code -Pgpu}); or it is the CUDA build and a CUDA library it needs is
     * missing (named, with what to install); or the CUDA build loaded and sees no device or driver.
     *
     * @return the reason, or null if CUDA is available
     */
    public static String cudaUnavailableReason() {
        if (cudaAvailable()) {
            return null;
        }
        return NativeLoadFailure.cudaUnavailableReason();
    }

    /**
     * Sizes libtorch's intra-op pool and OpenBLAS's pool, by {@link #threadPlan}, unless
     * {@code -Dtext2data.configureThreads=false}.
     */
    private static void configureThreads() {
        if ("false".equalsIgnoreCase(System.getProperty("text2data.configureThreads", "true").trim())) {
            return; // the user keeps libtorch's and OpenBLAS's own settings
        }
        ThreadPlan plan = threadPlan(Runtime.getRuntime().availableProcessors(), torch.get_num_threads(),
                System.getProperty("text2data.torchThreads"), System.getProperty("text2data.blasThreads"),
                System.getenv("OPENBLAS_NUM_THREADS") != null,
                System.getenv("OMP_NUM_THREADS") != null || System.getenv("MKL_NUM_THREADS") != null);
        if (plan.torch() > 0) {
            torch.set_num_threads(plan.torch());
        }
        if (plan.blas() > 0 && applyBlasThreads(plan.blas())) {
            blasThreads = plan.blas();
        }
    }

    /**
     * The thread counts {@link #threadPlan} chooses; 0 leaves that pool as it is.
     *
     * @param torch libtorch's intra-op thread count to set ({@code torch.set_num_threads}), or 0
     * @param blas  OpenBLAS's thread count to set ({@code openblas_set_num_threads}), or 0
     */
    record ThreadPlan(int torch, int blas) {
    }

    /**
     * The thread rule, a pure function of what the process sees. libtorch's OpenMP workers and OpenBLAS's
     * pthread workers both spin-wait for work; when both pools are wide they fight for the cores, and the GEMMs,
     * which dominate a training step of these models, wait for descheduled workers. So one pool gets the cores,
     * and it is OpenBLAS's: libtorch's intra-op pool gets one thread, OpenBLAS one per available core
     * ({@code availableProcessors()}, which honours {@code taskset} and cgroup CPU limits; libtorch's own
     * default counts the machine's cores and ignores them). Measured on 1 and 2 cores, for the plain two-pass step
     * and {@code runStep} on the four benchmark workloads: bench/NOTES.md ("Threads, on every core count"). Where
     * other processes keep the cores busy, any second spinning thread loses, and both pools on one thread
     * ({@code -Dtext2data.blasThreads=1}) measured 2-14x faster; the library cannot tell, so it takes the choice
     * for a dedicated machine.
     *
     * <p>The user's choices win, each pool separately: {@code -Dtext2data.torchThreads=N} (0: leave libtorch's
     * pool alone) or {@code OMP_NUM_THREADS} / {@code MKL_NUM_THREADS} in the environment (libtorch read them:
     * its pool is left as they made it); {@code -Dtext2data.blasThreads=N} (0: leave OpenBLAS alone) or
     * {@code OPENBLAS_NUM_THREADS}. Where the user gives libtorch several threads, OpenBLAS gets one unless the
     * user sizes it too, so that the two pools never both run wide by this rule.
     *
     * @param cores        the processors available to this process ({@code availableProcessors()})
     * @param torchDefault libtorch's intra-op thread count before the rule runs
     * @param torchProp    {@code text2data.torchThreads}, or null
     * @param blasProp     {@code text2data.blasThreads}, or null
     * @param blasEnv      whether {@code OPENBLAS_NUM_THREADS} is set
     * @param ompEnv       whether {@code OMP_NUM_THREADS} or {@code MKL_NUM_THREADS} is set
     * @return the counts to set
     * @throws IllegalArgumentException if a property is not a non-negative integer (named in the message)
     */
    static ThreadPlan threadPlan(int cores, int torchDefault, String torchProp, String blasProp, boolean blasEnv,
                                 boolean ompEnv) {
        int torchSet = torchProp != null ? count("text2data.torchThreads", torchProp) : ompEnv ? 0 : 1;
        int torchThreads = torchSet > 0 ? torchSet : torchDefault;
        int blasSet = blasProp != null ? count("text2data.blasThreads", blasProp)
                : blasEnv ? 0 : torchThreads <= 1 ? Math.max(1, cores) : 1;
        return new ThreadPlan(torchSet, blasSet);
    }

    private static int count(String property, String value) {
        try {
            int n = Integer.parseInt(value.trim());
            if (n >= 0) {
                return n;
            }
        } catch (NumberFormatException e) {
            // the message below
        }
        throw new IllegalArgumentException("-D" + property + "=" + value + " is not a thread count: expected a "
                + "non-negative integer (0 leaves the pool as it is)");
    }

    private static Optional<MethodHandle> findOpenBlasSetter() {
        return findOpenBlas("openblas_set_num_threads", FunctionDescriptor.ofVoid(ValueLayout.JAVA_INT));
    }

    /**
     * OpenBLAS's thread count as OpenBLAS reports it now ({@code openblas_get_num_threads}), for tests; -1 where
     * OpenBLAS is not found.
     */
    static synchronized int blasThreadsNow() {
        ensureLoaded();
        return findOpenBlas("openblas_get_num_threads", FunctionDescriptor.of(ValueLayout.JAVA_INT)).map(h -> {
            try {
                return (int) h.invokeExact();
            } catch (Throwable t) {
                return -1;
            }
        }).orElse(-1);
    }

    /**
     * Whether this thread's CPU flushes denormal floats to zero ({@code torch.globalContext().setFlushDenormal}, a
     * per-thread setting of the CPU, which libtorch cannot read back): probed with one float multiplication whose
     * exact result is denormal. A few microseconds.
     */
    static boolean flushesDenormals() {
        try (org.bytedeco.javacpp.PointerScope scope = new org.bytedeco.javacpp.PointerScope()) {
            org.bytedeco.pytorch.Tensor t = torch.full(new long[] {1}, new org.bytedeco.pytorch.Scalar(1e-30),
                    new org.bytedeco.pytorch.TensorOptions(torch.ScalarType.Float));
            return t.mul_(new org.bytedeco.pytorch.Scalar(1e-10)).item_float() == 0f; // 1e-40 is below 2^-126
        }
    }

    /** A function of the OpenBLAS that libtorch's GEMMs call (bytedeco's, the first one loaded). */
    private static Optional<MethodHandle> findOpenBlas(String name, FunctionDescriptor type) {
        for (Map.Entry<String, String> e : Loader.getLoadedLibraries().entrySet()) {
            String path = e.getValue();
            if (path == null || !path.contains("openblas")) {
                continue;
            }
            try {
                SymbolLookup lookup = SymbolLookup.libraryLookup(java.nio.file.Path.of(path), Arena.global());
                Optional<MethodHandle> h = lookup.find(name).map(addr ->
                        Linker.nativeLinker().downcallHandle(addr, type));
                if (h.isPresent()) {
                    return h;
                }
            } catch (RuntimeException ignored) {
                // not a loadable path; try the next
            }
        }
        return Optional.empty();
    }
}
