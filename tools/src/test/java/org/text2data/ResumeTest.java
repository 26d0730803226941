package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.text2data.CheckpointAssert.assertBitwise;
import static org.text2data.CheckpointAssert.assertSameCheckpoint;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.text2data.cli.Main;

/**
 * {@code finetune --checkpoint/--resume} end to end: a run stopped after k steps and resumed in a new JVM ends bit
 * for bit where the uninterrupted run does, on every engine and optimizer; so does a run killed with SIGKILL at a
 * random moment; bad resumes are refused and write nothing.
 */
class ResumeTest {
    private static final String SEP = "\u001f";

    /** Run in a forked JVM: each argument is one command line (words separated by U+001F), run in turn. */
    public static void main(String[] commands) {
        for (String c : commands) {
            int code = Main.run(c.split(SEP));
            if (code != 0) {
                System.exit(code);
            }
        }
        System.exit(0);
    }

    private static List<String> finetune(int steps, Path out, String... extra) {
        List<String> a = new ArrayList<>(List.of("finetune",
                "--model", TestModels.fixture("adam-f64.model.pt").toString(),
                "--data", TestModels.fixture("adam-f64.batch.pt").toString(),
                "--g-constraint", "1.241462456078726", "--steps", String.valueOf(steps), "--lr", "0.01",
                "--batch-size", "5", "--shuffle", "--seed", "3", "--out", out.toString()));
        return CliTest.withFlags(a, extra);
    }

    private static Process fork(Path tmp, List<List<String>> commands) throws Exception {
        List<String> cmd = ForkedJvm.command(ResumeTest.class, List.of("-XX:ErrorFile=" + tmp.resolve("hs_err_%p.log")),
                commands.stream().map(c -> String.join(SEP, c)).toArray(String[]::new));
        return new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(tmp.resolve("fork.log").toFile()).start();
    }

    private static long stepOf(Checkpoint c) {
        return com.google.gson.JsonParser.parseString(c.loopState()).getAsJsonObject().get("step").getAsLong();
    }

    @Test
    void aRunResumedInANewJvmEndsBitForBitWhereTheUninterruptedRunDoes(@TempDir Path tmp) throws Exception {
        int n = 23;
        int k = 9; // mid-epoch: 16 rows in batches of 5
        List<String[]> optimizers = List.of(new String[] {"--optimizer", "sgd", "--momentum", "0.9"},
                new String[] {"--optimizer", "adam"}, new String[] {"--optimizer", "adamw"},
                new String[] {"--optimizer", "rmsprop", "--momentum", "0.5"}, new String[] {"--optimizer", "adagrad"});
        List<List<String>> resumes = new ArrayList<>();
        List<String> names = new ArrayList<>();
        for (String engine : List.of("plain", "fused")) {
            for (String[] o : optimizers) {
                String name = engine + "-" + o[1];
                names.add(name);
                List<String> flags = new ArrayList<>(List.of(o));
                flags.addAll(List.of("--engine", engine));
                CliTest.ok(finetune(n, tmp.resolve(name + "-ref.pt"), concat(flags, "--checkpoint",
                        tmp.resolve(name + "-ref.t2d").toString())));
                CliTest.ok(finetune(k, tmp.resolve(name + "-part.pt"), concat(flags, "--checkpoint",
                        tmp.resolve(name + "-part.t2d").toString(), "--checkpoint-every", "4")));
                resumes.add(finetune(n, tmp.resolve(name + "-resumed.pt"), concat(flags, "--resume",
                        tmp.resolve(name + "-part.t2d").toString(), "--checkpoint", tmp.resolve(name + "-resumed.t2d").toString())));
            }
        }
        // concurrent passes in the interrupted run and in its resumption, the reference in turn: still bit for bit
        String concurrent = "fused-adam-concurrent";
        names.add(concurrent);
        List<String> flags = List.of("--optimizer", "adam", "--engine", "fused");
        CliTest.ok(finetune(n, tmp.resolve(concurrent + "-ref.pt"), concat(flags, "--checkpoint",
                tmp.resolve(concurrent + "-ref.t2d").toString())));
        CliTest.ok(finetune(k, tmp.resolve(concurrent + "-part.pt"), concat(flags, "--concurrent-passes", "--checkpoint",
                tmp.resolve(concurrent + "-part.t2d").toString(), "--checkpoint-every", "4")));
        resumes.add(finetune(n, tmp.resolve(concurrent + "-resumed.pt"), concat(flags, "--concurrent-passes", "--resume",
                tmp.resolve(concurrent + "-part.t2d").toString(), "--checkpoint", tmp.resolve(concurrent + "-resumed.t2d").toString())));
        Process p = fork(tmp, resumes);
        assertThat(p.waitFor(10, TimeUnit.MINUTES)).isTrue();
        assertThat(p.exitValue()).as(Files.readString(tmp.resolve("fork.log"))).isZero();
        assertThat(Files.readString(tmp.resolve("fork.log"))).contains("at step " + k);
        for (String name : names) {
            try (Checkpoint ref = Checkpoint.read(tmp.resolve(name + "-ref.t2d"));
                 Checkpoint part = Checkpoint.read(tmp.resolve(name + "-part.t2d"));
                 Checkpoint resumed = Checkpoint.read(tmp.resolve(name + "-resumed.t2d"));
                 TorchScriptModel a = TorchScriptModel.load(tmp.resolve(name + "-ref.pt"));
                 TorchScriptModel b = TorchScriptModel.load(tmp.resolve(name + "-resumed.pt"))) {
                assertThat(stepOf(part)).isEqualTo(k);
                assertThat(stepOf(ref)).isEqualTo(n);
                assertThat(org.bytedeco.pytorch.global.torch.equal(part.parameters().get("out.weight"),
                        ref.parameters().get("out.weight"))).as(name + ": the part run is not already the result").isFalse();
                assertSameCheckpoint(ref, resumed, name);
                a.namedParameters().forEach((pn, t) -> assertBitwise(t, b.namedParameters().get(pn), name + " out " + pn));
            }
        }
    }

    @Test
    void aRunKilledAtARandomMomentResumesFromItsLastCheckpointToTheSameResult(@TempDir Path tmp) throws Exception {
        int n = 400;
        long t0 = System.nanoTime();
        CliTest.ok(finetune(n, tmp.resolve("ref.pt"), "--checkpoint", tmp.resolve("ref.t2d").toString()));
        long runMillis = (System.nanoTime() - t0) / 1_000_000;
        Path ck = tmp.resolve("ck.t2d");
        List<String> run = finetune(n, tmp.resolve("out.pt"), "--checkpoint", ck.toString(), "--checkpoint-every", "10");
        long seed = System.nanoTime();
        long delay = new Random(seed).nextLong(runMillis + 1);
        Process p = fork(tmp, List.of(run));
        long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(5);
        while (!Files.exists(ck) && p.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(5); // training has begun once the first checkpoint is there
        }
        Thread.sleep(delay);
        p.destroyForcibly();
        assertThat(p.waitFor(1, TimeUnit.MINUTES)).isTrue();
        String what = "killed " + delay + " ms after the first checkpoint (seed " + seed + ", exit " + p.exitValue() + ")";
        List<String> resume = new ArrayList<>(run);
        if (Files.exists(ck)) {
            try (Checkpoint c = Checkpoint.read(ck)) {
                what += " at step " + stepOf(c);
            }
            resume.addAll(List.of("--resume", ck.toString()));
        }
        CliTest.ok(resume);
        try (Checkpoint ref = Checkpoint.read(tmp.resolve("ref.t2d")); Checkpoint resumed = Checkpoint.read(ck)) {
            assertSameCheckpoint(ref, resumed, what);
        }
    }

    @Test
    void aResumeThatDoesNotFitIsRefusedAndWritesNothing(@TempDir Path tmp) throws Exception {
        Path ck = tmp.resolve("ck.t2d");
        CliTest.ok(finetune(6, tmp.resolve("first.pt"), "--checkpoint", ck.toString()));
        byte[] saved = Files.readAllBytes(ck);
        Path out = tmp.resolve("out.pt");
        List<List<String>> bad = List.of(
                CliTest.withFlags(finetune(12, out, "--resume", ck.toString()), "--batch-size", "4"),
                finetune(12, out, "--resume", ck.toString(), "--optimizer", "sgd"),
                finetune(12, out, "--resume", tmp.resolve("nothing.t2d").toString()),
                finetune(12, out, "--checkpoint-every", "5"),
                finetune(12, out, "--checkpoint", ck.toString(), "--checkpoint-every", "0"));
        List<String> messages = List.of("resume with the same data, batch size and shuffling",
                "the checkpoint's optimizer is adam, this one is sgd",
                "--resume: checkpoint file not found", "--checkpoint-every needs --checkpoint FILE",
                "--checkpoint-every must be positive");
        for (int i = 0; i < bad.size(); i++) {
            CliTest.Run r = CliTest.cli(bad.get(i).toArray(new String[0]));
            assertThat(r.code()).as(r.err()).isEqualTo(1);
            assertThat(r.err()).contains(messages.get(i));
            assertThat(out).doesNotExist();
            assertThat(Files.readAllBytes(ck)).isEqualTo(saved);
        }
        CliTest.Run help = CliTest.cli("finetune", "--help");
        assertThat(help.out()).contains("--checkpoint=CK.t2d").contains("--checkpoint-every=N").contains("--resume=CK.t2d");
    }

    private static String[] concat(List<String> a, String... b) {
        List<String> out = new ArrayList<>(a);
        out.addAll(List.of(b));
        return out.toArray(new String[0]);
    }
}
