package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** A test's forked JVM: this JVM's java and class path, the native-access flags the library needs. */
public final class ForkedJvm {

    private ForkedJvm() {
    }

    /** The exit value of a finished process and its output (stdout and stderr together). */
    public record Exit(int code, String output) {
    }

    /** {@code java}, the native-access flags, {@code jvmArgs}, {@code -cp} this class path, {@code main} and {@code args}. */
    public static List<String> command(Class<?> main, List<String> jvmArgs, String... args) {
        List<String> cmd = new ArrayList<>(List.of(
                ProcessHandle.current().info().command().orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString()),
                "--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow"));
        cmd.addAll(jvmArgs);
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), main.getName()));
        cmd.addAll(List.of(args));
        return cmd;
    }

    /**
     * Starts {@code pb} with stderr into stdout, reads all its output, asserts it ends within the timeout. A process
     * that does not is killed (with what it started) and the assertion shows its output so far: a hung child fails the
     * test instead of hanging the build.
     */
    public static Exit run(ProcessBuilder pb, long timeout, TimeUnit unit) throws Exception {
        Process p = pb.redirectErrorStream(true).start();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        Thread reader = new Thread(() -> {
            try (InputStream in = p.getInputStream()) {
                in.transferTo(out);
            } catch (IOException e) {
                // the process was killed: what was read so far is kept
            }
        }, "forked-jvm-output");
        reader.setDaemon(true);
        reader.start();
        boolean ended = p.waitFor(timeout, unit);
        if (!ended) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly().waitFor(30, TimeUnit.SECONDS);
        }
        reader.join(TimeUnit.SECONDS.toMillis(30));
        String output = out.toString(StandardCharsets.UTF_8);
        assertThat(ended).as("the forked JVM did not end within %d %s; its output so far:%n%s", timeout,
                unit.toString().toLowerCase(java.util.Locale.ROOT), output).isTrue();
        return new Exit(p.exitValue(), output);
    }

    /** {@link #run} that must exit 0 (the output describes a failure); returns the output. */
    public static String runOk(ProcessBuilder pb, long timeout, TimeUnit unit) throws Exception {
        Exit e = run(pb, timeout, unit);
        assertThat(e.code()).as(e.output()).isZero();
        return e.output();
    }

    /** {@link #runOk(ProcessBuilder, long, TimeUnit)} within 5 minutes. */
    public static String runOk(ProcessBuilder pb) throws Exception {
        return runOk(pb, 5, TimeUnit.MINUTES);
    }

    /** {@link #runOk(ProcessBuilder)} of {@code command}. */
    public static String runOk(List<String> command) throws Exception {
        return runOk(new ProcessBuilder(command));
    }
}
