package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.text2data.conformance.Conformance;

/** Every fixture case on the plain engine, through the Java denoiser and through the TorchScript files. */
class ConformanceTest {

    @Test
    void plainEngineMatchesTheReferenceOnEveryCase() throws Exception {
        List<String> lines = new ArrayList<>();
        List<Conformance.Result> results = new Conformance(Fixtures.dir())
                .runAll(List.of(Engine.PLAIN), r -> lines.add(r.line()));
        lines.forEach(System.out::println);
        // 12 projection cases + 4 trajectories, each through the Java model and through TorchScript
        assertThat(results).hasSize(12 + 4 * 2);
        assertThat(results).allSatisfy(r -> assertThat(r.passed()).as(r.line()).isTrue());
        assertThat(results).allSatisfy(r -> assertThat(r.engine()).isEqualTo("plain"));
    }
}
