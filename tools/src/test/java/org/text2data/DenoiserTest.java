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

    @Test
    void aStateDictWithOneWrongShapeChangesNothing() {
        LibTorch.ensureLoaded();
        torch.manual_seed(1);
        Denoiser d = new Denoiser(4, 3, 8, 2);
        torch.manual_seed(2);
        Denoiser other = new Denoiser(4, 3, 8, 2);
        java.util.Map<String, Tensor> state = new java.util.LinkedHashMap<>(other.namedParameters());
        state.put("out.bias", torch.zeros(5)); // the last parameter, after every other one would have been copied
        java.util.Map<String, Tensor> before = new java.util.LinkedHashMap<>();
        d.namedParameters().forEach((n, t) -> before.put(n, t.detach().clone()));
        assertThatThrownBy(() -> d.loadStateDict(state)).hasMessageContaining("'out.bias' has shape [5], expected [4]");
        d.namedParameters().forEach((n, t) -> assertThat(torch.equal(t, before.get(n))).as(n).isTrue());
        assertThat(torch.equal(d.namedParameters().get("cin.weight"), other.namedParameters().get("cin.weight")))
                .isFalse();
    }
}
