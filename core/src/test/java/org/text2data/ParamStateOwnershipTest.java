package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.text2data.engine.Engines;
import org.text2data.engine.FusedEngine;
import org.text2data.engine.ParamState;

/**
 * The per-parameter state lives where PyTorch keeps it: in records the {@link Constraint} owns (one per parameter)
 * and passes to its engine, not in the engine.
 */
class ParamStateOwnershipTest {

    private static Tensor leaf(double... v) {
        return Tensor.create(v).requires_grad_(true);
    }

    @Test
    void theConstraintsRecordsHoldItsKeptGradientsAndOptimizerState() {
        assertThat(Engines.fusedAvailable()).as(String.valueOf(Engines.fusedUnavailableReason())).isTrue();
        double[] c = {1, -2, 3, 0.5};
        double[] g = {0.5, 1, -1, 2};
        Tensor p = leaf(0.1, 0.2, 0.3, 0.4);
        Tensor q = leaf(0.1, 0.2, 0.3, 0.4);
        Constraint opt = new Constraint(List.of(p), OptimizerSpec.adam(0.1), 1, 1, Engine.FUSED);
        try (Constraint twin = new Constraint(List.of(q), OptimizerSpec.adam(0.1), 1, 1, Engine.FUSED);
             PointerScope scope = new PointerScope()) {
            assertThat(opt.isFused()).isTrue();
            ParamState[] states = opt.paramStates();
            assertThat(states).hasSize(1).doesNotContainNull();
            p.mutable_grad().put(Tensor.create(c));
            q.mutable_grad().put(Tensor.create(c));
            opt.firstStep(true);
            twin.firstStep(true);
            p.grad().add_(Tensor.create(g));
            q.grad().add_(Tensor.create(g));
            // a fresh engine, given the constraint's records, finds the c_p its engine kept: they hold it
            try (FusedEngine fresh = new FusedEngine(new Tensor[] {p})) {
                assertThat(fresh.secondStep(states, Tensor.create(4.0), 1, 1, 1, true)).isEqualTo(1);
            }
            assertThat(twin.secondStep(4.0, 1)).isEqualTo(1);
            assertThat(p.grad().sub(q.grad()).abs().max().item_double()).isZero();
            assertThat(p.grad().sub(Tensor.create(g)).abs().max().item_double()).isPositive(); // projected
            // the fused optimizer's state is in the same records
            opt.stepBase();
            assertThat(opt.paramStates()[0].steps()).isEqualTo(1);
        } finally {
            opt.close();
        }
        // closing the constraint closes its records: the optimizer state is gone
        assertThat(opt.paramStates()[0].steps()).isZero();
    }

    /**
     * Loading a checkpoint copies the saved optimizer state into the buffers the records already hold, instead of
     * replacing them: a captured step's graph writes to those very buffers (see CapturedStep), and new ones would
     * leave it writing into freed memory.
     */
    @Test
    void loadingACheckpointCopiesTheOptimizerStateIntoTheSameBuffers(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
            throws java.io.IOException {
        assertThat(Engines.fusedAvailable()).as(String.valueOf(Engines.fusedUnavailableReason())).isTrue();
        Tensor p = leaf(0.1, 0.2, 0.3, 0.4);
        try (Constraint opt = new Constraint(List.of(p), OptimizerSpec.adam(0.1), 1, 1, Engine.FUSED);
             PointerScope scope = new PointerScope()) {
            p.mutable_grad().put(Tensor.create(1.0, -2.0, 3.0, 0.5));
            opt.stepBase();
            java.nio.file.Path file = dir.resolve("ckpt.pt");
            opt.saveCheckpoint(file);
            java.util.Map<String, Tensor> before = opt.paramStates()[0].view(opt.fusedOptions(), new java.util.HashMap<>());
            Tensor expAvg = before.get("exp_avg");
            double saved = expAvg.sum().item_double();
            opt.stepBase(); // the state moves on
            assertThat(expAvg.sum().item_double()).isNotEqualTo(saved);
            opt.loadCheckpoint(file);
            java.util.Map<String, Long> ints = new java.util.HashMap<>();
            java.util.Map<String, Tensor> after = opt.paramStates()[0].view(opt.fusedOptions(), ints);
            assertThat(after.get("exp_avg")).isSameAs(expAvg);
            assertThat(after.get("exp_avg_sq")).isSameAs(before.get("exp_avg_sq"));
            assertThat(expAvg.sum().item_double()).isEqualTo(saved);
            assertThat(ints.get("step")).isEqualTo(1L);
        }
    }
}
