package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.text2data.diffusion.Denoiser;

/** The Java denoiser computes what the reference's (TorchScript) denoiser computes. */
class DenoiserTest {

    @Test
    void javaDenoiserMatchesTorchScriptForward() {
        try (TorchScriptModel ts = TestModels.model(); Batch b = TestModels.batch()) {
            Denoiser d = new Denoiser(4, 3, 8, 2);
            d.to(torch.ScalarType.Double, false);
            d.loadStateDict(ts.namedParameters());
            Tensor diff = d.forward(b.data(), null).sub(ts.forward(b.data(), null)).abs().max();
            assertThat(diff.item_double()).isLessThan(1e-12);
            diff = d.forward(b.data(), b.cond()).sub(ts.forward(b.data(), b.cond())).abs().max();
            assertThat(diff.item_double()).isLessThan(1e-12);
            assertThat(d.namedParameters().keySet()).containsExactlyElementsOf(ts.namedParameters().keySet());
            assertThatThrownBy(() -> new Denoiser(0, 1, 1, 1)).hasMessageContaining("sizes must be positive");
            Scalar unused = new Scalar(0);
            unused.close();
        }
    }
}
