package org.text2data.train;

/** Progress of a training loop, step by step (for progress bars and logs). */
@FunctionalInterface
public interface TrainingListener {

    /**
     * Called after each step with the losses read in it ({@code g}: unconditional; {@code f}:
     * conditional, NaN in pretraining).
     *
     * @param stage the loop: {@code "pretrain"}, {@code "finetune"} (plain) or {@code "text2data"}
     * @param step the number of steps taken so far, counting this one (1 after the first step)
     * @param totalSteps the number of steps the loop takes in all (fewer are taken if it stops early)
     * @param g the unconditional loss read in this step
     * @param f the conditional loss read in this step, or NaN in pretraining
     */
    void onStep(String stage, long step, long totalSteps, double g, double f);

    /**
     * Called after each evaluation. Does nothing unless overridden.
     *
     * @param stage the loop, as in {@link #onStep}
     * @param step the number of steps taken when the model was evaluated
     * @param score the evaluator's score (lower is better)
     */
    default void onEval(String stage, long step, double score) {
    }

    /**
     * Called when training looks wrong but goes on (for example {@code g} running away from {@code gConstraint}).
     * Does nothing unless overridden.
     *
     * @param stage the loop, as in {@link #onStep}
     * @param step the number of steps taken when the problem was seen
     * @param message what looks wrong and what to try
     */
    default void onWarning(String stage, long step, String message) {
    }

    /** A listener that ignores every call. */
    TrainingListener NONE = (stage, step, total, g, f) -> { };
}
