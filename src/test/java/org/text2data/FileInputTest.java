package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;

/** Model and data files: every problem names the file (and the key). */
class FileInputTest {

    @Test
    void missingModelFile() {
        assertThatThrownBy(() -> TorchScriptModel.load(Path.of("no/such/model.pt")))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("model file not found: no/such/model.pt");
    }

    @Test
    void corruptModelFile() {
        assertThatThrownBy(() -> TorchScriptModel.load(TestModels.bad("corrupt.pt")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("corrupt.pt").hasMessageContaining("is not a TorchScript module");
    }

    @Test
    void aDataFileIsNotAModel() {
        assertThatThrownBy(() -> TorchScriptModel.load(TestModels.fixture("adam-f64.batch.pt")))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("is not a TorchScript module");
    }

    @Test
    void missingDataFile() {
        assertThatThrownBy(() -> Batch.load(Path.of("nowhere.pt")))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("data file not found: nowhere.pt");
    }

    @Test
    void dataFileWithoutALabel() {
        assertThatThrownBy(() -> Batch.load(TestModels.bad("missing-label.pt")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("missing-label.pt has no key 'label'")
                .hasMessageContaining("keys present: [data, cond]");
    }

    @Test
    void dataFileThatIsNotADict() {
        assertThatThrownBy(() -> Batch.load(TestModels.bad("not-a-dict.pt")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("not-a-dict.pt holds a Tensor, expected a dict with keys [data, cond, label]");
    }

    @Test
    void corruptDataFile() {
        assertThatThrownBy(() -> Batch.load(TestModels.bad("corrupt.pt")))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("corrupt.pt is not a torch.save file");
    }

    @Test
    void rowsMustAgree() {
        assertThatThrownBy(() -> Batch.load(TestModels.bad("cond-rows.pt")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("'cond' has shape [5, 3] but 'data' has 16 rows");
    }

    @Test
    void goodFilesLoad() {
        try (TorchScriptModel m = TestModels.model(); Batch b = TestModels.batch()) {
            assertThat(m.namedParameters()).containsKeys("null", "cin.weight", "out.bias");
            assertThat(b.size()).isEqualTo(16);
            assertThat(b.data().shape()).containsExactly(16, 4);
            assertThat(m.forward(b.data(), null).shape()).containsExactly(16, 4);
            assertThat(m.forward(b.data(), b.cond()).shape()).containsExactly(16, 4);
        }
    }
}
