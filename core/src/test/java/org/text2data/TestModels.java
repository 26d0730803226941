package org.text2data;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Shared set-up for the API tests: the adam-f64 fixture's model and batch, a small seeded conditional model with
 * random batches for it, and parameter snapshots.
 */
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

    /** A checkpoint of {@link #model()} under a fresh Adam (lr 0.01), before any step, written to {@code file}. */
    static Path savedCheckpoint(Path file) throws java.io.IOException {
        try (TorchScriptModel m = model(); Constraint opt = new Constraint(m.namedParameters(), OptimizerSpec.adam(0.01))) {
            opt.saveCheckpoint(file);
        }
        return file;
    }

    static Batch batch() {
        return Batch.load(fixture("adam-f64.batch.pt"));
    }

    /**
     * A small conditional model on the host, seeded (two instances of one dtype are equal): {@code W} in both passes,
     * {@code nullEmb} only in the unconditional one, {@code condW} only in the conditional one, {@code unused} in none.
     * It takes data rows of 4 columns and conditions of 3 and predicts 4 columns
     * ({@code randomBatch("cpu", type, rows, 4, 3)}). Each parameter holds a reference of its own, released by
     * {@link #close()}.
     */
    static final class SmallModel implements ConditionalModel, AutoCloseable {
        final Map<String, Tensor> params = new LinkedHashMap<>();

        SmallModel(ScalarType type) {
            LibTorch.ensureLoaded();
            torch.manual_seed(11);
            TensorOptions o = new TensorOptions(type);
            params.put("W", torch.randn(new long[] {4, 4}, o).mul(new Scalar(0.5)));
            params.put("nullEmb", torch.randn(new long[] {4}, o));
            params.put("condW", torch.randn(new long[] {3, 4}, o));
            params.put("unused", torch.randn(new long[] {2}, o));
            params.values().forEach(t -> {
                t.requires_grad_(true);
                t.retainReference();
            });
        }

        @Override
        public Tensor forward(Tensor data, Tensor cond) {
            Tensor h = data.matmul(params.get("W")).tanh();
            return cond == null ? h.add(params.get("nullEmb")) : h.add(cond.matmul(params.get("condW")));
        }

        @Override
        public void close() {
            params.values().forEach(Tensor::releaseReference);
        }
    }

    /** {@link Text2Data#runStep} on a batch, with MSE. */
    static StepResult step(Constraint c, double gConstraint, ConditionalModel m, Batch b) {
        return Text2Data.runStep(c, gConstraint, m, b.cond(), b.data(), b.label(), Loss.MSE);
    }

    /** The largest absolute difference between two tensors' values. */
    static double maxDiff(Tensor a, Tensor b) {
        try (PointerScope scope = new PointerScope()) {
            return a.detach().sub(b.detach()).abs().max().item_double();
        }
    }

    /** Holds two sets of tensors and their gradients (defined or not, and their values) equal within {@code tol}. */
    static void assertSameTensors(String what, Map<String, Tensor> a, Map<String, Tensor> b, double tol) {
        for (String n : a.keySet()) {
            Tensor p = a.get(n);
            Tensor q = b.get(n);
            assertThat(maxDiff(p, q)).as("%s, %s: parameter", what, n).isLessThanOrEqualTo(tol);
            assertThat(p.grad().defined()).as("%s, %s: gradient defined", what, n).isEqualTo(q.grad().defined());
            if (q.grad().defined()) {
                assertThat(maxDiff(p.grad(), q.grad())).as("%s, %s: gradient", what, n).isLessThanOrEqualTo(tol);
            }
        }
    }

    /**
     * A {@link GradientSync} as if one other process took part whose gradients are all ones: every gradient that
     * exists becomes the average of its own and ones (a gradient that does not exist receives nothing).
     */
    static GradientSync otherProcessAllOnes() {
        return (loss, rows, params) -> {
            try (PointerScope scope = new PointerScope()) {
                for (Tensor p : params) {
                    Tensor g = p.grad();
                    if (g.defined()) {
                        g.mul_(new Scalar(0.5)).add_(new Scalar(0.5));
                    }
                }
            }
            return loss;
        };
    }

    /**
     * Seeded standard-normal tensors of {@code type} on {@code device} (drawn on the host, then moved), as a batch:
     * data {@code [rows, dataCols]} (seed 1), cond {@code [rows, condCols]} (seed 2), label {@code [rows, dataCols]}
     * (seed 3). Each tensor holds a reference of its own, outliving any PointerScope (closing the batch releases it).
     *
     * @param device a libtorch device string, {@code "cpu"} or {@code "cuda:0"}
     */
    static Batch randomBatch(String device, ScalarType type, long rows, long dataCols, long condCols) {
        LibTorch.ensureLoaded();
        try (Device d = new Device(device)) {
            return new Batch(random(1, d, type, rows, dataCols), random(2, d, type, rows, condCols),
                    random(3, d, type, rows, dataCols));
        }
    }

    static Tensor random(long seed, Device device, ScalarType type, long... shape) {
        torch.manual_seed(seed);
        Tensor t = torch.randn(shape, new TensorOptions(type)).to(device, type);
        t.retainReference();
        return t;
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
