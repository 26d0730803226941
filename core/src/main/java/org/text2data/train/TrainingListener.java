package org.text2data.train;

/** Progress of a training loop, step by step (for progress bars and logs). */
@FunctionalInterface
public interface TrainingListener {

    /**
     * Called after each step with the losses read in it ({@code g}: unconditional; {@code f}:
     * conditional, NaN in pretraining).
     */
    void onStep(String stage, long step, long totalSteps, double g, double f);

    /** Called after each evaluation. */
    default void onEval(String stage, long step, double score) {
    }

    /** Called when training looks wrong but goes on (for example {@code g} running away from {@code gConstraint}). */
    default void onWarning(String stage, long step, String message) {
    }

    TrainingListener NONE = (stage, step, total, g, f) -> { };
}
