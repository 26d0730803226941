package org.text2data;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

import static org.assertj.core.api.Assertions.assertThat;

/** Shared set-up for the API tests: the adam-f64 fixture's model and batch, and parameter snapshots. */
final class TestModels {
    private TestModels() {
    }

    static Path fixture(String name) {
        return Fixtures.dir().resolve(name);
    }

    static Path bad(String name) {
        return Path.of("src", "test", "resources", "bad", name);
    }

    static TorchScriptModel model() {
        return TorchScriptModel.load(fixture("adam-f64.model.pt"));
    }

    static Batch batch() {
        return Batch.load(fixture("adam-f64.batch.pt"));
    }

    static Map<String, Tensor> snapshot(Map<String, Tensor> params) {
        Map<String, Tensor> copy = new LinkedHashMap<>();
        params.forEach((k, v) -> copy.put(k, v.detach().clone()));
        return copy;
    }

    static void assertUnchanged(Map<String, Tensor> params, Map<String, Tensor> before) {
        params.forEach((k, v) -> assertThat(torch.equal(v.detach(), before.get(k)))
                .as("parameter %s changed", k).isTrue());
    }
}
