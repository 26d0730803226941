package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.text2data.conformance.Conformance;
import org.text2data.engine.Engines;

/** Every fixture case on every engine, through the Java denoiser and through the TorchScript files. */
class ConformanceTest {

    private static List<Conformance.Result> run(Engine engine) throws Exception {
        List<String> lines = new ArrayList<>();
        List<Conformance.Result> results = new Conformance(Fixtures.dir()).runAll(List.of(engine), r -> lines.add(r.line()));
        lines.forEach(System.out::println);
        // 12 projection cases + 4 trajectories, each through the Java model and through TorchScript
        assertThat(results).hasSize(12 + 4 * 2);
        assertThat(results).allSatisfy(r -> assertThat(r.passed()).as(r.line()).isTrue());
        return results;
    }

    @Test
    void plainEngineMatchesTheReferenceOnEveryCase() throws Exception {
        assertThat(run(Engine.PLAIN)).allSatisfy(r -> assertThat(r.engine()).isEqualTo("plain"));
    }

    @Test
    void fusedEngineMatchesTheReferenceOnEveryCase() throws Exception {
        assertThat(Engines.fusedAvailable()).as(String.valueOf(Engines.fusedUnavailableReason())).isTrue();
        assertThat(run(Engine.FUSED)).allSatisfy(r -> assertThat(r.engine()).isEqualTo("fused-cpu"));
    }
}
