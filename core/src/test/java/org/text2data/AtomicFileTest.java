package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Atomic writes: nothing half-written, no temporary file left, and failures that say why. */
class AtomicFileTest {

    /** A JVM that starts writing {@code args[0]} through {@link AtomicFile} and blocks mid-write until killed. */
    public static final class BlockedWriter {
        public static void main(String[] args) throws Exception {
            Path target = Path.of(args[0]);
            AtomicFile.write(target, tmp -> {
                Files.write(tmp, new byte[1 << 20]);
                System.out.println("writing " + tmp);
                System.out.flush();
                try {
                    Thread.sleep(120_000);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            });
        }
    }

    private static void killMidWriteLeavesNothing(Path dir, String signal) throws Exception {
        Blocked b = Blocked.start(dir.resolve("model.pt"));
        Process p = b.process();
        try {
            assertThat(b.tmp()).exists().hasParent(dir);
            assertThat(new ProcessBuilder("kill", "-" + signal, Long.toString(p.pid())).start().waitFor()).isZero();
            assertThat(p.waitFor(30, TimeUnit.SECONDS)).as("the child exits on SIG" + signal).isTrue();
            assertThat(p.exitValue()).isNotZero();
        } finally {
            p.destroyForcibly();
        }
        try (var files = Files.list(dir)) {
            assertThat(files.toList()).as("left in the folder after SIG" + signal).isEmpty();
        }
    }

    @Test
    void sigtermDuringASaveLeavesNoTemporaryFile(@TempDir Path dir) throws Exception {
        killMidWriteLeavesNothing(dir, "TERM");
    }

    @Test
    void sigintDuringASaveLeavesNoTemporaryFile(@TempDir Path dir) throws Exception {
        killMidWriteLeavesNothing(dir, "INT");
    }

    /** A child JVM blocked in the middle of writing {@code target}, and its temporary file. */
    private record Blocked(Process process, Path tmp) {
        static Blocked start(Path target) throws Exception {
            String cp = Path.of(AtomicFile.class.getProtectionDomain().getCodeSource().getLocation().toURI())
                    + java.io.File.pathSeparator
                    + Path.of(AtomicFileTest.class.getProtectionDomain().getCodeSource().getLocation().toURI());
            String java = ProcessHandle.current().info().command().orElse("java");
            Process p = new ProcessBuilder(java, "-cp", cp, BlockedWriter.class.getName(), target.toString())
                    .redirectErrorStream(true).start();
            String line = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))
                    .readLine();
            assertThat(line).as("the child's first line").startsWith("writing ");
            return new Blocked(p, Path.of(line.substring("writing ".length())));
        }
    }

    /**
     * SIGKILL leaves a temporary file no shutdown hook can delete; the next write of the same target deletes it,
     * and only it: not a live writer's, not one named the old way (no process id), not another host's.
     */
    @Test
    void theNextWriteDeletesWhatAKilledWriterLeftAndNothingALiveOneWrites(@TempDir Path dir) throws Exception {
        Path target = dir.resolve("model.pt");
        Blocked dead = Blocked.start(target);
        Blocked live = null;
        try {
            assertThat(new ProcessBuilder("kill", "-KILL", Long.toString(dead.process().pid())).start().waitFor())
                    .isZero();
            assertThat(dead.process().waitFor(30, TimeUnit.SECONDS)).isTrue();
            assertThat(dead.tmp()).as("what SIGKILL leaves").exists();
            String name = dead.tmp().getFileName().toString();
            assertThat(name).matches("\\.model\\.pt\\.[0-9a-f]{12}-" + dead.process().pid() + "-[0-9a-z]+\\.tmp");
            live = Blocked.start(target);
            Path oldStyle = Files.writeString(dir.resolve(".model.pt.3k2j4h5g6f7d.tmp"), "x");
            Path otherHost = Files.writeString(dir.resolve(".model.pt.000000000000" + name.substring(".model.pt.".length()
                    + 12)), "x");
            Path otherTarget = Files.writeString(dir.resolve(name.replace(".model.pt.", ".other.pt.")), "x");
            // what a killed AtomicFile.writeNamed leaves: a folder of the same name, with the target's file in it
            Path deadFolder = Files.createDirectory(dir.resolve(name.substring(0, name.lastIndexOf('-')) + "-abc.tmp"));
            Files.writeString(deadFolder.resolve("model.pt"), "partial");

            AtomicFile.write(target, tmp -> Files.writeString(tmp, "new"));

            assertThat(Files.readString(target)).isEqualTo("new");
            assertThat(dead.tmp()).as("the killed writer's").doesNotExist();
            assertThat(deadFolder).as("the killed writer's folder").doesNotExist();
            assertThat(live.tmp()).as("the live writer's").exists();
            assertThat(oldStyle).as("one without a process id").exists();
            assertThat(otherHost).as("another host's").exists();
            assertThat(otherTarget).as("another target's").exists();
        } finally {
            dead.process().destroyForcibly();
            if (live != null) {
                live.process().destroyForcibly();
                live.process().waitFor(30, TimeUnit.SECONDS);
            }
        }
    }

    @Test
    void aFailedWriteNamesTheTargetAndTheReasonNotTheTemporaryFile(@TempDir Path dir) throws Exception {
        assertThatThrownBy(() -> AtomicFile.write(Path.of("/proc/t2d-test.pt"), tmp -> Files.writeString(tmp, "x")))
                .isInstanceOf(IOException.class)
                .hasMessageStartingWith("could not write /proc/t2d-test.pt: ")
                .hasMessageNotContaining(".tmp");
        Path target = dir.resolve("out.pt");
        assertThatThrownBy(() -> AtomicFile.write(target, tmp -> {
            throw new java.nio.file.FileSystemException(tmp.toString(), null, "No space left on device");
        })).isInstanceOf(IOException.class).hasMessage("could not write " + target + ": No space left on device");
        assertThatThrownBy(() -> AtomicFile.write(dir, tmp -> Files.writeString(tmp, "x")))
                .hasMessage("cannot write " + dir + ": it is a folder, not a file");
        try (var files = Files.list(dir)) {
            assertThat(files.toList()).isEmpty();
        }
    }

    /** writeNamed: the writer gets a file with the target's own name; nothing else is left, after success or failure. */
    @Test
    void writeNamedGivesTheTargetsNameAndLeavesNothingElse(@TempDir Path dir) throws Exception {
        Path target = dir.resolve("finetuned.pt");
        AtomicFile.writeNamed(target, f -> {
            assertThat(f.getFileName()).isEqualTo(target.getFileName());
            assertThat(f.getParent()).isNotEqualTo(dir);
            Files.writeString(f, "model");
        });
        assertThat(Files.readString(target)).isEqualTo("model");
        assertThatThrownBy(() -> AtomicFile.writeNamed(target, f -> {
            Files.writeString(f, "half");
            throw new IOException("disk gone");
        })).hasMessage("could not write " + target + ": disk gone");
        assertThat(Files.readString(target)).isEqualTo("model");
        try (var files = Files.list(dir)) {
            assertThat(files.toList()).containsExactly(target);
        }
    }

    /** Writing through a symbolic link replaces the file it points to and keeps the link (a rename would replace it). */
    @Test
    void aLinkStaysALinkAndItsTargetIsWritten(@TempDir Path dir) throws Exception {
        Path real = Files.createDirectory(dir.resolve("store")).resolve("run.t2d");
        Files.writeString(real, "old");
        Path link = Files.createSymbolicLink(dir.resolve("latest.t2d"), Path.of("store", "run.t2d")); // relative
        Path chain = Files.createSymbolicLink(dir.resolve("chain.t2d"), link);
        AtomicFile.write(chain, tmp -> Files.writeString(tmp, "new"));
        assertThat(Files.isSymbolicLink(link)).isTrue();
        assertThat(Files.isSymbolicLink(chain)).isTrue();
        assertThat(Files.readString(real)).isEqualTo("new");
        Path dangling = Files.createSymbolicLink(dir.resolve("next.t2d"), dir.resolve("store").resolve("next.t2d"));
        AtomicFile.write(dangling, tmp -> Files.writeString(tmp, "first"));
        assertThat(Files.isSymbolicLink(dangling)).isTrue();
        assertThat(Files.readString(dangling)).isEqualTo("first");
        try (var files = Files.list(dir.resolve("store"))) {
            assertThat(files.map(f -> f.getFileName().toString()).sorted().toList())
                    .containsExactly("next.t2d", "run.t2d");
        }
    }

    @Test
    void checkWritableChangesNothingAndSaysWhy(@TempDir Path dir) throws Exception {
        Path existing = Files.writeString(dir.resolve("keep.pt"), "previous");
        AtomicFile.checkWritable(existing);
        AtomicFile.checkWritable(dir.resolve("new.pt"));
        try (var files = Files.list(dir)) {
            assertThat(files.toList()).containsExactly(existing);
        }
        assertThat(Files.readString(existing)).isEqualTo("previous");
        for (String bad : List.of("/proc/x.pt", "/dev/null", "/")) {
            assertThatThrownBy(() -> AtomicFile.checkWritable(Path.of(bad))).isInstanceOf(IOException.class)
                    .hasMessageStartingWith("cannot write " + bad + ": ");
        }
    }
}
