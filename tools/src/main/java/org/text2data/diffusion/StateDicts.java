package org.text2data.diffusion;

import java.util.Arrays;
import java.util.Map;

import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;

/** Loading a state dict into a module's named parameters, for the denoisers of this package. */
final class StateDicts {
    private StateDicts() {
    }

    /**
     * Copies {@code state}'s tensor of each of {@code params}' names into that parameter (converted to its dtype),
     * after checking every name and shape, so that a bad state dict changes nothing.
     *
     * @throws IllegalArgumentException if a name is missing from {@code state} or a shape differs
     */
    static void load(Map<String, Tensor> params, Map<String, Tensor> state) {
        for (Map.Entry<String, Tensor> e : params.entrySet()) {
            Tensor src = state.get(e.getKey());
            if (src == null) {
                throw new IllegalArgumentException("state dict has no '" + e.getKey() + "'");
            }
            if (!Arrays.equals(src.shape(), e.getValue().shape())) {
                throw new IllegalArgumentException("state dict '" + e.getKey() + "' has shape "
                        + Arrays.toString(src.shape()) + ", expected " + Arrays.toString(e.getValue().shape()));
            }
        }
        try (NoGradGuard ng = new NoGradGuard()) {
            for (Map.Entry<String, Tensor> e : params.entrySet()) {
                e.getValue().copy_(state.get(e.getKey()));
            }
        }
    }
}
