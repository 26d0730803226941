package org.text2data.train;

import java.util.Arrays;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.text2data.Batch;
import org.text2data.ConditionalModel;
import org.text2data.Loss;

/**
 * The unconditional loss of a model over a data set, row by row: what {@code gConstraint} should be
 * measured against. {@link #suggestedGConstraint} is {@code relax x} the mean over rows, the data set's
 * unconditional loss, which is what a pretrained model's minimum refers to.
 *
 * <p>Percentiles interpolate linearly between the sorted per-row losses.
 *
 * @param rows the number of rows surveyed
 * @param mean the mean loss over the rows
 * @param min the lowest row loss
 * @param p10 the 10th percentile of the row losses
 * @param p50 the median row loss
 * @param p90 the 90th percentile of the row losses
 * @param max the highest row loss
 */
public record LossSurvey(long rows, double mean, double min, double p10, double p50, double p90, double max) {

    /**
     * Evaluates {@code loss(model(data, null), label)} for every row, in chunks of {@code chunk} rows, without
     * gradients.
     *
     * @param model the model, called unconditionally ({@code cond} null)
     * @param data the rows to survey
     * @param loss the loss, applied to one row at a time
     * @param chunk how many rows go through the model at once, positive
     * @return the survey of the per-row losses
     * @throws IllegalArgumentException if {@code data} is null or empty, {@code chunk} is not positive, or a row's
     *         loss is NaN or infinite
     */
    public static LossSurvey of(ConditionalModel model, Batch data, Loss loss, int chunk) {
        return of(model, data, loss, chunk, done -> { });
    }

    /**
     * As {@link #of(ConditionalModel, Batch, Loss, int)}, telling {@code progress} the number of rows measured so far
     * after each chunk.
     *
     * @param model the model, called as {@code model(data, null)}
     * @param data the rows
     * @param loss the loss between the model's output and the label
     * @param chunk rows per forward pass
     * @param progress told the rows done after each chunk
     * @return the survey
     * @throws IllegalArgumentException if the data set is empty, the chunk size is not positive, or a row's loss is
     *         not finite
     */
    public static LossSurvey of(ConditionalModel model, Batch data, Loss loss, int chunk,
                                java.util.function.LongConsumer progress) {
        if (data == null || data.size() == 0) {
            throw new IllegalArgumentException("the data set is empty");
        }
        if (chunk <= 0) {
            throw new IllegalArgumentException("chunk size must be positive, got " + chunk);
        }
        long n = data.size();
        double[] v = new double[(int) n];
        try (NoGradGuard ng = new NoGradGuard()) {
            for (long from = 0; from < n; from += chunk) {
                try (PointerScope scope = new PointerScope()) {
                    long to = Math.min(n, from + chunk);
                    Batch b = data.slice(from, to);
                    Tensor pred = model.forward(b.data(), null);
                    for (long i = 0; i < to - from; i++) {
                        double l = loss.apply(pred.narrow(0, i, 1), b.label().narrow(0, i, 1)).item_double();
                        if (!Double.isFinite(l)) {
                            throw new IllegalArgumentException("the unconditional loss of row " + (from + i) + " is " + l);
                        }
                        v[(int) (from + i)] = l;
                    }
                    progress.accept(to);
                }
            }
        }
        double[] s = v.clone();
        Arrays.sort(s);
        double mean = Arrays.stream(v).sum() / n;
        return new LossSurvey(n, mean, s[0], q(s, 0.1), q(s, 0.5), q(s, 0.9), s[s.length - 1]);
    }

    /**
     * {@code relax x mean}: a {@code gConstraint} for finetuning.
     *
     * @param relax the factor, a positive finite number
     * @return {@code relax * mean()}
     * @throws IllegalArgumentException if {@code relax} is not a positive finite number
     */
    public double suggestedGConstraint(double relax) {
        return Pretraining.relaxed(mean, relax);
    }

    private static double q(double[] sorted, double p) {
        double pos = p * (sorted.length - 1);
        int lo = (int) Math.floor(pos);
        int hi = Math.min(lo + 1, sorted.length - 1);
        return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
    }
}
