package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.text2data.CheckpointAssert.assertParametersAre;
import static org.text2data.CheckpointAssert.assertSameState;
import static org.text2data.CheckpointAssert.snapshot;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.stream.Stream;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Checkpoints edited by hand or built to hurt: a header field that is missing, of the wrong type or out of range,
 * an entry the header does not list or larger than it says, a folder or FIFO for a file. Each is refused with a
 * message naming the file and what is wrong, and the constraint goes on exactly as its untouched twin does.
 * And the optimizer's state is staged in memory: a full or missing temporary folder changes nothing.
 */
class CheckpointEditsTest {
    private static final double G = 1.241462456078726;
    private static final Gson GSON = new GsonBuilder().serializeSpecialFloatingPointValues().create();
    private static boolean optimize;

    /** Two fresh modules compute the same steps only with the graph executor's re-optimization off. */
    @BeforeAll
    static void noReoptimization() {
        LibTorch.ensureLoaded();
        optimize = torch.getGraphExecutorOptimize();
        torch.setGraphExecutorOptimize(false);
    }

    @AfterAll
    static void restoreReoptimization() {
        torch.setGraphExecutorOptimize(optimize);
    }

    private static void steps(Constraint opt, TorchScriptModel m, Batch b, int n) {
        for (int i = 0; i < n; i++) {
            Text2Data.runStep(opt, G, m, b.cond(), b.data(), b.label(), Loss.MSE).close();
        }
    }

    private static JsonObject group0(JsonObject h) {
        return h.getAsJsonObject("optimizer").getAsJsonArray("groups").get(0).getAsJsonObject();
    }

    private static JsonObject state0(JsonObject h) {
        return h.getAsJsonObject("optimizer").getAsJsonArray("state").get(0).getAsJsonObject();
    }

    private record Edit(String name, Consumer<JsonObject> change, String says) {
        @Override
        public String toString() {
            return name;
        }
    }

    static List<Edit> edits() {
        return List.of(
                new Edit("lr NaN", h -> group0(h).add("lr", new JsonPrimitive(Double.NaN)),
                        "header field 'optimizer.groups[0].lr' must be a finite number >= 0, got "),
                new Edit("lr -5", h -> group0(h).addProperty("lr", -5),
                        "header field 'optimizer.groups[0].lr' must be a finite number >= 0, got -5"),
                new Edit("lr 1e400", h -> group0(h).add("lr", JsonParser.parseString("1e400")),
                        "header field 'optimizer.groups[0].lr' must be a finite number >= 0, got 1e400"),
                new Edit("lr a string", h -> group0(h).addProperty("lr", "0.01"),
                        "header field 'optimizer.groups[0].lr' must be a finite number >= 0, got \"0.01\""),
                new Edit("lr removed", h -> group0(h).remove("lr"),
                        "header field 'optimizer.groups[0].lr' is missing"),
                new Edit("group size removed", h -> group0(h).remove("size"),
                        "header field 'optimizer.groups[0].size' is missing"),
                new Edit("group size 99", h -> group0(h).addProperty("size", 99),
                        "header field 'optimizer.groups[0].size' must be a whole number >= 0 and <= "),
                new Edit("check_finite removed", h -> h.getAsJsonObject("constraint").remove("check_finite"),
                        "header field 'constraint.check_finite' is missing"),
                new Edit("check_finite a string", h -> h.getAsJsonObject("constraint").addProperty("check_finite", "yes"),
                        "header field 'constraint.check_finite' must be true or false, got \"yes\""),
                new Edit("alpha removed", h -> h.getAsJsonObject("constraint").remove("alpha"),
                        "header field 'constraint.alpha' is missing"),
                new Edit("beta -1", h -> h.getAsJsonObject("constraint").addProperty("beta", -1),
                        "header field 'constraint.beta' must be a finite number >= 0, got -1"),
                new Edit("constraint removed", h -> h.remove("constraint"), "header field 'constraint' is missing"),
                new Edit("version removed", h -> h.remove("version"), "header field 'version' is missing"),
                new Edit("entries removed", h -> h.remove("entries"), "header field 'entries' is missing"),
                new Edit("entries a list", h -> h.add("entries", JsonParser.parseString("[]")),
                        "header field 'entries' must be a JSON object, got []"),
                new Edit("parameters removed", h -> h.remove("parameters"), "header field 'parameters' is missing"),
                new Edit("shape 2.5", h -> h.getAsJsonArray("parameters").get(0).getAsJsonObject()
                        .getAsJsonArray("shape").set(0, new JsonPrimitive(2.5)),
                        "header field 'parameters[0].shape[0]' must be a whole number >= 0, got 2.5"),
                new Edit("step x", h -> state0(h).getAsJsonObject("ints").addProperty("step", "x"),
                        "header field 'optimizer.state[0].ints.step' must be a whole number >= 0, got \"x\""),
                new Edit("step -7", h -> state0(h).getAsJsonObject("ints").addProperty("step", -7),
                        "header field 'optimizer.state[0].ints.step' must be a whole number >= 0, got -7"),
                new Edit("step 1.5", h -> state0(h).getAsJsonObject("ints").addProperty("step", 1.5),
                        "header field 'optimizer.state[0].ints.step' must be a whole number >= 0, got 1.5"),
                new Edit("state of no parameter", h -> state0(h).addProperty("parameter", "nope"),
                        "header field 'optimizer.state[0].parameter' names 'nope', which is not a parameter"),
                new Edit("tensors removed", h -> state0(h).remove("tensors"),
                        "header field 'optimizer.state[0].tensors' is missing"));
    }

    static Stream<Arguments> editsOnBothOptimizers() {
        List<Arguments> out = new ArrayList<>();
        for (Engine engine : List.of(Engine.PLAIN, Engine.AUTO)) { // libtorch's Adam; the fused Adam
            for (Edit e : edits()) {
                out.add(Arguments.of(e, engine));
            }
        }
        return out.stream();
    }

    /**
     * Each edit is refused naming the file and the field, and the constraint that refused it then steps exactly
     * as its twin, which was never asked to load it: parameters, state, learning rate, alpha, beta and flag alike.
     */
    @ParameterizedTest(name = "{0} on {1}")
    @MethodSource("editsOnBothOptimizers")
    void aHandEditedHeaderIsRefusedNamingTheFieldAndChangesNothing(Edit edit, Engine engine, @TempDir Path tmp)
            throws IOException {
        OptimizerSpec spec = OptimizerSpec.adam(0.01);
        Path good = tmp.resolve("good.t2d");
        try (TorchScriptModel a = TestModels.model(); TorchScriptModel b = TestModels.model();
             Batch batch = TestModels.batch();
             Constraint optA = new Constraint(a.namedParameters(), spec, 0.5, 2.0, engine);
             Constraint optB = new Constraint(b.namedParameters(), spec, 0.5, 2.0, engine)) {
            assertThat(optA.isFused()).isEqualTo(engine == Engine.AUTO);
            steps(optA, a, batch, 2);
            steps(optB, b, batch, 2);
            optA.saveCheckpoint(good); // at step 2, with lr 0.01 and alpha 0.5
            for (Constraint o : List.of(optA, optB)) {
                o.setLr(0.003);
                o.setAlpha(0.25);
                o.setCheckFinite(false);
            }
            steps(optA, a, batch, 1);
            steps(optB, b, batch, 1);

            Map<String, byte[]> entries = Zips.read(good);
            JsonObject h = JsonParser.parseString(new String(entries.get("header.json"), StandardCharsets.UTF_8))
                    .getAsJsonObject();
            edit.change().accept(h);
            entries.put("header.json", GSON.toJson(h).getBytes(StandardCharsets.UTF_8));
            Path edited = Zips.write(tmp.resolve("edited.t2d"), entries, false);

            assertThatThrownBy(() -> optA.loadCheckpoint(edited)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("checkpoint " + edited).hasMessageContaining(edit.says());
            assertSameAsTwin(optA, optB, edit + ", refused");
            steps(optA, a, batch, 1);
            steps(optB, b, batch, 1);
            assertSameAsTwin(optA, optB, edit + ", refused, one step later");
            optA.loadCheckpoint(good); // the unedited file still loads
            assertThat(optA.lr()).isEqualTo(0.01);
        }
    }

    private static void assertSameAsTwin(Constraint a, Constraint b, String what) {
        assertParametersAre(a, snapshot(b), what);
        try (Checkpoint.OptimizerState sa = a.optimizerState(); Checkpoint.OptimizerState sb = b.optimizerState()) {
            assertSameState(sb.perParam(), sa.perParam(), what);
        }
        assertThat(a.lr()).as(what).isEqualTo(b.lr());
        assertThat(a.alpha()).as(what).isEqualTo(b.alpha());
        assertThat(a.beta()).as(what).isEqualTo(b.beta());
        assertThat(a.checkFinite()).as(what).isEqualTo(b.checkFinite());
    }

    /**
     * A small checkpoint with an extra deflated entry of 1 GiB of zeros, or one whose entry inflates to more than
     * the header says: refused after reading at most one byte more than the header allows, naming the entry.
     */
    @Test
    void anEntryTheHeaderDoesNotListOrLargerThanItSaysIsRefusedUnread(@TempDir Path tmp) throws IOException {
        Map<String, byte[]> entries = Zips.read(TestModels.savedCheckpoint(tmp.resolve("good.t2d")));

        Path bomb = Zips.writeWithZeros(tmp.resolve("bomb.t2d"), entries, "zeros.bin", 1024); // 1 GiB, a few MiB on disk
        assertThat(Files.size(bomb)).isLessThan(8L << 20);
        long heapBefore = usedHeap();
        assertThatThrownBy(() -> Checkpoint.read(bomb)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("checkpoint " + bomb)
                .hasMessageContaining("has an entry the header does not list: zeros.bin");
        assertThat(usedHeap() - heapBefore).as("heap used by the refusal").isLessThan(512L << 20);

        // model.pt replaced by a deflated entry far larger than the header says it holds
        Path big = Zips.writeWithZeros(tmp.resolve("big.t2d"), entries, "model.pt", 64);
        assertThatThrownBy(() -> Checkpoint.read(big)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("checkpoint " + big)
                .hasMessageContaining("entry model.pt holds ")
                .hasMessageContaining("more than the " + entries.get("model.pt").length
                        + " bytes the header says it holds");
    }

    private static long usedHeap() {
        System.gc();
        Runtime r = Runtime.getRuntime();
        return r.totalMemory() - r.freeMemory();
    }

    @Test
    void aFolderOrAFifoIsNamedForWhatItIs(@TempDir Path tmp) throws Exception {
        assertThatThrownBy(() -> Checkpoint.read(tmp)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("checkpoint " + tmp + " is a folder, not a file");
        Path fifo = tmp.resolve("fifo");
        Process p = new ProcessBuilder("mkfifo", fifo.toString()).start();
        Assumptions.assumeTrue(p.waitFor(30, TimeUnit.SECONDS) && p.exitValue() == 0, "needs mkfifo");
        assertThatThrownBy(() -> Checkpoint.read(fifo)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("checkpoint " + fifo + " is not a regular file (a device, FIFO or socket)");
        assertThatThrownBy(() -> Checkpoint.read(tmp.resolve("none.t2d"))).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("checkpoint file not found: " + tmp.resolve("none.t2d"));
    }

    /**
     * In a JVM whose temporary folder does not exist (as good as a full one: libtorch's file writer terminated the
     * process on a full one), saving, restoring and stepping libtorch's optimizer all work: the optimizer's state
     * is staged in memory.
     */
    @Test
    void theOptimizerStateNeedsNoTemporaryFile(@TempDir Path tmp) throws Exception {
        String output = ForkedJvm.runOk(ForkedJvm.command(NoTempFolder.class, List.of("-Djava.io.tmpdir="
                + tmp.resolve("no-such-folder"), "-XX:ErrorFile=" + tmp.resolve("hs_err_%p.log")), tmp.toString()));
        assertThat(output).contains("restored true stepped alike true");
        assertThat(tmp.resolve("no-such-folder")).doesNotExist();
    }

    /** Saves, restores into a twin and steps both, libtorch's Adam, printing whether they agree. */
    public static final class NoTempFolder {
        public static void main(String[] args) throws Exception {
            noReoptimization();
            Path ck = Path.of(args[0]).resolve("ck.t2d");
            OptimizerSpec spec = OptimizerSpec.adam(0.01).fused(false);
            try (TorchScriptModel a = TestModels.model(); TorchScriptModel b = TestModels.model();
                 Batch batch = TestModels.batch();
                 Constraint optA = new Constraint(a.namedParameters(), spec);
                 Constraint optB = new Constraint(b.namedParameters(), spec)) {
                steps(optA, a, batch, 2);
                steps(optB, b, batch, 1);
                optA.saveCheckpoint(ck);
                optB.loadCheckpoint(ck);
                boolean restored = torch.equal(optA.parameters().get(0), optB.parameters().get(0));
                steps(optA, a, batch, 1);
                steps(optB, b, batch, 1);
                boolean alike = true;
                for (int i = 0; i < optA.parameters().size(); i++) {
                    alike &= torch.equal(optA.parameters().get(i), optB.parameters().get(i));
                }
                System.out.println("restored " + restored + " stepped alike " + alike);
            }
        }
    }
}
