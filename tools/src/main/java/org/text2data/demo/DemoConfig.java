package org.text2data.demo;

/** Sizes and hyperparameters of the demo; {@link #quick()}, {@link #standard()} and {@link #full()}. */
public record DemoConfig(String name, int trainSeries, int testSeries, int length, double labelledFraction,
                         int hidden, int layers, int batchSize, int pretrainEpochs, int finetuneEpochs,
                         double lr, double finetuneLr, double relax, double alpha, double beta,
                         int prompts, int samplesPerPrompt, double guidance, long seed) {

    public DemoConfig {
        if (trainSeries < 10 || testSeries < 10) {
            throw new IllegalArgumentException("the demo needs at least 10 training and 10 test series");
        }
        if (!(labelledFraction > 0 && labelledFraction <= 1)) {
            throw new IllegalArgumentException("labelled fraction must lie in (0, 1], got " + labelledFraction);
        }
        if ((int) Math.round(trainSeries * labelledFraction) == 0) {
            throw new IllegalArgumentException("zero labelled examples: " + trainSeries + " series at "
                    + labelledFraction + " labelled");
        }
        if (!Double.isFinite(relax) || relax <= 0) {
            throw new IllegalArgumentException("relax factor must be a positive finite number, got " + relax);
        }
        if (!Double.isFinite(guidance) || guidance < 0) {
            throw new IllegalArgumentException("guidance scale must be a finite number >= 0, got " + guidance);
        }
        if (prompts < 1 || prompts > 36 || samplesPerPrompt < 1) {
            throw new IllegalArgumentException("prompts must lie in 1..36 and samples per prompt be positive");
        }
    }

    /** Seconds on a 2-core machine: for tests. */
    public static DemoConfig quick() {
        return new DemoConfig("quick", 400, 120, 32, 0.1, 64, 2, 64, 6, 30, 2e-3, 1e-3, 1.0, 1.0, 1.0, 12, 4, 1.0, 7);
    }

    /** The default: about a minute or two on a 2-core machine. */
    public static DemoConfig standard() {
        return new DemoConfig("standard", 3000, 400, 32, 0.1, 128, 3, 64, 40, 300, 2e-3, 2e-3, 1.0, 1.0, 1.0, 36,
                8, 1.0, 7);
    }

    /** Longer and larger, for better numbers. */
    public static DemoConfig full() {
        return new DemoConfig("full", 8000, 800, 32, 0.1, 256, 3, 64, 60, 200, 2e-3, 2e-3, 1.0, 1.0, 1.0, 36,
                16, 1.0, 7);
    }

    public DemoConfig withSeed(long s) {
        return new DemoConfig(name, trainSeries, testSeries, length, labelledFraction, hidden, layers, batchSize,
                pretrainEpochs, finetuneEpochs, lr, finetuneLr, relax, alpha, beta, prompts, samplesPerPrompt, guidance, s);
    }

    public DemoConfig withRelax(double r) {
        return new DemoConfig(name, trainSeries, testSeries, length, labelledFraction, hidden, layers, batchSize,
                pretrainEpochs, finetuneEpochs, lr, finetuneLr, r, alpha, beta, prompts, samplesPerPrompt, guidance, seed);
    }

    public DemoConfig withLabelledFraction(double f) {
        return new DemoConfig(name, trainSeries, testSeries, length, f, hidden, layers, batchSize,
                pretrainEpochs, finetuneEpochs, lr, finetuneLr, relax, alpha, beta, prompts, samplesPerPrompt, guidance, seed);
    }

    public DemoConfig withGuidance(double w) {
        return new DemoConfig(name, trainSeries, testSeries, length, labelledFraction, hidden, layers, batchSize,
                pretrainEpochs, finetuneEpochs, lr, finetuneLr, relax, alpha, beta, prompts, samplesPerPrompt, w, seed);
    }

    public int labelled() {
        return (int) Math.round(trainSeries * labelledFraction);
    }
}
