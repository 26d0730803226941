package org.text2data;

import java.util.List;

import org.bytedeco.pytorch.Tensor;

/**
 * What {@link Text2Data#runStep} calls, when one is attached to the optimizer
 * ({@link Constraint#setGradientSync}), right after each of its two backward passes: after the
 * unconditional one, before the constraint keeps the gradients, and after the conditional one, before the
 * projection. Data parallelism ({@link org.text2data.dist.DataParallel}) averages the loss and the
 * gradients of all processes here, so that every replica projects and steps alike.
 */
@FunctionalInterface
public interface GradientSync {
    /**
     * Replaces the parameters' current gradients, in place, by their average over all shards of the
     * batch, and returns the averaged loss.
     *
     * @param loss   this process's loss (a detached one-element tensor), a mean over its {@code rows}
     * @param rows   this process's batch rows (the averaging weight)
     * @param params the optimizer's parameters, in order; their gradients may be undefined
     * @return the loss averaged over all processes, a one-element tensor like {@code loss}
     */
    Tensor reduce(Tensor loss, long rows, List<Tensor> params);
}
