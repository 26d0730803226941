package org.text2data.diffusion;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.text2data.ConditionalModel;
import org.text2data.LibTorch;

/** The samplers' arithmetic: a model that knows the one clean series the data hold leads both samplers to it. */
class DiffusionTest {

    @Test
    void anOracleOfOneCleanSeriesIsWhatDdimAndDdpmSamplingReturn() {
        LibTorch.ensureLoaded();
        torch.manual_seed(11);
        int length = 6;
        Tensor target = Tensor.create(new float[] {0.5f, -1f, 2f, 0f, 3f, -0.25f}, 1, length);
        ConditionalModel oracle = (in, c) -> target.expand(in.size(0), length); // predicts the clean series
        Diffusion d = Diffusion.small(3).predictingClean();
        Tensor cond = torch.ones(4, 2);
        // DDIM ends on the last estimate of the clean series; DDPM's last mean is that estimate too, whatever x is
        for (Tensor s : List.of(d.sampleDdim(oracle, null, 4, length, 1.0), d.sampleDdim(oracle, cond, 4, length, 2.0),
                d.sample(oracle, null, 4, length, 1.0), d.sample(oracle, cond, 4, length, 2.0))) {
            assertThat(s.shape()).containsExactly(4, length);
            assertThat(s.sub(target).abs().max().item_double()).isLessThan(1e-4);
        }
    }
}
