package org.text2data.engine;

import org.bytedeco.pytorch.Tensor;

/** Chooses an engine once, by name. */
public final class Engines {
    private Engines() {
    }

    /**
     * {@code "plain"}: libtorch ops; {@code "fused"}: the native kernel, or an exception saying why it
     * cannot load; {@code "auto"}: fused when available, else plain.
     */
    public static ProjectionEngine create(String kind, Tensor[] params) {
        return switch (kind) {
            case "plain" -> new PlainEngine(params);
            case "fused" -> fused(params);
            case "auto" -> fusedAvailable() ? fused(params) : new PlainEngine(params);
            default -> throw new IllegalArgumentException("unknown engine '" + kind + "'");
        };
    }

    /** Whether the fused engine's native library loads on this machine. */
    public static boolean fusedAvailable() {
        return NativeLibrary.isAvailable();
    }

    /** Why the fused engine is unavailable, or null when it is available. */
    public static String fusedUnavailableReason() {
        return NativeLibrary.unavailableReason();
    }

    private static ProjectionEngine fused(Tensor[] params) {
        if (!fusedAvailable()) {
            throw new UnsupportedOperationException("the fused engine is not available here: " + fusedUnavailableReason()
                    + " (use Engine.PLAIN or Engine.AUTO)");
        }
        return new FusedEngine(params);
    }
}
