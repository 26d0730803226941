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

    /** How finetuning trains. */
    public enum Mode {
        /** {@link Text2Data#runStep}: conditional loss down, unconditional loss held near gConstraint. */
        TEXT2DATA,
        /** Conditional loss only, with the same base optimizer. */
        PLAIN
    }

    /**
     * One recorded step.
     *
     * @param step the number of steps taken, counting this one (1 for the first step)
     * @param g the unconditional loss, read before the update
     * @param f the conditional loss, read before the update
     * @param lr the learning rate the step was taken with
     */
    public record Step(long step, double g, double f, double lr) {
    }

    /**
     * One evaluation (lower is better).
     *
     * @param step the number of steps taken when the model was evaluated
     * @param score the evaluator's score
     */
    public record Eval(long step, double score) {
    }

    /**
     * {@code g} above this multiple of {@code gConstraint}, and of the first step's {@code g}, for
     * {@link #RUNAWAY_STEPS} steps in a row (or for every step of a shorter run) counts as running away: the constraint has lost hold (typically a learning rate far too
     * high). A barrier that works keeps {@code g} within a few times {@code gConstraint}; with the earlier demo's
     * model (whose conditional pathway did not start from the pretrained one) the largest per-batch ratio was
     * about 3 under the constraint and about 20 without it.
     */
    public static final double RUNAWAY_RATIO = 100;

    /** How many consecutive steps above {@link #RUNAWAY_RATIO} make a run away (fewer only if the run is shorter). */
    public static final int RUNAWAY_STEPS = 5;

    /**
     * What finetuning did.
     *
     * @param steps every step taken, in order
     * @param evals every evaluation, in order (empty without an evaluator)
     * @param stoppedEarly whether early stopping ended the run ({@link TrainConfig#patience} evaluations without
     *        a new best score)
     * @param gConstraint the bound on the unconditional loss the run was given
     */
    public record Result(List<Step> steps, List<Eval> evals, boolean stoppedEarly, double gConstraint) {
        /**
         * The largest {@code g / gConstraint} seen.
         *
         * @return the largest ratio over {@link #steps()}; NaN when no step was taken, infinite when
         *         {@code gConstraint} is 0 and a {@code g} is positive
         */
        public double maxGRatio() {
            return steps.stream().mapToDouble(s -> s.g() / gConstraint).max().orElse(Double.NaN);
        }

        /**
         * Whether {@code g} ran away: above {@link #RUNAWAY_RATIO} times both {@code gConstraint} and the first g for
         * {@link #RUNAWAY_STEPS} steps in a row (or all steps of a shorter run). Never with {@code gConstraint} 0.
         *
         * @return true if {@code g} ran away, false otherwise (and when no step was taken)
         */
        public boolean gRanAway() {
            int need = Math.min(RUNAWAY_STEPS, steps.size());
            int run = 0;
            for (Step s : steps) {
                run = runsAway(s.g(), gConstraint, steps.get(0).g()) ? run + 1 : 0;
                if (need > 0 && run >= need) {
                    return true;
                }
            }
            return false;
        }
    }

    /**
     * {@code g} more than {@link #RUNAWAY_RATIO} times above both {@code gConstraint} and the first step's {@code g}:
     * grown by orders of magnitude, not merely started far above a low {@code gConstraint}. NaN counts as away.
     */
    private static boolean runsAway(double g, double gConstraint, double firstG) {
        double ref = Double.isFinite(firstG) ? Math.max(gConstraint, firstG) : gConstraint;
        return gConstraint > 0 && !(g <= RUNAWAY_RATIO * ref);
    }

    /**
     * Finetunes {@code model} on the labelled pairs for the steps {@code cfg} gives. Each step draws a mini-batch,
     * passes it through {@code transform} and trains by {@code mode}; both modes record the unconditional loss
     * {@code g} and the conditional loss {@code f}. In {@link Mode#PLAIN} the condition is dropped for a batch with
     * probability {@link TrainConfig#condDropout}. The learning rate follows {@code cfg}'s schedule from the
     * optimizer's rate at the start, which is set back when the loop ends.
     *
     * <p>With an evaluator and {@link TrainConfig#evalEvery} above 0, the model is scored every that many steps and
     * after the last; with {@link TrainConfig#patience} above 0, the run stops after that many evaluations without
     * a new best score. When {@code g} runs away (see {@link #RUNAWAY_RATIO}) the listener is warned, once per run
     * of such steps, and training goes on. With a checkpoint configured, the loop's position is saved as it goes;
     * with {@link TrainConfig#resumeFrom} set, it continues from that checkpoint.
     *
     * @param opt the constraint: its constrained step ({@link Mode#TEXT2DATA}) or its base optimizer
     *        ({@link Mode#PLAIN}) trains the model
     * @param gConstraint the bound on the unconditional loss, a finite number {@code >= 0} (used for the step in
     *        {@link Mode#TEXT2DATA}, and in both modes to detect {@code g} running away)
     * @param model the model to finetune
     * @param labelled the labelled pairs; {@code cond} must not be null
     * @param loss the loss between the model's output and the batch's label
     * @param cfg epochs, batch size, shuffling, schedule, evaluation, early stopping, condition dropout and
     *        checkpointing
     * @param mode constrained ({@link Mode#TEXT2DATA}) or plain ({@link Mode#PLAIN}) finetuning
     * @param transform turns each drawn mini-batch into what the model trains on
     * @param evaluator scores the model (lower is better), or null for no evaluation
     * @param listener told of every step, evaluation and warning
     * @return the recorded steps and evaluations (over the whole run, when resumed)
     * @throws IllegalArgumentException if {@code labelled} is null, empty or without conditions, {@code gConstraint}
     *         is negative or not finite, a step's input is invalid, or the checkpoint to resume from is unreadable or
     *         belongs to another loop or data set
     * @throws NonFiniteException if the conditional loss is NaN or infinite (in {@link Mode#TEXT2DATA}, either
     *         loss or a gradient)
     * @throws java.io.UncheckedIOException if a checkpoint cannot be written
     */
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
        TrainState st = cfg.resumeFrom() == null ? new TrainState(stage, opt.lr(), cfg.seed())
                : TrainState.resume(cfg.resumeFrom(), opt, stage, s -> {
                    TrainState.checkWithin(s, total);
                    loader.restore(s.loader);
                    if (s.dropout != null) {
                        dropout.restore(s.dropout);
                    }
                });
        double baseLr = st.baseLr;
        int awayFor = 0; // consecutive steps with g above RUNAWAY_RATIO x gConstraint (and x the first g)
        double firstG = st.steps.isEmpty() ? Double.NaN : st.steps.get(0).g();
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
            if (step == 0) {
                firstG = g;
            }
            awayFor = runsAway(g, gConstraint, firstG) ? awayFor + 1 : 0;
            if (awayFor == Math.min(RUNAWAY_STEPS, total)) {
                listener.onWarning(stage, step + 1, String.format(java.util.Locale.ROOT, "g has been above %.0f x "
                        + "g_constraint (and x its first value) for %d step(s) in a row (step %d: g %.4g, g_constraint %.4g, ratio %.3g): "
                        + "the constraint is not holding; lower the learning rate, or check g_constraint",
                        RUNAWAY_RATIO, awayFor, step + 1, g, gConstraint, g / gConstraint));
            }
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
