package org.text2data.demo;

/**
 * Sizes and hyperparameters of the demo: {@link #standard()} (the default) and {@link #quick()} (for tests).
 *
 * @param name the preset's name
 * @param trainSeries generated training series (all of them for pretraining; those of the seen combinations are
 *        the labelled ones)
 * @param seen how many of the 108 combinations of levels the labelled series come from
 * @param hidden the denoiser's width
 * @param blocks the denoiser's residual blocks
 * @param batchSize mini-batch size of every stage
 * @param pretrainSteps steps of unconditional pretraining
 * @param finetuneSteps steps of finetuning; conditional-only trains pretrainSteps + finetuneSteps
 * @param ceilingSteps finetuning steps of the ceiling (every series labelled, after pretraining): a reference, not
 *        one of the three compared methods, so it may train longer than they do
 * @param lr Adam's learning rate at the start of every stage (cosine decay to a tenth)
 * @param condDropout the probability that a row's condition is replaced by the null (zero) condition
 * @param relax g_constraint = relax x the pretrained model's unconditional loss on the evaluation rows
 * @param unseenPrompts prompts drawn from the combinations no label comes from
 * @param samplesPerPrompt samples per prompt in the final evaluation
 * @param evaluations evaluations during training (on the unseen prompts, {@code evalSamples} each)
 * @param evalSamples samples per unseen prompt in the evaluations during training
 * @param guidance classifier-free guidance scale when sampling (1: plain conditional)
 * @param estimatorSeries generated series the estimators are trained on
 * @param estimatorSteps the estimators' training steps
 * @param seeds how many seeds to run (seed, seed + 1, ...)
 * @param seed the first seed
 */
public record DemoConfig(String name, int trainSeries, int seen, int hidden, int blocks, int batchSize,
                         int pretrainSteps, int finetuneSteps, int ceilingSteps, double lr, double condDropout, double relax,
                         int unseenPrompts, int samplesPerPrompt, int evaluations, int evalSamples, double guidance,
                         int estimatorSeries, int estimatorSteps, int seeds, long seed) {

    /** Checks every setting; a message names the one that is wrong. */
    public DemoConfig {
        if (!Double.isFinite(relax) || relax <= 0) {
            throw new IllegalArgumentException("relax factor must be a positive finite number, got " + relax);
        }
        if (!Double.isFinite(guidance) || guidance < 0) {
            throw new IllegalArgumentException("guidance scale must be a finite number >= 0, got " + guidance);
        }
        if (seeds < 1 || seeds > 20) {
            throw new IllegalArgumentException("seeds must lie in 1..20, got " + seeds);
        }
        int combos = Waveforms.combinations();
        int mostSeen = Math.min(combos - unseenPrompts, trainSeries / 10);
        if (seen < Waveforms.LEVELS[0] || seen > mostSeen) {
            throw new IllegalArgumentException("seen combinations must lie in " + Waveforms.LEVELS[0] + ".."
                    + mostSeen + " (at least one per shape, " + unseenPrompts
                    + " combinations left unseen for the prompts, and at least 10 of the " + trainSeries
                    + " training series per seen combination), got " + seen);
        }
        if (pretrainSteps < 1 || finetuneSteps < 1 || ceilingSteps < 1 || evaluations < 1
                || samplesPerPrompt < 2 || evalSamples < 1 || unseenPrompts < 1) {
            throw new IllegalArgumentException("the demo's sizes are too small: " + this);
        }
    }

    /** Seconds on a 2-core machine: for tests. */
    public static DemoConfig quick() {
        return new DemoConfig("quick", 600, 8, 64, 2, 64, 150, 100, 250, 5e-3, 0.1, 1.0, 8, 4, 2, 2, 1.0,
                8000, 1500, 2, 7);
    }

    /** The default: about three minutes on a 2-core machine. */
    public static DemoConfig standard() {
        return new DemoConfig("standard", 8000, 12, 128, 2, 64, 2000, 1000, 6000, 5e-3, 0.1, 1.0, 24, 16, 5, 4, 1.0,
                8000, 1500, 3, 7);
    }

    /**
     * The same settings with some replaced (each null keeps this one's), checked again.
     *
     * @param newSeed the first seed
     * @param newSeeds how many seeds
     * @param newSeen how many combinations the labelled series come from
     * @param newRelax the relax factor of g_constraint
     * @param newGuidance the guidance scale
     * @return the new settings
     * @throws IllegalArgumentException if a setting is out of range
     */
    public DemoConfig with(Long newSeed, Integer newSeeds, Integer newSeen, Double newRelax, Double newGuidance) {
        return new DemoConfig(name, trainSeries, newSeen != null ? newSeen : seen, hidden, blocks, batchSize,
                pretrainSteps, finetuneSteps, ceilingSteps, lr, condDropout, newRelax != null ? newRelax : relax, unseenPrompts,
                samplesPerPrompt, evaluations, evalSamples, newGuidance != null ? newGuidance : guidance,
                estimatorSeries, estimatorSteps, newSeeds != null ? newSeeds : seeds, newSeed != null ? newSeed : seed);
    }
}
