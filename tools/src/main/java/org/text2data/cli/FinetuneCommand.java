package org.text2data.cli;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

import org.text2data.Batch;
import org.text2data.Checkpoint;
import org.text2data.Constraint;
import org.text2data.Engine;
import org.text2data.ErrorMessages;
import org.text2data.InputFile;
import org.text2data.LibTorch;
import org.text2data.Loss;
import org.text2data.OptimizerSpec;
import org.text2data.TorchScriptModel;
import org.text2data.train.BatchTransform;
import org.text2data.train.Finetuning;
import org.text2data.train.TrainConfig;
import org.text2data.train.TrainingListener;
import org.bytedeco.pytorch.global.torch;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "finetune", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Finetunes a TorchScript model on labelled data with Text2Data's constrained step, and writes "
                + "the finetuned TorchScript module (loadable by Python's torch.jit.load).",
                "M.pt: a module with forward(data, cond: Optional[Tensor]) saved by torch.jit.script(...).save.",
                "D.pt: a dict of tensors 'data', 'cond', 'label' saved by torch.save.",
                "Checkpoint and resume: --checkpoint CK.t2d writes the parameters, the optimizer's state, the "
                        + "constraint's settings and the position in the data (atomically) every --checkpoint-every "
                        + "steps and at the end; after a stop or a crash, the same command with --resume CK.t2d "
                        + "continues from there and ends exactly where an uninterrupted run would have (--steps is "
                        + "the run's total)."})
final class FinetuneCommand implements Callable<Integer> {

    @Option(names = "--model", required = true, paramLabel = "M.pt", description = "TorchScript model to finetune")
    Path model;

    @Option(names = "--data", required = true, paramLabel = "D.pt", description = "labelled data: dict of data, cond, label")
    Path data;

    @Option(names = "--g-constraint", required = true, paramLabel = "G",
            description = "the unconditional loss to stay near (from pretraining; see estimate-g)")
    double gConstraint;

    @Option(names = "--steps", required = true, paramLabel = "N",
            description = "number of constrained steps in the whole run (a resumed run counts the steps taken before)")
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

    @Option(names = "--concurrent-passes",
            description = "run each step's unconditional and conditional passes at the same time, on two threads "
                    + "(CPU only; the same values, faster on 2 or more cores; the model must change no state in forward)")
    boolean concurrentPasses;

    @Option(names = "--checkpoint", paramLabel = "CK.t2d",
            description = "write a checkpoint (parameters, optimizer and constraint state, data position) to this file, "
                    + "atomically, every --checkpoint-every steps and at the end")
    Path checkpoint;

    @Option(names = "--checkpoint-every", paramLabel = "N",
            description = "steps between checkpoints (default: 100; needs --checkpoint)")
    Long checkpointEvery;

    @Option(names = "--resume", paramLabel = "CK.t2d",
            description = "continue the run saved in this checkpoint (same model, data and flags; it may be the "
                    + "--checkpoint file)")
    Path resume;

    /** The step of the checkpoint resumed from; -1 without --resume. */
    private long resumedAt = -1;

    private OptimizerSpec optimizerSpec() {
        OptimizerSpec spec = OptimizerSpec.of(optimizer, lr);
        if (weightDecay != null) {
            spec = spec.weightDecay(weightDecay);
        }
        if (momentum != null) {
            spec = spec.momentum(momentum);
        }
        return spec;
    }

    /**
     * With --resume, before anything is written: refuses a checkpoint already beyond --steps, and --alpha, --beta,
     * --lr or --seed given with a value other than the checkpoint's (a resumed run continues the run as it was);
     * flags not given take the checkpoint's values, so that what is printed is what the run uses.
     */
    private void adoptCheckpointSettings() {
        com.google.gson.JsonObject loop;
        com.google.gson.JsonObject constraint;
        try {
            Checkpoint.Summary c = Checkpoint.summary(resume); // the header and loop position, not the tensors
            if (c.loopState() == null) {
                return; // refused by the training loop, with its reason
            }
            loop = com.google.gson.JsonParser.parseString(c.loopState()).getAsJsonObject();
            constraint = com.google.gson.JsonParser.parseString(c.headerJson()).getAsJsonObject()
                    .getAsJsonObject("constraint");
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--resume " + resume + ": " + ErrorMessages.of(e), e);
        } catch (RuntimeException e) { // JSON of an unexpected shape
            throw new IllegalArgumentException("--resume " + resume + ": its loop position is not readable: "
                    + ErrorMessages.of(e), e);
        }
        if (loop.has("step")) {
            resumedAt = loop.get("step").getAsLong();
            if (resumedAt > steps) {
                throw new IllegalArgumentException("--resume " + resume + ": the checkpoint is at step " + resumedAt
                        + ", beyond --steps " + steps + " (--steps is the run's total, the steps before the checkpoint "
                        + "included); give --steps " + resumedAt + " or more; nothing was written");
            }
        }
        java.util.List<String> differ = new java.util.ArrayList<>();
        if (constraint != null && constraint.has("alpha")) {
            alpha = adopt("--alpha", alpha, constraint.get("alpha").getAsDouble(), differ);
        }
        if (constraint != null && constraint.has("beta")) {
            beta = adopt("--beta", beta, constraint.get("beta").getAsDouble(), differ);
        }
        if (loop.has("baseLr")) {
            lr = adopt("--lr", lr, loop.get("baseLr").getAsDouble(), differ);
        }
        if (loop.has("seed") && !loop.get("seed").isJsonNull()) {
            long saved = loop.get("seed").getAsLong();
            if (given("--seed") && seed != saved) {
                differ.add("--seed " + seed + " (the checkpoint's run has " + saved + ")");
            }
            seed = saved;
        }
        if (!differ.isEmpty()) {
            throw new IllegalArgumentException("--resume " + resume + ": " + String.join(", ", differ)
                    + ": a resumed run continues the run as it was; drop these flags (or give the checkpoint's values), "
                    + "or start a new run without --resume to change them; nothing was written");
        }
    }

    private double adopt(String flag, double given, double saved, java.util.List<String> differ) {
        if (given(flag) && Double.compare(given, saved) != 0) {
            differ.add(flag + " " + given + " (the checkpoint's run has " + saved + ")");
        }
        return saved;
    }

    private boolean given(String flag) {
        return commandSpec.commandLine().getParseResult().hasMatchedOption(flag);
    }

    static void checkInput(String flag, Path file, String what) {
        if (file != null && file.toString().isEmpty()) {
            throw new IllegalArgumentException(flag + ": the path is empty; give the " + what);
        }
        try {
            InputFile.checkReadable(file, what);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(flag + ": " + e.getMessage(), e);
        }
    }

    /** Refuses a text2data checkpoint given where a TorchScript model or a data file is expected, saying so. */
    static void checkNotCheckpoint(String flag, Path file) {
        if (Checkpoint.isCheckpoint(file)) {
            throw new IllegalArgumentException(flag + " " + file + " is a text2data checkpoint (written by "
                    + "--checkpoint), not a " + (flag.equals("--model") ? "TorchScript model" : "data file")
                    + ": give it to --resume to continue its run");
        }
    }

    /**
     * With cross-entropy, refuses floating-point labels that are not class probabilities (in [0, 1], summing to 1
     * over the classes, dimension 1): such labels give meaningless, even negative, losses.
     */
    static void checkCrossEntropyLabels(Loss lossFn, Batch b, Path data) {
        org.bytedeco.pytorch.Tensor y = b.label();
        if (lossFn != Loss.CROSS_ENTROPY || y == null || !y.is_floating_point() || y.dim() < 2 || y.numel() == 0) {
            return;
        }
        try (org.bytedeco.javacpp.PointerScope scope = new org.bytedeco.javacpp.PointerScope()) {
            double min = y.amin().item_double();
            double max = y.amax().item_double();
            double off = torch.sum(y, new long[] {1}, false, new org.bytedeco.pytorch.ScalarTypeOptional())
                    .sub(new org.bytedeco.pytorch.Scalar(1.0)).abs().amax().item_double();
            if (!(min >= 0 && max <= 1 && off <= 1e-3)) {
                throw new IllegalArgumentException(String.format(Locale.ROOT, "--loss cross-entropy: the floating-point "
                        + "labels of --data %s are not class probabilities (values from %.6g to %.6g, sums over the "
                        + "classes off 1 by up to %.6g): give class indices (integers) or per-row probabilities that "
                        + "sum to 1, or choose another --loss (mse, l1, smooth-l1)", data, min, max, off));
            }
        }
    }

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
        DistributedLauncher.exitWithLauncher(); // a worker of --nproc ends with its launcher
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
        if (checkpointEvery != null && checkpoint == null) {
            throw new IllegalArgumentException("--checkpoint-every needs --checkpoint FILE");
        }
        if (checkpointEvery != null && checkpointEvery <= 0) {
            throw new IllegalArgumentException("--checkpoint-every must be positive, got " + checkpointEvery);
        }
        OptimizerSpec spec = optimizerSpec();
        Loss lossFn = Loss.named(loss);
        Engine eng = Engine.parse(engine);
        checkInput("--model", model, "model file");
        checkInput("--data", data, "data file");
        checkNotCheckpoint("--model", model);
        checkNotCheckpoint("--data", data);
        if (resume != null) {
            checkInput("--resume", resume, "checkpoint file");
        }
        Map<String, Path> inputs = new java.util.LinkedHashMap<>();
        inputs.put("--model", model);
        inputs.put("--data", data);
        if (resume != null) {
            inputs.put("--resume", resume); // the checkpoint to continue from; --checkpoint may be it, --out not
        }
        Outputs.check("--out", out, inputs);
        if (checkpoint != null) {
            inputs.remove("--resume");
            inputs.put("--out", out);
            Outputs.check("--checkpoint", checkpoint, inputs);
        }
        if (resume != null) {
            adoptCheckpointSettings();
            spec = optimizerSpec(); // the checkpoint's learning rate
        }
        if (nproc != null && nproc < 1 || !(distTimeout > 0 && distTimeout <= 86_400)) {
            throw new IllegalArgumentException("--nproc must be at least 1 and --dist-timeout in (0, 86400] seconds, got "
                    + nproc + " and " + distTimeout);
        }
        java.time.Duration timeout = java.time.Duration.ofMillis((long) Math.ceil(distTimeout * 1000));
        // One run at a time writes an output: the launcher of --nproc (or a lone process, or rank 0 of a job) holds
        // a lock on each for the whole run, released by the system if the process dies.
        java.util.List<Outputs.Lock> locks = new java.util.ArrayList<>();
        try {
            if (holdsOutputLocks()) {
                locks.add(Outputs.lock("--out", out));
                if (checkpoint != null) {
                    locks.add(Outputs.lock("--checkpoint", checkpoint));
                }
            }
            return run(spec, lossFn, eng, timeout);
        } finally {
            for (Outputs.Lock l : locks) {
                l.close();
            }
        }
    }

    /** Whether this process locks the outputs: not a worker of --nproc (its launcher does), nor a rank other than 0. */
    private static boolean holdsOutputLocks() {
        if (System.getenv(DistributedLauncher.STORE_FILE_VAR) != null) {
            return false;
        }
        String rank = System.getenv("WORLD_SIZE") == null ? null : System.getenv("RANK");
        return rank == null || rank.trim().equals("0");
    }

    private int run(OptimizerSpec spec, Loss lossFn, Engine eng, java.time.Duration timeout) throws Exception {
        if (nproc != null && nproc > 1) {
            return DistributedLauncher.launch(nproc, timeout, commandSpec.commandLine().getParseResult().originalArgs());
        }
        device = DistributedRun.device(device);
        if (concurrentPasses && !device.equals("cpu")) {
            throw new IllegalArgumentException("--concurrent-passes runs on the CPU only, not on --device " + device
                    + " (libtorch runs every CUDA backward pass on one device thread)");
        }
        LibTorch.ensureLoaded();
        if (device.startsWith("cuda") && !LibTorch.cudaAvailable()) {
            throw new IllegalArgumentException("--device " + device + ": no CUDA device is usable here: "
                    + LibTorch.cudaUnavailableReason());
        }
        // TorchScript's graph executor re-optimizes a module after its first runs, which changes the last bits of its
        // gradients from then on; unoptimized, every step computes the same way in every process, so that a resumed
        // run ends bit for bit where an uninterrupted one does.
        boolean optimize = torch.getGraphExecutorOptimize();
        torch.setGraphExecutorOptimize(false);
        try {
            return finetune(spec, lossFn, eng, timeout);
        } finally {
            torch.setGraphExecutorOptimize(optimize);
        }
    }

    private int finetune(OptimizerSpec spec, Loss lossFn, Engine eng, java.time.Duration timeout) throws Exception {
        try (TorchScriptModel m = TorchScriptModel.load(model); Batch all = Batch.load(data);
             DistributedRun dist = DistributedRun.fromEnvironment(device, timeout)) {
            Batch set = all;
            if (!device.equals("cpu")) {
                m.to(device);
                set = all.to(device);
            }
            long rows = set.size();
            if (dist.writesCheckpoints()) { // the writing rank: a save that cannot fit is known now, not after the run
                m.checkSaveFits(out);
            }
            checkCrossEntropyLabels(lossFn, all, data);
            if (rows == 0) {
                throw new IllegalArgumentException("--data " + data + " has no rows ('data' has shape "
                        + Arrays.toString(set.data().shape()) + "): nothing to finetune on");
            }
            int b = batchSize == null ? (int) Math.min(rows, Integer.MAX_VALUE) : (int) Math.min(batchSize, rows);
            dist.checkBatches(rows, b);
            System.err.printf(Locale.ROOT, "finetune: %s, %d rows (batch %d), %s, alpha %s, beta %s, g_constraint %s%n",
                    model.getFileName(), rows, b, spec, alpha, beta, gConstraint);
            TrainConfig cfg = new TrainConfig().epochs(Integer.MAX_VALUE / 4).maxSteps(steps).batchSize(b)
                    .shuffle(shuffle).seed(seed).resumeFrom(resume);
            if (checkpoint != null && dist.writesCheckpoints()) {
                cfg.checkpoint(checkpoint, checkpointEvery == null ? 100 : checkpointEvery);
            }
            long t0 = System.nanoTime();
            Finetuning.Result r;
            long[] done = {-1}; // steps completed; -1 until training starts
            try (Constraint opt = new Constraint(m.namedParameters(), spec, alpha, beta, eng)) {
                dist.attach(opt);
                opt.setConcurrentPasses(concurrentPasses);
                ProgressBar bar = new ProgressBar("finetune (" + opt.engineName() + ")", steps);
                done[0] = 0;
                r = Finetuning.run(opt, gConstraint, m, set, lossFn, cfg, Finetuning.Mode.TEXT2DATA,
                        dist.sharding(BatchTransform.identity()), null, new TrainingListener() {
                            @Override
                            public void onStep(String stage, long step, long total, double g, double f) {
                                done[0] = step;
                                bar.update(step, String.format(Locale.ROOT, "g %.5f  f %.5f", g, f));
                            }

                            @Override
                            public void onWarning(String stage, long step, String message) {
                                System.err.println((System.console() != null ? "\n" : "") + "warning: " + message);
                            }
                        });
            } catch (java.io.UncheckedIOException e) {
                throw e.getCause(); // a checkpoint could not be written
            } catch (RuntimeException e) {
                if (resume != null && e instanceof IllegalArgumentException && e.getMessage() != null
                        && e.getMessage().startsWith("checkpoint ")) {
                    throw new IllegalArgumentException("--resume " + resume + ": " + ErrorMessages.of(e), e);
                }
                String where = "--data " + data + " with --model " + model
                        + (done[0] >= 0 ? ", step " + (done[0] + 1) + " of " + steps : "") + ": " + ErrorMessages.of(e);
                if (e instanceof IllegalStateException) {
                    throw new IllegalStateException(where, e);
                }
                if (e instanceof IllegalArgumentException || e instanceof ArithmeticException
                        || e.getClass() == RuntimeException.class) { // libtorch's errors: the data or model
                    throw new IllegalArgumentException(where, e);
                }
                throw e;
            }
            Finetuning.Step first = r.steps().get(0);
            Finetuning.Step last = r.steps().get(r.steps().size() - 1);
            if (!dist.finishAndWrites()) {
                return 0; // rank 0 writes
            }
            m.save(out);
            System.out.printf(Locale.ROOT,
                    "finetuned %d steps in %.1f s: conditional loss %.6f -> %.6f, unconditional loss %.6f -> %.6f "
                            + "(g_constraint %s, max g/g_constraint %.4f)%s; wrote %s%s%n",
                    steps, (System.nanoTime() - t0) / 1e9, first.f(), last.f(), first.g(), last.g(), gConstraint,
                    gConstraint > 0 ? r.maxGRatio() : 0.0,
                    resume == null ? "" : ", resumed from " + resume + " at step " + resumedAt
                            + (resumedAt >= steps ? " (no step was left to take: the checkpoint's parameters)" : ""),
                    out, dist.describe());
            if (r.gRanAway()) {
                System.err.printf(Locale.ROOT, "warning: the unconditional loss ran away from g_constraint (max "
                        + "g/g_constraint %.3g, above %.0fx for %d steps in a row); the model was written, but the "
                        + "constraint did not hold: try a lower --lr%n", r.maxGRatio(), Finetuning.RUNAWAY_RATIO,
                        Finetuning.RUNAWAY_STEPS);
            }
        }
        return 0;
    }
}
