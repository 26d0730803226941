package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.text2data.dist.DistWorker;

/** {@code finetune --nproc N}: worker JVMs started by the CLI, on loopback, with bounded waits. */
class DistributedCliTest {

    private static List<String> finetune(Path out, String... extra) {
        List<String> a = new ArrayList<>(List.of("finetune",
                "--model", TestModels.fixture("sgd-f64.model.pt").toString(),
                "--data", TestModels.fixture("sgd-f64.batch.pt").toString(),
                "--g-constraint", "1.0193784822433518", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9",
                "--alpha", "2", "--beta", "0.5", "--out", out.toString()));
        a.addAll(List.of(extra));
        return a;
    }

    /** Also with concurrent passes in the workers: each hands its passes' gradients over, then they are averaged. */
    @Test
    @Timeout(value = 300, unit = TimeUnit.SECONDS)
    void twoWorkersWriteWhatOneProcessWrites(@TempDir Path tmp) throws Exception {
        Path one = tmp.resolve("one.pt");
        CliTest.Run single = CliTest.cli(finetune(one, "--steps", "20", "--batch-size", "6", "--engine", "fused"));
        assertThat(single.code()).as(single.err()).isZero();
        List<String> outputs = new java.util.ArrayList<>(List.of("one.pt"));
        for (boolean concurrentPasses : new boolean[] {false, true}) {
            String name = concurrentPasses ? "two-concurrent.pt" : "two.pt";
            outputs.add(name);
            List<String> args = new java.util.ArrayList<>(finetune(tmp.resolve(name), "--steps", "20", "--batch-size",
                    "6", "--nproc", "2", "--engine", "fused"));
            if (concurrentPasses) {
                args.add("--concurrent-passes");
            }
            CliTest.Run parallel = CliTest.cli(args);
            assertThat(parallel.code()).as(parallel.err()).isZero();
            LibTorch.ensureLoaded();
            try (TorchScriptModel a = TorchScriptModel.load(one); TorchScriptModel b = TorchScriptModel.load(tmp.resolve(name));
                 TorchScriptModel init = TorchScriptModel.load(TestModels.fixture("sgd-f64.model.pt"))) {
                int moved = 0;
                for (Map.Entry<String, Tensor> e : a.namedParameters().entrySet()) {
                    double[] want = values(e.getValue());
                    moved += java.util.Arrays.equals(values(init.namedParameters().get(e.getKey())), want) ? 0 : 1;
                    DistWorker.assertClose(values(b.namedParameters().get(e.getKey())), want, 1e-12, name + " " + e.getKey());
                }
                assertThat(moved).as("parameter tensors the finetune changed").isGreaterThan(3);
            }
        }
        assertThat(Files.list(tmp).map(p -> p.getFileName().toString()).sorted().toList())
                .containsExactlyElementsOf(outputs.stream().sorted().toList()); // no temporary files left
    }

    @Test
    @Timeout(value = 300, unit = TimeUnit.SECONDS)
    void twoWorkersCheckpointOnceAndResumeToTheUninterruptedResult(@TempDir Path tmp) throws Exception {
        Path whole = tmp.resolve("whole.pt");
        Path part = tmp.resolve("part.pt");
        Path resumed = tmp.resolve("resumed.pt");
        Path ck = tmp.resolve("run.ckpt");
        CliTest.Run first = CliTest.cli(finetune(part, "--steps", "8", "--batch-size", "6", "--nproc", "2", "--engine", "fused",
                "--checkpoint", ck.toString(), "--checkpoint-every", "4"));
        assertThat(first.code()).as(first.err()).isZero();
        CliTest.Run rest = CliTest.cli(finetune(resumed, "--steps", "16", "--batch-size", "6", "--nproc", "2", "--engine", "fused",
                "--resume", ck.toString()));
        assertThat(rest.code()).as(rest.err()).isZero();
        CliTest.Run uninterrupted = CliTest.cli(finetune(whole, "--steps", "16", "--batch-size", "6", "--nproc", "2",
                "--engine", "fused"));
        assertThat(uninterrupted.code()).as(uninterrupted.err()).isZero();
        LibTorch.ensureLoaded();
        try (TorchScriptModel a = TorchScriptModel.load(whole); TorchScriptModel b = TorchScriptModel.load(resumed)) {
            for (Map.Entry<String, Tensor> e : a.namedParameters().entrySet()) {
                assertThat(values(b.namedParameters().get(e.getKey()))).as(e.getKey())
                        .containsExactly(values(e.getValue()));
            }
        }
        // one checkpoint file, written by rank 0 alone: no other file and no temporary file beside it
        assertThat(Files.list(tmp).map(p -> p.getFileName().toString()).sorted().toList())
                .containsExactly("part.pt", "resumed.pt", "run.ckpt", "whole.pt");
    }

    static double[] values(Tensor t) {
        Tensor c = t.detach().contiguous();
        double[] v = new double[(int) c.numel()];
        new org.bytedeco.javacpp.DoublePointer(c.data_ptr_double()).get(v);
        return v;
    }

    @Test
    @Timeout(value = 200, unit = TimeUnit.SECONDS)
    void aKilledWorkerEndsTheRunWithAnErrorAndNoOutput(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("out.pt");
        CompletableFuture<CliTest.Run> running = CompletableFuture.supplyAsync(() -> CliTest.cli(finetune(out,
                "--steps", "100000000", "--nproc", "2", "--dist-timeout", "5")));
        // both workers started (loading, meeting or stepping): kill the later one, as a crash would
        List<ProcessHandle> workers = List.of();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (workers.size() < 2 && System.nanoTime() < deadline) {
            workers = ProcessHandle.current().children()
                    .filter(p -> p.info().arguments().map(a -> List.of(a).contains("--nproc") == false
                            && List.of(a).contains("finetune")).orElse(false)).toList();
            Thread.sleep(100);
        }
        assertThat(workers).hasSize(2);
        // rank 1 prints its set-up line once the group has met: from then on it is training
        Path tmpRoot = Path.of(System.getProperty("java.io.tmpdir"));
        boolean training = false;
        while (!training && System.nanoTime() < deadline + TimeUnit.SECONDS.toNanos(60)) {
            try (var dirs = Files.list(tmpRoot)) {
                for (Path d : dirs.filter(d -> d.getFileName().toString().startsWith("text2data-dist-")).toList()) {
                    Path log = d.resolve("rank1.log");
                    training |= Files.exists(log) && Files.readString(log).contains("finetune:");
                }
            } catch (java.io.IOException racingCleanup) {
                // another folder went away while listed
            }
            Thread.sleep(100);
        }
        assertThat(training).as("rank 1 started training").isTrue();
        Thread.sleep(1000);
        workers.get(workers.size() - 1).destroyForcibly(); // either rank: the other must end with an error
        long killed = System.nanoTime();
        CliTest.Run r = running.get(120, TimeUnit.SECONDS);
        assertThat((System.nanoTime() - killed) / 1e9).as("seconds to end after the kill").isLessThan(5 + 10 + 20);
        assertThat(r.code()).isEqualTo(1);
        assertThat(r.err()).containsPattern("error: rank [01] of 2 failed \\(exit code 137, killed by signal 9\\)").contains("nothing was written");
        assertThat(out).doesNotExist();
        assertThat(Files.list(tmp).toList()).isEmpty();
        for (ProcessHandle w : workers) {
            assertThat(w.isAlive()).isFalse();
        }
    }

    /** SIGKILL to the launcher: its workers end within seconds and write nothing; their folder goes with them. */
    @Test
    @Timeout(value = 200, unit = TimeUnit.SECONDS)
    void workersEndWhenTheirLauncherIsKilled(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("out.pt");
        Path ck = tmp.resolve("ck.t2d");
        Path tmpdir = Files.createDirectory(tmp.resolve("tmpdir")); // the launcher's java.io.tmpdir: its folder lands here
        List<String> cmd = ForkedJvm.command(org.text2data.cli.Main.class, List.of("-Djava.io.tmpdir=" + tmpdir),
                finetune(out, "--steps", "100000000", "--nproc", "2", "--checkpoint", ck.toString(),
                        "--checkpoint-every", "100000000").toArray(new String[0]));
        Process launcher = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(tmp.resolve("launcher.log").toFile())
                .start();
        List<ProcessHandle> workers = List.of();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            boolean training = false;
            while (!training && launcher.isAlive() && System.nanoTime() < deadline) {
                workers = launcher.children().toList();
                try (var dirs = Files.list(tmpdir)) {
                    for (Path d : dirs.toList()) {
                        Path log = d.resolve("rank1.log");
                        training |= Files.exists(log) && Files.readString(log).contains("finetune (");
                    }
                }
                Thread.sleep(100);
            }
            assertThat(training).as("rank 1 started training: " + Files.readString(tmp.resolve("launcher.log"))).isTrue();
            assertThat(workers).hasSize(2);
            launcher.destroyForcibly();
            assertThat(launcher.waitFor(10, TimeUnit.SECONDS)).isTrue();
            long killed = System.nanoTime();
            for (ProcessHandle w : workers) {
                w.onExit().get(10, TimeUnit.SECONDS);
            }
            assertThat((System.nanoTime() - killed) / 1e9).as("seconds for the workers to end").isLessThan(8);
            Thread.sleep(1000);
            assertThat(out).doesNotExist();
            assertThat(ck).doesNotExist();
            assertThat(Files.list(tmpdir).toList()).as("the launcher's folder").isEmpty();
        } finally {
            launcher.destroyForcibly();
            workers.forEach(ProcessHandle::destroyForcibly);
        }
    }

    @Test
    void nprocIsCheckedBeforeAnythingStarts(@TempDir Path tmp) {
        CliTest.Run r = CliTest.cli(finetune(tmp.resolve("o.pt"), "--steps", "2", "--nproc", "0"));
        assertThat(r.code()).isEqualTo(1);
        assertThat(r.err()).contains("--nproc must be at least 1");
        CliTest.Run timeout = CliTest.cli(finetune(tmp.resolve("o.pt"), "--steps", "2", "--nproc", "2", "--dist-timeout", "0"));
        assertThat(timeout.code()).isEqualTo(1);
        assertThat(timeout.err()).contains("--dist-timeout in (0, 86400] seconds");
        assertThat(tmp.resolve("o.pt")).doesNotExist();
    }
}
