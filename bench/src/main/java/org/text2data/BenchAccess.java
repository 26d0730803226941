package org.text2data;

import org.bytedeco.pytorch.Tensor;

/**
 * For the benchmarks only (bench/, not part of the library): the package-private step that {@link Text2Data#runStep}
 * takes after its two backward passes, so that {@code Interleaved}'s {@code update} variant times that call and no
 * other. It lives in the library's package, in the bench module, because the library has no public entry for it.
 */
public final class BenchAccess {

    private BenchAccess() {
    }

    /**
     * {@link Constraint}'s constrained step, as {@link Text2Data#runStep} calls it: with the fused optimizer one
     * native pass that projects and updates, else {@link Constraint#secondStep(Tensor, double)} then
     * {@link Constraint#stepBase()}.
     *
     * @param c           the constraint, after {@link Constraint#firstStep} with the conditional gradients current
     * @param gValue      the unconditional loss, a one-element tensor on the parameters' device
     * @param gConstraint the barrier's target
     * @return how many parameter tensors were projected
     */
    public static int constrainedStep(Constraint c, Tensor gValue, double gConstraint) {
        return c.constrainedStep(gValue, gConstraint);
    }
}
