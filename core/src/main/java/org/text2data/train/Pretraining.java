package org.text2data.train;

import java.util.Collections;
import java.util.List;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.text2data.Batch;
import org.text2data.ConditionalModel;
import org.text2data.Constraint;
import org.text2data.Loss;
import org.text2data.NonFiniteException;

/**
 * Stage one of Text2Data: train on all data, labelled or not, as an unconditional model
 * ({@code model(data, null)}), recording the unconditional loss. Its lowest epoch loss, relaxed by a
 * factor, is the {@code gConstraint} that finetuning keeps to.
 */
public final class Pretraining {
    private Pretraining() {
    }

    /**
     * What pretraining recorded.
     *
     * @param epochLosses the mean unconditional loss of each epoch, in order (the last epoch's may cover fewer
     *        steps when {@link TrainConfig#maxSteps} cuts it short)
     * @param stepLosses the unconditional loss of each step, in order
     */
    public record Result(List<Double> epochLosses, List<Double> stepLosses) {
        /**
         * The lowest mean unconditional loss over an epoch.
         *
         * @return the smallest of {@link #epochLosses()}
         * @throws java.util.NoSuchElementException if no epoch was recorded
         */
        public double minLoss() {
            return Collections.min(epochLosses);
        }

        /**
         * {@code relax * minLoss()}: the barrier finetuning keeps the unconditional loss under.
         *
         * @param relax the factor to relax the lowest epoch loss by, a positive finite number
         * @return {@code relax * minLoss()}
         * @throws IllegalArgumentException if {@code relax} is not a positive finite number
         * @throws java.util.NoSuchElementException if no epoch was recorded
         */
        public double gConstraint(double relax) {
            return relaxed(minLoss(), relax);
        }
    }

    /**
     * {@code relax * loss}, with {@code relax} a positive finite number.
     *
     * @param loss the loss to relax
     * @param relax the factor, a positive finite number
     * @return {@code relax * loss}
     * @throws IllegalArgumentException if {@code relax} is not a positive finite number
     */
    public static double relaxed(double loss, double relax) {
        if (!Double.isFinite(relax) || relax <= 0) {
            throw new IllegalArgumentException("relax factor must be a positive finite number, got " + relax);
        }
        return relax * loss;
    }

    /**
     * Trains {@code model} unconditionally on {@code data} with the base optimizer of {@code opt} (its
     * constraint is not used here). {@code data.cond()} may be null. The learning rate follows
     * {@code cfg}'s schedule from the optimizer's rate at the start, which is set back when the loop ends. With a
     * checkpoint configured, the loop's position is saved as it goes; with {@link TrainConfig#resumeFrom} set, it
     * continues from that checkpoint.
     *
     * @param opt the constraint whose base optimizer takes the steps
     * @param model the model to train, called as {@code model(data, null)}
     * @param data the data set, labelled or not
     * @param loss the loss between the model's output and {@code data.label()}
     * @param cfg epochs, batch size, shuffling, schedule and checkpointing
     * @param transform turns each drawn mini-batch into what the model trains on
     * @param listener told of every step
     * @return the losses recorded per epoch and per step (over the whole run, when resumed)
     * @throws IllegalArgumentException if {@code data} is null or empty, or the checkpoint to resume from is
     *         unreadable or belongs to another loop or data set
     * @throws NonFiniteException if a step's loss is NaN or infinite
     * @throws java.io.UncheckedIOException if a checkpoint cannot be written
     */
    public static Result run(Constraint opt, ConditionalModel model, Batch data, Loss loss, TrainConfig cfg,
                             BatchTransform transform, TrainingListener listener) {
        if (data == null || data.size() == 0) {
            throw new IllegalArgumentException("the pretraining data set is empty");
        }
        Loader loader = new Loader(data, cfg.batchSize(), cfg.shuffle(), cfg.seed());
        long total = cfg.totalSteps(data.size());
        long perEpoch = (data.size() + cfg.batchSize() - 1) / cfg.batchSize();
        TrainState st = cfg.resumeFrom() == null ? new TrainState("pretrain", opt.lr(), cfg.seed())
                : TrainState.resume(cfg.resumeFrom(), opt, "pretrain", s -> {
                    TrainState.checkWithin(s, total);
                    loader.restore(s.loader);
                });
        double baseLr = st.baseLr;
        for (long step = st.step; step < total; step++) {
            opt.setLr(cfg.schedule().lr(baseLr, step, total));
            double g;
            try (PointerScope scope = new PointerScope()) {
                Batch b = transform.apply(loader.next());
                opt.zeroGrad();
                Tensor l = loss.apply(model.forward(b.data(), null), b.label());
                g = l.item_double();
                if (!Double.isFinite(g)) {
                    throw new NonFiniteException("pretraining loss is " + g + " at step " + step
                            + "; lower the learning rate");
                }
                l.backward();
                opt.stepBase();
            }
            st.stepLosses.add(g);
            st.epochSum += g;
            st.inEpoch++;
            if (st.inEpoch == perEpoch || step == total - 1) {
                st.epochLosses.add(st.epochSum / st.inEpoch);
                st.epochSum = 0;
                st.inEpoch = 0;
            }
            st.step = step + 1;
            listener.onStep("pretrain", step + 1, total, g, Double.NaN);
            st.checkpointIfDue(cfg, opt, loader, null, step == total - 1);
        }
        opt.setLr(baseLr);
        List<Double> epochLosses = st.epochLosses;
        List<Double> stepLosses = st.stepLosses;
        return new Result(List.copyOf(epochLosses), List.copyOf(stepLosses));
    }
}
