package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatCode;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.DataInputStream;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The Java requirement is what the class files say, and an old JVM is told so in words. */
class JavaVersionCheckTest {

    static int classFileMajor(Class<?> c) throws Exception {
        try (InputStream in = c.getResourceAsStream(c.getSimpleName() + ".class");
             DataInputStream d = new DataInputStream(in)) {
            d.readInt(); // magic
            d.readUnsignedShort(); // minor
            return d.readUnsignedShort();
        }
    }

    @Test
    void theRequirementIsTheClassFileVersionOfTheLibrary() throws Exception {
        assertThat(classFileMajor(Constraint.class)).isEqualTo(44 + JavaVersionCheck.REQUIRED);
        // the two entry points load on any JVM from Java 8 on
        assertThat(classFileMajor(JavaVersionCheck.class)).isEqualTo(52);
        assertThat(classFileMajor(Preload.class)).isEqualTo(52);
    }

    @Test
    void anOlderJavaIsRefusedWithAMessageThatSaysWhatToInstall() {
        String real = System.getProperty("java.specification.version");
        try {
            System.setProperty("java.specification.version", "21");
            assertThatThrownBy(JavaVersionCheck::require).isInstanceOf(UnsupportedClassVersionError.class)
                    .hasMessageContaining("text2data needs Java 25 or newer")
                    .hasMessageContaining("class file version 69").hasMessageContaining("this JVM is Java 21");
            System.setProperty("java.specification.version", "1.8");
            assertThatThrownBy(JavaVersionCheck::require).hasMessageContaining("this JVM is Java 1.8");
        } finally {
            System.setProperty("java.specification.version", real);
        }
        assertThatCode(JavaVersionCheck::require).doesNotThrowAnyException();
    }

    /** A JDK older than 25 on this machine (e.g. Debian's default openjdk-17), if there is one. */
    static Optional<Path> olderJava() throws Exception {
        Path jvms = Path.of("/usr/lib/jvm");
        if (!Files.isDirectory(jvms)) {
            return Optional.empty();
        }
        try (Stream<Path> s = Files.list(jvms)) {
            for (Path home : s.sorted().toList()) {
                Path java = home.resolve("bin/java");
                Path release = home.resolve("release");
                if (Files.isExecutable(java) && Files.isRegularFile(release)) {
                    Optional<String> v = Files.readAllLines(release).stream()
                            .filter(l -> l.startsWith("JAVA_VERSION=")).findFirst();
                    if (v.isPresent()) {
                        String ver = v.get().replaceAll("[^0-9.]", "");
                        int major = Integer.parseInt(ver.startsWith("1.") ? ver.split("\\.")[1] : ver.split("\\.")[0]);
                        if (major < JavaVersionCheck.REQUIRED) {
                            return Optional.of(java);
                        }
                    }
                }
            }
        }
        return Optional.empty();
    }

    @Test
    void anOldJvmRunWithTheAgentSaysWhatToInstall(@TempDir Path tmp) throws Exception {
        Optional<Path> java = olderJava();
        assumeTrue(java.isPresent(), "no JDK older than 25 on this machine");
        ForkedJvm.Exit e = ForkedJvm.run(new ProcessBuilder(java.get().toString(), "-javaagent:"
                + FirstLoadAnyOrderTest.agentJar(tmp), "-cp", System.getProperty("java.class.path"),
                FirstLoadAnyOrderTest.class.getName()), 2, TimeUnit.MINUTES);
        assertThat(e.code()).isNotZero();
        assertThat(e.output().lines().findFirst().orElse("")).as(e.output()).startsWith("text2data needs Java 25 or newer");
    }
}
