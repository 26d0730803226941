package org.text2data.demo;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.TreeSet;

/**
 * The demo's data set, in the spirit of the paper's time-series experiment: series with a trend, a
 * frequency, an amplitude and a noise level, each with a short text description built from them.
 * Everything follows from the seed.
 */
public final class TimeSeries {

    /** Nominal property levels; each series jitters around one level of each. */
    static final double[] SLOPES = {-1.5, 0.0, 1.5};
    static final double[] CYCLES = {1, 2, 4};
    static final double[] AMPLITUDES = {0.3, 1.0};
    static final double[] NOISES = {0.05, 0.3};

    private static final String[][] TREND_WORDS = {{"falling", "decreasing", "downward"},
            {"flat", "level", "steady"}, {"rising", "increasing", "upward"}};
    private static final String[][] FREQ_WORDS = {{"slow", "low-frequency"}, {"moderate", "medium-frequency"},
            {"fast", "high-frequency"}};
    private static final String[][] AMP_WORDS = {{"small", "gentle"}, {"large", "strong"}};
    private static final String[][] NOISE_WORDS = {{"clean", "smooth"}, {"noisy", "jittery"}};

    /** One series with its true properties, its nominal levels and its description. */
    public record Series(float[] values, double slope, double cycles, double amplitude, double noise,
                         int[] levels, String text) {
    }

    /** A prompt: the levels asked for, and its words. */
    public record Prompt(int[] levels, String text) {
        double slope() {
            return SLOPES[levels[0]];
        }

        double cycles() {
            return CYCLES[levels[1]];
        }

        double amplitude() {
            return AMPLITUDES[levels[2]];
        }

        double noise() {
            return NOISES[levels[3]];
        }
    }

    private TimeSeries() {
    }

    /** {@code n} series of {@code length} points. */
    public static List<Series> generate(int n, int length, Random rnd) {
        List<Series> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            int[] lv = {rnd.nextInt(3), rnd.nextInt(3), rnd.nextInt(2), rnd.nextInt(2)};
            double slope = SLOPES[lv[0]] + 0.15 * rnd.nextGaussian();
            double cycles = CYCLES[lv[1]] * (1 + 0.05 * rnd.nextGaussian());
            double amp = AMPLITUDES[lv[2]] * (1 + 0.1 * rnd.nextGaussian());
            double noise = NOISES[lv[3]] * (1 + 0.1 * rnd.nextGaussian());
            double phase = 2 * Math.PI * rnd.nextDouble();
            // not described in words: the waveform's shape and the series' level; the unlabelled 90%
            // carry most of what there is to learn about them
            int shape = rnd.nextInt(4);
            double level = 0.5 * rnd.nextGaussian();
            float[] v = new float[length];
            for (int t = 0; t < length; t++) {
                double x = (double) t / length;
                v[t] = (float) (level + slope * (x - 0.5) + amp * wave(shape, 2 * Math.PI * cycles * x + phase)
                        + noise * rnd.nextGaussian());
            }
            out.add(new Series(v, slope, cycles, amp, noise, lv, describe(lv, rnd)));
        }
        return out;
    }

    /** Sine, triangle, rounded square or sawtooth, each scaled so that its fundamental has amplitude 1. */
    static double wave(int shape, double a) {
        double u = a / (2 * Math.PI);
        u -= Math.floor(u); // phase in [0, 1)
        return switch (shape) {
            case 0 -> Math.sin(a);
            case 1 -> Math.PI * Math.PI / 8 * (u < 0.25 ? 4 * u : u < 0.75 ? 2 - 4 * u : 4 * u - 4);
            case 2 -> Math.PI / 4 * Math.tanh(6 * Math.sin(a)) / Math.tanh(6);
            default -> Math.PI / 2 * (u < 0.5 ? 2 * u : 2 * u - 2);
        };
    }

    /** A description of the levels in one of a few phrasings, with synonyms. */
    public static String describe(int[] lv, Random rnd) {
        String trend = pick(TREND_WORDS[lv[0]], rnd);
        String freq = pick(FREQ_WORDS[lv[1]], rnd);
        String amp = pick(AMP_WORDS[lv[2]], rnd);
        String noise = pick(NOISE_WORDS[lv[3]], rnd);
        return switch (rnd.nextInt(3)) {
            case 0 -> "a " + trend + " series with " + freq + " oscillations of " + amp + " amplitude, " + noise;
            case 1 -> noise + " signal, " + trend + " trend, " + amp + " " + freq + " waves";
            default -> trend + " and " + noise + ", it oscillates " + freq + " with " + amp + " swings";
        };
    }

    /** One prompt per combination of levels (36), each in a random phrasing. */
    public static List<Prompt> prompts(Random rnd) {
        List<Prompt> out = new ArrayList<>();
        for (int a = 0; a < 3; a++) {
            for (int b = 0; b < 3; b++) {
                for (int c = 0; c < 2; c++) {
                    for (int d = 0; d < 2; d++) {
                        int[] lv = {a, b, c, d};
                        out.add(new Prompt(lv, describe(lv, rnd)));
                    }
                }
            }
        }
        return out;
    }

    /** Every word any description can use, sorted: the text encoder's vocabulary. */
    public static List<String> vocabulary() {
        TreeSet<String> words = new TreeSet<>();
        for (String s : List.of("a series with oscillations of amplitude", "signal trend waves",
                "and it oscillates with swings")) {
            words.addAll(List.of(s.split(" ")));
        }
        for (String[][] group : new String[][][] {TREND_WORDS, FREQ_WORDS, AMP_WORDS, NOISE_WORDS}) {
            for (String[] syn : group) {
                words.addAll(List.of(syn));
            }
        }
        return List.copyOf(words);
    }

    private static String pick(String[] words, Random rnd) {
        return words[rnd.nextInt(words.length)];
    }
}
