package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;
import org.text2data.LibTorch.ThreadPlan;

/**
 * The thread rule of {@link LibTorch#threadPlan} as a pure function of (cores, libtorch's default, the user's
 * settings); what the process really gets is checked in {@link ProcessSettingsTest}.
 */
class ThreadPlanTest {

    static ThreadPlan plan(int cores, int torchDefault) {
        return LibTorch.threadPlan(cores, torchDefault, null, null, false, false);
    }

    @Test
    void libtorchGetsOneThreadAndOpenBlasEveryAvailableCore() {
        assertThat(plan(1, 1)).isEqualTo(new ThreadPlan(1, 1));
        // taskset -c 0 on a 2-core machine: libtorch's default counts the machine (2), not the affinity (1)
        assertThat(plan(1, 2)).isEqualTo(new ThreadPlan(1, 1));
        // a fresh 2-vCPU machine (libtorch's default 2) and one whose libtorch reports 1: the same choice
        assertThat(plan(2, 2)).isEqualTo(new ThreadPlan(1, 2));
        assertThat(plan(2, 1)).isEqualTo(new ThreadPlan(1, 2));
        assertThat(plan(16, 8)).isEqualTo(new ThreadPlan(1, 16));
        assertThat(plan(0, 1)).isEqualTo(new ThreadPlan(1, 1));
    }

    @Test
    void theUsersLibtorchCountWinsAndSeveralLibtorchThreadsLeaveOpenBlasOne() {
        assertThat(LibTorch.threadPlan(2, 2, "4", null, false, false)).isEqualTo(new ThreadPlan(4, 1));
        assertThat(LibTorch.threadPlan(2, 2, " 1 ", null, false, false)).isEqualTo(new ThreadPlan(1, 2));
        // 0: libtorch's pool left as it is; OpenBLAS sized against what libtorch then runs
        assertThat(LibTorch.threadPlan(2, 2, "0", null, false, false)).isEqualTo(new ThreadPlan(0, 1));
        assertThat(LibTorch.threadPlan(2, 1, "0", null, false, false)).isEqualTo(new ThreadPlan(0, 2));
        // OMP_NUM_THREADS (or MKL_NUM_THREADS) set: libtorch already read it, and it stays
        assertThat(LibTorch.threadPlan(2, 2, null, null, false, true)).isEqualTo(new ThreadPlan(0, 1));
        assertThat(LibTorch.threadPlan(2, 1, null, null, false, true)).isEqualTo(new ThreadPlan(0, 2));
        // the property beats the environment
        assertThat(LibTorch.threadPlan(2, 2, "1", null, false, true)).isEqualTo(new ThreadPlan(1, 2));
    }

    @Test
    void theUsersOpenBlasCountWins() {
        assertThat(LibTorch.threadPlan(2, 2, null, "3", false, false)).isEqualTo(new ThreadPlan(1, 3));
        assertThat(LibTorch.threadPlan(2, 2, null, "0", false, false)).isEqualTo(new ThreadPlan(1, 0));
        assertThat(LibTorch.threadPlan(2, 2, null, null, true, false)).isEqualTo(new ThreadPlan(1, 0));
        assertThat(LibTorch.threadPlan(2, 2, null, "2", true, false)).isEqualTo(new ThreadPlan(1, 2));
        assertThat(LibTorch.threadPlan(2, 2, "2", "2", false, false)).isEqualTo(new ThreadPlan(2, 2));
    }

    @Test
    void aCountThatIsNotOneIsRefusedByName() {
        assertThatThrownBy(() -> LibTorch.threadPlan(2, 2, "two", null, false, false))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("-Dtext2data.torchThreads=two").hasMessageContaining("non-negative integer");
        assertThatThrownBy(() -> LibTorch.threadPlan(2, 2, null, "-1", false, false))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("-Dtext2data.blasThreads=-1");
    }
}
