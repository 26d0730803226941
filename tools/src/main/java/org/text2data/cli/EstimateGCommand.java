package org.text2data.cli;

import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;

import org.text2data.Batch;
import org.text2data.ErrorMessages;
import org.text2data.LibTorch;
import org.text2data.Loss;
import org.text2data.TorchScriptModel;
import org.text2data.train.LossSurvey;
import org.text2data.train.Pretraining;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "estimate-g", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"The unconditional loss of a (pretrained) model over a data set, row by row (mean, min, "
                + "percentiles), and the --g-constraint it suggests for finetune: relax x the mean."})
final class EstimateGCommand implements Callable<Integer> {

    @Option(names = "--model", required = true, paramLabel = "M.pt", description = "TorchScript model (pretrained)")
    Path model;

    @Option(names = "--data", required = true, paramLabel = "D.pt", description = "dict of data, cond, label (cond unused)")
    Path data;

    @Option(names = "--relax", defaultValue = "1.0", paramLabel = "F",
            description = "suggest F x the mean loss (default: ${DEFAULT-VALUE})")
    double relax;

    @Option(names = "--loss", defaultValue = "mse", description = "mse, l1, smooth-l1 or cross-entropy (default: ${DEFAULT-VALUE})")
    String loss;

    @Option(names = "--chunk", defaultValue = "256", description = "rows per forward pass (default: ${DEFAULT-VALUE})")
    int chunk;

    @Override
    public Integer call() {
        Pretraining.relaxed(1.0, relax); // checks the factor before anything is loaded
        if (chunk <= 0) {
            throw new IllegalArgumentException("--chunk must be positive, got " + chunk);
        }
        Loss l = Loss.named(loss);
        FinetuneCommand.checkInput("--model", model, "model file");
        FinetuneCommand.checkInput("--data", data, "data file");
        FinetuneCommand.checkNotCheckpoint("--model", model);
        FinetuneCommand.checkNotCheckpoint("--data", data);
        LibTorch.ensureLoaded();
        try (TorchScriptModel m = TorchScriptModel.load(model); Batch b = Batch.load(data)) {
            m.train(false);
            if (b.size() == 0) {
                throw new IllegalArgumentException("--data " + data + " has no rows ('data' has shape "
                        + java.util.Arrays.toString(b.data().shape()) + "): nothing to measure");
            }
            FinetuneCommand.checkCrossEntropyLabels(l, b, data);
            LossSurvey s;
            try {
                ProgressBar bar = new ProgressBar("estimate-g (rows)", b.size());
                s = LossSurvey.of(m, b, l, chunk, done -> bar.update(done, ""));
            } catch (IllegalArgumentException | ArithmeticException e) {
                throw new IllegalArgumentException("--data " + data + " with --model " + model + ": " + ErrorMessages.of(e), e);
            } catch (RuntimeException e) {
                if (e.getClass() != RuntimeException.class) {
                    throw e;
                }
                throw new IllegalArgumentException("--data " + data + " with --model " + model + ": " + ErrorMessages.of(e), e);
            }
            System.out.printf(Locale.ROOT, "unconditional %s loss of %s over %d rows of %s:%n", loss, model.getFileName(),
                    s.rows(), data.getFileName());
            System.out.printf(Locale.ROOT, "  mean %.6g   min %.6g   p10 %.6g   p50 %.6g   p90 %.6g   max %.6g%n",
                    s.mean(), s.min(), s.p10(), s.p50(), s.p90(), s.max());
            System.out.printf(Locale.ROOT, "suggested --g-constraint %.6g  (%s x the mean)%n", s.suggestedGConstraint(relax),
                    relax);
        }
        return 0;
    }
}
