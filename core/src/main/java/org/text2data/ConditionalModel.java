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
    Tensor forward(Tensor data, Tensor condOrNull);
}
