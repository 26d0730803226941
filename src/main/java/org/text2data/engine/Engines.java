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
        return false;
    }

    /** Why the fused engine is unavailable, or null when it is available. */
    public static String fusedUnavailableReason() {
        return "the fused engine is not built yet";
    }

    private static ProjectionEngine fused(Tensor[] params) {
        throw new UnsupportedOperationException("fused engine unavailable: " + fusedUnavailableReason());
    }
}
