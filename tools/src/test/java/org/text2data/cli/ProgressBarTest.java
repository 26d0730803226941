package org.text2data.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;

import org.junit.jupiter.api.Test;

/** Off a terminal (logs, CI) the bar prints a line at each tenth of the way and a final one, with the caller's info. */
class ProgressBarTest {

    @Test
    void offATerminalALineEachTenthAndTheLast() {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        PrintStream out = new PrintStream(buf, true, StandardCharsets.UTF_8);
        ProgressBar bar = new ProgressBar(out, "finetune", 40, false);
        for (int i = 0; i <= 40; i++) {
            bar.update(i, "g 1.0000  f 0.5000");
        }
        bar.update(40, "after the end: ignored");
        List<String> lines = buf.toString(StandardCharsets.UTF_8).lines().toList();
        assertThat(lines).hasSize(10); // 4/40, 8/40, ..., 36/40, and 40/40
        assertThat(lines).allMatch(l -> l.startsWith("finetune") && l.contains("it/s g 1.0000  f 0.5000"));
        assertThat(lines.get(0)).contains(" 4/40");
        assertThat(lines.get(9)).contains("100%").contains("40/40");
        assertThat(String.join("\n", lines)).doesNotContain("\r").doesNotContain("after the end");
    }
}
