package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Map;

import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.text2data.diffusion.FilmDenoiser;

/** The demo's denoiser: its conditional pathway starts as the identity, and a zero condition is the null one. */
class FilmDenoiserTest {

    private static double maxDiff(Tensor a, Tensor b) {
        return a.sub(b).abs().max().item_double();
    }

    @Test
    void conditionalEqualsUnconditionalAtInitialisation() {
        LibTorch.ensureLoaded();
        torch.manual_seed(3);
        FilmDenoiser m = new FilmDenoiser(12, 4, 5, 16, 2);
        Tensor x = torch.randn(6, 16);
        Tensor c = torch.randn(6, 5);
        assertThat(maxDiff(m.forward(x, c), m.forward(x, null))).isZero();
    }

    @Test
    void aZeroConditionIsTheNullConditionAlsoAfterTheFilmLayersChange() {
        LibTorch.ensureLoaded();
        torch.manual_seed(4);
        FilmDenoiser m = new FilmDenoiser(12, 4, 5, 16, 2);
        try (NoGradGuard ng = new NoGradGuard()) {
            for (Map.Entry<String, Tensor> e : m.namedParameters().entrySet()) {
                e.getValue().add_(torch.randn(e.getValue().sizes()).mul(new org.bytedeco.pytorch.Scalar(0.1)));
            }
        }
        Tensor x = torch.randn(6, 16);
        Tensor c = torch.randn(6, 5);
        assertThat(maxDiff(m.forward(x, c), m.forward(x, null))).as("the condition now matters").isGreaterThan(1e-4);
        assertThat(maxDiff(m.forward(x, torch.zeros(6, 5)), m.forward(x, null))).isZero();
    }

    @Test
    void loadStateDictCopiesEveryParameterAndRefusesAMismatch() {
        LibTorch.ensureLoaded();
        torch.manual_seed(5);
        FilmDenoiser a = new FilmDenoiser(12, 4, 5, 16, 2);
        torch.manual_seed(6);
        FilmDenoiser b = new FilmDenoiser(12, 4, 5, 16, 2);
        Tensor x = torch.randn(3, 16);
        assertThat(maxDiff(a.forward(x, null), b.forward(x, null))).isGreaterThan(0);
        b.loadStateDict(a.namedParameters());
        assertThat(maxDiff(a.forward(x, null), b.forward(x, null))).isZero();
        FilmDenoiser wider = new FilmDenoiser(12, 4, 5, 8, 2);
        assertThatThrownBy(() -> wider.loadStateDict(a.namedParameters())).hasMessageContaining("has shape");
        assertThatThrownBy(() -> new FilmDenoiser(0, 4, 5, 8, 2)).hasMessageContaining("sizes must be positive");
    }
}
