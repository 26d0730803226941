package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;

/** The test helper that forks JVMs: a child that hangs fails the test, killed, instead of hanging the build. */
class ForkedJvmTest {

    /** The child: says so, then hangs (or ends with the given code). */
    public static void main(String[] args) throws Exception {
        System.out.println("child started");
        System.out.flush();
        if (args[0].equals("hang")) {
            Thread.sleep(Long.MAX_VALUE);
        }
        System.exit(Integer.parseInt(args[0]));
    }

    @Test
    void aChildThatHangsIsKilledAndItsOutputSoFarShown() throws Exception {
        ProcessBuilder pb = new ProcessBuilder(ForkedJvm.command(ForkedJvmTest.class, List.of(), "hang"));
        long t0 = System.nanoTime();
        assertThatThrownBy(() -> ForkedJvm.run(pb, 5, TimeUnit.SECONDS)).isInstanceOf(AssertionError.class)
                .hasMessageContaining("the forked JVM did not end within 5 seconds")
                .hasMessageContaining("child started");
        assertThat(TimeUnit.NANOSECONDS.toSeconds(System.nanoTime() - t0)).isLessThan(60);
    }

    @Test
    void aChildThatEndsGivesItsExitCodeAndOutput() throws Exception {
        ForkedJvm.Exit e = ForkedJvm.run(new ProcessBuilder(ForkedJvm.command(ForkedJvmTest.class, List.of(), "3")),
                1, TimeUnit.MINUTES);
        assertThat(e.code()).isEqualTo(3);
        assertThat(e.output()).contains("child started");
    }
}
