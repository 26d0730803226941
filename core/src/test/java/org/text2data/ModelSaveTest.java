package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link TorchScriptModel#save} where the module may not fit: libtorch's zip writer aborts the process when the disk
 * fills during a save (it throws again while unwinding), so the save is refused first, naming the file, and leaves
 * the folder as it was.
 */
class ModelSaveTest {

    @Test
    void aSaveThatMayNotFitIsRefusedAndLeavesTheFolderAsItWas(@TempDir Path tmp) throws IOException {
        Path out = tmp.resolve("finetuned.pt");
        Files.writeString(out, "the previous model");
        var real = TorchScriptModel.usableSpace;
        try (TorchScriptModel m = TestModels.model()) {
            TorchScriptModel.usableSpace = dir -> 4096;
            assertThatThrownBy(() -> m.checkSaveFits(out)).isInstanceOf(IOException.class)
                    .hasMessageStartingWith("cannot write " + out + ": not enough free space");
            assertThatThrownBy(() -> m.save(out)).isInstanceOf(IOException.class)
                    .hasMessageContaining(out.toString()).hasMessageContaining("not enough free space")
                    .hasMessageContaining("0.0 MiB are free");
            try (Stream<Path> files = Files.list(tmp)) {
                assertThat(files).containsExactly(out);
            }
            assertThat(Files.readString(out)).isEqualTo("the previous model");
            TorchScriptModel.usableSpace = real;
            m.checkSaveFits(out);
            m.save(out);
            try (TorchScriptModel back = TorchScriptModel.load(out)) {
                assertThat(back.namedParameters().keySet()).isEqualTo(m.namedParameters().keySet());
            }
            // the same module twice gives the same bytes (libtorch names the archive's folder after the file)
            byte[] first = Files.readAllBytes(out);
            m.save(out);
            assertThat(Files.readAllBytes(out)).isEqualTo(first);
            try (Stream<Path> files = Files.list(tmp)) {
                assertThat(files).containsExactly(out);
            }
        } finally {
            TorchScriptModel.usableSpace = real;
        }
    }
}
