package org.text2data.engine;

import java.util.concurrent.atomic.AtomicBoolean;

import org.bytedeco.pytorch.Tensor;

/** Chooses an engine once, by name. */
public final class Engines {
    private Engines() {
    }

    /**
     * {@link #create(String, Tensor[], String[])} with parameters named {@code #0}, {@code #1}, ...
     *
     * @param kind {@code "plain"}, {@code "fused"} or {@code "auto"}
     * @param params the parameter tensors the engine projects the gradients of
     * @return a new engine
     * @throws IllegalArgumentException if {@code kind} is unknown, or the fused engine refuses the parameters'
     *     devices
     * @throws UnsupportedOperationException if {@code kind} is {@code "fused"} and the native library cannot load
     */
    public static ProjectionEngine create(String kind, Tensor[] params) {
        return create(kind, params, defaultNames(params.length));
    }

    /**
     * {@code "plain"}: libtorch ops; {@code "fused"}: the native kernel, or an exception saying why it
     * cannot load; {@code "auto"}: fused when available, else plain. {@code names} (one per parameter)
     * name the parameters in the engine's error messages.
     *
     * @param kind {@code "plain"}, {@code "fused"} or {@code "auto"}
     * @param params the parameter tensors the engine projects the gradients of
     * @param names the parameters' names, one per tensor
     * @return a new engine
     * @throws IllegalArgumentException if {@code kind} is unknown, the lengths of {@code names} and
     *     {@code params} differ, or the fused engine refuses the parameters' devices
     * @throws UnsupportedOperationException if {@code kind} is {@code "fused"} and the native library cannot load
     */
    public static ProjectionEngine create(String kind, Tensor[] params, String[] names) {
        if (names.length != params.length) {
            throw new IllegalArgumentException(names.length + " names for " + params.length + " parameters");
        }
        return switch (kind) {
            case "plain" -> new PlainEngine(params, names);
            case "fused" -> fused(params, names);
            case "auto" -> {
                if (fusedAvailable()) {
                    yield fused(params, names);
                }
                logFallback();
                yield new PlainEngine(params, names);
            }
            default -> throw new IllegalArgumentException("unknown engine '" + kind + "'");
        };
    }

    /**
     * Whether the fused engine's native library loads on this machine.
     *
     * @return true when the fused engine can be created
     */
    public static boolean fusedAvailable() {
        return NativeLibrary.isAvailable();
    }

    /**
     * Why the fused engine is unavailable, or null when it is available.
     *
     * @return the load failure's type and message, or null
     */
    public static String fusedUnavailableReason() {
        return NativeLibrary.unavailableReason();
    }

    private static final AtomicBoolean FALLBACK_LOGGED = new AtomicBoolean();

    /** Engine.AUTO without the native library: says why, once per class loader. */
    private static void logFallback() {
        if (FALLBACK_LOGGED.compareAndSet(false, true)) {
            System.getLogger(Engines.class.getName()).log(System.Logger.Level.WARNING,
                    "text2data: the fused engine is not available ({0}); Engine.AUTO uses the plain engine and "
                    + "libtorch''s optimizers, which are slower", fusedUnavailableReason());
        }
    }

    /** Refuses records that are not one per parameter (a null array or element, or another count). */
    static void checkStates(ParamState[] states, int params) {
        if (states == null) {
            throw new IllegalArgumentException("the per-parameter states are null");
        }
        if (states.length != params) {
            throw new IllegalArgumentException(states.length + " per-parameter states for " + params + " parameters");
        }
        for (int i = 0; i < states.length; i++) {
            if (states[i] == null) {
                throw new IllegalArgumentException("the state of parameter #" + i + " is null");
            }
        }
    }

    /** {@code #0}, {@code #1}, ...: the names of parameters given without names. */
    static String[] defaultNames(int n) {
        String[] names = new String[n];
        for (int i = 0; i < n; i++) {
            names[i] = "#" + i;
        }
        return names;
    }

    private static ProjectionEngine fused(Tensor[] params, String[] names) {
        if (!fusedAvailable()) {
            throw new UnsupportedOperationException("the fused engine is not available here: " + fusedUnavailableReason()
                    + " (use Engine.PLAIN or Engine.AUTO)");
        }
        return new FusedEngine(params, names);
    }
}
