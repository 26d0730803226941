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

    TrainingListener NONE = (stage, step, total, g, f) -> { };
}
