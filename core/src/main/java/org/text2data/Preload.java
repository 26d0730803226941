package org.text2data;

/**
 * A Java agent that loads libtorch safely before the application's first class: run the JVM with
 * {@code -javaagent:text2data-core.jar} (the library's own jar) and nothing the application loads first,
 * in whatever order its static initialisers run, can hit bytedeco's first-load crash
 * (docs/upstream-bytedeco-first-load.md). It checks the Java version first ({@link JavaVersionCheck}):
 * compiled for Java 8, it runs on any JVM and says what to install where the library cannot run. The
 * alternative to the agent is to call {@link LibTorch#ensureLoaded()} before any bytedeco class is
 * touched, e.g. in a static initialiser of the main class.
 */
public final class Preload {
    private Preload() {
    }

    /**
     * The agent's entry point, called by the JVM before {@code main}.
     *
     * @param args the agent's options (none are read)
     * @throws Exception when libtorch cannot be loaded
     */
    public static void premain(String args) throws Exception {
        try {
            JavaVersionCheck.require();
        } catch (UnsupportedClassVersionError e) {
            System.err.println(e.getMessage()); // first, above the JVM's report of a failed agent
            throw e;
        }
        // by name: LibTorch is compiled for Java 25, and this class must load on older JVMs to say so
        Class.forName("org.text2data.LibTorch").getMethod("ensureLoaded").invoke(null);
    }
}
