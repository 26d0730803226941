package org.text2data.dist;

import java.util.ArrayList;
import java.util.List;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.text2data.Batch;
import org.text2data.Constraint;
import org.text2data.GradientSync;
import org.text2data.Text2Data;
import org.text2data.train.BatchTransform;

/**
 * Data parallelism for {@link Text2Data#runStep}: every process of a {@link ProcessGroup} holds a replica
 * of the model and its optimizer and runs {@code runStep} on its shard of each batch; the unconditional
 * loss {@code g} with its gradients (before the constraint keeps them) and the conditional loss with its
 * gradients (before the projection) are averaged over all processes, each weighted by its shard's rows.
 * Every replica then projects and steps alike, and the parameters are those of one process on the
 * concatenated batch (up to the order of floating-point sums), for losses that are means over rows.
 *
 * <pre>{@code
 * try (ProcessGroup pg = ProcessGroup.fromEnvironment(ProcessGroup.Kind.GLOO, ProcessGroup.DEFAULT_TIMEOUT);
 *      Constraint opt = new Constraint(model.namedParameters(), OptimizerSpec.adam(1e-3));
 *      DataParallel dp = new DataParallel(pg, opt)) {       // rank 0's parameters reach every rank
 *     Batch mine = dp.shard(batch);                           // this rank's rows
 *     Text2Data.runStep(opt, gConstraint, model, mine.cond(), mine.data(), mine.label(), Loss.MSE);
 * }
 * }</pre>
 *
 * <p>Each average is one all-reduce of one flat buffer per dtype (all gradients, the loss and the row
 * count together): two collective calls per step. A parameter must have a gradient on every rank or on
 * none (the same model code on every rank does that). The plain and fused engines and every base
 * optimizer work unchanged: the hook runs before them. Construct it before the first step, with the
 * optimizer fresh; closing it detaches it and leaves the optimizer single-process again.
 */
public final class DataParallel implements GradientSync, AutoCloseable {
    private final ProcessGroup group;
    private final Constraint optimizer;
    private final List<Bucket> buckets = new ArrayList<>();
    private boolean closed;

    /** One flat buffer for the parameters of one dtype: their values or gradients, then the loss and the rows. */
    private static final class Bucket {
        final int[] index;
        final Tensor buffer;
        final Tensor[] views;
        final Tensor loss;
        final Tensor rows;

        Bucket(List<Integer> members, List<Tensor> params) {
            this.index = members.stream().mapToInt(Integer::intValue).toArray();
            long total = 0;
            for (int i : index) {
                total += params.get(i).numel();
            }
            views = new Tensor[index.length];
            try (PointerScope scope = new PointerScope()) { // the tensors below outlive it: retained
                Tensor first = params.get(index[0]);
                buffer = torch.zeros(new long[] {total + 2}, new TensorOptions(first.scalar_type())).to(first.device(),
                        first.scalar_type());
                buffer.retainReference();
                long off = 0;
                for (int k = 0; k < index.length; k++) {
                    Tensor p = params.get(index[k]);
                    views[k] = buffer.narrow(0, off, p.numel()).view(p.sizes().vec().get());
                    views[k].retainReference();
                    off += p.numel();
                }
                loss = buffer.narrow(0, total, 1);
                loss.retainReference();
                rows = buffer.narrow(0, total + 1, 1);
                rows.retainReference();
            }
        }

        void close() {
            for (Tensor v : views) {
                v.close();
            }
            loss.close();
            rows.close();
            buffer.close();
        }
    }

    /**
     * Attaches data parallelism to {@code optimizer} (see {@link Constraint#setGradientSync}) after
     * checking that every rank has the same parameter shapes, and overwrites this rank's parameters with
     * rank 0's (one broadcast per dtype), so that all replicas start alike.
     *
     * @param group the process group; it stays open when this is closed
     * @param optimizer the constraint whose gradients are averaged over the ranks
     * @throws IllegalArgumentException if either is null, the parameters are on several devices, or their device
     *     does not suit the group's backend
     * @throws IllegalStateException if the ranks hold different models, or a collective fails or times out
     */
    public DataParallel(ProcessGroup group, Constraint optimizer) {
        if (group == null || optimizer == null) {
            throw new IllegalArgumentException(group == null ? "process group is null" : "optimizer is null");
        }
        this.group = group;
        this.optimizer = optimizer;
        List<Tensor> params = optimizer.parameters();
        String device = params.get(0).device().str().getString();
        for (Tensor p : params) {
            if (!p.device().str().getString().equals(device)) {
                throw new IllegalArgumentException("data parallelism needs every parameter on one device; found "
                        + device + " and " + p.device().str().getString());
            }
        }
        if (ProcessGroup.Kind.forDevice(device) != group.kind()) {
            throw new IllegalArgumentException("the parameters are on " + device + " but the process group is "
                    + group.kind() + " (Gloo for cpu, NCCL for cuda)");
        }
        List<Integer> todo = new ArrayList<>();
        for (int i = 0; i < params.size(); i++) {
            todo.add(i);
        }
        while (!todo.isEmpty()) { // one bucket per dtype, in parameter order
            byte dtype = params.get(todo.get(0)).scalar_type().value;
            List<Integer> members = todo.stream().filter(i -> params.get(i).scalar_type().value == dtype).toList();
            todo.removeAll(members);
            buckets.add(new Bucket(members, params));
        }
        try {
            checkSameShapes(params);
            broadcastParameters(params);
        } catch (RuntimeException e) {
            freeBuckets();
            throw e;
        }
        optimizer.setGradientSync(this);
    }

    /** Every rank must hold the same parameter list: counts and element counts summed must agree. */
    private void checkSameShapes(List<Tensor> params) {
        long numel = 0;
        long shapeHash = 17;
        for (Tensor p : params) {
            numel += p.numel();
            for (long s : p.sizes().vec().get()) {
                shapeHash = (shapeHash * 31 + s) % 1_000_003;
            }
        }
        double[] mine = {params.size(), numel, shapeHash};
        try (PointerScope scope = new PointerScope()) {
            Tensor t = Tensor.create(mine);
            Tensor onDevice = t.to(params.get(0).device(), torch.ScalarType.Double);
            Tensor sq = onDevice.mul(onDevice);
            Tensor both = torch.cat(new org.bytedeco.pytorch.TensorVector(onDevice, sq));
            group.allReduceSum(both);
            double[] sums = new double[6];
            Tensor host = both.cpu().contiguous();
            for (int i = 0; i < 6; i++) {
                sums[i] = host.select(0, i).item_double();
            }
            int n = group.worldSize();
            for (int i = 0; i < 3; i++) { // sum and sum of squares equal n*x and n*x^2 only if all are x
                if (sums[i] != n * mine[i] || sums[3 + i] != n * mine[i] * mine[i]) {
                    throw new IllegalStateException("the ranks hold different models: rank " + group.rank() + " has "
                            + params.size() + " parameter tensors with " + numel + " elements, and some rank differs "
                            + "(every rank must load the same model)");
                }
            }
        }
    }

    private void broadcastParameters(List<Tensor> params) {
        try (PointerScope scope = new PointerScope(); NoGradGuard ng = new NoGradGuard()) {
            for (Bucket b : buckets) {
                for (int k = 0; k < b.index.length; k++) {
                    b.views[k].copy_(params.get(b.index[k]));
                }
                group.broadcast(b.buffer, 0);
                for (int k = 0; k < b.index.length; k++) {
                    params.get(b.index[k]).copy_(b.views[k]);
                }
            }
        }
    }

    /**
     * The averaging {@link Text2Data#runStep} calls after each backward pass: per bucket, gradients, loss
     * and a 1 are copied into the buffer and multiplied by this rank's rows, summed over all ranks in one
     * all-reduce, divided by the summed rows, and copied back into the gradients.
     */
    @Override
    public Tensor reduce(Tensor loss, long rows, List<Tensor> params) {
        checkOpen();
        if (rows <= 0) {
            throw new IllegalArgumentException("rank " + group.rank() + " has an empty shard");
        }
        Tensor mean = null;
        try (NoGradGuard ng = new NoGradGuard(); Scalar weight = new Scalar((double) rows)) {
            for (Bucket b : buckets) {
                Tensor[] grads = new Tensor[b.index.length];
                for (int k = 0; k < b.index.length; k++) {
                    Tensor g = params.get(b.index[k]).grad();
                    grads[k] = g;
                    if (g.defined()) {
                        b.views[k].copy_(g);
                    } else {
                        b.views[k].zero_();
                    }
                }
                if (mean == null) {
                    b.loss.copy_(loss.reshape(1));
                } else {
                    b.loss.zero_();
                }
                b.rows.fill_(new Scalar(1.0));
                b.buffer.mul_(weight);
                group.allReduceSum(b.buffer);
                b.buffer.div_(b.rows.clone());
                for (int k = 0; k < b.index.length; k++) {
                    if (grads[k].defined()) {
                        grads[k].copy_(b.views[k]);
                    }
                }
                if (mean == null) {
                    mean = b.loss.to(loss.scalar_type()).reshape(loss.sizes().vec().get()).clone();
                }
            }
        }
        return mean;
    }

    /**
     * This rank's contiguous share of {@code batch}'s rows: sizes differ by at most one, rank 0 first.
     *
     * @param batch the whole batch, the same on every rank
     * @return this rank's rows, sharing memory with {@code batch}
     * @throws IllegalArgumentException if the batch has fewer rows than the group has ranks
     */
    public Batch shard(Batch batch) {
        return shard(batch, group.rank(), group.worldSize());
    }

    /**
     * Rank {@code rank}'s contiguous share of {@code batch}'s rows among {@code worldSize}.
     *
     * @param batch the whole batch
     * @param rank the rank, 0 to {@code worldSize - 1}
     * @param worldSize how many ranks share the batch, at least 1
     * @return that rank's rows, sharing memory with {@code batch}
     * @throws IllegalArgumentException if the rank or world size is out of range, or the batch has fewer rows than
     *     {@code worldSize}
     */
    public static Batch shard(Batch batch, int rank, int worldSize) {
        ProcessGroup.checkRank(rank, worldSize);
        long n = batch.size();
        if (n < worldSize) {
            throw new IllegalArgumentException("a batch of " + n + " rows cannot be split among " + worldSize
                    + " processes (every process needs at least one row)");
        }
        long base = n / worldSize;
        long extra = n % worldSize;
        long from = rank * base + Math.min(rank, extra);
        long to = from + base + (rank < extra ? 1 : 0);
        return batch.slice(from, to);
    }

    /**
     * {@code transform}, then this rank's share of its rows: for training loops that take a transform.
     *
     * @param transform the transform to apply to the whole batch first
     * @return a transform that applies {@code transform} and then {@link #shard(Batch)}
     */
    public BatchTransform sharding(BatchTransform transform) {
        return rows -> shard(transform.apply(rows));
    }

    /**
     * The process group.
     *
     * @return the group given to the constructor
     */
    public ProcessGroup group() {
        return group;
    }

    /**
     * Bytes all-reduced per step: two buffers of every gradient plus a loss and a row count, per dtype.
     *
     * @return the number of bytes; 0 once closed
     */
    public long bytesPerStep() {
        long bytes = 0;
        for (Bucket b : buckets) {
            bytes += 2 * b.buffer.numel() * b.buffer.element_size();
        }
        return bytes;
    }

    /** Detaches from the optimizer (when still open) and frees the buffers; the process group stays open. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            if (optimizer.gradientSync() == this) {
                optimizer.setGradientSync(null);
            }
        } catch (IllegalStateException closedOptimizer) {
            // the optimizer was closed first: nothing to detach
        }
        freeBuckets();
    }

    private void freeBuckets() {
        for (Bucket b : buckets) {
            b.close();
        }
        buckets.clear();
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("this DataParallel is closed");
        }
    }
}
