package org.text2data.cli;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import org.text2data.AtomicFile;

/**
 * {@code finetune --nproc N}: starts N worker processes of this same command on this machine, ranks 0 to
 * N-1, which meet over a shared file in a fresh temporary folder (Gloo on 127.0.0.1; nothing listens on
 * other addresses) and each train on 1/N of every batch (see {@link DistributedRun}). Rank 0's output
 * shows here; the others' goes to a log whose end is shown when they fail. When a worker fails, the
 * others end by themselves within the timeout (they are stopped if they do not); the exit code is then
 * non-zero, and only rank 0 writes OUT.pt, after every rank finished its last step. Each worker holds a pipe
 * from the launcher on its stdin and ends as soon as that pipe closes, so that the workers never outlive their
 * launcher (killed, even with SIGKILL); the folder goes with the launcher or, when it was killed, with its
 * workers, and a folder left behind by a launcher that no longer runs is removed at the next launch.
 */
final class DistributedLauncher {
    /** The variable naming the shared store file; set for the workers of {@code --nproc}. */
    static final String STORE_FILE_VAR = "TEXT2DATA_STORE_FILE";
    private static final String PREFIX = "text2data-dist-";
    private static final String PID_FILE = "launcher.pid";

    private DistributedLauncher() {
    }

    /**
     * Runs {@code args} (a finetune command line with {@code --nproc}) on {@code nproc} workers.
     *
     * @return 0 when every worker finished; otherwise throws with the first failure
     */
    static int launch(int nproc, Duration timeout, List<String> args) throws IOException, InterruptedException {
        for (String v : List.of("RANK", "WORLD_SIZE")) {
            if (System.getenv(v) != null) {
                throw new IllegalArgumentException("--nproc starts its own ranks: unset " + v
                        + " (or drop --nproc to run one rank of a job described by the environment)");
            }
        }
        List<String> workerArgs = withoutNproc(args);
        removeStaleFolders();
        Path dir = Files.createTempDirectory(PREFIX);
        Files.writeString(dir.resolve(PID_FILE), ProcessHandle.current().pid() + " " + AtomicFile.hostId());
        List<Process> workers = new java.util.concurrent.CopyOnWriteArrayList<>();
        Thread stopper = new Thread(() -> { // SIGTERM, SIGINT: the workers and the folder go too
            workers.forEach(Process::destroyForcibly);
            for (Process p : workers) {
                try {
                    p.waitFor(5, java.util.concurrent.TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    break;
                }
            }
            deleteTree(dir);
        });
        Runtime.getRuntime().addShutdownHook(stopper);
        try {
            for (int rank = 0; rank < nproc; rank++) {
                List<String> cmd = new ArrayList<>();
                cmd.add(ProcessHandle.current().info().command().orElse(
                        Path.of(System.getProperty("java.home"), "bin", "java").toString()));
                cmd.addAll(ManagementFactory.getRuntimeMXBean().getInputArguments());
                cmd.add("-cp");
                cmd.add(System.getProperty("java.class.path"));
                cmd.add(Main.class.getName());
                cmd.add("finetune");
                cmd.addAll(workerArgs);
                ProcessBuilder pb = new ProcessBuilder(cmd);
                Map<String, String> env = pb.environment();
                env.keySet().removeAll(List.of("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "LOCAL_WORLD_SIZE"));
                env.put("RANK", Integer.toString(rank));
                env.put("LOCAL_RANK", Integer.toString(rank));
                env.put("WORLD_SIZE", Integer.toString(nproc));
                env.put("LOCAL_WORLD_SIZE", Integer.toString(nproc));
                env.put(STORE_FILE_VAR, dir.resolve("store").toString());
                // stdin stays a pipe from here: its end tells the worker that the launcher is gone
                if (rank == 0) {
                    pb.redirectOutput(ProcessBuilder.Redirect.INHERIT).redirectError(ProcessBuilder.Redirect.INHERIT);
                } else {
                    pb.redirectErrorStream(true);
                    pb.redirectOutput(log(dir, rank).toFile());
                }
                workers.add(pb.start());
            }
            return await(workers, dir, timeout);
        } finally {
            workers.forEach(Process::destroyForcibly);
            try {
                Runtime.getRuntime().removeShutdownHook(stopper);
            } catch (IllegalStateException shuttingDown) {
                // the hook runs anyway
            }
            deleteTree(dir);
        }
    }

    /** Waits for every worker; after the first failure the others get the timeout (and 10 s) to end. */
    private static int await(List<Process> workers, Path dir, Duration timeout) throws InterruptedException {
        int failed = -1;
        long stopAt = Long.MAX_VALUE;
        while (true) {
            boolean running = false;
            for (int r = 0; r < workers.size(); r++) {
                Process p = workers.get(r);
                if (p.isAlive()) {
                    running = true;
                } else if (p.exitValue() != 0 && failed < 0) {
                    failed = r;
                    stopAt = System.nanoTime() + timeout.toNanos() + 10_000_000_000L;
                }
            }
            if (!running) {
                break;
            }
            if (System.nanoTime() > stopAt) {
                workers.forEach(Process::destroyForcibly);
                for (Process p : workers) {
                    p.waitFor();
                }
                break;
            }
            Thread.sleep(50);
        }
        if (failed < 0) {
            return 0;
        }
        int code = workers.get(failed).exitValue();
        throw new IllegalStateException("rank " + failed + " of " + workers.size() + " failed (exit code " + code
                + (code > 128 ? ", killed by signal " + (code - 128) : "") + ")" + (failed == 0 ? "" : ": " + tail(log(dir, failed))) + "; nothing was written");
    }

    private static Path log(Path dir, int rank) {
        return dir.resolve("rank" + rank + ".log");
    }

    /** {@code ": "} and the worker's error message from its log, or nothing when it has none. */
    private static String tail(Path log) {
        try {
            List<String> lines = Files.readAllLines(log, StandardCharsets.UTF_8);
            for (int i = lines.size() - 1; i >= 0; i--) {
                if (lines.get(i).startsWith("error:")) {
                    return ": " + lines.get(i).substring("error:".length()).trim();
                }
            }
        } catch (IOException e) {
            // no log: nothing to add
        }
        return "";
    }

    /** The finetune command's own arguments, without {@code --nproc N} / {@code --nproc=N}. */
    static List<String> withoutNproc(List<String> args) {
        List<String> out = new ArrayList<>();
        int start = args.indexOf("finetune") + 1; // the parse result holds the whole command line
        for (int i = start; i < args.size(); i++) {
            String a = args.get(i);
            if (a.equals("--nproc")) {
                i++;
            } else if (!a.startsWith("--nproc=")) {
                out.add(a);
            }
        }
        return out;
    }

    /**
     * In a worker of {@code --nproc} (its environment names the store file): ends this process as soon as its stdin,
     * the launcher's pipe, reaches its end, which happens when the launcher ends in whatever way, and removes the
     * launcher's folder. Elsewhere, does nothing.
     */
    static void exitWithLauncher() {
        String store = System.getenv(STORE_FILE_VAR);
        if (store == null) {
            return;
        }
        Thread watcher = new Thread(() -> {
            try {
                while (System.in.read() >= 0) {
                    // the launcher writes nothing: wait for the end
                }
            } catch (IOException e) {
                // a broken pipe: the launcher is gone as well
            }
            Thread halt = new Thread(() -> {
                try {
                    Thread.sleep(5000);
                } catch (InterruptedException e) {
                    // halt now
                }
                Runtime.getRuntime().halt(1);
            });
            halt.setDaemon(true);
            halt.start(); // in case a shutdown hook hangs
            Path dir = Path.of(store).toAbsolutePath().getParent();
            if (dir != null && dir.getFileName().toString().startsWith(PREFIX)) {
                deleteTree(dir);
            }
            System.err.println("error: the launcher of this worker (finetune --nproc) ended; stopping, nothing written");
            System.exit(1); // the shutdown hooks remove any half-written output
        }, "text2data-launcher-watch");
        watcher.setDaemon(true);
        watcher.start();
    }

    /** Removes the folders of launchers that no longer run (killed with SIGKILL before their workers cleaned up). */
    private static void removeStaleFolders() {
        Path tmp = Path.of(System.getProperty("java.io.tmpdir"));
        try (Stream<Path> dirs = Files.list(tmp)) {
            for (Path d : dirs.filter(d -> d.getFileName().toString().startsWith(PREFIX) && Files.isDirectory(d)
                    && Files.isWritable(d)).toList()) {
                try {
                    String[] owner = Files.readString(d.resolve(PID_FILE)).trim().split(" ");
                    long pid = Long.parseLong(owner[0]);
                    // a pid means something on this host, in this pid namespace only (containers may share a /tmp)
                    boolean ours = owner.length == 2 && AtomicFile.hostId() != null
                            && owner[1].equals(AtomicFile.hostId());
                    if (ours && ProcessHandle.of(pid).map(h -> !h.isAlive()).orElse(true)) {
                        deleteTree(d);
                    }
                } catch (IOException | NumberFormatException e) {
                    // no pid (another version, or just being made): left alone
                }
            }
        } catch (IOException e) {
            // best effort
        }
    }

    private static void deleteTree(Path dir) {
        try (Stream<Path> s = Files.walk(dir)) {
            s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException ignored) {
            // a temporary folder: best effort
        }
    }
}
