package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

/**
 * What a user reads when libtorch's native libraries cannot all be found (bench/gpu/java-bundle.sh's bundle
 * reproduces both cases on a machine without the CUDA libraries: README, "GPU").
 */
class NativeLoadFailureTest {

    /** The dynamic linker's message as JavaCPP passes it on, seen with the -Pgpu libtorch without cuSPARSE. */
    private static final String SEEN = "/home/u/.javacpp/cache/pytorch/linux-x86_64-gpu/libtorch_cuda.so: "
            + "libcusparse.so.12: cannot open shared object file: No such file or directory";

    @Test
    void namesTheMissingLibraryFromTheLinkersMessage() {
        UnsatisfiedLinkError e = new UnsatisfiedLinkError("no jnitorch in java.library.path");
        e.initCause(new UnsatisfiedLinkError(SEEN));
        assertThat(NativeLoadFailure.missingLibraries(e)).containsExactly("libcusparse.so.12");
        assertThat(NativeLoadFailure.missingLibraries(new UnsatisfiedLinkError(
                "/x/libjnitorch.so: libcudart.so.13: cannot open shared object file: No such file or directory")))
                .containsExactly("libcudart.so.13");
    }

    @Test
    void aMissingCudaLibraryBecomesAClearMessageWithWhatToInstall() {
        UnsatisfiedLinkError e = new UnsatisfiedLinkError(SEEN);
        RuntimeException r = NativeLoadFailure.explain(e);
        assertThat(r).isInstanceOf(IllegalStateException.class).hasCause(e);
        assertThat(r.getMessage()).startsWith("libtorch could not be loaded: libcusparse.so.12 was not found")
                .contains("CUDA 13 runtime with cuDNN 9").contains("LD_LIBRARY_PATH").contains("-Pgpu")
                .doesNotContain("cannot open shared object file")
                .endsWith("`ldd /home/u/.javacpp/cache/pytorch/linux-x86_64-gpu/libtorch_cuda.so` lists every one.");
    }

    @Test
    void aMissingOtherLibraryIsNamedWithoutTheCudaAdvice() {
        RuntimeException r = NativeLoadFailure.explain(new UnsatisfiedLinkError(
                "/x/libtorch_cpu.so: libgomp.so.1: cannot open shared object file: No such file or directory"));
        assertThat(r.getMessage()).contains("libgomp.so.1 was not found").doesNotContain("cuDNN");
    }

    @Test
    void anyOtherLinkErrorIsLeftAsItWas() {
        UnsatisfiedLinkError e = new UnsatisfiedLinkError("/x/libjnitorch.so: undefined symbol: _ZN3c104cuda");
        assertThatThrownBy(() -> NativeLoadFailure.explain(e)).isSameAs(e);
    }

    @Test
    void theCpuBuildSaysSoWhenAskedWhyThereIsNoCuda() {
        LibTorch.ensureLoaded();
        if (LibTorch.cudaAvailable()) {
            assertThat(LibTorch.cudaUnavailableReason()).isNull();
            return;
        }
        boolean cudaBuild = org.bytedeco.pytorch.presets.torch.class.getResource(
                "/org/bytedeco/pytorch/" + org.bytedeco.javacpp.Loader.getPlatform() + "-gpu/libtorch_cuda.so") != null;
        if (cudaBuild) { // -Pgpu without a usable GPU or its libraries: a reason, whichever
            assertThat(LibTorch.cudaUnavailableReason()).isNotBlank();
        } else { // the default profile: the CPU build of libtorch
            assertThat(LibTorch.cudaUnavailableReason()).contains("CPU build").contains("-Pgpu");
        }
    }
}
