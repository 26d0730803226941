package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

/** {@link LibTorch#setBlasThreads}: sets OpenBLAS's count at run time, refuses a count below one. */
class BlasThreadsTest {

    @Test
    void setsTheCountAndRefusesOneBelowOne() {
        int before = LibTorch.blasThreads();
        try {
            assertThat(LibTorch.setBlasThreads(1)).as("bytedeco's libtorch loads OpenBLAS").isTrue();
            assertThat(LibTorch.blasThreads()).isEqualTo(1);
            assertThat(LibTorch.setBlasThreads(3)).isTrue();
            assertThat(LibTorch.blasThreads()).isEqualTo(3);
            assertThatThrownBy(() -> LibTorch.setBlasThreads(0)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("OpenBLAS thread count must be >= 1, got 0");
            assertThat(LibTorch.blasThreads()).as("unchanged by a refused count").isEqualTo(3);
        } finally {
            if (before > 0) {
                LibTorch.setBlasThreads(before);
            }
        }
    }
}
