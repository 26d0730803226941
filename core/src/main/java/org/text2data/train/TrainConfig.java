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

    /**
     * A configuration with the defaults: 1 epoch, batches of 64, shuffled with seed 0, a constant learning rate,
     * no evaluation, no early stopping, no step limit, no condition dropout, no checkpoint.
     */
    public TrainConfig() {
    }

    /**
     * Sets the number of passes over the data.
     *
     * @param n the number of epochs, positive
     * @return this configuration
     * @throws IllegalArgumentException if {@code n} is not positive
     */
    public TrainConfig epochs(int n) {
        if (n <= 0) {
            throw new IllegalArgumentException("epochs must be positive, got " + n);
        }
        epochs = n;
        return this;
    }

    /**
     * Sets the number of rows per step (a data set with fewer rows is drawn whole; an epoch's last batch may be
     * smaller).
     *
     * @param n the batch size, positive
     * @return this configuration
     * @throws IllegalArgumentException if {@code n} is not positive
     */
    public TrainConfig batchSize(int n) {
        if (n <= 0) {
            throw new IllegalArgumentException("batch size must be positive, got " + n);
        }
        batchSize = n;
        return this;
    }

    /**
     * Sets whether the rows are shuffled each epoch (with {@link #seed}) or drawn in order.
     *
     * @param on true to shuffle
     * @return this configuration
     */
    public TrainConfig shuffle(boolean on) {
        shuffle = on;
        return this;
    }

    /**
     * Sets the seed of the shuffling and of the condition-dropout draws.
     *
     * @param s the seed
     * @return this configuration
     */
    public TrainConfig seed(long s) {
        seed = s;
        return this;
    }

    /**
     * Sets the learning-rate schedule, applied to the optimizer's rate at the start of the loop.
     *
     * @param s the schedule
     * @return this configuration
     * @throws IllegalArgumentException if {@code s} is null
     */
    public TrainConfig schedule(LrSchedule s) {
        if (s == null) {
            throw new IllegalArgumentException("schedule is null");
        }
        schedule = s;
        return this;
    }

    /**
     * Evaluate every {@code steps} steps (0: never). Finetuning also evaluates after its last step.
     *
     * @param steps the number of steps between evaluations, or 0
     * @return this configuration
     * @throws IllegalArgumentException if {@code steps} is negative
     */
    public TrainConfig evalEvery(int steps) {
        if (steps < 0) {
            throw new IllegalArgumentException("evalEvery must be >= 0, got " + steps);
        }
        evalEvery = steps;
        return this;
    }

    /**
     * Stop after {@code evaluations} evaluations without improvement (0: never stop early).
     *
     * @param evaluations the number of evaluations without a new best score that ends the run, or 0
     * @return this configuration
     * @throws IllegalArgumentException if {@code evaluations} is negative
     */
    public TrainConfig patience(int evaluations) {
        if (evaluations < 0) {
            throw new IllegalArgumentException("patience must be >= 0, got " + evaluations);
        }
        patience = evaluations;
        return this;
    }

    /**
     * At most this many steps, whatever the epochs say.
     *
     * @param n the largest number of steps, positive
     * @return this configuration
     * @throws IllegalArgumentException if {@code n} is not positive
     */
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
     *
     * @param p the probability that a batch's condition is dropped, in [0, 1)
     * @return this configuration
     * @throws IllegalArgumentException if {@code p} is not in [0, 1)
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
     *
     * @param file the checkpoint file
     * @param everySteps the number of steps between checkpoints, positive
     * @return this configuration
     * @throws IllegalArgumentException if {@code file} is null or {@code everySteps} is not positive
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
     *
     * @param file the checkpoint to resume from, or null
     * @return this configuration
     */
    public TrainConfig resumeFrom(java.nio.file.Path file) {
        resumeFrom = file;
        return this;
    }

    /**
     * The checkpoint file, or null.
     *
     * @return the file set by {@link #checkpoint}, or null
     */
    public java.nio.file.Path checkpointFile() {
        return checkpointFile;
    }

    /**
     * Steps between checkpoints (0 when there is no checkpoint file).
     *
     * @return the checkpoint interval in steps
     */
    public long checkpointEvery() {
        return checkpointEvery;
    }

    /**
     * The checkpoint to resume from, or null.
     *
     * @return the file set by {@link #resumeFrom(java.nio.file.Path)}, or null
     */
    public java.nio.file.Path resumeFrom() {
        return resumeFrom;
    }

    /**
     * The condition-dropout probability (default 0).
     *
     * @return the probability set by {@link #condDropout(double)}
     */
    public double condDropout() {
        return condDropout;
    }

    /**
     * The number of epochs (default 1).
     *
     * @return the number of passes over the data
     */
    public int epochs() {
        return epochs;
    }

    /**
     * The batch size (default 64).
     *
     * @return the number of rows per step
     */
    public int batchSize() {
        return batchSize;
    }

    /**
     * Whether rows are shuffled each epoch (default true).
     *
     * @return true if shuffling
     */
    public boolean shuffle() {
        return shuffle;
    }

    /**
     * The seed of shuffling and condition dropout (default 0).
     *
     * @return the seed
     */
    public long seed() {
        return seed;
    }

    /**
     * The learning-rate schedule (default {@link LrSchedule#constant()}).
     *
     * @return the schedule
     */
    public LrSchedule schedule() {
        return schedule;
    }

    /**
     * Steps between evaluations (default 0: never).
     *
     * @return the evaluation interval in steps, or 0
     */
    public int evalEvery() {
        return evalEvery;
    }

    /**
     * Evaluations without improvement that stop the run (default 0: never).
     *
     * @return the patience, or 0
     */
    public int patience() {
        return patience;
    }

    /**
     * The step limit (default {@link Long#MAX_VALUE}: none).
     *
     * @return the largest number of steps
     */
    public long maxSteps() {
        return maxSteps;
    }

    /**
     * Steps this config takes over {@code rows} rows: batches per epoch (the last may be smaller) times epochs,
     * capped at {@link #maxSteps()}.
     *
     * @param rows the number of rows in the data set
     * @return the number of steps
     */
    public long totalSteps(long rows) {
        long perEpoch = (rows + batchSize - 1) / batchSize;
        return Math.min(maxSteps, perEpoch * epochs);
    }
}
