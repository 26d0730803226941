package org.text2data.train;

import java.util.List;
import java.util.function.ToDoubleFunction;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.text2data.Batch;
import org.text2data.ConditionalModel;
import org.text2data.Constraint;
import org.text2data.Loss;
import org.text2data.NonFiniteException;
import org.text2data.StepResult;
import org.text2data.Text2Data;

/**
 * Stage two: finetune on the labelled pairs, either with Text2Data's constrained step ({@link Mode#TEXT2DATA})
 * or plainly on the conditional loss ({@link Mode#PLAIN}, the baseline that may forget). Both record the
 * unconditional loss {@code g} next to {@code gConstraint}, so that forgetting shows.
 */
public final class Finetuning {
    private Finetuning() {
    }

    public enum Mode {
        /** {@link Text2Data#runStep}: conditional loss down, unconditional loss held near gConstraint. */
        TEXT2DATA,
        /** Conditional loss only, with the same base optimizer. */
        PLAIN
    }

    /** One recorded step. */
    public record Step(long step, double g, double f, double lr) {
    }

    /** One evaluation (lower is better). */
    public record Eval(long step, double score) {
    }

    /** What finetuning did. */
    public record Result(List<Step> steps, List<Eval> evals, boolean stoppedEarly, double gConstraint) {
        /** The largest {@code g / gConstraint} seen. */
        public double maxGRatio() {
            return steps.stream().mapToDouble(s -> s.g() / gConstraint).max().orElse(Double.NaN);
        }
    }

    public static Result run(Constraint opt, double gConstraint, ConditionalModel model, Batch labelled, Loss loss,
                             TrainConfig cfg, Mode mode, BatchTransform transform,
                             ToDoubleFunction<ConditionalModel> evaluator, TrainingListener listener) {
        if (labelled == null || labelled.size() == 0) {
            throw new IllegalArgumentException("there are no labelled examples to finetune on");
        }
        if (!labelled.labelled()) {
            throw new IllegalArgumentException("the finetuning data set has no conditions (cond is null)");
        }
        if (!Double.isFinite(gConstraint) || gConstraint < 0) {
            throw new IllegalArgumentException("gConstraint must be a finite number >= 0, got " + gConstraint);
        }
        Loader loader = new Loader(labelled, cfg.batchSize(), cfg.shuffle(), cfg.seed());
        long total = cfg.totalSteps(labelled.size());
        String stage = mode == Mode.TEXT2DATA ? "text2data" : "finetune";
        SavedRandom dropout = new SavedRandom(cfg.seed() ^ 0x5DEECE66DL);
        TrainState st = cfg.resumeFrom() == null ? new TrainState(stage, opt.lr())
                : TrainState.resume(cfg.resumeFrom(), opt, stage, s -> {
                    loader.restore(s.loader);
                    if (s.dropout != null) {
                        dropout.restore(s.dropout);
                    }
                });
        double baseLr = st.baseLr;
        for (long step = st.step; step < total && !st.stopped; step++) {
            double lr = cfg.schedule().lr(baseLr, step, total);
            opt.setLr(lr);
            double g;
            double f;
            try (PointerScope scope = new PointerScope()) {
                Batch b = transform.apply(loader.next());
                if (mode == Mode.TEXT2DATA) {
                    try (StepResult r = Text2Data.runStep(opt, gConstraint, model, b.cond(), b.data(), b.label(), loss)) {
                        g = r.uncondLoss();
                        f = r.condLoss();
                    }
                } else {
                    try (NoGradGuard ng = new NoGradGuard()) {
                        g = loss.apply(model.forward(b.data(), null), b.label()).item_double();
                    }
                    opt.zeroGrad();
                    boolean drop = cfg.condDropout() > 0 && dropout.nextDouble() < cfg.condDropout();
                    Tensor l = loss.apply(model.forward(b.data(), drop ? null : b.cond()), b.label());
                    f = l.item_double();
                    if (!Double.isFinite(f)) {
                        throw new NonFiniteException("finetuning loss is " + f + " at step " + step);
                    }
                    l.backward();
                    opt.stepBase();
                }
            }
            st.steps.add(new Step(step + 1, g, f, lr));
            st.step = step + 1;
            listener.onStep(stage, step + 1, total, g, f);
            if (evaluator != null && cfg.evalEvery() > 0 && ((step + 1) % cfg.evalEvery() == 0 || step == total - 1)) {
                double score = evaluator.applyAsDouble(model);
                st.evals.add(new Eval(step + 1, score));
                listener.onEval(stage, step + 1, score);
                if (score < st.best) {
                    st.best = score;
                    st.sinceBest = 0;
                } else if (cfg.patience() > 0 && ++st.sinceBest >= cfg.patience()) {
                    st.stopped = true;
                }
            }
            st.checkpointIfDue(cfg, opt, loader, dropout, step == total - 1 || st.stopped);
        }
        opt.setLr(baseLr);
        return new Result(List.copyOf(st.steps), List.copyOf(st.evals), st.stopped, gConstraint);
    }
}
