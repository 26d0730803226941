package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;

import org.bytedeco.javacpp.Pointer;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/**
 * What {@link LibTorch#ensureLoaded()} changes for the whole process, and the documented opt-outs, each in a
 * forked JVM (these settings are process-wide and happen once).
 */
class ProcessSettingsTest {

    /** Run in the forked JVM: prints the settings after loading. */
    public static void main(String[] args) {
        LibTorch.ensureLoaded();
        System.out.println("blas=" + LibTorch.blasThreads() + " torch=" + torch.get_num_threads()
                + " maxPhysicalBytes=" + Pointer.maxPhysicalBytes() + " .");
    }

    static String run(String... props) throws Exception {
        return run(java.util.Map.of(), props);
    }

    /** The settings a forked JVM gets, with {@code env} added to an environment without the thread variables. */
    static String run(java.util.Map<String, String> env, String... props) throws Exception {
        ProcessBuilder pb = new ProcessBuilder(ForkedJvm.command(ProcessSettingsTest.class, List.of(props)));
        for (String v : List.of("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")) {
            pb.environment().remove(v);
        }
        pb.environment().putAll(env);
        return ForkedJvm.runOk(pb).lines().filter(l -> l.startsWith("blas=")).findFirst().orElseThrow();
    }

    @Test
    void byDefaultOpenBlasIsSetAndJavaCppsRssGuardIsOff() throws Exception {
        assertThat(run()).matches("blas=[1-9][0-9]* torch=[0-9]+ maxPhysicalBytes=0 .*");
    }

    @Test
    void byDefaultLibtorchGetsOneThreadAndOpenBlasEveryAvailableCore() throws Exception {
        // the forked JVM inherits this one's CPU affinity, so it sees as many processors
        assertThat(run()).startsWith("blas=" + Runtime.getRuntime().availableProcessors() + " torch=1 ");
    }

    @Test
    void ompNumThreadsKeepsLibtorchsPoolAndOpenBlasThenGetsOne() throws Exception {
        assertThat(run(java.util.Map.of("OMP_NUM_THREADS", "2"))).startsWith("blas=1 torch=2 ");
    }

    @Test
    void theUsersSettingsWin() throws Exception {
        assertThat(run("-Dtext2data.blasThreads=1", "-Dtext2data.torchThreads=2", "-Dorg.bytedeco.javacpp.maxPhysicalBytes=8g"))
                .startsWith("blas=1 torch=2 maxPhysicalBytes=" + (8L << 30) + " ");
    }

    @Test
    void configureThreadsFalseLeavesBothPoolsAlone() throws Exception {
        String untouched = run("-Dtext2data.configureThreads=false");
        assertThat(untouched).startsWith("blas=-1 ");
        int torchDefault = Integer.parseInt(untouched.replaceAll(".* torch=([0-9]+) .*", "$1"));
        // asked for another count, but told to leave the pools alone: nothing changes
        assertThat(run("-Dtext2data.configureThreads=false", "-Dtext2data.torchThreads=" + (torchDefault + 1),
                "-Dtext2data.blasThreads=1")).startsWith("blas=-1 torch=" + torchDefault + " ");
    }
}
