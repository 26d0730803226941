package org.text2data.engine;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/**
 * {@link FusedOptimizer.Options#stateCount()}, the count the fused step uses without allocating, says what
 * {@link FusedOptimizer.Options#stateNames()} says, for every optimizer and variant.
 */
class FusedOptimizerOptionsTest {

    @Test
    void stateCountIsTheNumberOfStateNames() {
        for (FusedOptimizer.Kind kind : FusedOptimizer.Kind.values()) {
            for (boolean amsgrad : new boolean[] {false, true}) {
                for (double momentum : new double[] {0.0, 0.9}) {
                    FusedOptimizer.Options o = new FusedOptimizer.Options(kind, 0.1, 0.9, 0.999, 1e-8, 0.0, amsgrad,
                            momentum, 0.0, false);
                    assertThat(o.stateCount()).as("%s", o).isEqualTo(o.stateNames().length);
                }
            }
        }
    }
}
