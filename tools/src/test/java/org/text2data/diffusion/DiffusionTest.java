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

    @Test
    void guidanceScalesTheConditionalModelsDifferenceFromTheUnconditionalOne() {
        // the model's conditional clean series is the unconditional one plus delta: guidance of scale w moves the
        // samples to target + w * delta (the last DDIM estimate and the last DDPM mean are the guided estimate)
        LibTorch.ensureLoaded();
        torch.manual_seed(12);
        int length = 4;
        Tensor target = Tensor.create(new float[] {1f, -2f, 0.5f, 0f}, 1, length);
        Tensor delta = Tensor.create(new float[] {0.25f, 0f, -1f, 2f}, 1, length);
        ConditionalModel oracle = (in, c) -> (c == null ? target : target.add(delta)).expand(in.size(0), length);
        Diffusion d = Diffusion.small(3).predictingClean();
        Tensor cond = torch.ones(3, 2);
        for (double w : new double[] {0.0, 1.0, 2.5}) {
            Tensor want = target.add(delta.mul(new org.bytedeco.pytorch.Scalar(w)));
            for (Tensor s : List.of(d.sampleDdim(oracle, cond, 3, length, w), d.sample(oracle, cond, 3, length, w))) {
                assertThat(s.sub(want).abs().max().item_double()).as("w = %s", w).isLessThan(1e-4);
            }
        }
    }
}
