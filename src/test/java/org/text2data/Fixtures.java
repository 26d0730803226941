package org.text2data;

import java.nio.file.Path;

/** Where the conformance fixtures (copied from shared/conformance) live in the test resources. */
public final class Fixtures {
    private Fixtures() {
    }

    public static Path dir() {
        return Path.of("src", "test", "resources", "conformance");
    }
}
