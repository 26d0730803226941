package org.text2data.train;

import org.text2data.Batch;

/**
 * Turns the rows drawn for a step into what the model trains on: identity for plain regression; for a
 * diffusion model, noising the rows at random times (see {@code org.text2data.diffusion.Diffusion} in the tools module).
 */
@FunctionalInterface
public interface BatchTransform {
    /**
     * Transforms the rows drawn for one step.
     *
     * @param rows the mini-batch drawn from the data set
     * @return the batch to train on this step
     */
    Batch apply(Batch rows);

    /**
     * The transform that trains on the rows as drawn.
     *
     * @return a transform that returns its argument unchanged
     */
    static BatchTransform identity() {
        return rows -> rows;
    }
}
