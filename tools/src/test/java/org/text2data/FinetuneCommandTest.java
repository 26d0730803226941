package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code finetune}'s refusals around --resume and its outputs: an output that would destroy the checkpoint resumed
 * from, a checkpoint beyond --steps, flags that a resume would otherwise ignore; each refused before anything is
 * written, with a message naming what was wrong.
 */
class FinetuneCommandTest {

    private static List<String> finetune(int steps, Path out, String... extra) {
        List<String> a = new ArrayList<>(List.of("finetune",
                "--model", TestModels.fixture("adam-f64.model.pt").toString(),
                "--data", TestModels.fixture("adam-f64.batch.pt").toString(),
                "--g-constraint", "1.1", "--steps", String.valueOf(steps), "--batch-size", "5", "--shuffle",
                "--seed", "3", "--out", out.toString()));
        return CliTest.withFlags(a, extra);
    }

    private static List<String> without(List<String> args, String flag) {
        List<String> out = new ArrayList<>(args);
        int at = out.indexOf(flag);
        out.remove(at + 1);
        out.remove(at);
        return out;
    }

    @Test
    void anOutputThatIsTheCheckpointResumedFromIsRefused(@TempDir Path tmp) throws Exception {
        Path ck = tmp.resolve("ck.t2d");
        CliTest.ok(finetune(6, tmp.resolve("first.pt"), "--checkpoint", ck.toString()));
        byte[] saved = Files.readAllBytes(ck);
        Files.createSymbolicLink(tmp.resolve("link.t2d"), ck.getFileName());
        Path rel = Path.of("").toAbsolutePath().relativize(ck);
        String detour = rel.getParent().resolve("..").resolve(rel.getParent().getFileName()).resolve(rel.getFileName()).toString();
        for (String out : new String[] {ck.toString(), detour, tmp.resolve("link.t2d").toString()}) {
            CliTest.Run r = CliTest.cli(finetune(12, Path.of(out), "--resume", ck.toString()));
            assertThat(r.code()).as(out + ": " + r.err()).isEqualTo(1);
            assertThat(r.err()).as(out).contains("--out " + out + " is the same file as --resume " + ck)
                    .doesNotContain("finetune (");
            assertThat(Files.readAllBytes(ck)).as(out).isEqualTo(saved);
        }
        // --out and --checkpoint the same file that does not exist yet: the checkpoint would be overwritten by --out
        Path both = tmp.resolve("both.pt");
        CliTest.Run r = CliTest.cli(finetune(6, both, "--checkpoint", tmp.resolve(".").resolve("both.pt").toString()));
        assertThat(r.code()).as(r.err()).isEqualTo(1);
        assertThat(r.err()).contains("is the same file as --out");
        assertThat(both).doesNotExist();
        // an empty path is named as such
        CliTest.Run empty = CliTest.cli(finetune(6, Path.of(""), "--checkpoint", tmp.resolve("x.t2d").toString()));
        assertThat(empty.code()).isEqualTo(1);
        assertThat(empty.err()).contains("--out: the path is empty");
    }

    @Test
    void aCheckpointBeyondStepsIsRefusedAndOneAtStepsWritesItsParameters(@TempDir Path tmp) throws Exception {
        Path ck = tmp.resolve("ck.t2d");
        CliTest.ok(finetune(10, tmp.resolve("s10.pt"), "--checkpoint", ck.toString()));
        byte[] saved = Files.readAllBytes(ck);
        Path out = tmp.resolve("s5.pt");
        CliTest.Run r = CliTest.cli(finetune(5, out, "--checkpoint", ck.toString(), "--resume", ck.toString()));
        assertThat(r.code()).as(r.err()).isEqualTo(1);
        assertThat(r.err()).contains("--resume " + ck + ": the checkpoint is at step 10, beyond --steps 5")
                .doesNotContain("finetune (");
        assertThat(out).doesNotExist();
        assertThat(Files.readAllBytes(ck)).isEqualTo(saved);
        // at --steps: nothing left to take; the checkpoint's parameters are written, and it says so
        Path same = tmp.resolve("s10-again.pt");
        CliTest.Run again = CliTest.ok(finetune(10, same, "--checkpoint", ck.toString(), "--resume", ck.toString()));
        assertThat(again.out()).contains("resumed from " + ck + " at step 10 (no step was left to take");
        assertThat(Files.readAllBytes(ck)).isEqualTo(saved);
        LibTorch.ensureLoaded();
        try (TorchScriptModel a = TorchScriptModel.load(tmp.resolve("s10.pt")); TorchScriptModel b = TorchScriptModel.load(same)) {
            a.namedParameters().forEach((n, t) -> CheckpointAssert.assertBitwise(t, b.namedParameters().get(n), n));
        }
    }

    @Test
    void flagsThatAResumeWouldIgnoreAreRefusedAndTheBannerShowsTheCheckpointsValues(@TempDir Path tmp) throws Exception {
        Path ck = tmp.resolve("ck.t2d");
        CliTest.ok(finetune(6, tmp.resolve("first.pt"), "--checkpoint", ck.toString(), "--lr", "0.01", "--alpha", "2",
                "--beta", "0.5"));
        byte[] saved = Files.readAllBytes(ck);
        Path out = tmp.resolve("out.pt");
        CliTest.Run r = CliTest.cli(finetune(12, out, "--resume", ck.toString(), "--checkpoint", ck.toString(), "--lr", "0.02",
                "--alpha", "3", "--beta", "0.5", "--seed", "4"));
        assertThat(r.code()).as(r.err()).isEqualTo(1);
        assertThat(r.err()).contains("--lr 0.02 (the checkpoint's run has 0.01)")
                .contains("--alpha 3.0 (the checkpoint's run has 2.0)")
                .contains("--seed 4 (the checkpoint's run has 3)")
                .doesNotContain("--beta 0.5").contains("start a new run without --resume").doesNotContain("finetune (");
        assertThat(out).doesNotExist();
        assertThat(Files.readAllBytes(ck)).isEqualTo(saved);
        // the same values given again are accepted; flags left out take the checkpoint's values, which are printed
        CliTest.Run resumed = CliTest.ok(without(finetune(12, out, "--resume", ck.toString(), "--alpha", "2"), "--seed"));
        assertThat(resumed.err()).contains("adam(lr=0.01").contains("alpha 2.0, beta 0.5");
        assertThat(resumed.out()).contains("resumed from " + ck + " at step 6");
    }

    @Test
    void anOutputBeingWrittenByAnotherRunIsRefused(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("out.pt");
        Path ck = tmp.resolve("ck.t2d");
        List<String> cmd = ForkedJvm.command(org.text2data.cli.Main.class, List.of(),
                finetune(100_000_000, out, "--checkpoint", ck.toString(), "--checkpoint-every", "100000000").toArray(new String[0]));
        Path log = tmp.resolve("first.log");
        Process first = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        try {
            long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(120);
            while (first.isAlive() && !Files.readString(log).contains("finetune (") && System.nanoTime() < deadline) {
                Thread.sleep(100);
            }
            assertThat(Files.readString(log)).contains("finetune (");
            String pid = "(pid " + first.pid() + ")";
            CliTest.Run sameOut = CliTest.cli(finetune(3, out));
            assertThat(sameOut.code()).as(sameOut.err()).isEqualTo(1);
            assertThat(sameOut.err()).contains("--out " + out + " is being written by another run " + pid)
                    .doesNotContain("finetune (");
            Path other = tmp.resolve("other.pt");
            CliTest.Run sameCk = CliTest.cli(finetune(3, other, "--checkpoint", ck.toString()));
            assertThat(sameCk.code()).as(sameCk.err()).isEqualTo(1);
            assertThat(sameCk.err()).contains("--checkpoint " + ck + " is being written by another run " + pid);
            assertThat(out).doesNotExist();
            assertThat(other).doesNotExist();
            assertThat(ck).doesNotExist();
        } finally {
            first.destroyForcibly();
            first.waitFor();
        }
        // the dead run's lock is released by the system: the next run goes ahead and leaves no lock file
        CliTest.ok(finetune(3, out, "--checkpoint", ck.toString()));
        assertThat(Files.list(tmp).map(p -> p.getFileName().toString()).sorted().toList())
                .containsExactly("ck.t2d", "first.log", "out.pt");
    }

    @Test
    void estimateGShowsItsProgressOnStderr() {
        CliTest.Run r = CliTest.cli("estimate-g", "--model", TestModels.fixture("adam-f64.model.pt").toString(),
                "--data", TestModels.fixture("adam-f64.batch.pt").toString(), "--chunk", "2");
        assertThat(r.code()).as(r.err()).isZero();
        List<String> lines = r.err().lines().filter(l -> l.startsWith("estimate-g (rows)")).toList();
        assertThat(lines).as(r.err()).hasSizeGreaterThan(3);
        assertThat(lines.get(lines.size() - 1)).contains("100%").contains("16/16");
        assertThat(r.out()).contains("suggested --g-constraint").doesNotContain("estimate-g (rows)");
    }

    @Test
    void aCheckpointGivenAsModelOrDataAndRealLabelsForCrossEntropyAndEmptyPathsAreNamed(@TempDir Path tmp) throws Exception {
        Path ck = tmp.resolve("ck.t2d");
        CliTest.ok(finetune(2, tmp.resolve("first.pt"), "--checkpoint", ck.toString()));
        Path out = tmp.resolve("out.pt");
        for (String flag : new String[] {"--model", "--data"}) {
            CliTest.Run r = CliTest.cli(finetune(2, out, flag, ck.toString()));
            assertThat(r.code()).as(r.err()).isEqualTo(1);
            assertThat(r.err()).contains(flag + " " + ck + " is a text2data checkpoint").contains("--resume")
                    .doesNotContain("inline_container");
            String m = flag.equals("--model") ? ck.toString() : TestModels.fixture("adam-f64.model.pt").toString();
            String d = flag.equals("--data") ? ck.toString() : TestModels.fixture("adam-f64.batch.pt").toString();
            CliTest.Run g = CliTest.cli("estimate-g", "--model", m, "--data", d);
            assertThat(g.err()).contains(flag + " " + ck + " is a text2data checkpoint");
            CliTest.Run empty = CliTest.cli(finetune(2, out, flag, ""));
            assertThat(empty.err()).contains(flag + ": the path is empty");
        }
        // the fixture's labels are real values (regression): not class indices nor probabilities
        CliTest.Run ce = CliTest.cli(finetune(2, out, "--loss", "cross-entropy"));
        assertThat(ce.code()).as(ce.err()).isEqualTo(1);
        assertThat(ce.err()).contains("--loss cross-entropy: the floating-point labels of --data").contains("are not class probabilities")
                .doesNotContain("finetune (");
        CliTest.Run ceG = CliTest.cli("estimate-g", "--model", TestModels.fixture("adam-f64.model.pt").toString(),
                "--data", TestModels.fixture("adam-f64.batch.pt").toString(), "--loss", "cross-entropy");
        assertThat(ceG.code()).isEqualTo(1);
        assertThat(ceG.err()).contains("are not class probabilities");
        assertThat(out).doesNotExist();
    }
}
