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
        Path target = dir.resolve("model.pt");
        String cp = Path.of(AtomicFile.class.getProtectionDomain().getCodeSource().getLocation().toURI())
                + java.io.File.pathSeparator
                + Path.of(AtomicFileTest.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        String java = ProcessHandle.current().info().command().orElse("java");
        Process p = new ProcessBuilder(java, "-cp", cp, BlockedWriter.class.getName(), target.toString())
                .redirectErrorStream(true).start();
        try {
            BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
            String line = out.readLine();
            assertThat(line).as("the child's first line").startsWith("writing ");
            Path tmp = Path.of(line.substring("writing ".length()));
            assertThat(tmp).exists().hasParent(dir);
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
