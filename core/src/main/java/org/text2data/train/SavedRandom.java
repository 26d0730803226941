package org.text2data.train;

import java.util.Random;

/**
 * {@link java.util.Random}'s generator (the 48-bit linear congruential generator its javadoc specifies) with a
 * state that can be read and restored, so that a checkpoint can hold where a seeded sequence stands. For the same
 * seed it draws exactly what {@code new Random(seed)} draws with {@code nextInt}, {@code nextLong},
 * {@code nextDouble} and the other methods built on {@link #next(int)}; {@code nextGaussian}'s cached second value
 * is not part of the state, so it is not offered.
 */
final class SavedRandom extends Random {
    private static final long MULTIPLIER = 0x5DEECE66DL;
    private static final long ADDEND = 0xBL;
    private static final long MASK = (1L << 48) - 1;

    private long state;

    SavedRandom(long seed) {
        super(0);
        setSeed(seed);
    }

    @Override
    public synchronized void setSeed(long seed) {
        state = (seed ^ MULTIPLIER) & MASK;
    }

    @Override
    protected int next(int bits) {
        state = (state * MULTIPLIER + ADDEND) & MASK;
        return (int) (state >>> (48 - bits));
    }

    @Override
    public double nextGaussian() {
        throw new UnsupportedOperationException("nextGaussian's cached value is not part of the saved state");
    }

    /** The generator's 48-bit state. */
    long state() {
        return state;
    }

    /** Continues from a state returned by {@link #state()}. */
    void restore(long saved) {
        if ((saved & ~MASK) != 0) {
            throw new IllegalArgumentException("not a generator state: " + saved);
        }
        state = saved;
    }
}
