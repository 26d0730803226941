package org.text2data;

import java.util.Locale;

/** Which engine computes the constrained step. Every engine gives the reference's numbers. */
public enum Engine {
    /** The fused native kernel when its library loads on this machine, else {@link #PLAIN}. */
    AUTO,
    /** Plain libtorch tensor operations, per tensor, as the Python reference computes them. */
    PLAIN,
    /** The fused native kernel (C++ on CPU, CUDA on GPU); fails clearly where it cannot load. */
    FUSED;

    /**
     * The engine of a name, ignoring case and surrounding spaces.
     *
     * @param name {@code auto}, {@code plain} or {@code fused}
     * @return the engine of that name
     * @throws IllegalArgumentException if {@code name} names no engine
     */
    public static Engine parse(String name) {
        try {
            return valueOf(name.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("unknown engine '" + name + "': expected auto, plain or fused");
        }
    }

    /**
     * The name in lower case, as {@link #parse} accepts it.
     *
     * @return {@code auto}, {@code plain} or {@code fused}
     */
    @Override
    public String toString() {
        return name().toLowerCase(Locale.ROOT);
    }
}
