package org.text2data.train;

/** The learning rate at a step, from the base rate: constant, cosine decay, or step decay. */
@FunctionalInterface
public interface LrSchedule {

    double lr(double baseLr, long step, long totalSteps);

    static LrSchedule constant() {
        return (lr, step, total) -> lr;
    }

    /** Cosine from {@code baseLr} down to {@code minFactor * baseLr} at the last step. */
    static LrSchedule cosine(double minFactor) {
        if (!(minFactor >= 0 && minFactor <= 1)) {
            throw new IllegalArgumentException("cosine minFactor must lie in [0, 1], got " + minFactor);
        }
        return (lr, step, total) -> {
            double p = total <= 1 ? 1 : (double) step / (total - 1);
            return lr * (minFactor + (1 - minFactor) * 0.5 * (1 + Math.cos(Math.PI * p)));
        };
    }

    /** Multiplies by {@code gamma} every {@code every} steps. */
    static LrSchedule stepDecay(long every, double gamma) {
        if (every <= 0 || !(gamma > 0) || !Double.isFinite(gamma)) {
            throw new IllegalArgumentException("step decay needs every > 0 and a finite gamma > 0");
        }
        return (lr, step, total) -> lr * Math.pow(gamma, step / every);
    }
}
