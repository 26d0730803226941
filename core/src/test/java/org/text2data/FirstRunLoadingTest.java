package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The first JVM on an empty JavaCPP cache must load bytedeco's libtorch and nothing else: forks a JVM with a fresh
 * {@code org.bytedeco.javacpp.cachedir}, which goes through {@link LibTorch#ensureLoaded()}, makes a tensor and
 * lists any libtorch/libc10 mapped from outside that cache. It guards against a regression only where a
 * system libtorch is installed (Debian's python3-torch / libtorch-dev; {@code .ci/run} installs it).
 */
class FirstRunLoadingTest {

    /** Run in the forked JVM. */
    public static void main(String[] args) throws Exception {
        LibTorch.ensureLoaded();
        FirstLoadAnyOrderTest.report(torch.ones(2, 2)); // sum=... foreign=[libtorch mapped from outside the cache]
    }

    @Test
    void firstRunOnAnEmptyCacheLoadsOnlyBytedecosLibtorch(@TempDir Path tmp) throws Exception {
        Path cache = Files.createDirectory(tmp.resolve("javacpp-cache"));
        String output = ForkedJvm.runOk(ForkedJvm.command(FirstRunLoadingTest.class,
                List.of("-XX:ErrorFile=" + tmp.resolve("hs_err_%p.log"), "-Dorg.bytedeco.javacpp.cachedir=" + cache)));
        assertThat(output).contains("sum=4.0 foreign=[]");
    }
}
