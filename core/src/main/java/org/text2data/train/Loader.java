package org.text2data.train;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.text2data.Batch;

/** Draws mini-batches epoch by epoch, in order or shuffled with a seed; the last batch may be smaller. */
final class Loader {
    private final Batch set;
    private final int batchSize;
    private final boolean shuffle;
    private final SavedRandom random;
    private final long rows;
    private final int[] order; // only when shuffling: in order, rows may exceed an int and need no array
    private long cursor;

    Loader(Batch set, int batchSize, boolean shuffle, long seed) {
        long rows = set.size();
        if (rows == 0) {
            throw new IllegalArgumentException("the data set is empty");
        }
        if (shuffle && rows > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("shuffling supports up to " + (Integer.MAX_VALUE - 8) + " rows, the data "
                    + "set has " + rows + "; draw in order (no shuffle) or split the data set");
        }
        this.set = set;
        this.rows = rows;
        this.batchSize = (int) Math.min(batchSize, rows);
        this.shuffle = shuffle;
        this.random = new SavedRandom(seed);
        if (shuffle) {
            this.order = new int[(int) rows];
            for (int i = 0; i < order.length; i++) {
                order[i] = i;
            }
        } else {
            this.order = null;
        }
        this.cursor = rows;
    }

    /** The next batch (tensors are new; close them, or draw inside a PointerScope). */
    Batch next() {
        if (cursor >= rows) {
            cursor = 0;
            if (shuffle) {
                for (int i = order.length - 1; i > 0; i--) {
                    int j = random.nextInt(i + 1);
                    int t = order[i];
                    order[i] = order[j];
                    order[j] = t;
                }
            }
        }
        int n = (int) Math.min(batchSize, rows - cursor);
        Batch b;
        if (shuffle) {
            long[] idx = new long[n];
            for (int i = 0; i < n; i++) {
                idx[i] = order[(int) cursor + i];
            }
            Tensor index = Tensor.create(idx).to(set.data().device(), torch.ScalarType.Long);
            b = set.select(index);
        } else {
            b = set.slice(cursor, cursor + n);
        }
        cursor += n;
        return b;
    }

    /** Where the loader stands: enough to draw, after {@link #restore}, exactly the batches it would draw next. */
    TrainState.LoaderState state() {
        return new TrainState.LoaderState(rows, batchSize, shuffle, cursor, shuffle ? order.clone() : null,
                random.state());
    }

    /** Continues from {@link #state()} of a loader over the same rows with the same batch size and shuffling. */
    void restore(TrainState.LoaderState s) {
        if (s.rows() != rows || s.batchSize() != batchSize || s.shuffle() != shuffle) {
            throw new IllegalArgumentException("the checkpoint's loader drew batches of " + s.batchSize() + " from "
                    + s.rows() + " rows" + (s.shuffle() ? ", shuffled" : ", in order") + "; this run draws batches of "
                    + batchSize + " from " + rows + " rows" + (shuffle ? ", shuffled" : ", in order")
                    + ": resume with the same data, batch size and shuffling");
        }
        if (s.cursor() < 0 || s.cursor() > rows) {
            throw new IllegalArgumentException("the checkpoint's loader position " + s.cursor() + " is out of range");
        }
        if (shuffle) {
            int[] o = s.order();
            boolean[] seen = new boolean[order.length];
            if (o == null || o.length != order.length) {
                throw new IllegalArgumentException("the checkpoint's row order does not cover the " + order.length + " rows");
            }
            for (int i : o) {
                if (i < 0 || i >= seen.length || seen[i]) {
                    throw new IllegalArgumentException("the checkpoint's row order is not a permutation of the rows");
                }
                seen[i] = true;
            }
        }
        random.restore(s.random());
        if (shuffle) {
            System.arraycopy(s.order(), 0, order, 0, order.length);
        }
        cursor = s.cursor();
    }
}
