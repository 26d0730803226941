package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;

import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

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
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("corrupt.pt cannot be loaded as a torch.save file: ");
    }

    @Test
    void rowsMustAgree() {
        assertThatThrownBy(() -> Batch.load(TestModels.bad("cond-rows.pt")))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("'cond' has shape [5, 3] but 'data' has 16 rows");
    }

    @Test
    void aZeroDimTensorIsNamedNotACrashInTheCheck(@TempDir Path tmp) throws Exception {
        Path f = tmp.resolve("zero-dim.pt");
        TestModels.saveDict(f, torch.ones(new long[0]), torch.ones(new long[0]), torch.ones(new long[0]));
        assertThatThrownBy(() -> Batch.load(f)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("data file " + f + ": 'data' is a 0-dim tensor (a single number); expected one row per "
                        + "example along the first dimension");
        TestModels.saveDict(f, torch.ones(3, 2), torch.ones(3, 2), torch.ones(new long[0]));
        assertThatThrownBy(() -> Batch.load(f)).hasMessageContaining("'label' is a 0-dim tensor");
    }

    @Test
    void filesThatAreNotZipArchivesSayWhatTheyAre(@TempDir Path tmp) throws Exception {
        Path legacy = tmp.resolve("legacy.pt"); // the first bytes of torch.save(..., _use_new_zipfile_serialization=False)
        Files.write(legacy, new byte[] {(byte) 0x80, 2, (byte) 0x8a, 0x0a, 0x6c, (byte) 0xfc, (byte) 0x9c, 0x46, (byte) 0xf9,
                0x20, 0x6a, (byte) 0xa8, 0x50, 0x19, 0x2e, (byte) 0x80, 2, 0x4d, (byte) 0xe9, 0x03, 0x2e});
        assertThatThrownBy(() -> Batch.load(legacy)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("legacy.pt is in PyTorch's legacy serialization format");
        Path pickle = Files.write(tmp.resolve("pickle.pt"), new byte[] {(byte) 0x80, 4, (byte) 0x95, 0, 0, 0, 0, 0, 0, 0, 0, 0x2e});
        assertThatThrownBy(() -> Batch.load(pickle)).hasMessageContaining("pickle.pt is not a torch.save file: it is a plain "
                + "Python pickle");
        Path empty = Files.write(tmp.resolve("empty.pt"), new byte[0]);
        assertThatThrownBy(() -> Batch.load(empty)).hasMessageContaining("empty.pt is not a torch.save file: it is empty");
        Path text = Files.writeString(tmp.resolve("text.pt"), "data,cond,label\n1,2,3\n");
        assertThatThrownBy(() -> Batch.load(text)).hasMessageContaining("does not start with the zip header");
        assertThatThrownBy(() -> Batch.load(tmp)).hasMessage("data file " + tmp + " is a folder, not a file");
        assertThatThrownBy(() -> TorchScriptModel.load(tmp)).hasMessage("model file " + tmp + " is a folder, not a file");
        assertThatThrownBy(() -> Batch.load(Path.of("/dev/zero"))).hasMessageContaining("/dev/zero is not a regular file");
    }

    @Test
    void anUnreadableFileSaysPermissionDenied(@TempDir Path tmp) throws Exception {
        org.junit.jupiter.api.Assumptions.assumeFalse("root".equals(System.getProperty("user.name")), "root reads anything");
        Path f = Files.copy(TestModels.fixture("adam-f64.batch.pt"), tmp.resolve("locked.pt"));
        Files.setPosixFilePermissions(f, java.nio.file.attribute.PosixFilePermissions.fromString("---------"));
        assertThatThrownBy(() -> Batch.load(f)).hasMessage("data file " + f + " cannot be read: permission denied");
    }

    @Test
    void chunkedReadingGivesTheSameTensors() {
        // the path a file of 2 GiB and more takes (many reads into one native buffer), on a small file
        int saved = Batch.readChunk;
        try (Batch whole = TestModels.batch()) {
            for (int chunk : new int[] {1, 7, 4096}) {
                Batch.readChunk = chunk;
                try (Batch b = TestModels.batch()) {
                    assertThat(torch.equal(b.data(), whole.data())).isTrue();
                    assertThat(torch.equal(b.cond(), whole.cond())).isTrue();
                    assertThat(torch.equal(b.label(), whole.label())).isTrue();
                }
            }
        } finally {
            Batch.readChunk = saved;
        }
    }

    /**
     * A data file above 2 GiB loads (it used to end in OutOfMemoryError: the file was read into one Java array).
     * Needs about 7 GB of memory and 2.2 GB of disk, so it runs only with {@code -Dt2d.bigfile=true}.
     */
    @Test
    @org.junit.jupiter.api.condition.EnabledIfSystemProperty(named = "t2d.bigfile", matches = "true")
    void aDataFileAbove2GiBLoads(@TempDir Path tmp) throws Exception {
        long rows = 560_000_000L; // float32: 2.24e9 bytes
        Path f = tmp.resolve("big.pt");
        long t0 = System.nanoTime();
        TestModels.saveDict(tmp.resolve("warm.pt"), torch.ones(1), torch.ones(1), torch.ones(1)); // compiles the dict maker
        try (org.bytedeco.pytorch.Tensor data = torch.ones(rows);
             org.bytedeco.pytorch.Tensor none = torch.zeros(rows, 0)) {
            data.narrow(0, rows - 1, 1).fill_(new org.bytedeco.pytorch.Scalar(7.0));
            org.bytedeco.pytorch.IValue dict;
            try (var args = new org.bytedeco.pytorch.IValueVector(new org.bytedeco.pytorch.IValue(data),
                    new org.bytedeco.pytorch.IValue(none), new org.bytedeco.pytorch.IValue(none))) {
                dict = TestModels.dictOf(args);
            }
            try (org.bytedeco.pytorch.ByteVector v = torch.pickle_save(dict);
                 java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(f, java.nio.file.StandardOpenOption.CREATE_NEW,
                         java.nio.file.StandardOpenOption.WRITE)) {
                dict.close();
                java.lang.foreign.MemorySegment seg = Batch.contents(v, v.size());
                for (long off = 0; off < v.size(); off += 1 << 30) {
                    java.nio.ByteBuffer buf = seg.asSlice(off, Math.min(1 << 30, v.size() - off)).asByteBuffer();
                    while (buf.hasRemaining()) {
                        ch.write(buf);
                    }
                }
            }
        }
        long t1 = System.nanoTime();
        assertThat(Files.size(f)).isGreaterThan(1L << 31);
        try (Batch b = Batch.load(f)) {
            long t2 = System.nanoTime();
            System.err.printf("aDataFileAbove2GiBLoads: %d bytes written in %.1f s, loaded in %.1f s%n", Files.size(f),
                    (t1 - t0) / 1e9, (t2 - t1) / 1e9);
            assertThat(b.size()).isEqualTo(rows);
            assertThat(b.data().get(0).item_double()).isEqualTo(1.0);
            assertThat(b.data().get(rows - 1).item_double()).isEqualTo(7.0);
        }
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
