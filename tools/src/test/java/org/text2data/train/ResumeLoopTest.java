package org.text2data.train;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import java.util.List;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.text2data.Batch;
import org.text2data.Constraint;
import org.text2data.diffusion.Denoiser;
import org.text2data.Engine;
import org.text2data.LibTorch;
import org.text2data.Loss;
import org.text2data.OptimizerSpec;

/**
 * The training loops resume from their checkpoints: a run that stops (here: a listener throws, as a crash would)
 * and is resumed with a new model and optimizer returns the same result and parameters, bit for bit, as the
 * uninterrupted run, including schedules, shuffling, condition dropout, evaluations and epoch losses.
 */
class ResumeLoopTest {

    private static final class Crash extends RuntimeException {
        Crash() {
            super("stopped on purpose");
        }
    }

    private static Batch data() {
        LibTorch.ensureLoaded();
        torch.manual_seed(11);
        return new Batch(torch.randn(40, 4), torch.randn(40, 3), torch.randn(40, 4));
    }

    private static Denoiser model() {
        torch.manual_seed(7);
        return new Denoiser(4, 3, 16, 2);
    }

    private static TrainingListener crashAt(long step) {
        return (stage, s, total, g, f) -> {
            if (s == step) {
                throw new Crash();
            }
        };
    }

    private static void assertSameParameters(Denoiser a, Denoiser b) {
        a.namedParameters().forEach((n, t) -> assertThat(torch.equal(t, b.namedParameters().get(n)))
                .as("parameter " + n).isTrue());
    }

    @Test
    void pretrainingResumesMidEpochToTheSameResult(@TempDir Path tmp) {
        Path ck = tmp.resolve("pre.t2d");
        try (Batch data = data()) {
            Batch unlabelled = Batch.unlabelled(data.data(), data.label());
            TrainConfig cfg = new TrainConfig().epochs(3).batchSize(6).seed(5).schedule(LrSchedule.cosine(0.1));
            Denoiser a = model();
            Pretraining.Result ra;
            try (Constraint opt = new Constraint(a.namedParameters(), OptimizerSpec.adam(0.01))) {
                ra = Pretraining.run(opt, a, unlabelled, Loss.MSE, cfg, BatchTransform.identity(), TrainingListener.NONE);
            }
            Denoiser b = model();
            try (Constraint opt = new Constraint(b.namedParameters(), OptimizerSpec.adam(0.01))) {
                TrainConfig c = new TrainConfig().epochs(3).batchSize(6).seed(5).schedule(LrSchedule.cosine(0.1))
                        .checkpoint(ck, 4);
                assertThatThrownBy(() -> Pretraining.run(opt, b, unlabelled, Loss.MSE, c, BatchTransform.identity(),
                        crashAt(11))).isInstanceOf(Crash.class);
            }
            Denoiser r = model();
            Pretraining.Result rr;
            try (Constraint opt = new Constraint(r.namedParameters(), OptimizerSpec.adam(0.01))) {
                rr = Pretraining.run(opt, r, unlabelled, Loss.MSE, new TrainConfig().epochs(3).batchSize(6).seed(5)
                        .schedule(LrSchedule.cosine(0.1)).resumeFrom(ck), BatchTransform.identity(), TrainingListener.NONE);
                assertThat(opt.lr()).isEqualTo(0.01);
            }
            assertThat(rr).isEqualTo(ra);
            assertThat(rr.epochLosses()).hasSize(3);
            assertSameParameters(a, r);
        }
    }

    @Test
    void finetuningResumesWithShufflingDropoutEvaluationsAndASchedule(@TempDir Path tmp) {
        for (Finetuning.Mode mode : Finetuning.Mode.values()) {
            for (Engine engine : List.of(Engine.PLAIN, Engine.AUTO)) {
                Path ck = tmp.resolve(mode + "-" + engine + ".t2d");
                try (Batch data = data()) {
                    java.util.function.Supplier<TrainConfig> cfg = () -> new TrainConfig().epochs(4).batchSize(7)
                            .seed(3).condDropout(0.3).evalEvery(3).patience(50).schedule(LrSchedule.stepDecay(5, 0.5));
                    java.util.function.ToDoubleFunction<org.text2data.ConditionalModel> eval =
                            m -> Loss.MSE.apply(m.forward(data.data(), data.cond()), data.label()).item_double();
                    Denoiser a = model();
                    Finetuning.Result ra;
                    try (Constraint opt = new Constraint(a.namedParameters(), OptimizerSpec.sgd(0.05).momentum(0.9), 1, 1,
                            engine)) {
                        ra = Finetuning.run(opt, 0.5, a, data, Loss.MSE, cfg.get(), mode, BatchTransform.identity(), eval,
                                TrainingListener.NONE);
                    }
                    Denoiser b = model();
                    try (Constraint opt = new Constraint(b.namedParameters(), OptimizerSpec.sgd(0.05).momentum(0.9), 1, 1,
                            engine)) {
                        assertThatThrownBy(() -> Finetuning.run(opt, 0.5, b, data, Loss.MSE, cfg.get().checkpoint(ck, 5),
                                mode, BatchTransform.identity(), eval, crashAt(13))).isInstanceOf(Crash.class);
                    }
                    Denoiser r = model();
                    Finetuning.Result rr;
                    try (Constraint opt = new Constraint(r.namedParameters(), OptimizerSpec.sgd(0.05).momentum(0.9), 1, 1,
                            engine)) {
                        rr = Finetuning.run(opt, 0.5, r, data, Loss.MSE, cfg.get().resumeFrom(ck), mode,
                                BatchTransform.identity(), eval, TrainingListener.NONE);
                    }
                    assertThat(rr).as(mode + " " + engine).isEqualTo(ra);
                    assertThat(rr.evals()).hasSize(8);
                    assertSameParameters(a, r);
                }
            }
        }
    }

    @Test
    void aCheckpointOfAnotherLoopOrDataIsRefusedAndChangesNothing(@TempDir Path tmp) {
        Path ck = tmp.resolve("pre.t2d");
        try (Batch data = data()) {
            Denoiser a = model();
            try (Constraint opt = new Constraint(a.namedParameters(), OptimizerSpec.adam(0.01))) {
                Pretraining.run(opt, a, data, Loss.MSE, new TrainConfig().epochs(1).batchSize(8).checkpoint(ck, 2),
                        BatchTransform.identity(), TrainingListener.NONE);
            }
            Denoiser b = model();
            try (Constraint opt = new Constraint(b.namedParameters(), OptimizerSpec.adam(0.01))) {
                List<Tensor> before = b.namedParameters().values().stream().map(t -> t.detach().clone()).toList();
                assertThatThrownBy(() -> Finetuning.run(opt, 1, b, data, Loss.MSE,
                        new TrainConfig().epochs(1).batchSize(8).resumeFrom(ck), Finetuning.Mode.TEXT2DATA,
                        BatchTransform.identity(), null, TrainingListener.NONE))
                        .isInstanceOf(IllegalArgumentException.class)
                        .hasMessageContaining("was written by the pretrain loop; this is the text2data loop");
                assertThatThrownBy(() -> Pretraining.run(opt, b, data, Loss.MSE,
                        new TrainConfig().epochs(1).batchSize(4).resumeFrom(ck), BatchTransform.identity(),
                        TrainingListener.NONE))
                        .isInstanceOf(IllegalArgumentException.class)
                        .hasMessageContaining("drew batches of 8 from 40 rows")
                        .hasMessageContaining("nothing was restored");
                int i = 0;
                for (Tensor t : b.namedParameters().values()) {
                    assertThat(torch.equal(t, before.get(i++))).isTrue();
                }
            }
        }
    }
}
