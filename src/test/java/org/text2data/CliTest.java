package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.text2data.cli.Main;

/** The CLI end to end, in-process: exit codes, messages, and the files it writes (or does not). */
class CliTest {

    record Run(int code, String out, String err) {
    }

    static Run cli(String... args) {
        PrintStream oldOut = System.out;
        PrintStream oldErr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        try {
            System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
            int code = Main.run(args);
            return new Run(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
        }
    }

    /** The adam-f64 fixture's finetune command; {@code extra} flags replace the defaults or are added. */
    private static String[] finetune(Path out, String... extra) {
        List<String> a = new java.util.ArrayList<>(List.of("finetune",
                "--model", TestModels.fixture("adam-f64.model.pt").toString(),
                "--data", TestModels.fixture("adam-f64.batch.pt").toString(),
                "--g-constraint", "1.241462456078726", "--steps", "12", "--lr", "0.01",
                "--out", out.toString()));
        for (int i = 0; i < extra.length; i++) {
            int at = a.indexOf(extra[i]);
            boolean hasValue = i + 1 < extra.length && !extra[i + 1].startsWith("--");
            if (at >= 0 && hasValue) {
                a.set(at + 1, extra[++i]);
            } else {
                a.add(extra[i]);
                if (hasValue) {
                    a.add(extra[++i]);
                }
            }
        }
        return a.toArray(new String[0]);
    }

    @Test
    void conformanceCommandPassesAndSaysSo() {
        Run r = cli("conformance", Fixtures.dir().toString());
        assertThat(r.code()).as(r.out() + r.err()).isZero();
        String[] lines = r.out().strip().split("\n");
        assertThat(lines[lines.length - 1]).matches("\\d+ passed, 0 failed");
        assertThat(r.out()).contains("adam-f64").contains("torchscript").contains("java-model");
    }

    @Test
    void conformanceCommandFailsOnAMissingFolder() {
        Run r = cli("conformance", "no/such/dir");
        assertThat(r.code()).isNotZero();
        assertThat(r.err()).contains("fixture folder not found: no/such/dir");
    }

    @Test
    void finetuneWritesTheReferenceResult(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("finetuned.pt");
        Run r = cli(finetune(out));
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.out()).contains("finetuned 12 steps").contains("wrote " + out);
        assertThat(r.err()).contains("12/12");
        JsonObject fixture = JsonParser.parseString(Files.readString(TestModels.fixture("run_step.json")))
                .getAsJsonObject().getAsJsonArray("cases").get(0).getAsJsonObject();
        assertThat(fixture.get("name").getAsString()).isEqualTo("adam-f64");
        JsonObject fin = fixture.getAsJsonObject("expected").getAsJsonObject("final");
        try (TorchScriptModel m = TorchScriptModel.load(out)) {
            for (Map.Entry<String, com.google.gson.JsonElement> e : fin.entrySet()) {
                var values = e.getValue().getAsJsonObject().getAsJsonArray("values");
                Tensor p = m.namedParameters().get(e.getKey()).detach().flatten();
                for (int i = 0; i < values.size(); i++) {
                    double expected = values.get(i).getAsDouble();
                    assertThat(p.select(0, i).item_double()).as(e.getKey() + "[" + i + "]")
                            .isCloseTo(expected, org.assertj.core.data.Offset.offset(1e-9 * Math.max(1, Math.abs(expected))));
                }
            }
        }
        try (var files = Files.list(tmp)) {
            assertThat(files.toList()).containsExactly(out); // no temporary file left behind
        }
    }

    @Test
    void finetuneWithMiniBatchesAndShuffleRuns(@TempDir Path tmp) {
        Path out = tmp.resolve("o.pt");
        Run r = cli(finetune(out, "--batch-size", "5", "--shuffle", "--seed", "7", "--optimizer", "sgd",
                "--momentum", "0.9", "--engine", "plain"));
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(out).exists();
    }

    @Test
    void badInputLeavesAnExistingOutputUntouched(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("keep.pt");
        Files.writeString(out, "previous");
        for (String[] args : new String[][] {
                {"--data", TestModels.bad("missing-label.pt").toString()},
                {"--data", TestModels.bad("nan-label.pt").toString()},
                {"--data", TestModels.bad("float32.pt").toString()},
                {"--data", TestModels.bad("label-shape.pt").toString()},
                {"--model", TestModels.bad("corrupt.pt").toString()},
                {"--model", "missing.pt"},
        }) {
            Run r = cli(finetune(out, args));
            assertThat(r.code()).as(String.join(" ", args)).isEqualTo(1);
            assertThat(r.err()).as(String.join(" ", args)).contains("error: ").contains(Path.of(args[1]).getFileName().toString());
            assertThat(Files.readString(out)).isEqualTo("previous");
        }
        try (var files = Files.list(tmp)) {
            assertThat(files.toList()).containsExactly(out);
        }
    }

    @Test
    void badFlagsAreNamed(@TempDir Path tmp) {
        Path out = tmp.resolve("x.pt");
        Run unknown = cli(finetune(out, "--frobnicate"));
        assertThat(unknown.code()).isEqualTo(2);
        assertThat(unknown.err()).contains("--frobnicate");
        Run badSteps = cli(finetune(out, "--steps", "0"));
        assertThat(badSteps.code()).isEqualTo(1);
        assertThat(badSteps.err()).contains("--steps must be positive");
        Run badG = cli(finetune(out, "--g-constraint", "-2"));
        assertThat(badG.err()).contains("--g-constraint must be a finite number >= 0");
        Run badOpt = cli(finetune(out, "--optimizer", "lion"));
        assertThat(badOpt.err()).contains("unknown optimizer 'lion'");
        Run badMomentum = cli(finetune(out, "--momentum", "0.9"));
        assertThat(badMomentum.err()).contains("momentum is not an option of adam");
        Run badLoss = cli(finetune(out, "--loss", "hinge"));
        assertThat(badLoss.err()).contains("unknown loss 'hinge'");
        Run cuda = cli(finetune(out, "--device", "cuda"));
        if (!LibTorch.cudaAvailable()) {
            assertThat(cuda.err()).contains("--device cuda: no CUDA device is usable here");
        }
        assertThat(out).doesNotExist();
    }

    @Test
    void everySubcommandHasHelp() {
        for (String sub : new String[] {"conformance", "finetune"}) {
            Run r = cli(sub, "--help");
            assertThat(r.code()).isZero();
            assertThat(r.out()).contains("Usage: text2data " + sub);
        }
    }
}
