package org.text2data;

import java.nio.file.Files;
import java.nio.file.Path;

/** Where the conformance fixtures (copied from shared/conformance) live in the core module's test resources. */
public final class Fixtures {
    private Fixtures() {
    }

    /** The fixture folder, from the core module's folder or from a module beside it. */
    public static Path dir() {
        return resources().resolve("conformance");
    }

    /** The core module's test resources (bad files, fixtures). */
    public static Path resources() {
        Path here = Path.of("src", "test", "resources");
        Path core = Path.of("..", "core", "src", "test", "resources");
        return Files.isDirectory(here.resolve("conformance")) ? here : core;
    }
}
