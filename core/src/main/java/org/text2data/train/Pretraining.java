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

    /** What pretraining recorded. */
    public record Result(List<Double> epochLosses, List<Double> stepLosses) {
        /** The lowest mean unconditional loss over an epoch. */
        public double minLoss() {
            return Collections.min(epochLosses);
        }

        /** {@code relax * minLoss()}: the barrier finetuning keeps the unconditional loss under. */
        public double gConstraint(double relax) {
            return relaxed(minLoss(), relax);
        }
    }

    /** {@code relax * loss}, with {@code relax} a positive finite number. */
    public static double relaxed(double loss, double relax) {
        if (!Double.isFinite(relax) || relax <= 0) {
            throw new IllegalArgumentException("relax factor must be a positive finite number, got " + relax);
        }
        return relax * loss;
    }

    /**
     * Trains {@code model} unconditionally on {@code data} with the base optimizer of {@code opt} (its
     * constraint is not used here). {@code data.cond()} may be null.
     */
    public static Result run(Constraint opt, ConditionalModel model, Batch data, Loss loss, TrainConfig cfg,
                             BatchTransform transform, TrainingListener listener) {
        if (data == null || data.size() == 0) {
            throw new IllegalArgumentException("the pretraining data set is empty");
        }
        Loader loader = new Loader(data, cfg.batchSize(), cfg.shuffle(), cfg.seed());
        long total = cfg.totalSteps(data.size());
        long perEpoch = (data.size() + cfg.batchSize() - 1) / cfg.batchSize();
        TrainState st = cfg.resumeFrom() == null ? new TrainState("pretrain", opt.lr())
                : TrainState.resume(cfg.resumeFrom(), opt, "pretrain", s -> loader.restore(s.loader));
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
