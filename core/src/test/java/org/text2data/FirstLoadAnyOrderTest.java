package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.jar.Attributes;
import java.util.jar.JarOutputStream;
import java.util.jar.Manifest;
import java.util.stream.Stream;

import org.bytedeco.javacpp.Loader;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The README's ways of keeping a user's application clear of bytedeco's first-load crash
 * (docs/upstream-bytedeco-first-load.md), each in a forked JVM on an empty JavaCPP cache whose application
 * touches a bytedeco class before anything of this library: {@code -javaagent} with the library's jar, and
 * {@code LibTorch.ensureLoaded()} in the main class's static initialiser. Where a system libtorch is
 * installed (Debian's libtorch1.13, which python3-torch brings), the setting of the crash is made as
 * Debian's libtorch-dev makes it: unversioned {@code libtorch_cpu.so}, {@code libc10.so} the dynamic linker
 * finds (here through {@code LD_LIBRARY_PATH}, outside {@code java.library.path}); and a control run without
 * either way checks that the setting does crash, so that the two others prove something.
 */
class FirstLoadAnyOrderTest {

    /** An application that touches bytedeco first. */
    public static void main(String[] args) throws Exception {
        Tensor t = torch.ones(2, 2);
        report(t);
    }

    /** The same application with the one-line fix in its main class's static initialiser. */
    public static final class StaticFirst {
        static {
            LibTorch.ensureLoaded();
        }

        /**
         * Touches bytedeco, then reports.
         *
         * @param args unused
         * @throws Exception never, in practice
         */
        public static void main(String[] args) throws Exception {
            Tensor t = torch.ones(2, 2);
            report(t);
        }
    }

    static void report(Tensor t) throws Exception {
        String cache = Loader.getCacheDir().getPath();
        List<String> foreign = Files.readAllLines(Path.of("/proc/self/maps")).stream()
                .map(l -> l.substring(l.lastIndexOf(' ') + 1))
                .filter(f -> f.matches(".*/lib(torch|torch_cpu|c10)\\.so.*") && !f.startsWith(cache))
                .distinct().toList();
        System.out.println("sum=" + t.sum().item_double() + " foreign=" + foreign);
    }

    /** The system libtorch's directory (Debian's multiarch one), if one is installed. */
    static Optional<Path> systemLibtorch() {
        for (String d : new String[] {"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"}) {
            Path dir = Path.of(d);
            try (Stream<Path> s = Files.isDirectory(dir) ? Files.list(dir) : Stream.empty()) {
                if (s.anyMatch(p -> p.getFileName().toString().matches("libtorch_cpu\\.so\\.[0-9.]+"))) {
                    return Optional.of(dir);
                }
            } catch (java.io.IOException e) {
                // not readable: try the next
            }
        }
        return Optional.empty();
    }

    /** libtorch-dev's unversioned names for the system libtorch, in a directory of their own. */
    static Path devLinks(Path sys, Path tmp) throws Exception {
        Path dir = Files.createDirectories(tmp.resolve("libtorch-dev"));
        for (String lib : new String[] {"libtorch", "libtorch_cpu", "libc10"}) {
            try (Stream<Path> s = Files.list(sys)) {
                Optional<Path> versioned = s.filter(p -> p.getFileName().toString().matches(lib + "\\.so\\.[0-9]+\\.[0-9]+")).findFirst();
                if (versioned.isPresent()) {
                    Files.createSymbolicLink(dir.resolve(lib + ".so"), versioned.get());
                }
            }
        }
        return dir;
    }

    static Path agentJar(Path tmp) throws Exception {
        Manifest m = new Manifest();
        m.getMainAttributes().put(Attributes.Name.MANIFEST_VERSION, "1.0");
        m.getMainAttributes().put(new Attributes.Name("Premain-Class"), Preload.class.getName()); // as the pom's jar has it
        Path jar = tmp.resolve("agent.jar");
        try (OutputStream out = Files.newOutputStream(jar); JarOutputStream j = new JarOutputStream(out, m)) {
            // the manifest alone: the agent's class comes from the class path, as from the library's jar
        }
        return jar;
    }

    static ProcessBuilder fork(Path tmp, Class<?> main, String... jvmArgs) throws Exception {
        Path cache = Files.createTempDirectory(tmp, "javacpp-cache");
        List<String> args = new ArrayList<>(List.of("-XX:ErrorFile=" + tmp.resolve("hs_err_%p.log"),
                "-Djava.library.path=" + System.getProperty("java.library.path"),
                "-Dorg.bytedeco.javacpp.cachedir=" + cache));
        args.addAll(List.of(jvmArgs));
        ProcessBuilder pb = new ProcessBuilder(ForkedJvm.command(main, args));
        Optional<Path> sys = systemLibtorch();
        if (sys.isPresent()) {
            pb.environment().put("LD_LIBRARY_PATH", devLinks(sys.get(), Files.createTempDirectory(tmp, "dev")).toString());
        }
        return pb;
    }

    @Test
    void withTheLibraryAsAJavaAgentAnApplicationMayTouchBytedecoFirst(@TempDir Path tmp) throws Exception {
        assertThat(ForkedJvm.runOk(fork(tmp, FirstLoadAnyOrderTest.class, "-javaagent:" + agentJar(tmp))))
                .contains("sum=4.0 foreign=[]");
    }

    @Test
    void withEnsureLoadedInTheMainClassesStaticInitialiserItMayToo(@TempDir Path tmp) throws Exception {
        assertThat(ForkedJvm.runOk(fork(tmp, StaticFirst.class))).contains("sum=4.0 foreign=[]");
    }

    @Test
    void withNeitherTheSettingCrashesAsReported(@TempDir Path tmp) throws Exception {
        assumeTrue(systemLibtorch().isPresent(), "no system libtorch here: the crash's setting cannot be made");
        ForkedJvm.Exit e = ForkedJvm.run(fork(tmp, FirstLoadAnyOrderTest.class), 5, TimeUnit.MINUTES);
        assertThat(e.code() != 0 || !e.output().contains("foreign=[]"))
                .as("an application touching bytedeco first beside a system libtorch should crash or map it"
                        + " (if not, bytedeco fixed the first load: update docs/upstream-bytedeco-first-load.md): "
                        + e.output()).isTrue();
    }
}
