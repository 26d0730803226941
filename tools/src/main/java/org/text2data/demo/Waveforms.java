package org.text2data.demo;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.TreeSet;

/**
 * The demo's data set: series of {@link #LENGTH} points generated from four described factors, a waveform shape
 * (four levels), a number of cycles, an amplitude and a trend (three levels each), plus variation the text never
 * describes: phase, level, noise and a smooth time warp. Everything follows from the seed; nothing is downloaded.
 */
public final class Waveforms {

    /** Points per series. */
    public static final int LENGTH = 48;

    /** The factors, in the order of {@link Series#levels()}. */
    public static final List<String> FACTORS = List.of("shape", "cycles", "amplitude", "trend");

    /** Number of levels of each factor. */
    static final int[] LEVELS = {4, 3, 3, 3};

    static final String[] SHAPES = {"sine", "square", "sawtooth", "spike"};
    static final double[] CYCLES = {1, 2, 3};
    static final double[] AMPLITUDES = {0.8, 1.6, 3.2};
    static final double[] SLOPES = {-2.0, 0.0, 2.0};

    private static final String[][] SHAPE_WORDS = {{"sine", "sinusoidal"}, {"square", "boxy"},
            {"sawtooth", "ramp"}, {"spike", "spiky"}};
    private static final String[][] CYCLE_WORDS = {{"one", "single"}, {"two", "double"}, {"three", "triple"}};
    private static final String[][] AMP_WORDS = {{"small", "faint"}, {"medium", "moderate"}, {"large", "strong"}};
    private static final String[][] TREND_WORDS = {{"falling", "decreasing"}, {"flat", "steady"},
            {"rising", "increasing"}};
    private static final String[] TEMPLATES = {"a %4$s %3$s %1$s signal with %2$s cycles",
            "%3$s %1$s wave, %2$s cycles, %4$s trend", "%2$s cycles of a %1$s pattern, %3$s and %4$s"};

    /**
     * One series.
     *
     * @param values the {@link #LENGTH} values
     * @param levels the level of each factor, in the order of {@link #FACTORS}
     * @param text its description
     */
    public record Series(float[] values, int[] levels, String text) {
    }

    private Waveforms() {
    }

    /** Number of combinations of levels. */
    static int combinations() {
        return LEVELS[0] * LEVELS[1] * LEVELS[2] * LEVELS[3];
    }

    /** The levels of combination {@code k} (0 .. combinations - 1). */
    static int[] levelsOf(int k) {
        int[] lv = new int[4];
        for (int f = 3; f >= 0; f--) {
            lv[f] = k % LEVELS[f];
            k /= LEVELS[f];
        }
        return lv;
    }

    /** The index of a combination of levels. */
    static int combinationOf(int[] lv) {
        int k = 0;
        for (int f = 0; f < 4; f++) {
            k = k * LEVELS[f] + lv[f];
        }
        return k;
    }

    /** {@code n} series with levels drawn uniformly. */
    static List<Series> generate(int n, Random rnd) {
        List<Series> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            int[] lv = new int[4];
            for (int f = 0; f < 4; f++) {
                lv[f] = rnd.nextInt(LEVELS[f]);
            }
            out.add(series(lv, rnd));
        }
        return out;
    }

    /** One series of the given levels, with fresh nuisance variation and a random phrasing. */
    static Series series(int[] lv, Random rnd) {
        double cycles = CYCLES[lv[1]] * (1 + 0.04 * rnd.nextGaussian());
        double amp = AMPLITUDES[lv[2]] * (1 + 0.08 * rnd.nextGaussian());
        double slope = SLOPES[lv[3]] + 0.15 * rnd.nextGaussian();
        // undescribed: phase, level, noise, a smooth monotone time warp
        double phase = rnd.nextDouble();
        double level = 0.3 * rnd.nextGaussian();
        double noise = 0.01 + 0.04 * rnd.nextDouble();
        double warp = 0.2 * (rnd.nextDouble() - 0.5);
        float[] v = new float[LENGTH];
        for (int t = 0; t < LENGTH; t++) {
            double x = (t + 0.5) / LENGTH;
            double xw = x + warp * Math.sin(Math.PI * x) / Math.PI;
            v[t] = (float) (level + slope * (x - 0.5) + amp * wave(lv[0], cycles, xw, phase)
                    + noise * rnd.nextGaussian());
        }
        return new Series(v, lv, describe(lv, rnd));
    }

    /** The waveform {@code shape} at (warped) time {@code x} in [0, 1], {@code cycles} periods; values in [-1, 1]. */
    static double wave(int shape, double cycles, double x, double phase) {
        double u = cycles * x + phase; // periods elapsed
        double frac = u - Math.floor(u);
        return switch (shape) {
            case 0 -> Math.sin(2 * Math.PI * u);
            case 1 -> Math.tanh(6 * Math.sin(2 * Math.PI * u)) / Math.tanh(6);
            case 2 -> 2 * frac - 1;
            case 3 -> { // one sharp spike per period on a low baseline
                double d = Math.min(frac, 1 - frac) * LENGTH / cycles; // points from the spike
                yield 2 * Math.exp(-d * d / 2.0) - 1;
            }
            default -> throw new IllegalArgumentException("no shape " + shape);
        };
    }

    /** A description of the levels, in one of a few phrasings with synonyms. */
    static String describe(int[] lv, Random rnd) {
        String shape = SHAPE_WORDS[lv[0]][rnd.nextInt(2)];
        String cyc = CYCLE_WORDS[lv[1]][rnd.nextInt(2)];
        String amp = AMP_WORDS[lv[2]][rnd.nextInt(2)];
        String trend = TREND_WORDS[lv[3]][rnd.nextInt(2)];
        return String.format(TEMPLATES[rnd.nextInt(TEMPLATES.length)], shape, cyc, amp, trend);
    }

    /** Every word a description can contain, sorted. */
    static List<String> vocabulary() {
        TreeSet<String> words = new TreeSet<>();
        for (String[][] table : new String[][][] {SHAPE_WORDS, CYCLE_WORDS, AMP_WORDS, TREND_WORDS}) {
            for (String[] syn : table) {
                words.addAll(Arrays.asList(syn));
            }
        }
        for (String t : TEMPLATES) {
            for (String w : t.replaceAll("%\\d\\$s", " ").split("[^a-z]+")) {
                if (!w.isEmpty()) {
                    words.add(w);
                }
            }
        }
        return List.copyOf(words);
    }

    /**
     * {@code k} distinct combinations, drawn at random until every level of every factor appears in them (so the
     * labelled series cover every level, but only these combinations).
     *
     * @throws IllegalArgumentException if {@code k} is too small to cover the four shapes or not below the
     *         number of combinations
     */
    static int[] seenCombinations(int k, Random rnd) {
        if (k < LEVELS[0] || k >= combinations()) {
            throw new IllegalArgumentException("seen combinations must lie in " + LEVELS[0] + ".."
                    + (combinations() - 1) + " (every level of every factor must appear), got " + k);
        }
        while (true) {
            List<Integer> all = new ArrayList<>();
            for (int c = 0; c < combinations(); c++) {
                all.add(c);
            }
            java.util.Collections.shuffle(all, rnd);
            int[] pick = all.subList(0, k).stream().mapToInt(Integer::intValue).sorted().toArray();
            boolean[][] covered = new boolean[4][];
            for (int f = 0; f < 4; f++) {
                covered[f] = new boolean[LEVELS[f]];
            }
            for (int c : pick) {
                int[] lv = levelsOf(c);
                for (int f = 0; f < 4; f++) {
                    covered[f][lv[f]] = true;
                }
            }
            boolean ok = true;
            for (boolean[] cf : covered) {
                for (boolean b : cf) {
                    ok &= b;
                }
            }
            if (ok) {
                return pick;
            }
        }
    }
}
