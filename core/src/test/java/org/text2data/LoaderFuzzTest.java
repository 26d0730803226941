package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import org.bytedeco.pytorch.CompilationUnit;
import org.bytedeco.pytorch.IValue;
import org.bytedeco.pytorch.IValueVector;
import org.bytedeco.pytorch.QualifiedName;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Seeded fuzzing of the file loaders ({@link Batch#load}, {@link TorchScriptModel#load}): truncated files, flipped
 * and overwritten bytes, dicts of random dtypes and shapes, values of the wrong type. Each case must end in an
 * {@link IllegalArgumentException} that names the file and carries no C++ stack trace, or in a well-formed result;
 * any other outcome fails with the seed and case number that reproduce it. A JVM crash would kill the test run.
 * Every failed load costs libtorch a C++ backtrace (tens of milliseconds), so the case counts keep the class
 * within about 15 s on two cores.
 */
class LoaderFuzzTest {
    private static final long SEED = 0x7E47DA7AL;

    private static final torch.ScalarType[] DTYPES = {torch.ScalarType.Bool, torch.ScalarType.Byte, torch.ScalarType.Char,
            torch.ScalarType.Short, torch.ScalarType.Int, torch.ScalarType.Long, torch.ScalarType.Half,
            torch.ScalarType.BFloat16, torch.ScalarType.Float, torch.ScalarType.Double, torch.ScalarType.ComplexFloat};

    /** A mutation of {@code base}: truncated, bytes flipped, a range overwritten, or bytes inserted. */
    static byte[] mutate(byte[] base, Random r) {
        switch (r.nextInt(4)) {
            case 0:
                return Arrays.copyOf(base, r.nextInt(base.length));
            case 1: {
                byte[] b = base.clone();
                for (int i = 0, n = 1 + r.nextInt(8); i < n; i++) {
                    b[r.nextInt(b.length)] ^= (byte) (1 << r.nextInt(8));
                }
                return b;
            }
            case 2: {
                byte[] b = base.clone();
                int at = r.nextInt(b.length);
                for (int i = at, end = Math.min(b.length, at + 1 + r.nextInt(64)); i < end; i++) {
                    b[i] = (byte) r.nextInt(256);
                }
                return b;
            }
            default: {
                int at = r.nextInt(base.length);
                byte[] extra = new byte[1 + r.nextInt(32)];
                r.nextBytes(extra);
                byte[] b = new byte[base.length + extra.length];
                System.arraycopy(base, 0, b, 0, at);
                System.arraycopy(extra, 0, b, at, extra.length);
                System.arraycopy(base, at, b, at + extra.length, base.length - at);
                return b;
            }
        }
    }

    private static void assertClear(IllegalArgumentException e, Path f, String which) {
        assertThat(e.getMessage()).as(which).contains(f.toString()).doesNotContain("frame #")
                .doesNotContain("Exception raised from");
    }

    private static void assertWellFormed(Batch b, String which) {
        long rows = b.data().size(0);
        for (Tensor t : new Tensor[] {b.data(), b.cond(), b.label()}) {
            assertThat(t).as(which).isNotNull();
            assertThat(t.dim()).as(which).isPositive();
            assertThat(t.size(0)).as(which).isEqualTo(rows);
        }
    }

    @Test
    void mutatedDataFilesFailClearlyOrLoadWellFormed(@TempDir Path tmp) throws Exception {
        byte[] base = Files.readAllBytes(TestModels.fixture("adam-f64.batch.pt"));
        Random r = new Random(SEED);
        int loaded = 0;
        for (int i = 0; i < 200; i++) {
            String which = "seed " + SEED + ", data case " + i;
            Path f = Files.write(tmp.resolve("data-" + i + ".pt"), mutate(base, r));
            try (Batch b = Batch.load(f)) {
                assertWellFormed(b, which);
                loaded++;
            } catch (IllegalArgumentException e) {
                assertClear(e, f, which);
            } catch (RuntimeException | Error e) {
                fail(which + ": " + e, e);
            }
            Files.delete(f);
        }
        assertThat(loaded).as("some mutations (in tensor bytes) still load").isPositive();
    }

    @Test
    void mutatedModelFilesFailClearlyOrLoad(@TempDir Path tmp) throws Exception {
        byte[] base = Files.readAllBytes(TestModels.fixture("adam-f64.model.pt"));
        Random r = new Random(SEED + 1);
        for (int i = 0; i < 50; i++) {
            String which = "seed " + (SEED + 1) + ", model case " + i;
            Path f = Files.write(tmp.resolve("model-" + i + ".pt"), mutate(base, r));
            try (TorchScriptModel m = TorchScriptModel.load(f)) {
                assertThat(m.namedParameters()).as(which).isNotEmpty();
            } catch (IllegalArgumentException e) {
                assertClear(e, f, which);
            } catch (RuntimeException | Error e) {
                fail(which + ": " + e, e);
            }
            Files.delete(f);
        }
    }

    @Test
    void dictsOfRandomDtypesAndShapesLoadExactlyWhenWellFormed(@TempDir Path tmp) throws Exception {
        Random r = new Random(SEED + 2);
        int good = 0;
        for (int i = 0; i < 40; i++) {
            String which = "seed " + (SEED + 2) + ", dict case " + i;
            long rows = r.nextInt(5);
            Tensor[] t = new Tensor[3];
            for (int k = 0; k < 3; k++) {
                if (r.nextInt(8) == 0) {
                    continue; // key left out
                }
                int rank = r.nextInt(5) == 0 ? 0 : 1 + r.nextInt(3);
                long[] shape = new long[rank];
                for (int d = 0; d < rank; d++) {
                    shape[d] = d == 0 && r.nextInt(4) != 0 ? rows : r.nextInt(4);
                }
                t[k] = torch.randn(shape).to(DTYPES[r.nextInt(DTYPES.length)]);
            }
            boolean wellFormed = Arrays.stream(t).allMatch(x -> x != null && x.dim() >= 1 && x.size(0) == t[0].size(0));
            Path f = tmp.resolve("dict-" + i + ".pt");
            TestModels.saveDict(f, t[0], t[1], t[2]);
            try (Batch b = Batch.load(f)) {
                assertThat(wellFormed).as(which + " loaded").isTrue();
                Tensor[] got = {b.data(), b.cond(), b.label()};
                for (int k = 0; k < 3; k++) {
                    assertThat(String.valueOf(got[k].scalar_type())).as(which + ", key " + k)
                            .isEqualTo(String.valueOf(t[k].scalar_type()));
                    assertThat(got[k].shape()).as(which).containsExactly(t[k].shape());
                    assertThat(torch.equal(got[k], t[k])).as(which).isTrue();
                }
                good++;
            } catch (IllegalArgumentException e) {
                assertThat(wellFormed).as(which + ": " + e.getMessage()).isFalse();
                assertClear(e, f, which);
            }
            Files.delete(f);
        }
        assertThat(good).isPositive();
    }

    @Test
    void valuesOfTheWrongTypeAreRefused(@TempDir Path tmp) throws Exception {
        LibTorch.ensureLoaded();
        CompilationUnit cu = torch.compile("""
                def ints(x: int) -> Dict[str, int]:
                    return {'data': x, 'cond': x, 'label': x}
                def tensors(t: Tensor) -> List[Tensor]:
                    return [t, t, t]
                def lists(t: Tensor) -> Dict[str, List[Tensor]]:
                    return {'data': [t], 'cond': [t], 'label': [t]}
                def keys(t: Tensor) -> Dict[int, Tensor]:
                    return {0: t, 1: t, 2: t}
                """);
        List<String> messages = new ArrayList<>();
        for (String fn : List.of("ints", "tensors", "lists", "keys")) {
            IValue arg = fn.equals("ints") ? new IValue(3L) : new IValue(torch.ones(4, 2));
            Path f = tmp.resolve(fn + ".pt");
            try (IValueVector args = new IValueVector(arg)) {
                TestModels.savePickled(f, cu.get_function(new QualifiedName(fn)).apply(args));
            }
            try (Batch b = Batch.load(f)) {
                fail(fn + " loaded: " + Arrays.toString(b.data().shape()));
            } catch (IllegalArgumentException e) {
                assertClear(e, f, fn);
                messages.add(e.getMessage());
            }
        }
        assertThat(messages.get(0)).contains("key 'data' holds a Int, expected a tensor");
        assertThat(messages.get(1)).contains("holds a GenericList, expected a dict");
        assertThat(messages.get(2)).contains("key 'data' holds a GenericList, expected a tensor");
        assertThat(messages.get(3)).contains("has no key 'data' (keys present: []");
        cu.close();
    }
}
