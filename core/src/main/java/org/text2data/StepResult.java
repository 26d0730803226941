package org.text2data;

import org.bytedeco.pytorch.Tensor;

/**
 * What one {@link Text2Data#runStep} did: the unconditional loss {@code g} it read before the update,
 * the conditional loss {@code f}, and how many parameter tensors were projected.
 *
 * <p>The losses stay tensors on the model's device: reading them ({@link #uncondLoss()},
 * {@link #condLoss()}) is the only host sync, and it is the caller's choice.
 *
 * <p>Close it (try-with-resources): it holds two native tensors, and a result that is let go is freed
 * only when the garbage collector happens to collect it, which it is not pressed to do (the Java objects
 * are small, the native memory is invisible to it; JavaCPP's own guard, {@code maxPhysicalBytes}, is off,
 * see {@link LibTorch}). Measured over 1000 steps of a small denoiser: +8 MB resident closed, +16 MB
 * let go; a user's larger loop grew from 289 MB to 1124 MB. With
 * {@code -Dorg.bytedeco.javacpp.nopointergc=true} a result let go is never freed. The tensors returned by
 * {@link #uncondLossTensor()} and {@link #condLossTensor()} belong to the result: they are invalid once it
 * is closed ({@code detach().clone()} one to keep it).
 */
public final class StepResult implements AutoCloseable {
    private final Tensor uncond;
    private final Tensor cond;
    private final int projected;
    /** The fused optimizer on a GPU: reading a loss reads its step status too (null elsewhere). */
    private final Constraint onDevice;

    StepResult(Tensor uncond, Tensor cond, int projected) {
        this(uncond, cond, projected, null);
    }

    StepResult(Tensor uncond, Tensor cond, int projected, Constraint onDevice) {
        this.uncond = uncond;
        this.cond = cond;
        this.projected = projected;
        this.onDevice = onDevice;
    }

    /** After a loss was read (the host waited for the device anyway): a step skipped on the device is reported. */
    private double read(Tensor loss) {
        double v = loss.item_double();
        if (onDevice != null && !onDevice.isClosed()) {
            onDevice.checkSkippedStepsIfFree();
        }
        return v;
    }

    /**
     * The unconditional loss g as a 0-dim tensor (no host sync), owned by this result.
     *
     * @return the detached loss tensor, on the model's device; invalid once this result is closed
     */
    public Tensor uncondLossTensor() {
        return uncond;
    }

    /**
     * The conditional loss f as a 0-dim tensor (no host sync), owned by this result.
     *
     * @return the detached loss tensor, on the model's device; invalid once this result is closed
     */
    public Tensor condLossTensor() {
        return cond;
    }

    /**
     * The unconditional loss g (reads the device). With the fused optimizer on a GPU, this also reads its step
     * status (see {@link Constraint#checkSkippedSteps()}).
     *
     * @return the value of {@link #uncondLossTensor()}
     * @throws NonFiniteException if a step was skipped on the device since the last report (unless another thread
     *                            is inside a call on the constraint: then that thread reports it at its next check)
     */
    public double uncondLoss() {
        return read(uncond);
    }

    /**
     * The conditional loss f (reads the device). With the fused optimizer on a GPU, this also reads its step
     * status (see {@link Constraint#checkSkippedSteps()}).
     *
     * @return the value of {@link #condLossTensor()}
     * @throws NonFiniteException if a step was skipped on the device since the last report (unless another thread
     *                            is inside a call on the constraint: then that thread reports it at its next check)
     */
    public double condLoss() {
        return read(cond);
    }

    /**
     * Parameter tensors whose gradient was projected (those with both gradients).
     *
     * @return how many parameter tensors the step projected
     */
    public int projectedTensors() {
        return projected;
    }

    /** Frees the two loss tensors. */
    @Override
    public void close() {
        uncond.close();
        cond.close();
    }
}
