package org.text2data;

/**
 * A Java agent that loads libtorch safely before the application's first class: run the JVM with
 * {@code -javaagent:text2data-core.jar} (the library's own jar) and nothing the application loads first,
 * in whatever order its static initialisers run, can hit bytedeco's first-load crash
 * (docs/upstream-bytedeco-first-load.md). The alternative is to call {@link LibTorch#ensureLoaded()}
 * before any bytedeco class is touched, e.g. in a static initialiser of the main class.
 */
public final class Preload {
    private Preload() {
    }

    /**
     * The agent's entry point, called by the JVM before {@code main}.
     *
     * @param args the agent's options (none are read)
     */
    public static void premain(String args) {
        LibTorch.ensureLoaded();
    }
}
