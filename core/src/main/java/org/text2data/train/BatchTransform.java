package org.text2data.train;

import org.text2data.Batch;

/**
 * Turns the rows drawn for a step into what the model trains on: identity for plain regression; for a
 * diffusion model, noising the rows at random times (see {@link org.text2data.diffusion.Diffusion}).
 */
@FunctionalInterface
public interface BatchTransform {
    Batch apply(Batch rows);

    static BatchTransform identity() {
        return rows -> rows;
    }
}
