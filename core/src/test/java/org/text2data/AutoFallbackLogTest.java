package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Engine.AUTO without the native library says why, once, and goes on with the plain engine and libtorch's optimizer. */
class AutoFallbackLogTest {

    /** Run in a JVM whose text2data.native.library names a missing file: two AUTO constraints. */
    public static void main(String[] args) {
        LibTorch.ensureLoaded();
        for (int i = 0; i < 2; i++) {
            Tensor w = torch.ones(3).requires_grad_(true);
            try (Constraint c = new Constraint(Map.of("w", w), OptimizerSpec.adam(0.1), 1, 1, Engine.AUTO)) {
                System.out.println("engine=" + c.engineName() + " fused=" + c.isFused());
            }
        }
    }

    @Test
    void autoLogsWhyTheFusedPathCannotLoadOnce(@TempDir Path tmp) throws Exception {
        Path missing = tmp.resolve("no-such-dir").resolve("libtext2data.so");
        String output = ForkedJvm.runOk(ForkedJvm.command(AutoFallbackLogTest.class,
                List.of("-Dtext2data.native.library=" + missing)));
        assertThat(output).contains("engine=plain fused=false");
        assertThat(output.split("the fused engine is not available", -1)).as(output).hasSize(2); // exactly once
        assertThat(output).contains(missing.toString()).contains("Engine.AUTO uses the plain engine");
    }
}
