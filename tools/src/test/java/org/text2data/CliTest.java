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

    /** {@link #finetuneOn} the adam-f64 fixture for 12 steps; {@code extra} flags replace the defaults or are added. */
    private static String[] finetune(Path out, String... extra) {
        List<String> a = List.of(finetuneOn(TestModels.fixture("adam-f64.model.pt"), TestModels.fixture("adam-f64.batch.pt"),
                out.toString(), "--steps", "12"));
        return withFlags(a, extra).toArray(new String[0]);
    }

    static Run cli(List<String> args) {
        return cli(args.toArray(new String[0]));
    }

    /** {@link #cli} that must exit 0: the command line and its stderr name a failure. */
    static Run ok(List<String> args) {
        Run r = cli(args);
        assertThat(r.code()).as(String.join(" ", args) + "\n" + r.err()).isZero();
        return r;
    }

    /** {@code args} with {@code extra}'s flags: a flag given again replaces its value there, a new one is added. */
    static List<String> withFlags(List<String> args, String... extra) {
        List<String> a = new java.util.ArrayList<>(args);
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
        return a;
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

    @org.junit.jupiter.params.ParameterizedTest(name = "concurrent passes: {0}")
    @org.junit.jupiter.params.provider.ValueSource(booleans = {false, true})
    void finetuneWritesTheReferenceResult(boolean concurrentPasses, @TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("finetuned.pt");
        Run r = cli(concurrentPasses ? finetune(out, "--concurrent-passes") : finetune(out));
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
        Run concurrentCuda = cli(finetune(out, "--device", "cuda", "--concurrent-passes"));
        assertThat(concurrentCuda.err()).contains("--concurrent-passes runs on the CPU only, not on --device cuda");
        Run cuda = cli(finetune(out, "--device", "cuda"));
        if (!LibTorch.cudaAvailable()) {
            assertThat(cuda.err()).contains("--device cuda: no CUDA device is usable here");
        }
        assertThat(out).doesNotExist();
    }

    /** Copies of the fixture's model and data in {@code dir}, so that a test may (fail to) overwrite them. */
    private static Path[] copies(Path dir) throws Exception {
        Path model = Files.copy(TestModels.fixture("adam-f64.model.pt"), dir.resolve("model.pt"));
        Path data = Files.copy(TestModels.fixture("adam-f64.batch.pt"), dir.resolve("data.pt"));
        return new Path[] {model, data};
    }

    /** The finetune command on {@code model} and {@code data}, 3 steps; {@code extra} flags replace these or are added. */
    private static String[] finetuneOn(Path model, Path data, String out, String... extra) {
        List<String> a = List.of("finetune", "--model", model.toString(), "--data", data.toString(),
                "--g-constraint", "1.241462456078726", "--steps", "3", "--lr", "0.01", "--out", out);
        return withFlags(a, extra).toArray(new String[0]);
    }

    private static Map<Path, byte[]> contents(Path dir) throws Exception {
        Map<Path, byte[]> m = new java.util.TreeMap<>();
        try (var files = Files.list(dir)) {
            for (Path p : files.toList()) {
                m.put(p.getFileName(), Files.isRegularFile(p, java.nio.file.LinkOption.NOFOLLOW_LINKS) ? Files.readAllBytes(p)
                        : new byte[0]);
            }
        }
        return m;
    }

    private static void assertSameContents(Map<Path, byte[]> before, Map<Path, byte[]> after) {
        assertThat(after.keySet()).isEqualTo(before.keySet());
        before.forEach((k, v) -> assertThat(after.get(k)).as(k.toString()).isEqualTo(v));
    }

    @Test
    void anOutputThatIsAnInputIsRefusedBeforeWork(@TempDir Path tmp) throws Exception {
        Path[] in = copies(tmp);
        Path model = in[0];
        Path data = in[1];
        Files.createSymbolicLink(tmp.resolve("link.pt"), data.getFileName());
        Files.createLink(tmp.resolve("hard.pt"), model);
        Map<Path, byte[]> before = contents(tmp);
        Path rel = Path.of("").toAbsolutePath().relativize(data); // the same file, spelt relatively, with a detour
        String detour = rel.getParent().resolve("..").resolve(rel.getParent().getFileName()).resolve(rel.getFileName()).toString();
        for (String out : new String[] {data.toString(), model.toString(), detour, tmp.resolve("link.pt").toString(),
                tmp.resolve("hard.pt").toString()}) {
            Run r = cli(finetuneOn(model, data, out));
            assertThat(r.code()).as(out + ": " + r.err()).isEqualTo(1);
            assertThat(r.err()).as(out).contains("--out " + out + " is the same file as --")
                    .contains("writing it would destroy the input").doesNotContain("finetune (");
            assertSameContents(before, contents(tmp));
        }
    }

    @Test
    void anUnwritableOutputIsFoundBeforeTrainingAndTheReasonIsGiven(@TempDir Path tmp) throws Exception {
        Path[] in = copies(tmp);
        Path folder = Files.createDirectory(tmp.resolve("folder"));
        Map<Path, byte[]> before = contents(tmp);
        Map<String, String> cases = new java.util.LinkedHashMap<>();
        cases.put(folder.toString(), "--out: cannot write " + folder + ": it is a folder, not a file");
        cases.put("/", "--out: cannot write /: it is a folder, not a file");
        cases.put("/proc/finetuned.pt", "--out: cannot write /proc/finetuned.pt: cannot create a file in /proc: ");
        cases.put(tmp.resolve("no/such/dir/o.pt").toString(), "--out: cannot write " + tmp.resolve("no/such/dir/o.pt")
                + ": folder does not exist: " + tmp.resolve("no/such/dir"));
        cases.put(in[1].resolve("o.pt").toString(), "--out: cannot write " + in[1].resolve("o.pt") + ": not a folder: " + in[1]);
        cases.put("/dev/null", "--out: cannot write /dev/null: it is not a regular file");
        for (Map.Entry<String, String> c : cases.entrySet()) {
            Run r = cli(finetuneOn(in[0], in[1], c.getKey()));
            assertThat(r.code()).as(c.getKey() + ": " + r.err()).isEqualTo(1);
            assertThat(r.err()).as(c.getKey()).contains("error: " + c.getValue()).doesNotContain(".tmp")
                    .doesNotContain("finetune ("); // refused before loading and training
            assertSameContents(before, contents(tmp));
        }
        if (!"root".equals(System.getProperty("user.name"))) { // root writes into read-only folders
            Path ro = Files.createDirectory(tmp.resolve("ro"));
            Files.setPosixFilePermissions(ro, java.nio.file.attribute.PosixFilePermissions.fromString("r-xr-xr-x"));
            Run r = cli(finetuneOn(in[0], in[1], ro.resolve("o.pt").toString()));
            assertThat(r.err()).contains("cannot create a file in " + ro + ": permission denied");
        }
    }

    @Test
    void inputsThatAreNotFilesOrHaveNoRowsGetAccurateMessages(@TempDir Path tmp) throws Exception {
        Path[] in = copies(tmp);
        Path fifo = tmp.resolve("fifo.pt");
        assertThat(new ProcessBuilder("mkfifo", fifo.toString()).start().waitFor()).isZero();
        Path empty = tmp.resolve("empty.pt");
        TestModels.saveDict(empty, org.bytedeco.pytorch.global.torch.zeros(0, 4), org.bytedeco.pytorch.global.torch.zeros(0, 3),
                org.bytedeco.pytorch.global.torch.zeros(0, 4));
        Path out = tmp.resolve("out.pt");
        Map<String, String> cases = new java.util.LinkedHashMap<>();
        cases.put(fifo.toString(), "--data: data file " + fifo + " is not a regular file (it is a FIFO, device or socket)");
        cases.put("/dev/zero", "--data: data file /dev/zero is not a regular file");
        cases.put(tmp.toString(), "--data: data file " + tmp + " is a folder, not a file");
        cases.put(tmp.resolve("nope.pt").toString(), "--data: data file not found: " + tmp.resolve("nope.pt"));
        cases.put(empty.toString(), "--data " + empty + " has no rows ('data' has shape [0, 4]): nothing to finetune on");
        for (Map.Entry<String, String> c : cases.entrySet()) {
            Run r = cli(finetuneOn(in[0], Path.of(c.getKey()), out.toString()));
            assertThat(r.code()).as(c.getKey()).isEqualTo(1);
            assertThat(r.err()).as(c.getKey()).contains("error: " + c.getValue()).doesNotContain("batch size");
        }
        Run g = cli("estimate-g", "--model", in[0].toString(), "--data", empty.toString());
        assertThat(g.err()).contains("has no rows").doesNotContain("the data set is empty");
        assertThat(out).doesNotExist();
    }

    @Test
    void libtorchErrorsAreOneLineNamingTheCauseAndTheStepWithTheTraceOnlyWhenVerbose(@TempDir Path tmp) throws Exception {
        Path[] in = copies(tmp);
        org.bytedeco.pytorch.Tensor d = org.bytedeco.pytorch.global.torch.randn(16, 4).to(org.bytedeco.pytorch.global.torch.ScalarType.Double);
        org.bytedeco.pytorch.Tensor c = org.bytedeco.pytorch.global.torch.randn(16, 3).to(org.bytedeco.pytorch.global.torch.ScalarType.Double);
        Path intLabels = tmp.resolve("int-labels.pt");
        TestModels.saveDict(intLabels, d, c, d.to(org.bytedeco.pytorch.global.torch.ScalarType.Long));
        Path narrow = tmp.resolve("narrow.pt");
        TestModels.saveDict(narrow, org.bytedeco.pytorch.global.torch.randn(16, 3).to(org.bytedeco.pytorch.global.torch.ScalarType.Double), c, d);
        Path boolCond = tmp.resolve("bool-cond.pt");
        TestModels.saveDict(boolCond, d, c.gt(new org.bytedeco.pytorch.Scalar(0.0)), d);
        Map<Path, String> cases = Map.of(intLabels, "Found dtype Long but expected Double",
                narrow, "in the model's TorchScript code: mat1 and mat2 shapes cannot be multiplied (16x3 and 4x8)",
                boolCond, "in the model's TorchScript code: mat1 and mat2 must have the same dtype, but got Bool and Double");
        for (Map.Entry<Path, String> e : cases.entrySet()) {
            Run r = cli(finetuneOn(in[0], e.getKey(), tmp.resolve("o.pt").toString()));
            assertThat(r.code()).isEqualTo(1);
            List<String> errors = r.err().lines().filter(l -> !l.startsWith("finetune")).toList();
            assertThat(errors).as(r.err()).hasSize(1);
            assertThat(errors.get(0)).startsWith("error: --data " + e.getKey()).contains(", step 1 of 3: ")
                    .endsWith(e.getValue());
            Run v = cli(finetuneOn(in[0], e.getKey(), tmp.resolve("o.pt").toString(), "--verbose"));
            assertThat(v.err()).contains(errors.get(0)).contains("\tat org.text2data.");
        }
        Run v = cli(finetuneOn(in[0], intLabels, tmp.resolve("o.pt").toString(), "--verbose"));
        assertThat(v.err()).contains("Exception raised from").contains("frame #0");
        assertThat(tmp.resolve("o.pt")).doesNotExist();
    }

    @Test
    void aFailureAfterSomeStepsNamesItsStep(@TempDir Path tmp) throws Exception {
        Path[] in = copies(tmp);
        Path late = tmp.resolve("nan-in-row-12.pt");
        try (Batch b = TestModels.batch()) {
            org.bytedeco.pytorch.Tensor label = b.label().clone();
            label.narrow(0, 12, 1).fill_(new org.bytedeco.pytorch.Scalar(Double.NaN));
            TestModels.saveDict(late, b.data(), b.cond(), label);
        }
        Path out = tmp.resolve("o.pt");
        Run r = cli(finetuneOn(in[0], late, out.toString(), "--batch-size", "8"));
        assertThat(r.code()).isEqualTo(1);
        assertThat(r.err()).contains("error: --data " + late + " with --model " + in[0] + ", step 2 of 3: ");
        assertThat(out).doesNotExist();
    }

    @Test
    void aRunawayUnconditionalLossIsWarnedAbout(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("o.pt");
        Run r = cli(finetune(out, "--lr", "1000", "--steps", "20"));
        assertThat(r.code()).as(r.err()).isZero();
        assertThat(r.err()).contains("warning: g has been above 100 x g_constraint (and x its first value) for 5 step(s) in a row")
                .contains("warning: the unconditional loss ran away from g_constraint");
        Run calm = cli(finetune(out));
        assertThat(calm.err()).doesNotContain("warning");
    }

    @Test
    void helpOfEveryCommandPrintsNoWarning() {
        picocli.CommandLine root = new picocli.CommandLine(new Main());
        List<String[]> calls = new java.util.ArrayList<>();
        calls.add(new String[] {"--help"});
        for (String sub : root.getSubcommands().keySet()) {
            calls.add(new String[] {sub, "--help"});
        }
        assertThat(calls).hasSizeGreaterThanOrEqualTo(5);
        for (String[] call : calls) {
            Run r = cli(call);
            assertThat(r.code()).as(String.join(" ", call)).isZero();
            assertThat(r.err()).as(String.join(" ", call)).isEmpty();
            assertThat(r.out()).as(String.join(" ", call)).contains("Usage: text2data").doesNotContain("WARN");
        }
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
