package org.text2data.train;

/**
 * How a training loop runs: epochs, batch size, shuffling, learning-rate schedule, periodic evaluation
 * and early stopping. Fluent and checked: {@code new TrainConfig().epochs(20).batchSize(64).seed(1)}.
 */
public final class TrainConfig {
    private int epochs = 1;
    private int batchSize = 64;
    private boolean shuffle = true;
    private long seed = 0;
    private LrSchedule schedule = LrSchedule.constant();
    private int evalEvery = 0;
    private int patience = 0;
    private long maxSteps = Long.MAX_VALUE;
    private double condDropout = 0;
    private java.nio.file.Path checkpointFile;
    private long checkpointEvery;
    private java.nio.file.Path resumeFrom;

    public TrainConfig epochs(int n) {
        if (n <= 0) {
            throw new IllegalArgumentException("epochs must be positive, got " + n);
        }
        epochs = n;
        return this;
    }

    public TrainConfig batchSize(int n) {
        if (n <= 0) {
            throw new IllegalArgumentException("batch size must be positive, got " + n);
        }
        batchSize = n;
        return this;
    }

    public TrainConfig shuffle(boolean on) {
        shuffle = on;
        return this;
    }

    public TrainConfig seed(long s) {
        seed = s;
        return this;
    }

    public TrainConfig schedule(LrSchedule s) {
        if (s == null) {
            throw new IllegalArgumentException("schedule is null");
        }
        schedule = s;
        return this;
    }

    /** Evaluate every {@code steps} steps (0: never). */
    public TrainConfig evalEvery(int steps) {
        if (steps < 0) {
            throw new IllegalArgumentException("evalEvery must be >= 0, got " + steps);
        }
        evalEvery = steps;
        return this;
    }

    /** Stop after {@code evaluations} evaluations without improvement (0: never stop early). */
    public TrainConfig patience(int evaluations) {
        if (evaluations < 0) {
            throw new IllegalArgumentException("patience must be >= 0, got " + evaluations);
        }
        patience = evaluations;
        return this;
    }

    /** At most this many steps, whatever the epochs say. */
    public TrainConfig maxSteps(long n) {
        if (n <= 0) {
            throw new IllegalArgumentException("maxSteps must be positive, got " + n);
        }
        maxSteps = n;
        return this;
    }

    /**
     * Plain (conditional) training only: the fraction of batches trained with a null condition, as
     * classifier-free guidance training does, so that the model keeps an unconditional branch.
     */
    public TrainConfig condDropout(double p) {
        if (!(p >= 0 && p < 1)) {
            throw new IllegalArgumentException("condDropout must lie in [0, 1), got " + p);
        }
        condDropout = p;
        return this;
    }

    /**
     * Writes a checkpoint ({@link org.text2data.Checkpoint}: parameters, optimizer and constraint state, the loop's
     * position) to {@code file} every {@code everySteps} steps and when the loop ends, atomically, replacing the
     * previous one. A run given {@link #resumeFrom} that file continues where it stood.
     */
    public TrainConfig checkpoint(java.nio.file.Path file, long everySteps) {
        if (file == null) {
            throw new IllegalArgumentException("checkpoint file is null");
        }
        if (everySteps <= 0) {
            throw new IllegalArgumentException("checkpoint interval must be positive, got " + everySteps);
        }
        checkpointFile = file;
        checkpointEvery = everySteps;
        return this;
    }

    /**
     * Continues the run saved in the checkpoint {@code file} (see {@link #checkpoint}): restores the parameters,
     * the optimizer's and constraint's state and the loop's position (steps taken, data order, generators, what was
     * recorded), then takes the remaining steps. Given the same model, data and configuration, the run ends
     * exactly where the uninterrupted one would have, bit for bit. Null: start afresh.
     */
    public TrainConfig resumeFrom(java.nio.file.Path file) {
        resumeFrom = file;
        return this;
    }

    /** The checkpoint file, or null. */
    public java.nio.file.Path checkpointFile() {
        return checkpointFile;
    }

    /** Steps between checkpoints (0 when there is no checkpoint file). */
    public long checkpointEvery() {
        return checkpointEvery;
    }

    /** The checkpoint to resume from, or null. */
    public java.nio.file.Path resumeFrom() {
        return resumeFrom;
    }

    public double condDropout() {
        return condDropout;
    }

    public int epochs() {
        return epochs;
    }

    public int batchSize() {
        return batchSize;
    }

    public boolean shuffle() {
        return shuffle;
    }

    public long seed() {
        return seed;
    }

    public LrSchedule schedule() {
        return schedule;
    }

    public int evalEvery() {
        return evalEvery;
    }

    public int patience() {
        return patience;
    }

    public long maxSteps() {
        return maxSteps;
    }

    /** Steps this config takes over {@code rows} rows. */
    public long totalSteps(long rows) {
        long perEpoch = (rows + batchSize - 1) / batchSize;
        return Math.min(maxSteps, perEpoch * epochs);
    }
}
