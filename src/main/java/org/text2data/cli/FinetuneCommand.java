package org.text2data.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;

import org.text2data.Batch;
import org.text2data.Constraint;
import org.text2data.Engine;
import org.text2data.LibTorch;
import org.text2data.Loss;
import org.text2data.OptimizerSpec;
import org.text2data.TorchScriptModel;
import org.text2data.train.BatchTransform;
import org.text2data.train.Finetuning;
import org.text2data.train.TrainConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "finetune", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Finetunes a TorchScript model on labelled data with Text2Data's constrained step, and writes "
                + "the finetuned TorchScript module (loadable by Python's torch.jit.load).",
                "M.pt: a module with forward(data, cond: Optional[Tensor]) saved by torch.jit.script(...).save.",
                "D.pt: a dict of tensors 'data', 'cond', 'label' saved by torch.save."})
final class FinetuneCommand implements Callable<Integer> {

    @Option(names = "--model", required = true, paramLabel = "M.pt", description = "TorchScript model to finetune")
    Path model;

    @Option(names = "--data", required = true, paramLabel = "D.pt", description = "labelled data: dict of data, cond, label")
    Path data;

    @Option(names = "--g-constraint", required = true, paramLabel = "G",
            description = "the unconditional loss to stay near (from pretraining; see estimate-g)")
    double gConstraint;

    @Option(names = "--steps", required = true, paramLabel = "N", description = "number of constrained steps")
    int steps;

    @Option(names = "--out", required = true, paramLabel = "OUT.pt", description = "where to write the finetuned module")
    Path out;

    @Option(names = "--optimizer", defaultValue = "adam", paramLabel = "NAME",
            description = "adam, adamw, sgd, rmsprop or adagrad (default: ${DEFAULT-VALUE})")
    String optimizer;

    @Option(names = "--lr", defaultValue = "1e-3", description = "learning rate (default: ${DEFAULT-VALUE})")
    double lr;

    @Option(names = "--weight-decay", paramLabel = "W", description = "weight decay (default: the optimizer's, as in PyTorch)")
    Double weightDecay;

    @Option(names = "--momentum", paramLabel = "M", description = "momentum (sgd, rmsprop; default 0)")
    Double momentum;

    @Option(names = "--alpha", defaultValue = "1", description = "barrier slope alpha (default: ${DEFAULT-VALUE})")
    double alpha;

    @Option(names = "--beta", defaultValue = "1", description = "barrier cap beta (default: ${DEFAULT-VALUE})")
    double beta;

    @Option(names = "--loss", defaultValue = "mse", description = "mse, l1, smooth-l1 or cross-entropy (default: ${DEFAULT-VALUE})")
    String loss;

    @Option(names = "--batch-size", paramLabel = "B", description = "rows per step (default: all rows)")
    Integer batchSize;

    @Option(names = "--shuffle", description = "shuffle the rows each epoch (default: in order)")
    boolean shuffle;

    @Option(names = "--seed", defaultValue = "0", description = "seed for --shuffle (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--device", defaultValue = "cpu", description = "cpu or cuda (default: ${DEFAULT-VALUE})")
    String device;

    @Option(names = "--engine", defaultValue = "auto", description = "auto, plain or fused (default: ${DEFAULT-VALUE})")
    String engine;

    @Option(names = "--nproc", paramLabel = "N", description = "data parallel: N worker processes on this machine, "
            + "each on 1/N of every batch (same result as one); with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set "
            + "instead, this process is one rank of a job")
    Integer nproc;

    @Option(names = "--dist-timeout", paramLabel = "S", defaultValue = "30",
            description = "data parallel: seconds to wait for the other ranks before failing (default: ${DEFAULT-VALUE})")
    double distTimeout;

    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec commandSpec;

    @Override
    public Integer call() throws Exception {
        // Everything that can be checked before loading is checked first; nothing is written on failure.
        if (steps <= 0) {
            throw new IllegalArgumentException("--steps must be positive, got " + steps);
        }
        if (batchSize != null && batchSize <= 0) {
            throw new IllegalArgumentException("--batch-size must be positive, got " + batchSize);
        }
        if (!Double.isFinite(gConstraint) || gConstraint < 0) {
            throw new IllegalArgumentException("--g-constraint must be a finite number >= 0, got " + gConstraint);
        }
        if (!Double.isFinite(alpha) || alpha < 0 || !Double.isFinite(beta) || beta < 0) {
            throw new IllegalArgumentException("--alpha and --beta must be finite numbers >= 0, got " + alpha + " and " + beta);
        }
        if (!device.equals("cpu") && !device.startsWith("cuda")) {
            throw new IllegalArgumentException("--device must be cpu or cuda, got '" + device + "'");
        }
        Path outDir = out.toAbsolutePath().getParent();
        if (outDir == null || !Files.isDirectory(outDir)) {
            throw new IllegalArgumentException("--out: folder does not exist: " + outDir);
        }
        OptimizerSpec spec = OptimizerSpec.of(optimizer, lr);
        if (weightDecay != null) {
            spec = spec.weightDecay(weightDecay);
        }
        if (momentum != null) {
            spec = spec.momentum(momentum);
        }
        Loss lossFn = Loss.named(loss);
        Engine eng = Engine.parse(engine);
        if (!Files.isRegularFile(model)) {
            throw new IllegalArgumentException("--model: file not found: " + model);
        }
        if (!Files.isRegularFile(data)) {
            throw new IllegalArgumentException("--data: file not found: " + data);
        }
        if (nproc != null && nproc < 1 || !(distTimeout > 0 && distTimeout <= 86_400)) {
            throw new IllegalArgumentException("--nproc must be at least 1 and --dist-timeout in (0, 86400] seconds, got "
                    + nproc + " and " + distTimeout);
        }
        java.time.Duration timeout = java.time.Duration.ofMillis((long) Math.ceil(distTimeout * 1000));
        if (nproc != null && nproc > 1) {
            return DistributedLauncher.launch(nproc, timeout, commandSpec.commandLine().getParseResult().originalArgs());
        }
        device = DistributedRun.device(device);
        LibTorch.ensureLoaded();
        if (device.startsWith("cuda") && !LibTorch.cudaAvailable()) {
            throw new IllegalArgumentException("--device " + device + ": no CUDA device is usable here (this build of "
                    + "libtorch is CPU-only, or no GPU/driver is present; see the README's GPU section)");
        }

        try (TorchScriptModel m = TorchScriptModel.load(model); Batch all = Batch.load(data);
             DistributedRun dist = DistributedRun.fromEnvironment(device, timeout)) {
            Batch set = all;
            if (!device.equals("cpu")) {
                m.to(device);
                set = all.to(device);
            }
            long rows = set.size();
            int b = batchSize == null ? (int) Math.min(rows, Integer.MAX_VALUE) : (int) Math.min(batchSize, rows);
            dist.checkBatches(rows, b);
            System.err.printf(Locale.ROOT, "finetune: %s, %d rows (batch %d), %s, alpha %s, beta %s, g_constraint %s%n",
                    model.getFileName(), rows, b, spec, alpha, beta, gConstraint);
            TrainConfig cfg = new TrainConfig().epochs(Integer.MAX_VALUE / 4).maxSteps(steps).batchSize(b)
                    .shuffle(shuffle).seed(seed);
            long t0 = System.nanoTime();
            Finetuning.Result r;
            try (Constraint opt = new Constraint(m.namedParameters(), spec, alpha, beta, eng)) {
                dist.attach(opt);
                ProgressBar bar = new ProgressBar("finetune (" + opt.engineName() + ")", steps);
                r = Finetuning.run(opt, gConstraint, m, set, lossFn, cfg, Finetuning.Mode.TEXT2DATA,
                        dist.sharding(BatchTransform.identity()), null, (stage, step, total, g, f) ->
                                bar.update(step, String.format(Locale.ROOT, "g %.5f  f %.5f", g, f)));
            } catch (IllegalArgumentException | ArithmeticException e) {
                throw new IllegalArgumentException("--data " + data + " with --model " + model + ": " + e.getMessage(), e);
            }
            Finetuning.Step first = r.steps().get(0);
            Finetuning.Step last = r.steps().get(r.steps().size() - 1);
            if (!dist.finishAndWrites()) {
                return 0; // rank 0 writes
            }
            m.save(out);
            System.out.printf(Locale.ROOT,
                    "finetuned %d steps in %.1f s: conditional loss %.6f -> %.6f, unconditional loss %.6f -> %.6f "
                            + "(g_constraint %s, max g/g_constraint %.4f); wrote %s%s%n",
                    steps, (System.nanoTime() - t0) / 1e9, first.f(), last.f(), first.g(), last.g(), gConstraint,
                    gConstraint > 0 ? r.maxGRatio() : 0.0, out, dist.describe());
        }
        return 0;
    }
}
