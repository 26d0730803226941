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
 * <li>Thread pools: OpenBLAS's thread count is set (every core where libtorch's intra-op pool has one thread,
 *     else one), and libtorch's with {@code -Dtext2data.torchThreads=N}. {@code -Dtext2data.configureThreads=false}
 *     leaves both pools alone; {@code -Dtext2data.blasThreads=N} (0: leave OpenBLAS alone) or the
 *     {@code OPENBLAS_NUM_THREADS} environment variable choose OpenBLAS's count.</li>
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
     * libtorch's OpenMP pool and OpenBLAS's own pthread pool oversubscribe the cores when both run
     * wide: OpenBLAS's workers spin between GEMMs while libtorch's want the same cores. So one of the two
     * gets the cores: where libtorch's intra-op pool has one thread (its default is the number of
     * physical cores: one on a 2-vCPU machine), OpenBLAS gets every core, since the GEMMs dominate a
     * training step; where libtorch runs several threads, OpenBLAS runs on one. The user's choice wins:
     * {@code OPENBLAS_NUM_THREADS}, {@code -Dtext2data.blasThreads=N} (0 leaves OpenBLAS alone),
     * {@code -Dtext2data.torchThreads=N}, {@code -Dtext2data.configureThreads=false} (leaves both alone).
     * Measurements: bench/NOTES.md ("Threads").
     */
    private static void configureThreads() {
        if ("false".equalsIgnoreCase(System.getProperty("text2data.configureThreads", "true").trim())) {
            return; // the user keeps libtorch's and OpenBLAS's own settings
        }
        String torchProp = System.getProperty("text2data.torchThreads");
        if (torchProp != null && Integer.parseInt(torchProp.trim()) > 0) {
            torch.set_num_threads(Integer.parseInt(torchProp.trim()));
        }
        String prop = System.getProperty("text2data.blasThreads");
        if (prop == null && System.getenv("OPENBLAS_NUM_THREADS") != null) {
            return; // the user chose
        }
        int n = prop != null ? Integer.parseInt(prop.trim())
                : torch.get_num_threads() <= 1 ? Runtime.getRuntime().availableProcessors() : 1;
        if (n <= 0) {
            return;
        }
        findOpenBlasSetter().ifPresent(setter -> {
            try {
                setter.invokeExact(n);
                blasThreads = n;
            } catch (Throwable t) {
                // leave OpenBLAS as it is; performance only
            }
        });
    }

    private static Optional<MethodHandle> findOpenBlasSetter() {
        for (Map.Entry<String, String> e : Loader.getLoadedLibraries().entrySet()) {
            String path = e.getValue();
            if (path == null || !path.contains("openblas")) {
                continue;
            }
            try {
                SymbolLookup lookup = SymbolLookup.libraryLookup(java.nio.file.Path.of(path), Arena.global());
                Optional<MethodHandle> h = lookup.find("openblas_set_num_threads").map(addr ->
                        Linker.nativeLinker().downcallHandle(addr, FunctionDescriptor.ofVoid(ValueLayout.JAVA_INT)));
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
