package org.text2data.train;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonParseException;
import org.text2data.Checkpoint;
import org.text2data.Constraint;

/**
 * Where a training loop stands, saved as a checkpoint's {@code loop.json}: the stage, the steps taken, the base
 * learning rate the schedule scales, the seed, the loader's position and generator, the condition-dropout generator, and
 * what the loop has recorded so far (so that a resumed run returns the same result as an uninterrupted one).
 */
final class TrainState {
    static final int VERSION = 1;
    private static final Gson GSON = new GsonBuilder().serializeSpecialFloatingPointValues().create();

    /** A {@link Loader}'s position: rows and batch size (checked on resume), cursor, row order, generator state. */
    record LoaderState(long rows, int batchSize, boolean shuffle, long cursor, int[] order, long random) {
    }

    int version = VERSION;
    String stage;
    long step;
    double baseLr;
    /** The loop's seed ({@link TrainConfig#seed}); null in checkpoints written before it was recorded. */
    Long seed;
    LoaderState loader;
    Long dropout;
    // Pretraining
    List<Double> epochLosses = new ArrayList<>();
    List<Double> stepLosses = new ArrayList<>();
    double epochSum;
    int inEpoch;
    // Finetuning
    List<Finetuning.Step> steps = new ArrayList<>();
    List<Finetuning.Eval> evals = new ArrayList<>();
    double best = Double.POSITIVE_INFINITY;
    int sinceBest;
    boolean stopped;

    private TrainState() {
        // for Gson
    }

    TrainState(String stage, double baseLr, long seed) {
        this.stage = stage;
        this.baseLr = baseLr;
        this.seed = seed;
    }

    /**
     * After a step: writes the checkpoint of {@code cfg} when one is due (every {@code checkpointEvery} steps, and
     * at the end of the loop when {@code last}).
     */
    void checkpointIfDue(TrainConfig cfg, Constraint opt, Loader loader, SavedRandom dropoutRandom, boolean last) {
        if (cfg.checkpointFile() == null || !(last || step % cfg.checkpointEvery() == 0)) {
            return;
        }
        loader = java.util.Objects.requireNonNull(loader);
        this.loader = loader.state();
        this.dropout = dropoutRandom == null ? null : dropoutRandom.state();
        save(cfg.checkpointFile(), opt);
    }

    /** Refuses a position beyond the {@code total} steps of the run that resumes it (its result would be a later one). */
    static void checkWithin(TrainState s, long total) {
        if (s.step > total) {
            throw new IllegalArgumentException("it is at step " + s.step + ", beyond this run's " + total
                    + " steps in all");
        }
    }

    /** Writes {@code opt} and this position to {@code file}, atomically. */
    void save(Path file, Constraint opt) {
        try {
            Checkpoint.save(file, opt, GSON.toJson(this));
        } catch (IOException e) {
            throw new UncheckedIOException("could not write checkpoint " + file + ": " + e.getMessage(), e);
        }
    }

    /**
     * Reads the checkpoint {@code file} written by the loop of {@code stage}, lets {@code check} refuse its
     * position (a loader over other data, say) and then restores it into {@code opt}; a refusal changes nothing.
     */
    static TrainState resume(Path file, Constraint opt, String stage, java.util.function.Consumer<TrainState> check) {
        try (Checkpoint c = Checkpoint.read(file)) {
            if (c.loopState() == null) {
                throw new IllegalArgumentException("checkpoint " + file + " holds no training-loop position "
                        + "(it was saved by Constraint.saveCheckpoint, not by a training loop)");
            }
            TrainState s;
            try {
                s = GSON.fromJson(c.loopState(), TrainState.class);
            } catch (JsonParseException e) {
                throw new IllegalArgumentException("checkpoint " + file + ": its loop position is not readable: "
                        + e.getMessage(), e);
            }
            if (s == null || s.version != VERSION || s.stage == null || s.loader == null) {
                throw new IllegalArgumentException("checkpoint " + file + ": its loop position is incomplete or of "
                        + "another version");
            }
            if (!s.stage.equals(stage)) {
                throw new IllegalArgumentException("checkpoint " + file + " was written by the " + s.stage
                        + " loop; this is the " + stage + " loop");
            }
            try {
                check.accept(s);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("checkpoint " + file + ": " + e.getMessage()
                        + "; nothing was restored", e);
            }
            c.restore(opt);
            return s;
        }
    }
}
