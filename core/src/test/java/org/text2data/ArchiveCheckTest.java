package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.BiFunction;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Files libtorch would read out of bounds or overflow its stack on, found by {@link ArchiveCheck} before libtorch
 * reads them: a tensor record shorter than its pickle declares (a truncated or crafted file: garbage values, or a
 * segmentation fault), and TorchScript code nested too deep for libtorch's recursive parser.
 */
class ArchiveCheckTest {

    /** The fixture {@code name} with the entry ending in {@code suffix} replaced by {@code change}'s result. */
    private static Path changed(Path dir, String name, String suffix, BiFunction<String, byte[], byte[]> change)
            throws IOException {
        Map<String, byte[]> e = Zips.read(TestModels.fixture(name));
        String key = e.keySet().stream().filter(k -> k.endsWith(suffix)).findFirst().orElseThrow();
        e.put(key, change.apply(key, e.get(key)));
        return Zips.write(dir.resolve("changed-" + name), e, true);
    }

    @Test
    void theScannerFindsEveryStorageOfRealFiles() throws IOException {
        for (String name : new String[] {"adam-f64.batch.pt", "adam-f64.model.pt", "adam-f32.batch.pt"}) {
            Map<String, byte[]> e = Zips.read(TestModels.fixture(name));
            String pkl = e.keySet().stream().filter(k -> k.endsWith("/data.pkl")).findFirst().orElseThrow();
            String folder = pkl.substring(0, pkl.length() - ".pkl".length()) + "/";
            List<ArchiveCheck.Storage> found = ArchiveCheck.storages(e.get(pkl));
            Map<String, Long> records = new TreeMap<>();
            e.forEach((k, v) -> {
                if (k.startsWith(folder)) {
                    records.put(k.substring(folder.length()), (long) v.length);
                }
            });
            assertThat(found).as(name).hasSize(records.size());
            for (ArchiveCheck.Storage s : found) {
                assertThat(s.elementSize()).as(name + " " + s).isIn(4L, 8L);
                assertThat(s.numel() * s.elementSize()).as(name + " " + s).isEqualTo(records.get(s.key()));
            }
        }
    }

    @Test
    void aDataFileWithAShortTensorRecordIsRefused(@TempDir Path tmp) throws IOException {
        Path f = changed(tmp, "adam-f64.batch.pt", "/data/0", (k, v) -> Arrays.copyOf(v, 8));
        assertThatThrownBy(() -> Batch.load(f)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("data file " + f + " is truncated or corrupt")
                .hasMessageContaining("/data/0' holds 8 bytes").hasMessageContaining("DoubleStorage");
        // a longer record (padding) is read as libtorch reads it: the declared elements
        Path padded = changed(tmp, "adam-f64.batch.pt", "/data/0", (k, v) -> Arrays.copyOf(v, v.length + 64));
        try (Batch b = Batch.load(padded); Batch ref = Batch.load(TestModels.fixture("adam-f64.batch.pt"))) {
            assertThat(TestModels.maxDiff(b.data(), ref.data())).isZero();
        }
    }

    /**
     * The same check over an archive held in memory (a checkpoint's {@code model.pt} entry), on the bytes PyTorch's
     * writer makes (stored entries flagged as followed by a data descriptor, which {@code ZipInputStream} refuses):
     * every storage is found and checked, and a record whose central-directory size is cut short is refused.
     */
    @Test
    void theInMemoryCheckReadsRealArchivesAndRefusesAShortRecord() throws IOException {
        byte[] batch = Files.readAllBytes(TestModels.fixture("adam-f64.batch.pt"));
        assertThat(ArchiveCheck.check(batch, "entry model.pt")).as("storages checked").isEqualTo(3);
        byte[] model = Files.readAllBytes(TestModels.fixture("adam-f64.model.pt"));
        assertThat(ArchiveCheck.check(model, "entry model.pt")).as("storages checked").isEqualTo(11);
        byte[] bad = withCentralSize(batch, "/data/2", 3);
        assertThatThrownBy(() -> ArchiveCheck.check(bad, "entry model.pt")).isInstanceOf(IllegalArgumentException.class)
                .hasMessageStartingWith("entry model.pt is truncated or corrupt").hasMessageContaining("/data/2' holds 3 bytes");
    }

    /** A checkpoint's own entries (written by libtorch's pickle_save) are read and checked, not skipped. */
    @Test
    void aCheckpointsEntriesAreChecked(@TempDir Path tmp) throws IOException {
        Path ck = TestModels.savedCheckpoint(tmp.resolve("run.t2d"));
        try (TorchScriptModel m = TestModels.model()) {
            assertThat(ArchiveCheck.check(Zips.read(ck).get("model.pt"), "model.pt"))
                    .isEqualTo(m.namedParameters().size());
        }
        // a checkpoint where a data or model file is expected is named for what it is, before libtorch reads it
        assertThat(Checkpoint.isCheckpoint(ck)).isTrue();
        assertThat(Checkpoint.isCheckpoint(TestModels.fixture("adam-f64.model.pt"))).isFalse();
        assertThatThrownBy(() -> Batch.load(ck)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("data file " + ck + " is a text2data checkpoint");
        assertThatThrownBy(() -> TorchScriptModel.load(ck)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("model file " + ck + " is a text2data checkpoint");
        // its summary is read's header and loop position, without the tensors
        try (Checkpoint full = Checkpoint.read(ck)) {
            Checkpoint.Summary sum = Checkpoint.summary(ck);
            assertThat(sum.headerJson()).isEqualTo(full.headerJson());
            assertThat(sum.loopState()).isEqualTo(full.loopState());
        }
    }

    /** The archive with the central directory's sizes of the entry ending in {@code suffix} set to {@code size}. */
    private static byte[] withCentralSize(byte[] zip, String suffix, int size) {
        byte[] z = zip.clone();
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(z).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int p = 0; p + 46 < z.length; p++) {
            if (b.getInt(p) == 0x02014b50) {
                int nameLen = b.getShort(p + 28) & 0xffff;
                if (new String(z, p + 46, nameLen, StandardCharsets.UTF_8).endsWith(suffix)) {
                    b.putInt(p + 20, size);
                    b.putInt(p + 24, size);
                    return z;
                }
            }
        }
        throw new AssertionError(suffix + " not found");
    }

    @Test
    void aModelFileWithAShortTensorRecordIsRefused(@TempDir Path tmp) throws IOException {
        Path f = changed(tmp, "adam-f64.model.pt", "/data/5", (k, v) -> Arrays.copyOf(v, 8));
        assertThatThrownBy(() -> TorchScriptModel.load(f)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("model file " + f + " is truncated or corrupt")
                .hasMessageContaining("/data/5' holds 8 bytes");
    }

    @Test
    void torchScriptCodeNestedTooDeepIsRefusedBeforeLibtorchParsesIt(@TempDir Path tmp) throws IOException {
        String deep = "(".repeat(2000) + "1" + ")".repeat(2000);
        Map<String, byte[]> e = Zips.read(TestModels.fixture("adam-f64.model.pt"));
        String code = e.keySet().stream().filter(k -> k.endsWith("/code/__torch__.py")).findFirst().orElseThrow();
        e.put(code, (new String(e.get(code), StandardCharsets.UTF_8) + "\n_deep = " + deep + "\n")
                .getBytes(StandardCharsets.UTF_8));
        e.remove(code + ".debug_pkl");
        Path f = Zips.write(tmp.resolve("deep.pt"), e, true);
        assertThatThrownBy(() -> TorchScriptModel.load(f)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("model file " + f).hasMessageContaining("nests brackets more than "
                        + ArchiveCheck.MAX_CODE_DEPTH + " deep");
        // the same archive without the deep line is a model libtorch loads: the rewriting itself is not the cause
        e.put(code, Zips.read(TestModels.fixture("adam-f64.model.pt")).get(code));
        try (TorchScriptModel m = TorchScriptModel.load(Zips.write(tmp.resolve("shallow.pt"), e, true))) {
            assertThat(m.namedParameters()).isNotEmpty();
        }
    }
}
