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
        return Fixtures.resources().resolve("bad").resolve(name);
    }

    static TorchScriptModel model() {
        return TorchScriptModel.load(fixture("adam-f64.model.pt"));
    }

    static Batch batch() {
        return Batch.load(fixture("adam-f64.batch.pt"));
    }

    private static org.bytedeco.pytorch.CompilationUnit unit; // owns dictMaker: kept as long as it is used
    private static org.bytedeco.pytorch.Function dictMaker;

    /**
     * Writes {@code torch.save({"data": data, "cond": cond, "label": label})} (a null tensor leaves its key out) with
     * libtorch's own pickler, the format Python's torch.save writes.
     */
    static synchronized void saveDict(Path file, Tensor data, Tensor cond, Tensor label) throws java.io.IOException {
        LibTorch.ensureLoaded();
        if (dictMaker == null) {
            unit = torch.compile("""
                    def f(d: Optional[Tensor], c: Optional[Tensor], l: Optional[Tensor]) -> Dict[str, Tensor]:
                        out: Dict[str, Tensor] = {}
                        if d is not None:
                            out['data'] = d
                        if c is not None:
                            out['cond'] = c
                        if l is not None:
                            out['label'] = l
                        return out
                    """);
            dictMaker = unit.get_function(new org.bytedeco.pytorch.QualifiedName("f"));
        }
        try (var args = new org.bytedeco.pytorch.IValueVector(iv(data), iv(cond), iv(label))) {
            savePickled(file, dictOf(args));
        }
    }

    /** The dict {@link #saveDict} writes, from its three (optional) tensors; call saveDict once before. */
    static synchronized org.bytedeco.pytorch.IValue dictOf(org.bytedeco.pytorch.IValueVector args) {
        return dictMaker.apply(args);
    }

    /** Writes any value as torch.save would (a dict of ints, a list, ...). */
    static void savePickled(Path file, org.bytedeco.pytorch.IValue value) throws java.io.IOException {
        try (org.bytedeco.pytorch.ByteVector v = torch.pickle_save(value)) {
            java.nio.file.Files.write(file, v.get());
        }
    }

    private static org.bytedeco.pytorch.IValue iv(Tensor t) {
        return t == null ? new org.bytedeco.pytorch.IValue() : new org.bytedeco.pytorch.IValue(t);
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
