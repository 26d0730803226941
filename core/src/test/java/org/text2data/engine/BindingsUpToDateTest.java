package org.text2data.engine;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;
import org.junit.jupiter.api.Test;

/** The jextract bindings in org.text2data.ffi were generated from the current native/include/text2data.h. */
class BindingsUpToDateTest {

    @Test
    void recordedHeaderHashMatchesTheHeader() throws Exception {
        String recorded;
        try (InputStream in = BindingsUpToDateTest.class.getClassLoader()
                .getResourceAsStream("org/text2data/ffi/header.sha256")) {
            assertThat(in).as("resource org/text2data/ffi/header.sha256 (written by jextract/generate.sh)").isNotNull();
            recorded = new String(in.readAllBytes(), StandardCharsets.US_ASCII).trim();
        }
        Path header = Path.of("..", "native", "include", "text2data.h");
        String actual = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(header)));
        assertThat(actual)
                .as("native/include/text2data.h changed since the bindings were generated: run jextract/generate.sh")
                .isEqualTo(recorded);
    }
}
