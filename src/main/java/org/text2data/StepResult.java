package org.text2data;

import org.bytedeco.pytorch.Tensor;

/**
 * What one {@link Text2Data#runStep} did: the unconditional loss {@code g} it read before the update,
 * the conditional loss {@code f}, and how many parameter tensors were projected.
 *
 * <p>The losses stay tensors on the model's device: reading them ({@link #uncondLoss()},
 * {@link #condLoss()}) is the only host sync, and it is the caller's choice. Close the result (or let it
 * go) to free the two scalars.
 */
public final class StepResult implements AutoCloseable {
    private final Tensor uncond;
    private final Tensor cond;
    private final int projected;

    StepResult(Tensor uncond, Tensor cond, int projected) {
        this.uncond = uncond;
        this.cond = cond;
        this.projected = projected;
    }

    /** The unconditional loss g as a 0-dim tensor (no host sync). */
    public Tensor uncondLossTensor() {
        return uncond;
    }

    /** The conditional loss f as a 0-dim tensor (no host sync). */
    public Tensor condLossTensor() {
        return cond;
    }

    /** The unconditional loss g (reads the device). */
    public double uncondLoss() {
        return uncond.item_double();
    }

    /** The conditional loss f (reads the device). */
    public double condLoss() {
        return cond.item_double();
    }

    /** Parameter tensors whose gradient was projected (those with both gradients). */
    public int projectedTensors() {
        return projected;
    }

    @Override
    public void close() {
        uncond.close();
        cond.close();
    }
}
