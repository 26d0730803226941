package org.text2data.dist;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.text2data.Batch;
import org.text2data.Engine;
import org.text2data.ForkedJvm;
import org.text2data.LibTorch;

/**
 * Data parallelism across real processes: ranks are forked JVMs with the test classpath, meeting over a
 * FileStore in a temporary folder, Gloo bound to 127.0.0.1. Every wait is bounded. Starting a JVM with
 * libtorch dominates the time, so the groups of processes all start at once, before the tests; the
 * rendezvous checks, which fail before any backend connects, run on threads of this JVM.
 */
class DataParallelTest {
    @TempDir
    static Path tmp;
    static List<Process> two;
    static List<Process> four;
    static List<Process> dying;
    static final long[] exitNanos = new long[2];

    @BeforeAll
    static void startGroups() throws IOException {
        LibTorch.ensureLoaded(); // first: the tests below time their waits, not libtorch's loading
        two = start(Files.createDirectory(tmp.resolve("two")), "equiv", range(2), fill(2, 2), 60_000);
        four = start(Files.createDirectory(tmp.resolve("four")), "equiv", range(4), fill(4, 4), 60_000);
        dying = start(Files.createDirectory(tmp.resolve("die")), "die", range(2), fill(2, 2), 5_000);
        for (int i = 0; i < 2; i++) {
            int r = i;
            dying.get(i).onExit().thenRun(() -> exitNanos[r] = System.nanoTime());
        }
    }

    @AfterAll
    static void stopGroups() {
        for (List<Process> ps : List.of(two, four, dying)) {
            ps.forEach(Process::destroyForcibly);
        }
    }

    /** What a finished rank left: exit code and output. */
    record Exit(int code, String out) {
    }

    /** Starts ranks {@code ranks} of a group of {@code worlds[i]} each; returns them running. */
    static List<Process> start(Path dir, String mode, int[] ranks, int[] worlds, long timeoutMs) throws IOException {
        List<Process> ps = new ArrayList<>();
        for (int i = 0; i < ranks.length; i++) {
            ProcessBuilder pb = new ProcessBuilder(ForkedJvm.command(DistWorker.class, List.of(), mode,
                    dir.resolve("store").toString(), Integer.toString(ranks[i]), Integer.toString(worlds[i]),
                    Long.toString(timeoutMs), dir.resolve("out" + ranks[i]).toString()));
            pb.redirectErrorStream(true);
            pb.redirectOutput(dir.resolve("log" + i).toFile());
            ps.add(pb.start());
        }
        return ps;
    }

    static List<Exit> finish(Path dir, List<Process> ps, long seconds) throws Exception {
        List<Exit> exits = new ArrayList<>();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        for (int i = 0; i < ps.size(); i++) {
            Process p = ps.get(i);
            boolean done = p.waitFor(Math.max(1, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
            if (!done) {
                ps.forEach(Process::destroyForcibly);
            }
            assertThat(done).as("rank process %d finished within %d s", i, seconds).isTrue();
            exits.add(new Exit(p.exitValue(), Files.readString(dir.resolve("log" + i), StandardCharsets.UTF_8)));
        }
        return exits;
    }

    static int[] range(int n) {
        int[] r = new int[n];
        for (int i = 0; i < n; i++) {
            r[i] = i;
        }
        return r;
    }

    static int[] fill(int n, int v) {
        int[] r = new int[n];
        java.util.Arrays.fill(r, v);
        return r;
    }

    @Test
    @Timeout(value = 200, unit = TimeUnit.SECONDS)
    void twoAndFourProcessesOnUnevenShardsGiveOneProcessesParameters() throws Exception {
        LibTorch.ensureLoaded();
        List<double[]> single = new ArrayList<>();
        for (String[] c : DistWorker.CASES) {
            for (Engine e : DistWorker.ENGINES) {
                single.add(DistWorker.run(c[0], c[1], e, null));
            }
        }
        for (List<Process> ps : List.of(two, four)) {
            Path dir = tmp.resolve(ps.size() == 2 ? "two" : "four");
            List<Exit> exits = finish(dir, ps, 180);
            for (int r = 0; r < ps.size(); r++) {
                assertThat(exits.get(r).code()).as("rank %d of %d: %s", r, ps.size(), exits.get(r).out()).isZero();
                List<double[]> got = DistWorker.read(dir.resolve("out" + r));
                assertThat(got).hasSameSizeAs(single);
                for (int k = 0; k < single.size(); k++) {
                    String what = String.format("%s/%s on %s, rank %d of %d", DistWorker.CASES[k / 2][0],
                            DistWorker.CASES[k / 2][1], DistWorker.ENGINES[k % 2], r, ps.size());
                    DistWorker.assertClose(got.get(k), single.get(k), 1e-12, what);
                }
            }
        }
    }

    @Test
    @Timeout(value = 200, unit = TimeUnit.SECONDS)
    void aWorkerThatDiesEndsTheOthersWithAnErrorWithinTheTimeout() throws Exception {
        List<Exit> exits = finish(tmp.resolve("die"), dying, 180);
        assertThat(exits.get(1).code()).as(exits.get(1).out()).isEqualTo(3); // halted itself at step 3
        assertThat(exits.get(0).code()).as(exits.get(0).out()).isEqualTo(1);
        assertThat(exits.get(0).out()).contains("rank 0: all-reduce failed");
        assertThat((exitNanos[0] - exitNanos[1]) / 1e9).as("seconds rank 0 outlived rank 1").isLessThan(5 + 10);
    }

    /** Ranks joining on threads of this JVM; each thread's error message, or "" when it joined. */
    static List<String> join(Path store, int[] ranks, int[] worlds, long timeoutMs) throws Exception {
        LibTorch.ensureLoaded();
        List<java.util.concurrent.Future<String>> fs = new ArrayList<>();
        java.util.concurrent.ExecutorService threads = java.util.concurrent.Executors.newFixedThreadPool(ranks.length);
        for (int i = 0; i < ranks.length; i++) {
            int r = ranks[i];
            int w = worlds[i];
            fs.add(threads.submit(() -> {
                try (ProcessGroup pg = ProcessGroup.file(store, r, w, ProcessGroup.Kind.GLOO,
                        java.time.Duration.ofMillis(timeoutMs))) {
                    return "";
                } catch (RuntimeException e) {
                    return e.getMessage();
                }
            }));
        }
        List<String> out = new ArrayList<>();
        for (var f : fs) {
            out.add(f.get(50, TimeUnit.SECONDS));
        }
        threads.shutdown();
        return out;
    }

    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    void aPeerThatNeverArrivesTimesOutNamingIt(@TempDir Path dir) throws Exception {
        long t0 = System.nanoTime();
        List<String> errors = join(dir.resolve("store"), new int[] {0, 2}, new int[] {3, 3}, 1_500);
        for (String e : errors) {
            assertThat(e).contains("rank(s) [1] of 3 did not arrive within 1500 ms");
        }
        assertThat((System.nanoTime() - t0) / 1e9).isLessThan(30);
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aWrongWorldSizeIsRefusedOnEveryRank(@TempDir Path dir) throws Exception {
        List<String> errors = join(dir.resolve("store"), new int[] {0, 1}, new int[] {2, 3}, 20_000);
        assertThat(errors.get(0)).contains("WORLD_SIZE differs between processes: rank 1 has 3, rank 0 (this one) has 2");
        assertThat(errors.get(1)).contains("WORLD_SIZE differs between processes: rank 0 has 2, rank 1 (this one) has 3");
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aRankTakenTwiceIsRefused(@TempDir Path dir) throws Exception {
        List<String> errors = join(dir.resolve("store"), new int[] {1, 1}, new int[] {2, 2}, 1_500);
        assertThat(errors).anySatisfy(e -> assertThat(e).contains("rank 1 was taken by another process already"));
    }

    @Test
    void badRanksAndWorldSizesAreRefusedBeforeAnythingStarts() {
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> ProcessGroup.file(tmp.resolve("x"), 2, 2,
                ProcessGroup.Kind.GLOO, ProcessGroup.DEFAULT_TIMEOUT)).hasMessageContaining("RANK must be in 0..1");
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> ProcessGroup.fromEnvironment(
                java.util.Map.of("RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "127.0.0.1"),
                ProcessGroup.Kind.GLOO, ProcessGroup.DEFAULT_TIMEOUT)).hasMessageContaining("MASTER_PORT is not set");
    }

    /** Listening sockets on {@code port} as {@code /proc/net/tcp} and {@code tcp6} list them (hex address). */
    static List<String> listeners(int port) throws IOException {
        List<String> out = new ArrayList<>();
        for (String f : List.of("/proc/net/tcp", "/proc/net/tcp6")) {
            Path p = Path.of(f);
            if (!Files.exists(p)) {
                continue;
            }
            for (String line : Files.readAllLines(p).subList(1, Files.readAllLines(p).size())) {
                String[] cols = line.trim().split("\\s+");
                String[] local = cols[1].split(":");
                if (Integer.parseInt(local[1], 16) == port && cols[3].equals("0A")) {
                    out.add(local[0]);
                }
            }
        }
        return out;
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void torchrunVariablesMeetOverATcpStoreListeningOnMasterAddrOnly() throws Exception {
        LibTorch.ensureLoaded();
        int port;
        try (java.net.ServerSocket s = new java.net.ServerSocket(0, 1, java.net.InetAddress.getByName("127.0.0.1"))) {
            port = s.getLocalPort();
        }
        List<java.util.concurrent.Future<ProcessGroup>> fs = new ArrayList<>();
        java.util.concurrent.ExecutorService threads = java.util.concurrent.Executors.newFixedThreadPool(2);
        for (int r = 0; r < 2; r++) {
            java.util.Map<String, String> env = java.util.Map.of("RANK", "" + r, "WORLD_SIZE", "2",
                    "MASTER_ADDR", "127.0.0.1", "MASTER_PORT", "" + port);
            fs.add(threads.submit(() -> ProcessGroup.fromEnvironment(env, ProcessGroup.Kind.GLOO,
                    java.time.Duration.ofSeconds(20))));
        }
        ProcessGroup p0 = fs.get(0).get(40, TimeUnit.SECONDS);
        ProcessGroup p1 = fs.get(1).get(40, TimeUnit.SECONDS);
        try {
            if (Files.exists(Path.of("/proc/net/tcp"))) {
                assertThat(listeners(port)).containsExactly("0100007F"); // 127.0.0.1, not 0.0.0.0 or ::
            }
            var sums = new ArrayList<java.util.concurrent.Future<Double>>();
            for (ProcessGroup pg : List.of(p0, p1)) {
                sums.add(threads.submit(() -> {
                    try (org.bytedeco.javacpp.PointerScope scope = new org.bytedeco.javacpp.PointerScope()) {
                        org.bytedeco.pytorch.Tensor t = org.bytedeco.pytorch.Tensor.create(new double[] {pg.rank() + 1.0, 10});
                        pg.allReduceSum(t);
                        return t.select(0, 0).item_double() * 100 + t.select(0, 1).item_double();
                    }
                }));
            }
            assertThat(sums.get(0).get(30, TimeUnit.SECONDS)).isEqualTo(320.0);
            assertThat(sums.get(1).get(30, TimeUnit.SECONDS)).isEqualTo(320.0);
        } finally {
            p1.close();
            p0.close();
            threads.shutdown();
        }
    }

    @Test
    void shardsCoverTheBatchInOrderWithSizesDifferingByAtMostOne() {
        LibTorch.ensureLoaded();
        try (Batch b = Batch.load(org.text2data.Fixtures.dir().resolve("sgd-f64.batch.pt"))) { // 12 rows
            long[] sizes = new long[5];
            long next = 0;
            for (int r = 0; r < 5; r++) {
                try (Batch s = DataParallel.shard(b, r, 5)) {
                    sizes[r] = s.size();
                    assertThat(org.bytedeco.pytorch.global.torch.equal(s.data(), b.data().narrow(0, next, s.size())))
                            .isTrue();
                    next += s.size();
                }
            }
            assertThat(sizes).containsExactly(3, 3, 2, 2, 2);
            org.assertj.core.api.Assertions.assertThatThrownBy(() -> DataParallel.shard(b, 0, 13))
                    .hasMessageContaining("12 rows cannot be split among 13 processes");
        }
    }
}
