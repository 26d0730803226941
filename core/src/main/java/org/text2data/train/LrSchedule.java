package org.text2data.train;

/** The learning rate at a step, from the base rate: constant, cosine decay, or step decay. */
@FunctionalInterface
public interface LrSchedule {

    /**
     * The learning rate for one step.
     *
     * @param baseLr the base learning rate (the optimizer's rate when the loop started)
     * @param step the step about to be taken, counting from 0
     * @param totalSteps the number of steps the loop takes in all
     * @return the learning rate to take {@code step} with
     */
    double lr(double baseLr, long step, long totalSteps);

    /**
     * The base rate at every step.
     *
     * @return a schedule that returns {@code baseLr} unchanged
     */
    static LrSchedule constant() {
        return (lr, step, total) -> lr;
    }

    /**
     * Cosine from {@code baseLr} at step 0 down to {@code minFactor * baseLr} at the last step (a run of one step
     * takes it at {@code minFactor * baseLr}).
     *
     * @param minFactor the fraction of the base rate reached at the last step, in [0, 1]
     * @return the cosine schedule
     * @throws IllegalArgumentException if {@code minFactor} is not in [0, 1]
     */
    static LrSchedule cosine(double minFactor) {
        if (!(minFactor >= 0 && minFactor <= 1)) {
            throw new IllegalArgumentException("cosine minFactor must lie in [0, 1], got " + minFactor);
        }
        return (lr, step, total) -> {
            double p = total <= 1 ? 1 : (double) step / (total - 1);
            return lr * (minFactor + (1 - minFactor) * 0.5 * (1 + Math.cos(Math.PI * p)));
        };
    }

    /**
     * Multiplies by {@code gamma} every {@code every} steps: {@code baseLr * gamma^(step / every)}, with integer
     * division.
     *
     * @param every the number of steps between decays, positive
     * @param gamma the factor applied at each decay, positive and finite
     * @return the step-decay schedule
     * @throws IllegalArgumentException if {@code every} is not positive or {@code gamma} is not a positive finite
     *         number
     */
    static LrSchedule stepDecay(long every, double gamma) {
        if (every <= 0 || !(gamma > 0) || !Double.isFinite(gamma)) {
            throw new IllegalArgumentException("step decay needs every > 0 and a finite gamma > 0");
        }
        return (lr, step, total) -> lr * Math.pow(gamma, step / every);
    }
}
