package org.text2data.cli;

import java.time.Duration;
import java.util.Map;

import org.text2data.Constraint;
import org.text2data.dist.DataParallel;
import org.text2data.dist.ProcessGroup;
import org.text2data.train.BatchTransform;

/**
 * One rank of a data-parallel {@code finetune}, or, outside one, a single process that changes nothing.
 * A rank is described by the environment as {@code torchrun} sets it ({@code RANK}, {@code WORLD_SIZE},
 * {@code MASTER_ADDR}, {@code MASTER_PORT}, {@code LOCAL_RANK}), or, for the workers of {@code --nproc},
 * with a shared store file instead of the master's address.
 */
final class DistributedRun implements AutoCloseable {
    private final ProcessGroup group; // null: one process
    private DataParallel parallel;

    private DistributedRun(ProcessGroup group) {
        this.group = group;
    }

    /** A rank when {@code WORLD_SIZE} is set, else a single process (no process group, no cost). */
    static DistributedRun fromEnvironment(String device, Duration timeout) {
        Map<String, String> env = System.getenv();
        if (env.get("WORLD_SIZE") == null) {
            return new DistributedRun(null);
        }
        ProcessGroup.Kind kind = ProcessGroup.Kind.forDevice(device);
        String storeFile = env.get(DistributedLauncher.STORE_FILE_VAR);
        if (storeFile != null) {
            return new DistributedRun(ProcessGroup.file(java.nio.file.Path.of(storeFile), intVar(env, "RANK"),
                    intVar(env, "WORLD_SIZE"), kind, timeout));
        }
        return new DistributedRun(ProcessGroup.fromEnvironment(env, kind, timeout));
    }

    private static int intVar(Map<String, String> env, String name) {
        try {
            return Integer.parseInt(env.getOrDefault(name, "").trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + " must be an integer, got '" + env.get(name) + "'");
        }
    }

    /** {@code cuda} becomes {@code cuda:LOCAL_RANK} in a rank (one GPU per local rank); else unchanged. */
    static String device(String device) {
        String local = System.getenv("LOCAL_RANK");
        return System.getenv("WORLD_SIZE") != null && device.equals("cuda") && local != null
                ? "cuda:" + local.trim() : device;
    }

    /**
     * Checks that every step's batch of {@code batch} rows (and the epoch's last, smaller one) splits
     * among the ranks with a row for each.
     */
    void checkBatches(long rows, long batch) {
        if (group == null) {
            return;
        }
        int n = group.worldSize();
        long last = rows % batch;
        if (batch < n || last != 0 && last < n) {
            throw new IllegalArgumentException("batches of " + Math.min(batch, last == 0 ? batch : last)
                    + " rows cannot be split among " + n + " processes: every process needs a row of each batch "
                    + "(use a --batch-size of at least " + n + " that leaves no smaller remainder)");
        }
    }

    /** Attaches data parallelism to the optimizer (rank 0's parameters reach every rank). */
    void attach(Constraint opt) {
        if (group != null) {
            parallel = new DataParallel(group, opt);
        }
    }

    /** The transform followed by this rank's share of the rows; unchanged in a single process. */
    BatchTransform sharding(BatchTransform transform) {
        return parallel == null ? transform : parallel.sharding(transform);
    }

    /** Whether this process writes checkpoints: rank 0, or a single process (every rank holds the same state). */
    boolean writesCheckpoints() {
        return group == null || group.rank() == 0;
    }

    /** Waits for every rank to finish its steps; then whether this process writes the output (rank 0). */
    boolean finishAndWrites() {
        if (group == null) {
            return true;
        }
        group.barrier();
        return group.rank() == 0;
    }

    /** What the summary line says about the run: nothing for one process. */
    String describe() {
        return group == null ? "" : String.format(java.util.Locale.ROOT, " (data parallel: %d processes, %s)",
                group.worldSize(), group.kind().toString().toLowerCase(java.util.Locale.ROOT));
    }

    @Override
    public void close() {
        if (parallel != null) {
            parallel.close();
        }
        if (group != null) {
            group.close();
        }
    }
}
