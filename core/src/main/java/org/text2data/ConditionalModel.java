package org.text2data;

import org.bytedeco.pytorch.Tensor;

/**
 * A conditional generative model as Text2Data trains it: {@code forward(data, cond)} with
 * {@code cond == null} meaning "unconditional" (the model substitutes its own null condition).
 *
 * <p>Anything fits: a lambda over your own bytedeco {@code Module}s, a {@link TorchScriptModel}
 * saved from Python, or the bundled denoiser of the tools module ({@code org.text2data.diffusion.Denoiser}).
 */
@FunctionalInterface
public interface ConditionalModel {
    /**
     * Runs the model.
     *
     * @param data       the input batch
     * @param condOrNull the conditions, one row per example, or null for an unconditional pass
     * @return the model's prediction for {@code data}
     */
    Tensor forward(Tensor data, Tensor condOrNull);
}
