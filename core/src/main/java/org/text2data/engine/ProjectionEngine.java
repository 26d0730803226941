package org.text2data.engine;

import org.bytedeco.pytorch.Tensor;

/**
 * Computes Text2Data's two gradient steps over a fixed list of parameter tensors.
 *
 * <p>An engine belongs to one {@code Constraint}: it is created for that constraint's parameters and is a
 * function over the constraint's per-parameter records ({@link ParamState}, one per parameter, in the
 * parameters' order, passed to every call), which keep the constraint gradients {@code c_p} between
 * {@link #firstStep} and {@link #secondStep}; the engine keeps nothing per parameter. The math, per tensor
 * (see the conformance README):
 *
 * <pre>
 *   n_p   = ||c_p||^2
 *   phi_p = min(alpha * (gValue - gConstraint), beta * n_p)
 *   lam_p = max(0, (phi_p - &lt;g_p, c_p&gt;) / (1e-8 + n_p))
 *   g_p  += lam_p * c_p
 * </pre>
 *
 * Engines never read a device value on the host unless the caller does; on CPU that costs nothing.
 */
public interface ProjectionEngine extends AutoCloseable {

    /**
     * Short name shown to users: {@code "plain"}, {@code "fused-cpu"}, {@code "fused-cuda"}.
     *
     * @return the engine's name
     */
    String name();

    /**
     * First step: for every parameter that has a gradient, keep that gradient as its constraint
     * gradient. Parameters without a gradient keep none. When {@code zeroGrad} is true, every existing
     * gradient is left defined and zero afterwards (PyTorch 1.13's {@code zero_grad()} semantics, which
     * the reference relies on), so that the conditional backward accumulates into zeros; in a step that
     * {@link #releaseGradients} began, the gradients are kept by handle and released instead (same values).
     *
     * @param states the per-parameter records, one per parameter; they receive the kept gradients
     * @param zeroGrad whether to zero the gradients after keeping them
     * @throws IllegalArgumentException if {@code states} is not one record per parameter
     */
    void firstStep(ParamState[] states, boolean zeroGrad);

    /**
     * Begins a step in which the engine may hold gradients by handle instead of zeroing them (PyTorch 2's
     * {@code zero_grad(set_to_none=True)}, kept exact to 1.13's zeroing semantics): every gradient is released, so
     * that each backward pass hands its fresh gradient buffers over instead of adding them into zeroed ones; the next
     * {@link #firstStep firstStep(true)} keeps the unconditional gradients by handle and releases them again, and
     * {@link #secondStep} gives a parameter whose gradient 1.13 would have kept as zeros (it had one when the step
     * began, or got one in the first pass, but none in the second) a zero gradient. The values are those of zeroing.
     * An engine that does not do this returns false, and the caller zeroes the gradients itself.
     *
     * @param states the per-parameter records, one per parameter
     * @return whether the gradients were released (false: nothing was done)
     */
    default boolean releaseGradients(ParamState[] states) {
        return false;
    }

    /**
     * Ends the step {@link #releaseGradients} began, whether or not it got as far as {@link #secondStep}: later
     * calls follow the zeroing protocol again, and a step that ended early leaves the gradients zeroing would have
     * left (each one that existed before the step is defined). Does nothing for an engine that does not release
     * gradients.
     *
     * @param states the per-parameter records, one per parameter in order
     */
    default void endStep(ParamState[] states) {
    }

    /**
     * Second step: adds {@code lam_p * c_p} to every gradient {@code g_p} that has a kept {@code c_p},
     * in place. {@code gValue} is a 0-dim tensor holding the unconditional loss, on the parameters'
     * device. Returns the number of tensors the projection was applied to (known without a host sync).
     *
     * <p>When {@code checkFinite} is true the engine makes sure that, for every projected tensor,
     * {@code n_p} and {@code <g_p, c_p>} are finite (a NaN or infinity in either gradient makes one of
     * them non-finite), and that every gradient it does not project (a parameter without a kept
     * {@code c_p}) holds no NaN or infinity, since the base optimizer uses it too; otherwise it throws
     * {@link NonFiniteGradientException} naming such a tensor, and no gradient has been changed;
     * parameters are never touched by an engine. Strided (non-contiguous) gradients are accepted.
     * On CUDA the check costs one host sync (two when a gradient is not projected); without it the
     * step makes none.
     *
     * @param states the per-parameter records, one per parameter, holding the kept gradients
     * @param gValue the unconditional loss, a 0-dim tensor on the parameters' device
     * @param gConstraint the bound on the unconditional loss
     * @param alpha the factor of the loss's excess over {@code gConstraint}
     * @param beta the factor of {@code n_p} that caps {@code phi_p}
     * @param checkFinite whether to check the gradients for NaN and infinity
     * @return the number of tensors projected
     * @throws NonFiniteGradientException if {@code checkFinite} is true and a gradient holds a NaN or an infinity
     * @throws IllegalArgumentException if a gradient does not fit its kept constraint gradient, {@code gValue}
     *     is on the wrong device or holds more than one element, or {@code states} is not one record per parameter
     */
    int secondStep(ParamState[] states, Tensor gValue, double gConstraint, double alpha, double beta, boolean checkFinite);

    /**
     * Whether {@link #firstStep} has kept constraint gradients that {@link #secondStep} can use.
     *
     * @return true after {@link #firstStep} until the kept gradients are released
     */
    boolean hasConstraintGrads();

    /**
     * Releases the engine's own native resources. Idempotent. The per-parameter records are their owner's to close
     * ({@link ParamState#close()} releases the kept gradients and every other buffer).
     */
    @Override
    void close();
}
